//! Cranelift lowering of the kernels of a [`Plan`](crate::plan::Plan).
//!
//! Every kernel is one function with the signature
//! `fn(weights: *const f32, ptrs: *const *mut f32, scratch: *mut f32, lo: i64, hi: i64)`:
//! `weights` is the packed parameter blob, `ptrs` the base pointers of the storage slots
//! (workspace, graph inputs, graph outputs), `scratch` this thread's private scratch, and
//! the call computes work units `[lo, hi)`. All shapes are compile-time constants.
//!
//! The GEMM path (`emit_gemm`) packs a block of input pixels into panels `[panel][K][nr]`
//! (im2col for non-pointwise convs; 4-pixel groups, zero lanes past the image) and then
//! either calls the fallback microkernel [`emit_ukernel`] (8x4, tile in scratch, epilogue
//! by the caller) or, on the wide path (`wide_multiply`), the assembled microkernels of
//! the ISA layer (`isa/x64/asm.rs`), which write straight into the output (row stride = pixels) and apply the
//! fusable epilogue prefix themselves; Cranelift code applies the rest in place.

mod col2im;
mod conv_transpose;
mod define;
mod dense;
mod direct;
mod gemm;
mod norm;
mod padded;
mod pool;
mod resize;
mod rows;
mod shuffle;

use col2im::*;
use conv_transpose::*;
pub use define::Texts;
pub(crate) use define::{define_kernels, define_wide};
use dense::*;
use direct::*;
use gemm::*;
use norm::*;
use padded::*;
use pool::*;
use resize::*;
use rows::*;
use shuffle::*;

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::immediates::Ieee32;
use cranelift_codegen::ir::types::{F32, F32X4, I32, I32X4, I64};
use cranelift_codegen::ir::{
    AbiParam, FuncRef, Function, InstBuilder, MemFlagsData, Signature, StackSlotData,
    StackSlotKind, Value,
};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::{FunctionBuilder, Variable};

use bnc_ir::Activation;

use crate::plan::{
    CV_CHANNELS, CV_TILE_FLOATS, ConvGeom, Epi, Kernel, KernelKind, MR, NR, View, balanced_tiles,
    chanvec_group_floats, depthwise_qw,
};
use crate::plan::{Slot, fuse_prefix, pool_q};
use crate::ukernel::{EpOp, PadRows, PoolRows, Remap, RowKernel, Spec, TapMasks, Vector};

/// The kernel signature (see the module documentation).
pub(crate) fn kernel_signature(cc: CallConv) -> Signature {
    let mut sig = Signature::new(cc);
    for _ in 0..5 {
        sig.params.push(AbiParam::new(I64));
    }
    sig
}

/// The assembled microkernels' signature: `(w, x, c, k, ldc, ep)`, all i64 (see `asm`).
pub(crate) fn wide_ukernel_signature(cc: CallConv) -> Signature {
    let mut sig = Signature::new(cc);
    for _ in 0..6 {
        sig.params.push(AbiParam::new(I64));
    }
    sig
}

/// The microkernel signature: `(w_panel, x_panel, tile, k)`, all i64.
pub(crate) fn ukernel_signature(cc: CallConv) -> Signature {
    let mut sig = Signature::new(cc);
    for _ in 0..4 {
        sig.params.push(AbiParam::new(I64));
    }
    sig
}

/// Plain data access: may not trap (all addresses are in bounds by construction).
fn data() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Memory never written while the function runs (weights, pointer table, packed panels in
/// the microkernel): lets the optimiser move and hoist the loads.
fn ro() -> MemFlagsData {
    MemFlagsData::new()
        .with_notrap()
        .with_readonly()
        .with_can_move()
}

/// The GEMM microkernel, `MR x NR = 8 x 4`:
///
/// ```text
/// ukernel(w: *const f32  /* packed weight panel [k][MR]  */,
///         x: *const f32  /* packed input panel  [k][NR]  */,
///         c: *mut f32    /* tile [MR][NR], row stride NR, overwritten */,
///         k: i64)
/// c[r][j] = sum_{kk < k} w[kk][r] * x[kk][j]     (sum in order kk = 0, 1, ..)
/// ```
///
/// Tile shape: 8 output channels by 4 pixels, one f32x4 accumulator per channel. Per step
/// of `k` it loads one input vector and broadcasts 8 weights, each used by exactly one FMA:
/// Cranelift's `fma` lowers to `vfmadd213ps`, which overwrites a multiplicand, so a
/// broadcast that dies in its FMA costs no register copy, and 8 accumulators + 1 input +
/// broadcasts fit the 16 xmm registers without spills. Cranelift does not unroll, so the
/// body is emitted twice per loop trip. Panel loads are readonly + can_move; the tile
/// stores use plain flags. The caller applies the epilogue to the tile (in L1).
pub(crate) fn emit_ukernel(b: &mut FunctionBuilder, fma: bool) {
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let p = b.block_params(entry).to_vec();
    let (w, x, c, k) = (p[0], p[1], p[2], p[3]);
    let zero = b.ins().f32const(Ieee32::with_float(0.0));
    let zv = b.ins().splat(F32X4, zero);
    let accs: Vec<Variable> = (0..MR).map(|_| b.declare_var(F32X4)).collect();
    for &a in &accs {
        b.def_var(a, zv);
    }
    let wv = b.declare_var(I64);
    let xv = b.declare_var(I64);
    let kv = b.declare_var(I64);
    b.def_var(wv, w);
    b.def_var(xv, x);
    b.def_var(kv, k);
    let step = |b: &mut FunctionBuilder, unroll: usize| {
        let wp = b.use_var(wv);
        let xp = b.use_var(xv);
        for u in 0..unroll {
            let xvec = b.ins().load(F32X4, ro(), xp, (u * NR * 4) as i32);
            for (r, &a) in accs.iter().enumerate() {
                let ws = b.ins().load(F32, ro(), wp, ((u * MR + r) * 4) as i32);
                let wsp = b.ins().splat(F32X4, ws);
                let acc = b.use_var(a);
                let nacc = if fma {
                    b.ins().fma(wsp, xvec, acc)
                } else {
                    let m = b.ins().fmul(wsp, xvec);
                    b.ins().fadd(m, acc)
                };
                b.def_var(a, nacc);
            }
        }
        let nw = b.ins().iadd_imm_s(wp, (unroll * MR * 4) as i64);
        let nx = b.ins().iadd_imm_s(xp, (unroll * NR * 4) as i64);
        b.def_var(wv, nw);
        b.def_var(xv, nx);
        let kk = b.use_var(kv);
        let nk = b.ins().iadd_imm_s(kk, -(unroll as i64));
        b.def_var(kv, nk);
    };
    // Main loop, two steps per trip.
    let hdr = b.create_block();
    let body = b.create_block();
    let tail = b.create_block();
    let tail_body = b.create_block();
    let done = b.create_block();
    b.ins().jump(hdr, &[]);
    b.switch_to_block(hdr);
    let kk = b.use_var(kv);
    let more = b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, kk, 2);
    b.ins().brif(more, body, &[], tail, &[]);
    b.switch_to_block(body);
    step(b, 2);
    b.ins().jump(hdr, &[]);
    b.switch_to_block(tail);
    let kk = b.use_var(kv);
    let one = b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, kk, 1);
    b.ins().brif(one, tail_body, &[], done, &[]);
    b.switch_to_block(tail_body);
    step(b, 1);
    b.ins().jump(done, &[]);
    b.switch_to_block(done);
    for (r, &a) in accs.iter().enumerate() {
        let v = b.use_var(a);
        b.ins().store(data(), v, c, (r * NR * 4) as i32);
    }
    b.ins().return_(&[]);
    b.seal_all_blocks();
}

/// exp's Taylor coefficients 1/7!, 1/6!, …, 1/1!, 1/0!, highest degree first.
const EXP_TAYLOR: [f32; 8] = [
    1.0 / 5040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
    1.0,
    1.0,
];

/// Emission state for one kernel function.
pub(crate) struct Em<'a, 'b> {
    pub b: &'a mut FunctionBuilder<'b>,
    pub fma: bool,
    wts: Value,
    ptrs: Value,
    scratch: Value,
}

impl<'a, 'b> Em<'a, 'b> {
    fn ic(&mut self, v: i64) -> Value {
        self.b.ins().iconst(I64, v)
    }
    fn fc(&mut self, v: f32) -> Value {
        self.b.ins().f32const(Ieee32::with_float(v))
    }
    fn vc(&mut self, v: f32) -> Value {
        let s = self.fc(v);
        self.b.ins().splat(F32X4, s)
    }
    /// `base + idx * 4` (an f32 element address).
    fn ea(&mut self, base: Value, idx: Value) -> Value {
        let o = self.b.ins().ishl_imm_u(idx, 2);
        self.b.ins().iadd(base, o)
    }
    fn add_i(&mut self, a: Value, k: i64) -> Value {
        if k == 0 {
            a
        } else {
            self.b.ins().iadd_imm_s(a, k)
        }
    }
    fn mul_i(&mut self, a: Value, k: i64) -> Value {
        match k {
            0 => self.ic(0),
            1 => a,
            _ => self.b.ins().imul_imm_s(a, k),
        }
    }
    /// Start of channel `c` of batch item `n` of `v` (channels are `v.s` floats apart).
    fn plane(&mut self, v: &View, n: Value, c: Value) -> Value {
        let base = self.vbase(v, n);
        let off = self.mul_i(c, v.s as i64);
        self.ea(base, off)
    }

    /// Start address of a view for batch item `n` (a Value) — element 0 of `[n, 0, 0]`.
    fn vbase(&mut self, v: &View, n: Value) -> Value {
        let p = self
            .b
            .ins()
            .load(I64, ro(), self.ptrs, (v.storage * 8) as i32);
        let off = self.mul_i(n, v.bstride as i64);
        let off = self.add_i(off, v.offset as i64);
        self.ea(p, off)
    }
    fn wptr(&mut self, off: usize) -> Value {
        self.add_i(self.wts, (off * 4) as i64)
    }
    fn ld4(&mut self, a: Value, off: i32) -> Value {
        self.b.ins().load(F32X4, data(), a, off)
    }
    fn ld1(&mut self, a: Value, off: i32) -> Value {
        self.b.ins().load(F32, data(), a, off)
    }
    fn st(&mut self, v: Value, a: Value, off: i32) {
        self.b.ins().store(data(), v, a, off);
    }
    fn splat(&mut self, s: Value) -> Value {
        self.b.ins().splat(F32X4, s)
    }
    fn lane0(&mut self, v: Value) -> Value {
        self.b.ins().extractlane(v, 0)
    }
    fn fmadd(&mut self, a: Value, b: Value, c: Value) -> Value {
        if self.fma {
            self.b.ins().fma(a, b, c)
        } else {
            let m = self.b.ins().fmul(a, b);
            self.b.ins().fadd(m, c)
        }
    }
    fn mask_f(&mut self, m: Value) -> Value {
        self.b.ins().bitcast(F32X4, MemFlagsData::new(), m)
    }
    /// `cond ? x : y` lane-wise, with `cond = fcmp(cc, a, b)`.
    fn vsel(&mut self, cc: FloatCC, a: Value, b: Value, x: Value, y: Value) -> Value {
        let m = self.b.ins().fcmp(cc, a, b);
        let m = self.mask_f(m);
        self.b.ins().bitselect(m, x, y)
    }
    /// `max(x, lo)` where NaN gives `lo` (as f64::max).
    fn vmax_c(&mut self, x: Value, lo: f32) -> Value {
        let l = self.vc(lo);
        self.vsel(FloatCC::GreaterThan, x, l, x, l)
    }
    /// `min(x, hi)` where NaN gives `hi`.
    fn vmin_c(&mut self, x: Value, hi: f32) -> Value {
        let h = self.vc(hi);
        self.vsel(FloatCC::LessThan, x, h, x, h)
    }

    /// Counted loop `for i in (lo..hi).step_by(step)` with Values as bounds.
    fn lp(&mut self, lo: Value, hi: Value, step: i64, f: impl FnOnce(&mut Self, Value)) {
        let hdr = self.b.create_block();
        let body = self.b.create_block();
        let exit = self.b.create_block();
        self.b.append_block_param(hdr, I64);
        self.b.ins().jump(hdr, &[lo.into()]);
        self.b.switch_to_block(hdr);
        let i = self.b.block_params(hdr)[0];
        let c = self.b.ins().icmp(IntCC::SignedLessThan, i, hi);
        self.b.ins().brif(c, body, &[], exit, &[]);
        self.b.switch_to_block(body);
        f(self, i);
        let nx = self.b.ins().iadd_imm_s(i, step);
        self.b.ins().jump(hdr, &[nx.into()]);
        self.b.switch_to_block(exit);
    }
    /// Loop with constant bounds.
    fn lpc(&mut self, lo: usize, hi: usize, step: usize, f: impl FnOnce(&mut Self, Value)) {
        if lo >= hi {
            return;
        }
        let l = self.ic(lo as i64);
        let h = self.ic(hi as i64);
        self.lp(l, h, step as i64, f);
    }
    fn if_(&mut self, cond: Value, f: impl FnOnce(&mut Self)) {
        let then = self.b.create_block();
        let merge = self.b.create_block();
        self.b.ins().brif(cond, then, &[], merge, &[]);
        self.b.switch_to_block(then);
        f(self);
        self.b.ins().jump(merge, &[]);
        self.b.switch_to_block(merge);
    }
    fn if_else(&mut self, cond: Value, t: impl FnOnce(&mut Self), e: impl FnOnce(&mut Self)) {
        let then = self.b.create_block();
        let els = self.b.create_block();
        let merge = self.b.create_block();
        self.b.ins().brif(cond, then, &[], els, &[]);
        self.b.switch_to_block(then);
        t(self);
        self.b.ins().jump(merge, &[]);
        self.b.switch_to_block(els);
        e(self);
        self.b.ins().jump(merge, &[]);
        self.b.switch_to_block(merge);
    }
    /// Decomposes `u` into `(u / d, u % d)`.
    fn divmod(&mut self, u: Value, d: usize) -> (Value, Value) {
        if d == 1 {
            let z = self.ic(0);
            return (u, z);
        }
        let q = self.b.ins().udiv_imm_u(u, d as i64);
        let qd = self.b.ins().imul_imm_s(q, d as i64);
        let r = self.b.ins().isub(u, qd);
        (q, r)
    }
    /// `a < k` (unsigned, so negative `a` is out of range) as an i8 flag.
    fn in_range(&mut self, a: Value, k: usize) -> Value {
        self.b
            .ins()
            .icmp_imm_u(IntCC::UnsignedLessThan, a, k as i64)
    }

    // ---- math ---------------------------------------------------------------------------

    /// `exp(x)` lane-wise: range reduction by ln 2 and a degree-6 polynomial (relative error
    /// about 2e-7); inputs are clamped to [-87, 88].
    fn vexp(&mut self, x: Value) -> Value {
        self.vexp_with(x, &EXP_TAYLOR[1..])
    }
    /// `exp(x)` lane-wise, a degree-7 polynomial after the same range reduction as
    /// [`Em::vexp`] (relative error about 1e-7), for `erfc`.
    fn vexp7(&mut self, x: Value) -> Value {
        self.vexp_with(x, &EXP_TAYLOR)
    }
    /// `exp(x) = 2^k·p(r)` with `k = round(x·log2 e)`, `r = x − k·ln 2` (ln 2 split in two
    /// for exactness) and `p` the Taylor polynomial `coef` (highest degree first); `x` is
    /// clamped to [-87, 88] so that `2^k` is a normal f32 (NaN passes through).
    fn vexp_with(&mut self, x: Value, coef: &[f32]) -> Value {
        // Compare-and-select clamps: a few instructions where `fmax`/`fmin` (IEEE
        // maximum/minimum) take about eight each; a NaN compares false and stays.
        let lo = self.vc(-87.0);
        let hi = self.vc(88.0);
        let x = self.vsel(FloatCC::LessThan, x, lo, lo, x);
        let x = self.vsel(FloatCC::GreaterThan, x, hi, hi, x);
        let log2e = self.vc(std::f32::consts::LOG2_E);
        let t = self.b.ins().fmul(x, log2e);
        // `t + 1.5·2^23 + 127` has an ulp of 1: the addition rounds `t` to nearest-even
        // (as `nearest`, |t| < 128 here) and leaves `k + 127` in the low mantissa bits,
        // which shifted up are the exponent field of `2^k`. One add, one subtract and one
        // shift instead of a rounding and a saturating conversion.
        let shifter = self.vc(12_582_912.0 + 127.0);
        let j = self.b.ins().fadd(t, shifter);
        let k = self.b.ins().fsub(j, shifter);
        let ln2_hi = self.vc(-0.693_359_4);
        let ln2_lo = self.vc(2.121_944_4e-4);
        let r = self.fmadd(k, ln2_hi, x);
        let r = self.fmadd(k, ln2_lo, r);
        let p = self.horner(coef, r);
        let e = self.b.ins().bitcast(I32X4, MemFlagsData::new(), j);
        let sh = self.b.ins().iconst(I32, 23);
        let e = self.b.ins().ishl(e, sh);
        let scale = self.b.ins().bitcast(F32X4, MemFlagsData::new(), e);
        self.b.ins().fmul(p, scale)
    }
    /// `c[0]·u^(k−1) + … + c[k−1]` by Horner's rule (highest coefficient first).
    fn horner(&mut self, coef: &[f32], u: Value) -> Value {
        let mut p = self.vc(coef[0]);
        for &c in &coef[1..] {
            let cv = self.vc(c);
            p = self.fmadd(p, u, cv);
        }
        p
    }
    /// `x·x·scale` as an unevaluated sum `hi + lo` (`scale` a power of two): `x` is split
    /// into 12-bit halves so that every partial product is exact (Dekker), which keeps
    /// `exp(−x²)` accurate where `x²` is large.
    fn vsquare2(&mut self, x: Value, scale: f32) -> (Value, Value) {
        let hi = self.b.ins().fmul(x, x);
        let bits = self.b.ins().bitcast(I32X4, MemFlagsData::new(), x);
        let m = self.b.ins().iconst(I32, 0xffff_f000_i64);
        let mv = self.b.ins().splat(I32X4, m);
        let hb = self.b.ins().band(bits, mv);
        let xh = self.b.ins().bitcast(F32X4, MemFlagsData::new(), hb);
        let xl = self.b.ins().fsub(x, xh);
        let hh = self.b.ins().fmul(xh, xh);
        let e = self.b.ins().fsub(hh, hi);
        let two = self.vc(2.0);
        let xh2 = self.b.ins().fmul(xh, two);
        let m1 = self.b.ins().fmul(xh2, xl);
        let e = self.b.ins().fadd(e, m1);
        let ll = self.b.ins().fmul(xl, xl);
        let lo = self.b.ins().fadd(e, ll);
        let s = self.vc(scale);
        (self.b.ins().fmul(hi, s), self.b.ins().fmul(lo, s))
    }
    /// `erfc(a)` for `a ≥ 1` (other lanes give garbage), with `a² = sq·sq·scale` computed
    /// from `sq` (so that a caller with `a = |x|/√2` squares `x` exactly): `exp(−a²)·P(t)·t`,
    /// `t = 1/a`, `P` a degree-8 minimax fit of `erfcx(1/t)/t` on `[1, 2.5]` or `[2.5, 10]`
    /// (relative error below 5e-9; beyond 10, `t` is held at 0.1 and `erfc` is 0 once
    /// `a² > 87`, where it is below f32's normal range). Relative error about 3e-7.
    fn verfc_big(&mut self, a: Value, sq: Value, scale: f32) -> Value {
        const NEAR: [f32; 9] = [
            0.025_756_093,
            -0.155_461_73,
            0.390_623_8,
            -0.492_193_2,
            0.224_476_47,
            0.218_905_67,
            -0.361_921_22,
            0.014_255_1,
            0.563_142_6,
        ];
        const FAR: [f32; 9] = [
            -0.751_069_8,
            1.475_265_1,
            -0.855_490_6,
            -0.269_801_9,
            0.509_768,
            -0.014_902_993,
            -0.280_609_16,
            -8.081_042e-5,
            0.564_191_46,
        ];
        let one = self.vc(1.0);
        let ten = self.vc(10.0);
        let ac = self.b.ins().fmax(a, one);
        let ac = self.b.ins().fmin(ac, ten);
        let t = self.b.ins().fdiv(one, ac);
        let split = self.vc(2.5);
        let near = self.b.ins().fcmp(FloatCC::LessThan, ac, split);
        let near = self.mask_f(near);
        let mut p = self.vc(0.0);
        for (k, (&n, &f)) in NEAR.iter().zip(&FAR).enumerate() {
            let nv = self.vc(n);
            let fv = self.vc(f);
            let c = self.b.ins().bitselect(near, nv, fv);
            p = if k == 0 { c } else { self.fmadd(p, t, c) };
        }
        let (hi, lo) = self.vsquare2(sq, scale);
        let nhi = self.b.ins().fneg(hi);
        let e = self.vexp7(nhi);
        let corr = self.b.ins().fsub(one, lo);
        let e = self.b.ins().fmul(e, corr);
        let limit = self.vc(87.0);
        let zero = self.vc(0.0);
        let e = self.vsel(FloatCC::GreaterThan, hi, limit, zero, e);
        let r = self.b.ins().fmul(e, p);
        self.b.ins().fmul(r, t)
    }
    /// `erf(z)` for `|z| < 1` (other lanes give garbage): `z·P(z²)`, `P` a degree-6 minimax
    /// fit (relative error 1.2e-9 before rounding; about 1.5e-7 in f32).
    fn verf_small(&mut self, z: Value) -> Value {
        // The leading coefficient is the fit's, not 2/√π rounded (they differ by an ulp).
        #[allow(clippy::approx_constant)]
        const A: [f32; 7] = [
            7.854_026_6e-5,
            -8.010_248e-4,
            5.188_334_7e-3,
            -2.685_381_7e-2,
            0.112_835_854,
            -0.376_126_26,
            1.128_379_1,
        ];
        let u = self.b.ins().fmul(z, z);
        let p = self.horner(&A, u);
        self.b.ins().fmul(z, p)
    }
    /// The exact GELU `x·(1 + erf(x/√2))/2`: `1 + erf(z)` is `1 + z·P(z²)` for `|z| < 1`,
    /// else `erfc(|z|)` for negative `x` (no cancellation: GELU of a large negative `x` keeps
    /// its relative accuracy) and `2 − erfc(z)` for positive `x`.
    fn vgelu(&mut self, x: Value) -> Value {
        let r = self.vc(std::f32::consts::FRAC_1_SQRT_2);
        let z = self.b.ins().fmul(x, r);
        let a = self.b.ins().fabs(z);
        let ax = self.b.ins().fabs(x);
        let small = self.verf_small(z);
        let one = self.vc(1.0);
        let small = self.b.ins().fadd(one, small);
        let big = self.verfc_big(a, ax, 0.5);
        let two = self.vc(2.0);
        let upper = self.b.ins().fsub(two, big);
        let zero = self.vc(0.0);
        let big = self.vsel(FloatCC::LessThan, x, zero, big, upper);
        let s = self.vsel(FloatCC::LessThan, a, one, small, big);
        let half = self.vc(0.5);
        let hx = self.b.ins().fmul(x, half);
        self.b.ins().fmul(hx, s)
    }
    fn vsigmoid(&mut self, x: Value) -> Value {
        let nx = self.b.ins().fneg(x);
        let e = self.vexp(nx);
        let one = self.vc(1.0);
        let d = self.b.ins().fadd(one, e);
        self.b.ins().fdiv(one, d)
    }
    /// `x^e` for the exponents `bnc_ir::pow_is_supported` accepts: integers as repeated
    /// multiplication (squaring), halves through a square root, negatives as a reciprocal.
    fn vpow(&mut self, x: Value, e: f64) -> Value {
        let one = self.vc(1.0);
        let half = e.fract() != 0.0;
        let whole = e.abs().trunc() as u32;
        // |x|^whole by squaring.
        let mut acc: Option<Value> = None;
        let mut base = x;
        let mut k = whole;
        while k > 0 {
            if k & 1 == 1 {
                acc = Some(match acc {
                    Some(a) => self.b.ins().fmul(a, base),
                    None => base,
                });
            }
            k >>= 1;
            if k > 0 {
                base = self.b.ins().fmul(base, base);
            }
        }
        if half {
            let r = self.b.ins().sqrt(x);
            acc = Some(match acc {
                Some(a) => self.b.ins().fmul(a, r),
                None => r,
            });
        }
        let v = acc.unwrap_or(one);
        if e < 0.0 {
            self.b.ins().fdiv(one, v)
        } else {
            v
        }
    }
    fn act(&mut self, a: &Activation, x: Value) -> Value {
        match *a {
            Activation::Relu => {
                let z = self.vc(0.0);
                self.vsel(FloatCC::LessThan, z, x, x, z)
            }
            Activation::Relu6 => {
                let z = self.vc(0.0);
                let r = self.vsel(FloatCC::LessThan, z, x, x, z);
                self.vmin_c(r, 6.0)
            }
            Activation::LeakyRelu { alpha } => {
                let z = self.vc(0.0);
                let al = self.vc(alpha as f32);
                let ax = self.b.ins().fmul(x, al);
                self.vsel(FloatCC::GreaterThanOrEqual, x, z, x, ax)
            }
            Activation::Clip { min, max } => {
                let v = if min > f64::NEG_INFINITY {
                    self.vmax_c(x, min as f32)
                } else {
                    x
                };
                if max < f64::INFINITY {
                    self.vmin_c(v, max as f32)
                } else {
                    v
                }
            }
            Activation::Sigmoid => self.vsigmoid(x),
            Activation::Silu => {
                let s = self.vsigmoid(x);
                self.b.ins().fmul(x, s)
            }
            Activation::Tanh => {
                let two = self.vc(2.0);
                let x2 = self.b.ins().fmul(x, two);
                let s = self.vsigmoid(x2);
                let one = self.vc(1.0);
                let s2 = self.b.ins().fmul(s, two);
                self.b.ins().fsub(s2, one)
            }
            Activation::Sqrt => self.b.ins().sqrt(x),
            Activation::Pow { exponent } => self.vpow(x, exponent),
            Activation::HardSigmoid | Activation::HardSwish => {
                let three = self.vc(3.0);
                let t = self.b.ins().fadd(x, three);
                let t = self.vmax_c(t, 0.0);
                let t = self.vmin_c(t, 6.0);
                let t = if matches!(a, Activation::HardSwish) {
                    self.b.ins().fmul(x, t)
                } else {
                    t
                };
                let sixth = self.vc(1.0 / 6.0);
                self.b.ins().fmul(t, sixth)
            }
            Activation::Gelu => self.vgelu(x),
        }
    }

    /// Applies the epilogue to `v` (f32x4) for batch `n`, channel `c`, spatial index `s`
    /// (all i64 Values); `vec` says whether the 4 lanes are spatial positions `s..s+4`
    /// (else only lane 0 matters and operands are read as scalars).
    fn epi(&mut self, epi: &[Epi], v: Value, n: Value, c: Value, s: Value, vec: bool) -> Value {
        let mut v = v;
        for e in epi {
            v = match e {
                Epi::Affine { scale, shift } => {
                    let mut r = v;
                    let sc = scale.map(|o| {
                        let p = self.wptr(o);
                        let a = self.ea(p, c);
                        let x = self.b.ins().load(F32, ro(), a, 0);
                        self.splat(x)
                    });
                    let sh = shift.map(|o| {
                        let p = self.wptr(o);
                        let a = self.ea(p, c);
                        let x = self.b.ins().load(F32, ro(), a, 0);
                        self.splat(x)
                    });
                    match (sc, sh) {
                        (Some(s), Some(t)) => r = self.fmadd(r, s, t),
                        (Some(s), None) => r = self.b.ins().fmul(r, s),
                        (None, Some(t)) => r = self.b.ins().fadd(r, t),
                        (None, None) => {}
                    }
                    r
                }
                Epi::Add(o) | Epi::Mul(o) => {
                    let base = self.vbase(o, n);
                    let cs = self.mul_i(c, o.s as i64);
                    let idx = self.b.ins().iadd(cs, s);
                    let a = self.ea(base, idx);
                    let w = if vec {
                        self.ld4(a, 0)
                    } else {
                        let x = self.ld1(a, 0);
                        self.splat(x)
                    };
                    if matches!(e, Epi::Add(_)) {
                        self.b.ins().fadd(v, w)
                    } else {
                        self.b.ins().fmul(v, w)
                    }
                }
                Epi::MulChan(o) => {
                    let base = self.vbase(o, n);
                    let a = self.ea(base, c);
                    let x = self.ld1(a, 0);
                    let w = self.splat(x);
                    self.b.ins().fmul(v, w)
                }
                Epi::Act(a) => self.act(a, v),
            };
        }
        v
    }

    /// Writes one output row of `ow` values at spatial index `orow` of plane `ob` (batch `n`,
    /// channel `c`): 4 columns at a time from `compute(em, column)` through the epilogue, the
    /// last partial group lane by lane. Shared by the depthwise and pooling kernels.
    #[allow(clippy::too_many_arguments)]
    fn store_row(
        &mut self,
        ow: usize,
        orow: Value,
        ob: Value,
        epi: &[Epi],
        n: Value,
        c: Value,
        compute: impl Fn(&mut Self, Value) -> Value,
    ) {
        let ow4 = ow / 4 * 4;
        self.lpc(0, ow4, 4, |em, ox| {
            let acc = compute(em, ox);
            let s = em.b.ins().iadd(orow, ox);
            let y = em.epi(epi, acc, n, c, s, true);
            let a = em.ea(ob, s);
            em.st(y, a, 0);
        });
        if ow4 < ow {
            let ox = self.ic(ow4 as i64);
            let acc = compute(self, ox);
            let s = self.b.ins().iadd(orow, ox);
            let a = self.ea(ob, s);
            let cnt = self.ic((ow - ow4) as i64);
            self.store_lanes_epi(epi, acc, cnt, a, n, c, s);
        }
    }

    /// Stores lanes `0..count` of `v` to consecutive floats at `a`, applying the epilogue
    /// per lane (spatial index `s + lane`).
    #[allow(clippy::too_many_arguments)]
    fn store_lanes_epi(
        &mut self,
        epi: &[Epi],
        v: Value,
        count: Value,
        a: Value,
        n: Value,
        c: Value,
        s: Value,
    ) {
        for lane in 0..4u8 {
            let ok = self
                .b
                .ins()
                .icmp_imm_s(IntCC::SignedGreaterThan, count, lane as i64);
            self.if_(ok, |em| {
                let x = em.b.ins().extractlane(v, lane);
                let xv = em.splat(x);
                let sl = em.add_i(s, lane as i64);
                let y = em.epi(epi, xv, n, c, sl, false);
                let y0 = em.lane0(y);
                em.st(y0, a, lane as i32 * 4);
            });
        }
    }
}

/// What every kernel body reads: its input and output, its epilogue, and the range of
/// work units `[lo, hi)` the call computes.
#[derive(Clone, Copy)]
pub(super) struct Io<'a> {
    pub x: &'a View,
    pub out: &'a View,
    pub epi: &'a [Epi],
    pub lo: Value,
    pub hi: Value,
}

/// Emits one kernel function body.
pub(crate) fn emit_kernel(
    b: &mut FunctionBuilder,
    k: &Kernel,
    fma: bool,
    ukernel: Option<FuncRef>,
    wide: &mut dyn FnMut(&Spec, &mut Function) -> FuncRef,
) {
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let p = b.block_params(entry).to_vec();
    let mut em = Em {
        b,
        fma,
        wts: p[0],
        ptrs: p[1],
        scratch: p[2],
    };
    let (lo, hi) = (p[3], p[4]);
    let (x, out) = (k.kind.input(), k.out);
    let epi = &k.epi[..];
    let io = &Io {
        x: &x,
        out: &out,
        epi,
        lo,
        hi,
    };
    match &k.kind {
        KernelKind::Elementwise { .. } => emit_elementwise(&mut em, io),
        KernelKind::Gemm {
            g,
            wpack,
            nb,
            mchunks,
            wide: isa,
            kc,
            ..
        } => emit_gemm(
            &mut em,
            io,
            g,
            *wpack,
            *nb,
            *mchunks,
            *isa,
            *kc,
            &mut Micro {
                fallback: ukernel,
                wide,
            },
        ),
        KernelKind::DirectConv {
            x,
            g,
            wpack,
            kc,
            pitch,
            plane,
            taps,
            nb,
            mchunks,
            m_major,
            tap_masks,
            chanvec,
            vector,
        } => emit_direct(
            &mut em,
            &Direct {
                x,
                g,
                wpack: *wpack,
                kc: *kc,
                pitch: *pitch,
                plane: *plane,
                taps,
                nb: *nb,
                mchunks: *mchunks,
                m_major: *m_major,
                tap_masks: *tap_masks,
                chanvec: *chanvec,
                vector: *vector,
                out: &out,
                epi,
            },
            lo,
            hi,
            wide,
        ),
        KernelKind::PadPlanes {
            hw,
            pads,
            stride,
            phases,
            hqwq,
            fill,
            vector,
            ..
        } => {
            let pad = PadRows {
                h: hw[0],
                w: hw[1],
                pads: *pads,
                stride: *stride,
                phases: phases.clone(),
                hqwq: *hqwq,
            };
            emit_pad_planes(&mut em, io, pad, *fill, *vector, wide)
        }
        KernelKind::Depthwise { g, w, .. } => emit_depthwise(&mut em, io, g, *w),
        KernelKind::Dense { k: kd, m, w, .. } => emit_dense(&mut em, io, *kd, *m, *w),
        KernelKind::MaxPool {
            p,
            hw,
            ohw,
            in_place: Some(vector),
            ..
        } => emit_max_pool_in_place(&mut em, io, p, *hw, *ohw, *vector, wide),
        KernelKind::MaxPool { p, hw, ohw, .. } => emit_pool(&mut em, io, p, *hw, *ohw, None),
        KernelKind::AvgPool {
            p, hw, ohw, recip, ..
        } => emit_pool(&mut em, io, p, *hw, *ohw, Some(*recip)),
        KernelKind::GlobalAvgPool { .. } => emit_gap(&mut em, io),
        KernelKind::Softmax { .. } => emit_softmax(&mut em, io),
        KernelKind::LayerNorm {
            eps, weight, bias, ..
        } => emit_layer_norm(&mut em, io, *eps, *weight, *bias),
        KernelKind::ChannelShuffle { groups, first, .. } => {
            emit_shuffle(&mut em, io, *groups, *first)
        }
        KernelKind::Pad {
            pads,
            value,
            fill,
            hw,
            ohw,
            ..
        } => emit_pad(&mut em, io, *pads, *value, *fill, *hw, *ohw),
        KernelKind::Resize {
            bilinear,
            hw,
            ohw,
            rows,
            cols,
            ..
        } => emit_resize(&mut em, io, *bilinear, *hw, *ohw, *rows, *cols),
        KernelKind::GlobalMaxPool { .. } => emit_gmp(&mut em, io),
        KernelKind::Col2Im {
            hw,
            ohw,
            kernel,
            stride,
            taps,
            ..
        } => emit_col2im(
            &mut em,
            io,
            &Col2Im {
                hw: *hw,
                ohw: *ohw,
                kernel: *kernel,
                stride: *stride,
                taps,
            },
        ),
        KernelKind::ConvTranspose {
            hw,
            ohw,
            cin_g,
            cout_g,
            w,
            kernel,
            stride,
            taps,
            phase,
            ..
        } => emit_conv_transpose(
            &mut em,
            io,
            &ConvT {
                hw: *hw,
                ohw: *ohw,
                cin_g: *cin_g,
                cout_g: *cout_g,
                w: *w,
                kernel: *kernel,
                stride: *stride,
                taps,
                phase: *phase,
            },
        ),
    }
    em.b.ins().return_(&[]);
    em.b.seal_all_blocks();
}

/// Units are `(n, c)` planes: `y[n, c, s] = epi(x[n, c, s])`, 4 lanes at a time.
fn emit_elementwise(em: &mut Em, io: &Io) {
    let Io {
        x,
        out,
        epi,
        lo,
        hi,
    } = *io;
    let (c_n, s_n) = (x.c, x.s);
    em.lp(lo, hi, 1, |em, u| {
        let (n, c) = em.divmod(u, c_n);
        let xb = em.vbase(x, n);
        let ob = em.vbase(out, n);
        let cs = em.mul_i(c, s_n as i64);
        let xb = em.ea(xb, cs);
        let ob = em.ea(ob, cs);
        copy_plane(em, xb, ob, s_n, epi, n, c);
    });
}

/// `ob[s] = epi(xb[s])` for the `s_n` floats of one plane of channel `c`, 4 lanes at a
/// time then a scalar tail (plane copies: elementwise kernels, channel shuffles).
pub(super) fn copy_plane(
    em: &mut Em,
    xb: Value,
    ob: Value,
    s_n: usize,
    epi: &[Epi],
    n: Value,
    c: Value,
) {
    let s4 = s_n / 4 * 4;
    em.lpc(0, s4, 4, |em, s| {
        let a = em.ea(xb, s);
        let v = em.ld4(a, 0);
        let y = em.epi(epi, v, n, c, s, true);
        let oa = em.ea(ob, s);
        em.st(y, oa, 0);
    });
    for s in s4..s_n {
        let v = em.ld1(xb, (s * 4) as i32);
        let v = em.splat(v);
        let si = em.ic(s as i64);
        let y = em.epi(epi, v, n, c, si, false);
        let y = em.lane0(y);
        em.st(y, ob, (s * 4) as i32);
    }
}
