//! Hand-assembled fp32 kernels (AVX2+FMA and AVX-512F only: the microkernel tests decode
//! them to check), emitted at compile time with `iced-x86` and defined in the Cranelift
//! module with `define_function_bytes`: the GEMM/conv microkernels below, channel-vectorised
//! ones (`chanvec.rs`), max-pooling rows (`pool.rs`), padded phase copies (`pad.rs`), and the
//! `cpu_level` check of `multi` objects.
//!
//! Cranelift (0.135) only has 128-bit vectors; these kernels use 256/512-bit ones. Each is a
//! leaf function without a frame (no stack use, no callee-saved register touched, so no
//! unwind info is needed; `cpu_level` alone saves the `rbx` that `cpuid` clobbers), System V
//! calling convention, 64-byte aligned, ending in `vzeroupper`.
//!
//! The contract they implement (arguments, what they compute, the variants) is target-neutral
//! and documented in `crate::ukernel`; this file is its x86-64 implementation.

use iced_x86::IcedError;
use iced_x86::code_asm::*;

mod chanvec;
mod pad;
mod pool;

pub use pad::MAX_VECTORS as PAD_MAX_VECTORS;
pub use pool::MAX_VECTORS as POOL_MAX_VECTORS;

use super::Isa;
use crate::ukernel::*;

/// Constants of the activation code, in the order of the table after the code.
const ACT_CONSTS: [u32; 18] = [
    0x8000_0000,                        // 0: sign bit
    (-87.0f32).to_bits(),               // 1: exp input clamp
    88.0f32.to_bits(),                  // 2
    std::f32::consts::LOG2_E.to_bits(), // 3
    (-0.693_359_4f32).to_bits(),        // 4: -ln 2, high part
    2.121_944_4e-4f32.to_bits(),        // 5: -ln 2, low part
    (1.0f32 / 720.0).to_bits(),         // 6..=12: exp polynomial, highest degree first
    (1.0f32 / 120.0).to_bits(),
    (1.0f32 / 24.0).to_bits(),
    (1.0f32 / 6.0).to_bits(),
    0.5f32.to_bits(),
    1.0f32.to_bits(),
    1.0f32.to_bits(),
    127,                      // 13: exponent bias (i32)
    2.0f32.to_bits(),         // 14
    3.0f32.to_bits(),         // 15
    6.0f32.to_bits(),         // 16
    (1.0f32 / 6.0).to_bits(), // 17
];

/// Unroll of the k loop when there is one tap (several taps are unrolled instead).
const UNROLL: usize = 4;

/// How many reduction rows ahead the k loop prefetches the weights.
pub const PREFETCH_STEPS: usize = 32;

/// How many tiles ahead a `prefetch_x` kernel prefetches its input (measured on a 1x1
/// conv over a 256 x 3136 input in 448-pixel blocks: none 135, 1 tile 160, 2 tiles 163,
/// 4 tiles 163 GFLOP/s).
pub const PREFETCH_TILES: usize = 2;

const LANE_TABLE: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut i = 0;
    while i < 16 {
        t[i * 4] = i as u8;
        i += 1;
    }
    t
};

macro_rules! regs {
    ($($r:ident),*) => { [$($r),*] };
}
const YMM: [AsmRegisterYmm; 16] = regs!(
    ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11, ymm12, ymm13, ymm14,
    ymm15
);
const ZMM: [AsmRegisterZmm; 32] = regs!(
    zmm0, zmm1, zmm2, zmm3, zmm4, zmm5, zmm6, zmm7, zmm8, zmm9, zmm10, zmm11, zmm12, zmm13, zmm14,
    zmm15, zmm16, zmm17, zmm18, zmm19, zmm20, zmm21, zmm22, zmm23, zmm24, zmm25, zmm26, zmm27,
    zmm28, zmm29, zmm30, zmm31
);
const XMM: [AsmRegisterXmm; 16] = regs!(
    xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11, xmm12, xmm13, xmm14,
    xmm15
);

/// `r{kN}` for mask register `kN`, N in 2..=7.
fn zk(r: AsmRegisterZmm, k: usize) -> AsmRegisterZmm {
    match k {
        2 => r.k2(),
        3 => r.k3(),
        4 => r.k4(),
        5 => r.k5(),
        6 => r.k6(),
        _ => r.k7(),
    }
}

/// `m{kN}` for mask register `kN`, N in 2..=7.
fn mk(m: AsmMemoryOperand, k: usize) -> AsmMemoryOperand {
    match k {
        2 => m.k2(),
        3 => m.k3(),
        4 => m.k4(),
        5 => m.k5(),
        6 => m.k6(),
        _ => m.k7(),
    }
}

/// Vector operations on register indices, dispatched on the ISA.
struct V {
    a: CodeAssembler,
    isa: Isa,
}

impl V {
    fn vmem(&self, m: AsmMemoryOperand) -> AsmMemoryOperand {
        match self.isa {
            Isa::Avx2 => ymmword_ptr(m),
            Isa::Avx512 => zmmword_ptr(m),
        }
    }
    fn zero(&mut self, r: usize) -> Result<(), IcedError> {
        match self.isa {
            Isa::Avx2 => self.a.vxorps(YMM[r], YMM[r], YMM[r]),
            // xmm form zeroes the whole zmm and stays VEX-encodable for r < 16.
            Isa::Avx512 => self.a.vpxord(ZMM[r], ZMM[r], ZMM[r]),
        }
    }
    fn load(&mut self, r: usize, m: AsmMemoryOperand) -> Result<(), IcedError> {
        let m = self.vmem(m);
        match self.isa {
            Isa::Avx2 => self.a.vmovups(YMM[r], m),
            Isa::Avx512 => self.a.vmovups(ZMM[r], m),
        }
    }
    /// Masked load (zeroing); `mask` is a ymm index (AVX2) or ignored (AVX-512 uses k1).
    fn load_masked(&mut self, r: usize, m: AsmMemoryOperand, mask: usize) -> Result<(), IcedError> {
        let m = self.vmem(m);
        match self.isa {
            Isa::Avx2 => self.a.vmaskmovps(YMM[r], YMM[mask], m),
            Isa::Avx512 => self.a.vmovups(ZMM[r].k1().z(), m),
        }
    }
    fn store(&mut self, m: AsmMemoryOperand, r: usize) -> Result<(), IcedError> {
        let m = self.vmem(m);
        match self.isa {
            Isa::Avx2 => self.a.vmovups(m, YMM[r]),
            Isa::Avx512 => self.a.vmovups(m, ZMM[r]),
        }
    }
    fn store_masked(
        &mut self,
        m: AsmMemoryOperand,
        r: usize,
        mask: usize,
    ) -> Result<(), IcedError> {
        let m = self.vmem(m);
        match self.isa {
            Isa::Avx2 => self.a.vmaskmovps(m, YMM[mask], YMM[r]),
            Isa::Avx512 => self.a.vmovups(m.k1(), ZMM[r]),
        }
    }
    fn bcst(&mut self, r: usize, m: AsmMemoryOperand) -> Result<(), IcedError> {
        match self.isa {
            Isa::Avx2 => self.a.vbroadcastss(YMM[r], dword_ptr(m)),
            Isa::Avx512 => self.a.vbroadcastss(ZMM[r], dword_ptr(m)),
        }
    }
    /// Broadcast the f32 with bits `bits` (through eax).
    fn bcst_const(&mut self, r: usize, bits: u32) -> Result<(), IcedError> {
        self.a.mov(eax, bits)?;
        match self.isa {
            Isa::Avx2 => {
                self.a.vmovd(XMM[r], eax)?;
                self.a.vbroadcastss(YMM[r], XMM[r])
            }
            Isa::Avx512 => self.a.vpbroadcastd(ZMM[r], eax),
        }
    }
    /// `acc += x * b`.
    fn fma231(&mut self, acc: usize, x: usize, b: usize) -> Result<(), IcedError> {
        match self.isa {
            Isa::Avx2 => self.a.vfmadd231ps(YMM[acc], YMM[x], YMM[b]),
            Isa::Avx512 => self.a.vfmadd231ps(ZMM[acc], ZMM[x], ZMM[b]),
        }
    }
    /// `v = v * s + t`.
    fn fma213(&mut self, v: usize, s: usize, t: usize) -> Result<(), IcedError> {
        match self.isa {
            Isa::Avx2 => self.a.vfmadd213ps(YMM[v], YMM[s], YMM[t]),
            Isa::Avx512 => self.a.vfmadd213ps(ZMM[v], ZMM[s], ZMM[t]),
        }
    }
    fn binop(&mut self, op: u8, v: usize, t: usize) -> Result<(), IcedError> {
        match (self.isa, op) {
            (Isa::Avx2, b'*') => self.a.vmulps(YMM[v], YMM[v], YMM[t]),
            (Isa::Avx2, b'+') => self.a.vaddps(YMM[v], YMM[v], YMM[t]),
            (Isa::Avx2, b'>') => self.a.vmaxps(YMM[v], YMM[v], YMM[t]),
            (Isa::Avx2, _) => self.a.vminps(YMM[v], YMM[v], YMM[t]),
            (Isa::Avx512, b'*') => self.a.vmulps(ZMM[v], ZMM[v], ZMM[t]),
            (Isa::Avx512, b'+') => self.a.vaddps(ZMM[v], ZMM[v], ZMM[t]),
            (Isa::Avx512, b'>') => self.a.vmaxps(ZMM[v], ZMM[v], ZMM[t]),
            (Isa::Avx512, _) => self.a.vminps(ZMM[v], ZMM[v], ZMM[t]),
        }
    }
}

/// `x = f(x)` on zmm register `x`, with zmm24..=27 as temporaries (free after the k loop
/// when there are at most 24 accumulators). The sequence mirrors `Em::vexp` / `Em::act`.
fn activation(v: &mut V, f: ActOp, x: usize, c: &[CodeLabel]) -> Result<(), IcedError> {
    let (t0, t1, t2, t3) = (ZMM[24], ZMM[25], ZMM[26], ZMM[27]);
    let k = |i: usize| dword_bcst(c[i]);
    // t3 = sigmoid(src) = 1 / (1 + exp(-src)); src may be t3.
    let sigmoid = |v: &mut V, src: AsmRegisterZmm| -> Result<(), IcedError> {
        v.a.vpxord(t3, src, k(0))?;
        v.a.vmaxps(t3, t3, k(1))?;
        v.a.vminps(t3, t3, k(2))?;
        v.a.vmulps(t0, t3, k(3))?;
        v.a.vrndscaleps(t0, t0, 0)?;
        v.a.vmovaps(t1, t3)?;
        v.a.vfmadd231ps(t1, t0, k(4))?;
        v.a.vfmadd231ps(t1, t0, k(5))?;
        v.a.vbroadcastss(t2, dword_ptr(c[6]))?;
        for i in 7..=12 {
            v.a.vfmadd213ps(t2, t1, k(i))?;
        }
        v.a.vcvtps2dq(t0, t0)?;
        v.a.vpaddd(t0, t0, k(13))?;
        v.a.vpslld(t0, t0, 23)?;
        v.a.vmulps(t3, t2, t0)?;
        v.a.vaddps(t3, t3, k(11))?;
        v.a.vbroadcastss(t1, dword_ptr(c[11]))?;
        v.a.vdivps(t3, t1, t3)
    };
    let xr = ZMM[x];
    match f {
        ActOp::Sigmoid => {
            sigmoid(v, xr)?;
            v.a.vmovaps(xr, t3)
        }
        ActOp::Silu => {
            sigmoid(v, xr)?;
            v.a.vmulps(xr, xr, t3)
        }
        ActOp::Tanh => {
            v.a.vmulps(t3, xr, k(14))?;
            sigmoid(v, t3)?;
            v.a.vmulps(xr, t3, k(14))?;
            v.a.vsubps(xr, xr, k(11))
        }
        ActOp::HardSigmoid | ActOp::HardSwish => {
            v.a.vaddps(t0, xr, k(15))?;
            v.a.vpxord(t1, t1, t1)?;
            v.a.vmaxps(t0, t0, t1)?;
            v.a.vminps(t0, t0, k(16))?;
            if f == ActOp::HardSwish {
                v.a.vmulps(t0, xr, t0)?;
            }
            v.a.vmulps(xr, t0, k(17))
        }
    }
}

/// `x = f(x)` on ymm register `x` (AVX2), with `temps` as temporaries; `c` labels the
/// constants of [`ACT_CONSTS`], each stored as a whole vector (there is no embedded
/// broadcast). The sequence is [`activation`]'s with the polynomial kept in the register
/// of the clamped input, and a NaN input gives NaN (`vmaxps` would turn it into the
/// clamp bound).
fn activation_avx2(
    v: &mut V,
    f: ActOp,
    x: usize,
    temps: [usize; 3],
    c: &[CodeLabel],
) -> Result<(), IcedError> {
    let [t0, t1, t3] = temps.map(|r| YMM[r]);
    let k = |i: usize| ymmword_ptr(c[i]);
    // t3 = sigmoid(src) = 1 / (1 + exp(-src)); src may be t3.
    let sigmoid = |v: &mut V, src: AsmRegisterYmm| -> Result<(), IcedError> {
        v.a.vxorps(t3, src, k(0))?;
        v.a.vmaxps(t3, t3, k(1))?;
        v.a.vminps(t3, t3, k(2))?;
        v.a.vmulps(t0, t3, k(3))?;
        v.a.vroundps(t0, t0, 0)?;
        v.a.vmovaps(t1, t3)?;
        v.a.vfmadd231ps(t1, t0, k(4))?;
        v.a.vfmadd231ps(t1, t0, k(5))?;
        v.a.vmovups(t3, k(6))?;
        for i in 7..=12 {
            v.a.vfmadd213ps(t3, t1, k(i))?;
        }
        v.a.vcvtps2dq(t0, t0)?;
        v.a.vpaddd(t0, t0, k(13))?;
        v.a.vpslld(t0, t0, 23)?;
        v.a.vmulps(t3, t3, t0)?;
        v.a.vaddps(t3, t3, k(11))?;
        v.a.vmovups(t1, k(11))?;
        v.a.vdivps(t3, t1, t3)
    };
    // Where `x` is NaN, `t3 = x` (t1 is free again).
    let keep_nan = |v: &mut V, xr: AsmRegisterYmm| -> Result<(), IcedError> {
        v.a.vcmpunordps(t1, xr, xr)?;
        v.a.vblendvps(t3, t3, xr, t1)
    };
    let xr = YMM[x];
    match f {
        ActOp::Sigmoid => {
            sigmoid(v, xr)?;
            keep_nan(v, xr)?;
            v.a.vmovaps(xr, t3)
        }
        // x · sigmoid(x): a NaN `x` makes the product NaN.
        ActOp::Silu => {
            sigmoid(v, xr)?;
            v.a.vmulps(xr, xr, t3)
        }
        ActOp::Tanh => {
            v.a.vmulps(t3, xr, k(14))?;
            sigmoid(v, t3)?;
            v.a.vmulps(t3, t3, k(14))?;
            v.a.vsubps(t3, t3, k(11))?;
            keep_nan(v, xr)?;
            v.a.vmovaps(xr, t3)
        }
        ActOp::HardSigmoid | ActOp::HardSwish => {
            v.a.vaddps(t0, xr, k(15))?;
            v.a.vxorps(t1, t1, t1)?;
            v.a.vmaxps(t0, t0, t1)?;
            v.a.vminps(t0, t0, k(16))?;
            if f == ActOp::HardSwish {
                v.a.vmulps(t0, xr, t0)?;
            }
            v.a.vmulps(xr, t0, k(17))
        }
    }
}

/// `int cpu_level(void)`: 4 when this CPU and OS run the AVX-512 microkernels (AVX-512F
/// with the opmask and zmm state enabled in XCR0), 3 for the AVX2 ones (AVX2 + FMA with the
/// ymm state enabled), else 2. System V, saves the `rbx` that `cpuid` clobbers.
pub fn assemble_cpu_level() -> Result<Vec<u8>, String> {
    cpu_level_inner().map_err(|e| format!("assembling cpu_level: {e}"))
}

fn cpu_level_inner() -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let mut done = a.create_label();
    a.push(rbx)?;
    a.mov(r9d, 2)?;
    // Leaf 7 must exist.
    a.xor(eax, eax)?;
    a.cpuid()?;
    a.cmp(eax, 7)?;
    a.jb(done)?;
    // Leaf 1: OSXSAVE (27), AVX (28), FMA (12).
    a.mov(eax, 1)?;
    a.cpuid()?;
    for bit in [27, 28, 12] {
        a.bt(ecx, bit)?;
        a.jae(done)?;
    }
    // XCR0: SSE and AVX state (bits 1, 2) saved by the OS.
    a.xor(ecx, ecx)?;
    a.xgetbv()?;
    a.mov(r10d, eax)?;
    a.and(eax, 6)?;
    a.cmp(eax, 6)?;
    a.jne(done)?;
    // Leaf 7: AVX2 (ebx 5), then AVX-512F (ebx 16) with opmask/zmm state (XCR0 5, 6, 7).
    a.mov(eax, 7)?;
    a.xor(ecx, ecx)?;
    a.cpuid()?;
    a.bt(ebx, 5)?;
    a.jae(done)?;
    a.mov(r9d, 3)?;
    a.bt(ebx, 16)?;
    a.jae(done)?;
    a.and(r10d, 0xE0)?;
    a.cmp(r10d, 0xE0)?;
    a.jne(done)?;
    a.mov(r9d, 4)?;
    a.set_label(&mut done)?;
    a.mov(eax, r9d)?;
    a.pop(rbx)?;
    a.ret()?;
    a.assemble(0)
}

/// Assembles the microkernel `spec` (see the module documentation).
pub fn assemble(spec: &Spec) -> Result<Vec<u8>, String> {
    let r = if let Some(k) = &spec.rows {
        match k {
            RowKernel::MaxPool(p) => pool::assemble_pool(p),
            RowKernel::PadPlanes(p) => pad::assemble_pad(p),
        }
    } else if spec.chanvec {
        chanvec::assemble_chanvec(spec)
    } else {
        assemble_inner(spec)
    };
    r.map_err(|e| format!("assembling {}: {e}", spec.name()))
}

fn assemble_inner(spec: &Spec) -> Result<Vec<u8>, IcedError> {
    let isa = Isa::of(&spec.vector);
    let (mr, nv, vl) = (spec.mr, spec.nv, isa.vl());
    assert!(mr >= 1 && mr <= isa.mr() && nv >= 1 && nv <= isa.nv());
    assert!(!spec.taps.is_empty());
    let ntaps = spec.taps.len();
    if let Some(m) = spec.remap {
        assert!(isa == Isa::Avx512 && nv <= 2 && !spec.masked && (2..=3).contains(&m.pieces));
    }
    let tap_masks = spec.tap_masks != TapMasks::Off;
    let by_column = match spec.tap_masks {
        TapMasks::FmasByColumn(kw) => {
            let kw = kw as usize;
            assert!((1..=3).contains(&kw) && spec.taps.len().is_multiple_of(kw));
            Some(kw)
        }
        _ => None,
    };
    assert!(!tap_masks || (isa == Isa::Avx512 && spec.remap.is_none()));
    let (gap, pieces) = spec.remap.map_or((0, 0), |m| (m.gap, m.pieces));
    let ebase = spec
        .remap
        .map_or(if tap_masks { 2 } else { 1 }, |m| m.slots_at()) as i32;
    // Mask register of piece b of vector j.
    let kmask = |j: usize, b: usize| -> usize { 2 + j * pieces + b };
    // Masked input loads need the mask register through the loop (AVX-512: k1); tap
    // masks already drop the positions past the last.
    let mask_x = spec.masked && isa == Isa::Avx512 && !tap_masks;
    assert!(
        spec.ops
            .iter()
            .filter(|o| matches!(o, EpOp::AddRows(_)))
            .count()
            <= 1
    );
    let nacc = mr * nv;
    let acc = |r: usize, v: usize| r * nv + v;
    // Registers: accumulators, then the x vectors, then broadcast registers.
    let xr0 = nacc;
    let b0 = xr0 + nv;
    let nb = isa.regs() - b0;
    assert!(nb >= 1);
    // After the loop: mask (AVX2) and two temporaries.
    let (mask, t1, t2) = (isa.regs() - 3, isa.regs() - 2, isa.regs() - 1);
    assert!(mask >= nacc);
    let vb = (vl * 4) as i32; // bytes per vector
    let mut v = V {
        a: CodeAssembler::new(64)?,
        isa,
    };
    let table = v.a.create_label();
    let consts: Vec<CodeLabel> = ACT_CONSTS.iter().map(|_| v.a.create_label()).collect();
    let last = nv - 1;

    // The mask of the last vector from n = ep[0]: lanes l with l < n - last*vl.
    let make_mask = |v: &mut V, table: CodeLabel| -> Result<(), IcedError> {
        v.a.mov(rax, qword_ptr(r9))?;
        v.a.sub(eax, (last * vl) as u32)?;
        match isa {
            Isa::Avx2 => {
                v.a.vmovd(XMM[mask], eax)?;
                v.a.vpbroadcastd(YMM[mask], XMM[mask])?;
                v.a.vpcmpgtd(YMM[mask], YMM[mask], ymmword_ptr(table))
            }
            Isa::Avx512 => {
                v.a.vpbroadcastd(ZMM[t1], eax)?;
                v.a.vpcmpgtd(k1, ZMM[t1], zmmword_ptr(table))
            }
        }
    };

    // ---- initial accumulators ----
    if mask_x || (spec.accumulate && spec.masked) {
        make_mask(&mut v, table)?;
    }
    for j in 0..nv {
        for b in 0..pieces {
            let kr = [k2, k3, k4, k5, k6, k7][kmask(j, b) - 2];
            v.a.kmovw(kr, word_ptr(r9 + (24 + 2 * (j * pieces + b)) as i32))?;
        }
    }
    if spec.accumulate {
        v.a.mov(r10, rdx)?;
        if spec.remap.is_some() {
            v.a.mov(rax, qword_ptr(r9 + 8))?;
            v.a.mov(r11, qword_ptr(r9 + 16))?;
        }
        for r in 0..mr {
            for j in 0..nv {
                let m = r10 + (j as i32) * vb;
                if spec.remap.is_some() {
                    let off = if j == 0 { rax } else { r11 };
                    let a = acc(r, j);
                    for b in 0..pieces {
                        let m = zmmword_ptr(r10 + off + (j as i32 * vb - b as i32 * gap));
                        let dst = zk(ZMM[a], kmask(j, b));
                        if b == 0 {
                            v.a.vmovups(dst.z(), m)?;
                        } else {
                            v.a.vmovups(dst, m)?;
                        }
                    }
                } else if spec.masked && j == last {
                    v.load_masked(acc(r, j), m, mask)?;
                } else {
                    v.load(acc(r, j), m)?;
                }
            }
            if r + 1 < mr {
                v.a.add(r10, r8)?;
            }
        }
    } else {
        for i in 0..nacc {
            v.zero(i)?;
        }
    }

    // ---- k loop ----
    let xs = (spec.xstride * 4) as i32;
    let mut bi = 0usize;
    // One reduction row: step `u` of the unrolled body, tap `t`.
    let row = |v: &mut V, u: usize, t: usize, bi: &mut usize| -> Result<(), IcedError> {
        let xo = u as i32 * xs + spec.taps[t] * 4;
        for j in 0..nv {
            let m = rsi + (xo + j as i32 * vb);
            if tap_masks && by_column.is_none() {
                // k2, k3: this tap's masks of vectors 0, 1 (r11: the tile's masks).
                let kr = [k2, k3][j];
                v.a.kmovw(kr, word_ptr(r11 + (4 * t + 2 * j) as i32))?;
            }
            if spec.tap_masks == TapMasks::FmasAndLoads {
                v.a.vmovups(zk(ZMM[xr0 + j], 2 + j).z(), zmmword_ptr(m))?;
            } else if mask_x && j == last {
                v.load_masked(xr0 + j, m, mask)?;
            } else {
                v.load(xr0 + j, m)?;
            }
        }
        // A new input row (the first tap, or one more than a vector past the previous
        // tap): its lines PREFETCH_TILES tiles ahead.
        let new_row = t == 0 || spec.taps[t] - spec.taps[t - 1] > vl as i32;
        if spec.prefetch_x && new_row {
            let ahead = (PREFETCH_TILES * nv) as i32 * vb;
            for j in 0..nv {
                v.a.prefetcht1(byte_ptr(rsi + (xo + ahead + j as i32 * vb)))?;
            }
        }
        let wrow = (u * ntaps + t) * mr * 4;
        // One prefetch per 64 bytes of weights, PREFETCH_STEPS rows ahead: at the multiples
        // of 64 (relative to this iteration's `rdi`) that fall inside this row.
        let ahead = PREFETCH_STEPS * mr * 4;
        for line in (wrow.div_ceil(64) * 64..wrow + mr * 4).step_by(64) {
            v.a.prefetcht0(byte_ptr(rdi + (ahead + line) as i32))?;
        }
        for r in 0..mr {
            let b = b0 + *bi % nb;
            *bi += 1;
            v.bcst(b, rdi + (wrow + r * 4) as i32)?;
            for j in 0..nv {
                if tap_masks {
                    let k = match by_column {
                        Some(kw) => 2 + 2 * (t % kw) + j,
                        None => 2 + j,
                    };
                    v.a.vfmadd231ps(zk(ZMM[acc(r, j)], k), ZMM[xr0 + j], ZMM[b])?;
                } else {
                    v.fma231(acc(r, j), xr0 + j, b)?;
                }
            }
        }
        Ok(())
    };
    if tap_masks {
        v.a.mov(r11, qword_ptr(r9 + 8))?;
    }
    if let Some(kw) = by_column {
        for kx in 0..kw {
            for j in 0..nv {
                let kr = [k2, k3, k4, k5, k6, k7][2 * kx + j];
                v.a.kmovw(kr, word_ptr(r11 + (4 * kx + 2 * j) as i32))?;
            }
        }
    }
    k_loop(
        &mut v,
        ntaps,
        (ntaps * mr * 4) as i32,
        xs,
        &mut |v, u, t| row(v, u, t, &mut bi),
    )?;

    // ---- epilogue and stores, row by row ----
    if spec.masked && !mask_x {
        make_mask(&mut v, table)?;
    }
    v.a.mov(r10, rdx)?;
    if spec.remap.is_some() {
        v.a.mov(rsi, qword_ptr(r9 + 8))?;
        v.a.mov(rdi, qword_ptr(r9 + 16))?;
    }
    if let Some(EpOp::AddRows(s)) = spec.ops.iter().find(|o| matches!(o, EpOp::AddRows(_))) {
        v.a.mov(r11, qword_ptr(r9 + 8 * (ebase + *s as i32)))?;
    }
    let slot = |s: u8| r9 + 8 * (ebase + s as i32);
    for r in 0..mr {
        let ro = (r * 4) as i32;
        for op in &spec.ops {
            match *op {
                EpOp::ScaleShift(a, b) => {
                    v.a.mov(rax, qword_ptr(slot(a)))?;
                    v.bcst(t1, rax + ro)?;
                    v.a.mov(rax, qword_ptr(slot(b)))?;
                    v.bcst(t2, rax + ro)?;
                    for j in 0..nv {
                        v.fma213(acc(r, j), t1, t2)?;
                    }
                }
                EpOp::Scale(a) | EpOp::Shift(a) => {
                    v.a.mov(rax, qword_ptr(slot(a)))?;
                    v.bcst(t1, rax + ro)?;
                    let o = if matches!(op, EpOp::Scale(_)) {
                        b'*'
                    } else {
                        b'+'
                    };
                    for j in 0..nv {
                        v.binop(o, acc(r, j), t1)?;
                    }
                }
                EpOp::AddRows(_) => {
                    for j in 0..nv {
                        let m = r11 + (j as i32) * vb;
                        if spec.remap.is_some() {
                            let off = if j == 0 { rsi } else { rdi };
                            for b in 0..pieces {
                                let m = zmmword_ptr(r11 + off + (j as i32 * vb - b as i32 * gap));
                                let dst = zk(ZMM[t1], kmask(j, b));
                                if b == 0 {
                                    v.a.vmovups(dst.z(), m)?;
                                } else {
                                    v.a.vmovups(dst, m)?;
                                }
                            }
                        } else if spec.masked && j == last {
                            v.load_masked(t1, m, mask)?;
                        } else {
                            v.load(t1, m)?;
                        }
                        v.binop(b'+', acc(r, j), t1)?;
                    }
                }
                EpOp::Act(f) => {
                    for j in 0..nv {
                        match isa {
                            Isa::Avx512 => {
                                assert!(nacc <= 24);
                                activation(&mut v, f, acc(r, j), &consts)?;
                            }
                            // The first x register is free after the loop; `mask` is not.
                            Isa::Avx2 => {
                                activation_avx2(&mut v, f, acc(r, j), [xr0, t1, t2], &consts)?
                            }
                        }
                    }
                }
                EpOp::Max(bits) | EpOp::Min(bits) => {
                    v.bcst_const(t1, bits)?;
                    let o = if matches!(op, EpOp::Max(_)) {
                        b'>'
                    } else {
                        b'<'
                    };
                    for j in 0..nv {
                        v.binop(o, acc(r, j), t1)?;
                    }
                }
            }
        }
        for j in 0..nv {
            let m = r10 + (j as i32) * vb;
            if spec.remap.is_some() {
                let off = if j == 0 { rsi } else { rdi };
                for b in 0..pieces {
                    let m = zmmword_ptr(r10 + off + (j as i32 * vb - b as i32 * gap));
                    v.a.vmovups(mk(m, kmask(j, b)), ZMM[acc(r, j)])?;
                }
            } else if spec.masked && j == last {
                v.store_masked(m, acc(r, j), mask)?;
            } else {
                v.store(m, acc(r, j))?;
            }
        }
        if r + 1 < mr {
            v.a.add(r10, r8)?;
            v.a.add(r11, r8)?;
        }
    }
    v.a.vzeroupper()?;
    finish(v, table, consts)
}

/// The reduction loop of both kernel kinds: `rcx` steps of `ntaps` rows, `row(v, u, t)`
/// emitting row `t` of step `u` of the unrolled body; after each pass `rdi` advances
/// `step_w` bytes per step and `rsi` `xs`. One tap unrolls [`UNROLL`] steps (and loops over
/// the rest); several taps are the unrolled body. Uses `rax`, and `ecx` for the tail.
fn k_loop(
    v: &mut V,
    ntaps: usize,
    step_w: i32,
    xs: i32,
    row: &mut dyn FnMut(&mut V, usize, usize) -> Result<(), IcedError>,
) -> Result<(), IcedError> {
    let unroll = if ntaps == 1 { UNROLL } else { 1 };
    let mut main = v.a.create_label();
    let mut tail = v.a.create_label();
    let mut tail_loop = v.a.create_label();
    let mut done = v.a.create_label();
    v.a.mov(rax, rcx)?;
    if unroll > 1 {
        v.a.shr(rax, unroll.trailing_zeros())?;
        v.a.jz(tail)?;
    }
    v.a.set_label(&mut main)?;
    for u in 0..unroll {
        for t in 0..ntaps {
            row(v, u, t)?;
        }
    }
    v.a.add(rdi, unroll as i32 * step_w)?;
    v.a.add(rsi, unroll as i32 * xs)?;
    v.a.dec(rax)?;
    v.a.jnz(main)?;
    if unroll > 1 {
        v.a.set_label(&mut tail)?;
        v.a.and(ecx, (unroll - 1) as u32)?;
        v.a.jz(done)?;
        v.a.set_label(&mut tail_loop)?;
        for t in 0..ntaps {
            row(v, 0, t)?;
        }
        v.a.add(rdi, step_w)?;
        v.a.add(rsi, xs)?;
        v.a.dec(ecx)?;
        v.a.jnz(tail_loop)?;
    }
    v.a.set_label(&mut done)
}

/// The row kernels' load (`pool.rs`, `pad.rs`): into `r` the 16 floats at columns
/// `col + s*l` (lane `l`, stride `s` 1 or 2) of the `w`-float row at `base + 4*row` bytes,
/// `fill` in the lanes whose column is outside `0..w` (nothing is read there). Stride 2
/// loads the 32 floats the lanes span (the second into `tmp`) and keeps the even ones with
/// the index vector `evens` (see [`even_lanes_table`]). Uses `eax` and `k2`.
#[allow(clippy::too_many_arguments)]
fn load_row_lanes(
    a: &mut CodeAssembler,
    r: AsmRegisterZmm,
    tmp: AsmRegisterZmm,
    fill: AsmRegisterZmm,
    evens: AsmRegisterZmm,
    stride: usize,
    base: AsmRegister64,
    row: i64,
    col: i64,
    w: usize,
) -> Result<(), IcedError> {
    let half = |a: &mut CodeAssembler, r: AsmRegisterZmm, col: i64| {
        let m = zmmword_ptr(base + ((row + col) * 4) as i32);
        let bits: u32 = (0..16)
            .filter(|&l| (0..w as i64).contains(&(col + l)))
            .map(|l| 1u32 << l)
            .sum();
        if bits == 0xffff {
            return a.vmovups(r, m);
        }
        a.vmovaps(r, fill)?;
        if bits != 0 {
            a.mov(eax, bits)?;
            a.kmovw(k2, eax)?;
            a.vmovups(r.k2(), m)?;
        }
        Ok(())
    };
    half(a, r, col)?;
    if stride == 2 {
        half(a, tmp, col + 16)?;
        a.vpermt2ps(r, evens, tmp)?;
    }
    Ok(())
}

/// At `label`: the i32 lane indices 0, 2, ..., 30 (`vpermt2ps` keeping the even floats
/// of two vectors).
fn even_lanes_table(a: &mut CodeAssembler, label: &mut CodeLabel) -> Result<(), IcedError> {
    a.set_label(label)?;
    for l in 0..16u32 {
        a.dd(&[2 * l])?;
    }
    Ok(())
}

/// `ret`, then the tables both kernel kinds address: lane indices 0..16 (i32, for masks;
/// unaligned loads are fine) and the activation constants.
fn finish(
    mut v: V,
    mut table: CodeLabel,
    mut consts: Vec<CodeLabel>,
) -> Result<Vec<u8>, IcedError> {
    v.a.ret()?;
    v.a.set_label(&mut table)?;
    v.a.db(&LANE_TABLE)?;
    // AVX-512 broadcasts each constant from one dword; AVX2 reads whole 8-lane vectors.
    let copies = match v.isa {
        Isa::Avx2 => 8,
        Isa::Avx512 => 1,
    };
    for (i, c) in ACT_CONSTS.iter().enumerate() {
        v.a.set_label(&mut consts[i])?;
        for _ in 0..copies {
            v.a.db(&c.to_le_bytes())?;
        }
    }
    v.a.assemble(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembles_every_shape() {
        for isa in [Isa::Avx2, Isa::Avx512] {
            for mr in 1..=isa.mr() {
                for nv in 1..=isa.nv() {
                    for masked in [false, true] {
                        let s = Spec {
                            mr,
                            nv,
                            masked,
                            accumulate: masked,
                            xstride: isa.nr(),
                            ops: vec![
                                EpOp::ScaleShift(0, 1),
                                EpOp::AddRows(2),
                                EpOp::Max(0),
                                EpOp::Min(6.0f32.to_bits()),
                            ],
                            ..Spec::new(isa.vector())
                        };
                        let b = assemble(&s).unwrap();
                        assert!(b.len() > 16);
                    }
                }
            }
        }
    }
}
