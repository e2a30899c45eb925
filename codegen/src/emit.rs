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
//! `crate::asm`, which write straight into the output (row stride = pixels) and apply the
//! fusable epilogue prefix themselves; Cranelift code applies the rest in place.

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
        let lo = self.vc(-87.0);
        let hi = self.vc(88.0);
        let x = self.b.ins().fmax(x, lo);
        let x = self.b.ins().fmin(x, hi);
        let log2e = self.vc(std::f32::consts::LOG2_E);
        let t = self.b.ins().fmul(x, log2e);
        let k = self.b.ins().nearest(t);
        let ln2_hi = self.vc(-0.693_359_4);
        let ln2_lo = self.vc(2.121_944_4e-4);
        let r = self.fmadd(k, ln2_hi, x);
        let r = self.fmadd(k, ln2_lo, r);
        let coef = [
            1.0 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
            1.0,
            1.0,
        ];
        let mut p = self.vc(coef[0]);
        for &c in &coef[1..] {
            let cv = self.vc(c);
            p = self.fmadd(p, r, cv);
        }
        let ki = self.b.ins().fcvt_to_sint_sat(I32X4, k);
        let bias = self.b.ins().iconst(I32, 127);
        let biasv = self.b.ins().splat(I32X4, bias);
        let e = self.b.ins().iadd(ki, biasv);
        let sh = self.b.ins().iconst(I32, 23);
        let e = self.b.ins().ishl(e, sh);
        let scale = self.b.ins().bitcast(F32X4, MemFlagsData::new(), e);
        self.b.ins().fmul(p, scale)
    }
    fn vsigmoid(&mut self, x: Value) -> Value {
        let nx = self.b.ins().fneg(x);
        let e = self.vexp(nx);
        let one = self.vc(1.0);
        let d = self.b.ins().fadd(one, e);
        self.b.ins().fdiv(one, d)
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
    let out = k.out;
    let epi = &k.epi[..];
    match &k.kind {
        KernelKind::Elementwise { x } => emit_elementwise(&mut em, x, &out, epi, lo, hi),
        KernelKind::Gemm {
            x,
            g,
            wpack,
            nb,
            mchunks,
            wide: isa,
            kc,
        } => emit_gemm(
            &mut em,
            x,
            g,
            *wpack,
            *nb,
            *mchunks,
            *isa,
            *kc,
            &out,
            epi,
            lo,
            hi,
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
            x,
            hw,
            pads,
            stride,
            phases,
            hqwq,
            fill,
            vector,
        } => {
            let pad = PadRows {
                h: hw[0],
                w: hw[1],
                pads: *pads,
                stride: *stride,
                phases: phases.clone(),
                hqwq: *hqwq,
            };
            emit_pad_planes(&mut em, x, pad, *fill, *vector, &out, lo, hi, wide)
        }
        KernelKind::Depthwise { x, g, w } => emit_depthwise(&mut em, x, g, *w, &out, epi, lo, hi),
        KernelKind::Dense { x, k: kd, m, w } => {
            emit_dense(&mut em, x, *kd, *m, *w, &out, epi, lo, hi)
        }
        KernelKind::MaxPool {
            x,
            p,
            hw,
            ohw,
            in_place: Some(vector),
        } => emit_max_pool_in_place(&mut em, x, p, *hw, *ohw, *vector, &out, lo, hi, wide),
        KernelKind::MaxPool { x, p, hw, ohw, .. } => {
            emit_pool(&mut em, x, p, *hw, *ohw, None, &out, epi, lo, hi)
        }
        KernelKind::AvgPool {
            x,
            p,
            hw,
            ohw,
            recip,
        } => emit_pool(&mut em, x, p, *hw, *ohw, Some(*recip), &out, epi, lo, hi),
        KernelKind::GlobalAvgPool { x } => emit_gap(&mut em, x, &out, epi, lo, hi),
        KernelKind::Softmax { x } => emit_softmax(&mut em, x, &out, epi, lo, hi),
        KernelKind::Pad {
            x,
            pads,
            value,
            fill,
            hw,
            ohw,
        } => emit_pad(
            &mut em, x, *pads, *value, *fill, *hw, *ohw, &out, epi, lo, hi,
        ),
    }
    em.b.ins().return_(&[]);
    em.b.seal_all_blocks();
}

/// Units are `(n, c)` planes: `y[n, c, s] = epi(x[n, c, s])`, 4 lanes at a time.
fn emit_elementwise(em: &mut Em, x: &View, out: &View, epi: &[Epi], lo: Value, hi: Value) {
    let (c_n, s_n) = (x.c, x.s);
    em.lp(lo, hi, 1, |em, u| {
        let (n, c) = em.divmod(u, c_n);
        let xb = em.vbase(x, n);
        let ob = em.vbase(out, n);
        let cs = em.mul_i(c, s_n as i64);
        let xb = em.ea(xb, cs);
        let ob = em.ea(ob, cs);
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
    });
}

/// How a GEMM kernel gets its microkernels: the fallback function, or the assembled
/// variants (declared on demand through `wide`).
pub(crate) struct Micro<'a> {
    pub fallback: Option<FuncRef>,
    pub wide: &'a mut dyn FnMut(&Spec, &mut Function) -> FuncRef,
}

#[allow(clippy::too_many_arguments)]
fn emit_gemm(
    em: &mut Em,
    x: &View,
    g: &ConvGeom,
    wpack: usize,
    nb: usize,
    mchunks: usize,
    wide: Option<Vector>,
    kc: usize,
    out: &View,
    epi: &[Epi],
    lo: Value,
    hi: Value,
    micro: &mut Micro,
) {
    let k = g.kdim();
    let p_total = g.pixels();
    let pblocks = p_total.div_ceil(nb);
    let cin_g = g.cin_g();
    let cout_g = g.cout_g();
    let (mr, nr) = match wide {
        Some(isa) => (isa.mr(), isa.nr()),
        None => (MR, NR),
    };
    // 4-pixel groups per panel of `nr` pixels.
    let gpp = nr / 4;
    let mtiles = cout_g.div_ceil(mr);
    let mper = mtiles.div_ceil(mchunks);
    let [kh, kw] = g.kernel;
    let (h, w) = (g.h, g.w);
    let tile_off = (nb * k * 4) as i64;
    em.lp(lo, hi, 1, |em, u| {
        let (t, mci) = em.divmod(u, mchunks);
        let (t2, pb) = em.divmod(t, pblocks);
        let (n, gi) = em.divmod(t2, g.groups);
        let p0 = em.mul_i(pb, nb as i64);
        let rem = em.ic(p_total as i64);
        let rem = em.b.ins().isub(rem, p0);
        let nbv = em.ic(nb as i64);
        let npix = em.b.ins().smin(rem, nbv);
        // Groups of 4 pixels to pack: whole panels, so no lane of a panel is stale.
        let npr = em.add_i(npix, nr as i64 - 1);
        let npanels = em.b.ins().udiv_imm_u(npr, nr as i64);
        let nsub = em.mul_i(npanels, gpp as i64);
        let xb = em.vbase(x, n);
        let gofs = em.mul_i(gi, (cin_g * h * w) as i64);
        let xb = em.ea(xb, gofs);
        let scratch = if wide.is_some() {
            // 64-byte aligned panels (the scratch slot has 16 floats of slack).
            let a = em.add_i(em.scratch, 63);
            em.b.ins().band_imm_s(a, !63i64)
        } else {
            em.scratch
        };
        let ptot = em.ic(p_total as i64);
        // Start of 4-pixel group `q`: panel q / gpp, columns 4 * (q % gpp).., k-rows of nr.
        let group_base = |em: &mut Em, q: Value| -> Value {
            if gpp == 1 {
                let o = em.mul_i(q, (k * nr * 4) as i64);
                return em.b.ins().iadd(scratch, o);
            }
            let (pi, gq) = em.divmod(q, gpp);
            let o = em.mul_i(pi, (k * nr * 4) as i64);
            let o2 = em.mul_i(gq, 16);
            let o = em.b.ins().iadd(o, o2);
            em.b.ins().iadd(scratch, o)
        };
        // ---- pack the input block: panel `sub` holds pixels p0+4*sub.. as [k][4] ----
        if g.is_pointwise() {
            let z = em.ic(0);
            em.lp(z, nsub, 1, |em, sub| {
                let sub4 = em.mul_i(sub, 4);
                let p = em.b.ins().iadd(p0, sub4);
                let panel = group_base(em, sub);
                let p4 = em.add_i(p, 4);
                let full = em.b.ins().icmp(IntCC::SignedLessThanOrEqual, p4, ptot);
                let xp = em.ea(xb, p);
                em.if_else(
                    full,
                    |em| {
                        em.lpc(0, k, 1, |em, ci| {
                            let o = em.mul_i(ci, (h * w * 4) as i64);
                            let a = em.b.ins().iadd(xp, o);
                            let v = em.ld4(a, 0);
                            let o2 = em.mul_i(ci, (nr * 4) as i64);
                            let d = em.b.ins().iadd(panel, o2);
                            em.st(v, d, 0);
                        });
                    },
                    |em| {
                        let zero = em.fc(0.0);
                        em.lpc(0, k, 1, |em, ci| {
                            let o = em.mul_i(ci, (h * w * 4) as i64);
                            let a = em.b.ins().iadd(xp, o);
                            let o2 = em.mul_i(ci, (nr * 4) as i64);
                            let d = em.b.ins().iadd(panel, o2);
                            for lane in 0..4i64 {
                                let pl = em.add_i(p, lane);
                                let inb = em.b.ins().icmp(IntCC::SignedLessThan, pl, ptot);
                                let la = em.add_i(a, lane * 4);
                                let sa = em.b.ins().select(inb, la, xb);
                                let v = em.ld1(sa, 0);
                                let v = em.b.ins().select(inb, v, zero);
                                em.st(v, d, (lane * 4) as i32);
                            }
                        });
                    },
                );
            });
        } else {
            let z = em.ic(0);
            let [sh, sw] = g.stride;
            let [dh, dw] = g.dilation;
            em.lp(z, nsub, 1, |em, sub| {
                let q0 = em.mul_i(sub, 4);
                let p = em.b.ins().iadd(p0, q0);
                let (oy, ox) = em.divmod(p, g.ow);
                let iy0 = em.mul_i(oy, sh as i64);
                let iy0 = em.add_i(iy0, -(g.pad[0] as i64));
                let ix0 = em.mul_i(ox, sw as i64);
                let ix0 = em.add_i(ix0, -(g.pad[1] as i64));
                // Fast path: the 4 pixels lie in one output row and every tap of all of
                // them is inside the input, so no bounds checks (and for stride 1 one
                // vector load per tap).
                let p4 = em.add_i(p, 4);
                let c1 = em.b.ins().icmp(IntCC::SignedLessThanOrEqual, p4, ptot);
                let c2 =
                    em.b.ins()
                        .icmp_imm_s(IntCC::SignedLessThan, ox, g.ow as i64 - 3);
                let c3 =
                    em.b.ins()
                        .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, iy0, 0);
                let iy_last = em.add_i(iy0, ((kh - 1) * dh) as i64);
                let c4 =
                    em.b.ins()
                        .icmp_imm_s(IntCC::SignedLessThan, iy_last, h as i64);
                let c5 =
                    em.b.ins()
                        .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, ix0, 0);
                let ix_last = em.add_i(ix0, (3 * sw + (kw - 1) * dw) as i64);
                let c6 =
                    em.b.ins()
                        .icmp_imm_s(IntCC::SignedLessThan, ix_last, w as i64);
                let a = em.b.ins().band(c1, c2);
                let b_ = em.b.ins().band(c3, c4);
                let c = em.b.ins().band(c5, c6);
                let ab = em.b.ins().band(a, b_);
                let fast = em.b.ins().band(ab, c);
                let panel = group_base(em, sub);
                em.if_else(
                    fast,
                    |em| {
                        let ro_ = em.mul_i(iy0, w as i64);
                        let o = em.b.ins().iadd(ro_, ix0);
                        let base = em.ea(xb, o);
                        em.lpc(0, cin_g, 1, |em, ci| {
                            let cho = em.mul_i(ci, (h * w * 4) as i64);
                            let chb = em.b.ins().iadd(base, cho);
                            let dk = em.mul_i(ci, (kh * kw * nr * 4) as i64);
                            let dci = em.b.ins().iadd(panel, dk);
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let src = ((ky * dh * w + kx * dw) * 4) as i32;
                                    let dst = (((ky * kw + kx) * nr) * 4) as i32;
                                    if sw == 1 {
                                        let v = em.ld4(chb, src);
                                        em.st(v, dci, dst);
                                    } else {
                                        for l in 0..4 {
                                            let v = em.ld1(chb, src + (l * sw * 4) as i32);
                                            em.st(v, dci, dst + (l * 4) as i32);
                                        }
                                    }
                                }
                            }
                        });
                    },
                    |em| {
                        let z = em.ic(0);
                        let four = em.ic(4);
                        em.lp(z, four, 1, |em, lane| {
                            let q = em.b.ins().iadd(q0, lane);
                            let p = em.b.ins().iadd(p0, q);
                            let valid = em.b.ins().icmp(IntCC::SignedLessThan, p, ptot);
                            let (oy, ox) = em.divmod(p, g.ow);
                            let iy0 = em.mul_i(oy, sh as i64);
                            let iy0 = em.add_i(iy0, -(g.pad[0] as i64));
                            let ix0 = em.mul_i(ox, sw as i64);
                            let ix0 = em.add_i(ix0, -(g.pad[1] as i64));
                            let dst0 = em.ea(panel, lane);
                            // Column bounds for each kx (independent of ci, ky).
                            let mut col_ok = Vec::new();
                            for kx in 0..kw {
                                let ix = em.add_i(ix0, (kx * dw) as i64);
                                let ok = em.in_range(ix, w);
                                let ok = em.b.ins().band(ok, valid);
                                col_ok.push((ix, ok));
                            }
                            em.lpc(0, cin_g, 1, |em, ci| {
                                let fillv = match g.fill {
                                    Some(f) => {
                                        let fp = em.wptr(f);
                                        let gc = em.mul_i(gi, cin_g as i64);
                                        let ch = em.b.ins().iadd(gc, ci);
                                        let a = em.ea(fp, ch);
                                        em.b.ins().load(F32, ro(), a, 0)
                                    }
                                    None => em.fc(0.0),
                                };
                                let cho = em.mul_i(ci, (h * w) as i64);
                                let chb = em.ea(xb, cho);
                                let dk = em.mul_i(ci, (kh * kw * nr * 4) as i64);
                                let dci = em.b.ins().iadd(dst0, dk);
                                for ky in 0..kh {
                                    let iy = em.add_i(iy0, (ky * dh) as i64);
                                    let rok = em.in_range(iy, h);
                                    let ro_ = em.mul_i(iy, w as i64);
                                    for (kx, &(ix, cok)) in col_ok.iter().enumerate() {
                                        let inb = em.b.ins().band(rok, cok);
                                        let idx = em.b.ins().iadd(ro_, ix);
                                        let a = em.ea(chb, idx);
                                        let a = em.b.ins().select(inb, a, xb);
                                        let v = em.ld1(a, 0);
                                        let v = em.b.ins().select(inb, v, fillv);
                                        em.st(v, dci, (((ky * kw + kx) * nr) * 4) as i32);
                                    }
                                }
                            });
                        });
                    },
                );
            });
        }
        // ---- multiply: m-tiles of this chunk x pixel panels ----
        let m_lo = em.mul_i(mci, mper as i64);
        let m_hi = em.add_i(m_lo, mper as i64);
        let mt_n = em.ic(mtiles as i64);
        let m_hi = em.b.ins().smin(m_hi, mt_n);
        if let Some(isa) = wide {
            let t = WideTile {
                isa,
                k,
                kc,
                cout_g,
                p_total,
                wpack,
                out,
                epi,
                n,
                gi,
                p0,
                npix,
                panels: scratch,
            };
            wide_multiply(em, &t, m_lo, m_hi, micro.wide);
            return;
        }
        let ukernel = micro.fallback.expect("fallback GEMM needs the microkernel");
        let tile = em.add_i(scratch, tile_off);
        let kv = em.ic(k as i64);
        let ob = em.vbase(out, n);
        em.lp(m_lo, m_hi, 1, |em, mt| {
            let gm = em.mul_i(gi, mtiles as i64);
            let gm = em.b.ins().iadd(gm, mt);
            let wo = em.mul_i(gm, (k * MR * 4) as i64);
            let wp = em.wptr(wpack);
            let wpanel = em.b.ins().iadd(wp, wo);
            let z = em.ic(0);
            em.lp(z, nsub, 1, |em, sub| {
                let po = em.mul_i(sub, (k * NR * 4) as i64);
                let xpanel = em.b.ins().iadd(scratch, po);
                em.b.ins().call(ukernel, &[wpanel, xpanel, tile, kv]);
                let sub4 = em.mul_i(sub, 4);
                let p = em.b.ins().iadd(p0, sub4);
                let left = em.b.ins().isub(ptot, p);
                let full =
                    em.b.ins()
                        .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, left, 4);
                let mt8 = em.mul_i(mt, MR as i64);
                let gco = em.mul_i(gi, cout_g as i64);
                for r in 0..MR {
                    let co = em.add_i(mt8, r as i64);
                    let row = |em: &mut Em| {
                        let cg = em.b.ins().iadd(gco, co);
                        let v = em.ld4(tile, (r * NR * 4) as i32);
                        let cp = em.mul_i(cg, p_total as i64);
                        let idx = em.b.ins().iadd(cp, p);
                        let oa = em.ea(ob, idx);
                        em.if_else(
                            full,
                            |em| {
                                let y = em.epi(epi, v, n, cg, p, true);
                                em.st(y, oa, 0);
                            },
                            |em| em.store_lanes_epi(epi, v, left, oa, n, cg, p),
                        );
                    };
                    if !cout_g.is_multiple_of(MR) {
                        let ok =
                            em.b.ins()
                                .icmp_imm_s(IntCC::SignedLessThan, co, cout_g as i64);
                        em.if_(ok, row);
                    } else {
                        row(em);
                    }
                }
            });
        });
    });
}

/// One GEMM unit's state for the wide path (see [`wide_multiply`]).
struct WideTile<'a> {
    isa: Vector,
    k: usize,
    kc: usize,
    cout_g: usize,
    p_total: usize,
    wpack: usize,
    out: &'a View,
    epi: &'a [Epi],
    n: Value,
    gi: Value,
    /// First pixel of the block, pixels in it, and the packed panels `[panel][k][nr]`.
    p0: Value,
    npix: Value,
    panels: Value,
}

/// Column count of a tile for [`post_epi`].
#[derive(Clone, Copy)]
enum Cols {
    Const(usize),
    Dyn(Value),
}

/// Applies `epi` in place to a stored tile: `rows` channels from `co`, pixels `p..p+cols`.
#[allow(clippy::too_many_arguments)]
fn post_epi(
    em: &mut Em,
    epi: &[Epi],
    ob: Value,
    n: Value,
    co: Value,
    rows: usize,
    p: Value,
    p_total: usize,
    cols: Cols,
) {
    em.lpc(0, rows, 1, |em, r| {
        let c = em.b.ins().iadd(co, r);
        let cp = em.mul_i(c, p_total as i64);
        let idx = em.b.ins().iadd(cp, p);
        let rowa = em.ea(ob, idx);
        let vec = |em: &mut Em, j: Value| {
            let a = em.ea(rowa, j);
            let v = em.ld4(a, 0);
            let s = em.b.ins().iadd(p, j);
            let y = em.epi(epi, v, n, c, s, true);
            em.st(y, a, 0);
        };
        match cols {
            Cols::Const(nc) => {
                em.lpc(0, nc / 4 * 4, 4, vec);
                for j in nc / 4 * 4..nc {
                    let jv = em.ic(j as i64);
                    scalar_epi(em, epi, rowa, jv, n, c, p);
                }
            }
            Cols::Dyn(cnt) => {
                let c4 = em.b.ins().band_imm_s(cnt, !3i64);
                let z = em.ic(0);
                em.lp(z, c4, 4, vec);
                for lane in 0..3 {
                    let j = em.add_i(c4, lane);
                    let ok = em.b.ins().icmp(IntCC::SignedLessThan, j, cnt);
                    em.if_(ok, |em| scalar_epi(em, epi, rowa, j, n, c, p));
                }
            }
        }
    });
}

fn scalar_epi(em: &mut Em, epi: &[Epi], rowa: Value, j: Value, n: Value, c: Value, p: Value) {
    let a = em.ea(rowa, j);
    let x = em.ld1(a, 0);
    let xv = em.splat(x);
    let s = em.b.ins().iadd(p, j);
    let y = em.epi(epi, xv, n, c, s, false);
    let y = em.lane0(y);
    em.st(y, a, 0);
}

/// Pointers and constants shared by every tile of one wide GEMM unit.
struct WideCtx {
    ops: Vec<EpOp>,
    slots: Vec<Slot>,
    fused: usize,
    ss: cranelift_codegen::ir::StackSlot,
    ep: Value,
    ldc: Value,
    ob: Value,
    nfull: Value,
    rem: Value,
}

/// The multiply of one wide GEMM unit: for each K chunk, for each m-tile of this unit's
/// range, for each pixel panel of the block, one assembled microkernel call writing its
/// tile straight into the output (the first chunk from zero, later chunks accumulating;
/// the last one applies the fused epilogue, then Cranelift code the unfused rest).
fn wide_multiply(
    em: &mut Em,
    t: &WideTile,
    m_lo: Value,
    m_hi: Value,
    get: &mut dyn FnMut(&Spec, &mut Function) -> FuncRef,
) {
    let isa = t.isa;
    let (mr, nr) = (isa.mr(), isa.nr());
    let (ops, slots, fused) = fuse_prefix(t.epi, t.p_total, t.isa);
    let ss = em.b.create_sized_stack_slot(StackSlotData::new(
        StackSlotKind::ExplicitSlot,
        ((1 + slots.len()) * 8) as u32,
        3,
    ));
    let ep = em.b.ins().stack_addr(I64, ss, 0);
    let ldc = em.ic((t.p_total * 4) as i64);
    let ob = em.vbase(t.out, t.n);
    let nfull = em.b.ins().udiv_imm_u(t.npix, nr as i64);
    let nfr = em.mul_i(nfull, nr as i64);
    let rem = em.b.ins().isub(t.npix, nfr);
    let cx = WideCtx {
        ops,
        slots,
        fused,
        ss,
        ep,
        ldc,
        ob,
        nfull,
        rem,
    };
    for_each_chunk(em, t.k, t.kc, &mut |em, kc0, klen, acc, last| {
        for_each_mtile(em, t.cout_g, mr, m_lo, m_hi, &mut |em, mt, rows| {
            wide_tile(em, t, &cx, &mut *get, mt, rows, kc0, klen, acc, last)
        });
    });
}

/// Runs `phase(em, start, len, accumulate, last)` over the reduction `0..total` in chunks
/// of `chunk` (the last may be shorter): the first from zero, later ones accumulating onto
/// it, the last also applying the epilogue; the middle chunks are one emitted loop.
fn for_each_chunk(
    em: &mut Em,
    total: usize,
    chunk: usize,
    phase: &mut dyn FnMut(&mut Em, Value, usize, bool, bool),
) {
    let chunks = total.div_ceil(chunk);
    let z = em.ic(0);
    if chunks == 1 {
        phase(em, z, total, false, true);
        return;
    }
    phase(em, z, chunk, false, false);
    if chunks > 2 {
        em.lpc(1, chunks - 1, 1, |em, c| {
            let s0 = em.mul_i(c, chunk as i64);
            phase(em, s0, chunk, true, false);
        });
    }
    let s0 = em.ic(((chunks - 1) * chunk) as i64);
    phase(em, s0, total - (chunks - 1) * chunk, true, true);
}

/// Runs `tile(em, mt, rows)` for the balanced m-tiles `m_lo..m_hi` of `m` rows (see
/// `balanced_tiles`): first those of q + 1 rows, then those of q.
fn for_each_mtile(
    em: &mut Em,
    m: usize,
    mr: usize,
    m_lo: Value,
    m_hi: Value,
    tile: &mut dyn FnMut(&mut Em, Value, usize),
) {
    let (_, q, rem) = balanced_tiles(m, mr);
    let r = em.ic(rem as i64);
    if rem > 0 {
        let hi = em.b.ins().smin(m_hi, r);
        em.lp(m_lo, hi, 1, |em, mt| tile(em, mt, q + 1));
    }
    let lo = em.b.ins().smax(m_lo, r);
    em.lp(lo, m_hi, 1, |em, mt| tile(em, mt, q));
}

/// First row of balanced m-tile `mt` of `m` rows: `mt * q + min(mt, rem)`.
fn mtile_start(em: &mut Em, mt: Value, m: usize, mr: usize) -> Value {
    let (_, q, rem) = balanced_tiles(m, mr);
    let start = em.mul_i(mt, q as i64);
    let extra = em.ic(rem as i64);
    let extra = em.b.ins().smin(mt, extra);
    em.b.ins().iadd(start, extra)
}

/// Calls kernel `full` on tiles `0..nfull`, then on tile `nfull` the narrowest masked
/// variant (`spec(vectors, masked)`) covering its `rem` columns, with `ep[0] = rem`.
#[allow(clippy::too_many_arguments)]
fn full_tiles_then_masked(
    em: &mut Em,
    isa: Vector,
    nfull: Value,
    rem: Value,
    ss: cranelift_codegen::ir::StackSlot,
    spec: &dyn Fn(usize, bool) -> Spec,
    get: &mut dyn FnMut(&Spec, &mut Function) -> FuncRef,
    call: &dyn Fn(&mut Em, FuncRef, Value, Cols),
) {
    let full = get(&spec(isa.nv(), false), em.b.func);
    let z = em.ic(0);
    em.lp(z, nfull, 1, |em, j| {
        call(em, full, j, Cols::Const(isa.nr()))
    });
    masked_tail(em, isa, nfull, rem, ss, spec, get, call);
}

/// The partial tile after `nfull` full ones (`rem` columns, none when 0): the masked
/// variant with the fewest vectors that covers it.
#[allow(clippy::too_many_arguments)]
fn masked_tail(
    em: &mut Em,
    isa: Vector,
    nfull: Value,
    rem: Value,
    ss: cranelift_codegen::ir::StackSlot,
    spec: &dyn Fn(usize, bool) -> Spec,
    get: &mut dyn FnMut(&Spec, &mut Function) -> FuncRef,
    call: &dyn Fn(&mut Em, FuncRef, Value, Cols),
) {
    let vl = isa.vl();
    for nv in 1..=isa.nv() {
        let f = get(&spec(nv, true), em.b.func);
        let gt =
            em.b.ins()
                .icmp_imm_s(IntCC::SignedGreaterThan, rem, ((nv - 1) * vl) as i64);
        let le =
            em.b.ins()
                .icmp_imm_s(IntCC::SignedLessThanOrEqual, rem, (nv * vl) as i64);
        let ok = em.b.ins().band(gt, le);
        em.if_(ok, |em| {
            em.b.ins().stack_store(I64, rem, ss, 0);
            call(em, f, nfull, Cols::Dyn(rem));
        });
    }
}

/// One m-tile (`rows` output channels from tile `mt`) against every panel of the block.
#[allow(clippy::too_many_arguments)]
fn wide_tile(
    em: &mut Em,
    t: &WideTile,
    cx: &WideCtx,
    get: &mut dyn FnMut(&Spec, &mut Function) -> FuncRef,
    mt: Value,
    rows: usize,
    kc0: Value,
    klen: usize,
    acc: bool,
    last: bool,
) {
    let isa = t.isa;
    let (mr, nr) = (isa.mr(), isa.nr());
    let cog = mtile_start(em, mt, t.cout_g, mr);
    let gco = em.mul_i(t.gi, t.cout_g as i64);
    let co = em.b.ins().iadd(gco, cog);
    // Weight micro-panel: [k][rows] from the tile's first row, chunk offset kc0 * rows.
    let wo = em.mul_i(t.gi, (t.cout_g * t.k) as i64);
    let wo2 = em.mul_i(cog, t.k as i64);
    let wo = em.b.ins().iadd(wo, wo2);
    let wo3 = em.mul_i(kc0, rows as i64);
    let wo = em.b.ins().iadd(wo, wo3);
    let wb = em.wptr(t.wpack);
    let wpanel = em.ea(wb, wo);
    let xo = em.mul_i(kc0, nr as i64);
    let xbase = em.ea(t.panels, xo);
    let cpix = em.mul_i(co, t.p_total as i64);
    let cpix = em.b.ins().iadd(cpix, t.p0);
    let crow = em.ea(cx.ob, cpix);
    let ops = if last { cx.ops.clone() } else { Vec::new() };
    let mut res = None;
    if last {
        for (i, s) in cx.slots.iter().enumerate() {
            match s {
                Slot::Chan(off) => {
                    let b = em.wptr(*off);
                    let a = em.ea(b, co);
                    em.b.ins().stack_store(I64, a, cx.ss, (8 * (1 + i)) as i32);
                }
                Slot::Res(v) => {
                    let base = em.vbase(v, t.n);
                    let a = em.ea(base, cpix);
                    res = Some((a, (8 * (1 + i)) as i32));
                }
            }
        }
    }
    let rest = if last { &t.epi[cx.fused..] } else { &[][..] };
    let kv = em.ic(klen as i64);
    let call = |em: &mut Em, f: FuncRef, j: Value, cols: Cols| {
        let xo = em.mul_i(j, (t.k * nr * 4) as i64);
        let xp = em.b.ins().iadd(xbase, xo);
        let co_ = em.mul_i(j, (nr * 4) as i64);
        let c = em.b.ins().iadd(crow, co_);
        if let Some((ra, off)) = res {
            let r = em.b.ins().iadd(ra, co_);
            em.b.ins().stack_store(I64, r, cx.ss, off);
        }
        em.b.ins().call(f, &[wpanel, xp, c, kv, cx.ldc, cx.ep]);
        if !rest.is_empty() {
            let jn = em.mul_i(j, nr as i64);
            let p = em.b.ins().iadd(t.p0, jn);
            post_epi(em, rest, cx.ob, t.n, co, rows, p, t.p_total, cols);
        }
    };
    let spec = |nv: usize, masked: bool| Spec {
        mr: rows,
        nv,
        masked,
        accumulate: acc,
        xstride: nr,
        ops: ops.clone(),
        ..Spec::new(isa)
    };
    full_tiles_then_masked(em, isa, cx.nfull, cx.rem, cx.ss, &spec, get, &call);
}

/// A direct conv kernel's parameters (see `KernelKind::DirectConv`).
struct Direct<'a> {
    x: &'a View,
    g: &'a ConvGeom,
    wpack: usize,
    kc: usize,
    pitch: usize,
    plane: usize,
    taps: &'a [i32],
    nb: usize,
    mchunks: usize,
    m_major: bool,
    tap_masks: Option<crate::plan::TapMaskPlan>,
    chanvec: Option<usize>,
    vector: Vector,
    out: &'a View,
    epi: &'a [Epi],
}

/// A conv read in place (see `KernelKind::DirectConv`). A unit is (batch item,
/// group, block of grid positions, chunk of m-tiles), in that order or with the m-chunk
/// first (`m_major`); for each reduction chunk, each m-tile
/// of the unit, each 32-position tile of the block: one assembled kernel call, writing its
/// tile straight into the output (through the row map when the grid has garbage columns).
fn emit_direct(
    em: &mut Em,
    d: &Direct,
    lo: Value,
    hi: Value,
    get: &mut dyn FnMut(&Spec, &mut Function) -> FuncRef,
) {
    if let Some(cv) = d.chanvec {
        return emit_direct_chanvec(em, d, cv, lo, hi, get);
    }
    let isa = d.vector;
    let (mr, nr) = (isa.mr(), isa.nr());
    let g = d.g;
    let p_total = g.pixels();
    let grid = (g.oh - 1) * d.pitch + g.ow;
    let pblocks = grid.div_ceil(d.nb);
    let (cin_g, cout_g) = (g.cin_g(), g.cout_g());
    let ntaps = d.taps.len();
    let mtiles = balanced_tiles(cout_g, mr).0;
    let mper = mtiles.div_ceil(d.mchunks);
    let remap = row_map(g, d.pitch);
    let (ops, slots, fused) = fuse_prefix(d.epi, p_total, d.vector);
    let rest = &d.epi[fused..];
    assert!(
        remap.is_none() || rest.is_empty(),
        "a remapped tile needs its whole epilogue fused"
    );
    let ebase = match (remap, d.tap_masks) {
        (Some(m), _) => m.slots_at(),
        (None, Some(_)) => 2,
        (None, None) => 1,
    };
    let steps = d.kc / ntaps;
    em.lp(lo, hi, 1, |em, u| {
        let (n, gi, pb, mci) = if d.m_major {
            let (t, pb) = em.divmod(u, pblocks);
            let (mci, t2) = em.divmod(t, d.x.n * g.groups);
            let (n, gi) = em.divmod(t2, g.groups);
            (n, gi, pb, mci)
        } else {
            let (t, mci) = em.divmod(u, d.mchunks);
            let (t2, pb) = em.divmod(t, pblocks);
            let (n, gi) = em.divmod(t2, g.groups);
            (n, gi, pb, mci)
        };
        let q0 = em.mul_i(pb, d.nb as i64);
        let gv = em.ic(grid as i64);
        let left = em.b.ins().isub(gv, q0);
        let nbv = em.ic(d.nb as i64);
        let nq = em.b.ins().smin(left, nbv);
        let xb = em.vbase(d.x, n);
        let gofs = em.mul_i(gi, (cin_g * d.plane) as i64);
        let xb = em.ea(xb, gofs);
        let ob = em.vbase(d.out, n);
        let ss = em.b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            ((ebase + slots.len()) * 8) as u32,
            3,
        ));
        let ep = em.b.ins().stack_addr(I64, ss, 0);
        let ldc = em.ic((p_total * 4) as i64);
        let nfull = em.b.ins().udiv_imm_u(nq, nr as i64);
        let nfr = em.mul_i(nfull, nr as i64);
        let rem = em.b.ins().isub(nq, nfr);
        let ntiles = em.add_i(nq, nr as i64 - 1);
        let ntiles = em.b.ins().udiv_imm_u(ntiles, nr as i64);
        let m_lo = em.mul_i(mci, mper as i64);
        let m_hi = em.add_i(m_lo, mper as i64);
        let mt_n = em.ic(mtiles as i64);
        let m_hi = em.b.ins().smin(m_hi, mt_n);
        let cx = DirectCtx {
            d,
            ops: &ops,
            slots: &slots,
            rest,
            ss,
            ep,
            ebase,
            ldc,
            n,
            gi,
            q0,
            xb,
            ob,
            nfull,
            rem,
            ntiles,
        };
        for_each_chunk(em, cin_g, steps, &mut |em, s0, slen, acc, last| {
            for_each_mtile(em, cout_g, mr, m_lo, m_hi, &mut |em, mt, rows| {
                direct_tile(em, &cx, &mut *get, mt, rows, s0, slen, acc, last)
            });
        });
    });
}

/// A channel-vectorised direct conv (see `asm/chanvec.rs`): a unit is (batch item, group,
/// tile of 32 output channels); for each reduction chunk, each output row, each run of up to
/// `cv` pixels of it: one assembled kernel call.
fn emit_direct_chanvec(
    em: &mut Em,
    d: &Direct,
    cv: usize,
    lo: Value,
    hi: Value,
    get: &mut dyn FnMut(&Spec, &mut Function) -> FuncRef,
) {
    let g = d.g;
    let p_total = g.pixels();
    let (cin_g, cout_g) = (g.cin_g(), g.cout_g());
    let ntaps = d.taps.len();
    let k = cin_g * ntaps;
    let ct_n = cout_g.div_ceil(CV_CHANNELS);
    let (ops, slots, fused) = fuse_prefix(d.epi, p_total, d.vector);
    let rest = &d.epi[fused..];
    let steps = d.kc / ntaps;
    em.lp(lo, hi, 1, |em, u| {
        let (t, ct) = em.divmod(u, ct_n);
        let (n, gi) = em.divmod(t, g.groups);
        let xb = em.vbase(d.x, n);
        let gofs = em.mul_i(gi, (cin_g * d.plane) as i64);
        let xb = em.ea(xb, gofs);
        let ob = em.vbase(d.out, n);
        let ss = em.b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            ((2 + slots.len()) * 8) as u32,
            3,
        ));
        let ep = em.b.ins().stack_addr(I64, ss, 0);
        let ldc = em.ic((p_total * 4) as i64);
        let gco = em.mul_i(gi, cout_g as i64);
        let cto = em.mul_i(ct, CV_CHANNELS as i64);
        let co = em.b.ins().iadd(gco, cto);
        let wt = em.mul_i(gi, chanvec_group_floats(cout_g, k) as i64);
        let wt2 = em.mul_i(ct, (k * CV_CHANNELS) as i64);
        let wt = em.b.ins().iadd(wt, wt2);
        let wb = em.wptr(d.wpack);
        let wtile = em.ea(wb, wt);
        let cp = em.mul_i(co, p_total as i64);
        let cbase = em.ea(ob, cp);
        // The whole unit for a tile of `chans` channels (the last one may be partial).
        let body =
            |em: &mut Em, get: &mut dyn FnMut(&Spec, &mut Function) -> FuncRef, chans: usize| {
                let nv = chans.div_ceil(16);
                let masked = !chans.is_multiple_of(16);
                if masked {
                    let nc = em.ic(chans as i64);
                    em.b.ins().stack_store(I64, nc, ss, 0);
                }
                let mut res = None;
                for (i, sl) in slots.iter().enumerate() {
                    let off = (8 * (2 + i)) as i32;
                    match sl {
                        Slot::Chan(o) => {
                            let b = em.wptr(*o);
                            let a = em.ea(b, co);
                            em.b.ins().stack_store(I64, a, ss, off);
                        }
                        Slot::Res(v) => {
                            let base = em.vbase(v, n);
                            res = Some((em.ea(base, cp), off));
                        }
                    }
                }
                let mut phase = |em: &mut Em, s0: Value, slen: usize, acc: bool, last: bool| {
                    let wo = em.mul_i(s0, (ntaps * nv * 16) as i64);
                    let wpanel = em.ea(wtile, wo);
                    let xo = em.mul_i(s0, d.plane as i64);
                    let xk = em.ea(xb, xo);
                    let kv = em.ic(slen as i64);
                    // Tiles of consecutive output pixels (balanced, at most `cv` each;
                    // unrolled: these images are small), reading the input through the
                    // grid pitch.
                    let ntile = p_total.div_ceil(cv);
                    for ti in 0..ntile {
                        let (p0, p1) = (ti * p_total / ntile, (ti + 1) * p_total / ntile);
                        let grid = |p: usize| ((p / g.ow) * d.pitch + p % g.ow) as i32;
                        let spec = Spec {
                            mr: p1 - p0,
                            nv,
                            masked,
                            accumulate: acc,
                            xstride: d.plane,
                            taps: d.taps.to_vec(),
                            chanvec: true,
                            xoffs: (p0..p1).map(|p| grid(p) - grid(p0)).collect(),
                            partial: !last,
                            ops: if last { ops.clone() } else { Vec::new() },
                            ..Spec::new(d.vector)
                        };
                        let f = get(&spec, em.b.func);
                        // Tile ti's partial sums live in this thread's scratch.
                        let pt = em.add_i(em.scratch, (ti * CV_TILE_FLOATS * 4) as i64);
                        em.b.ins().stack_store(I64, pt, ss, 8);
                        let xp = em.add_i(xk, grid(p0) as i64 * 4);
                        let c = em.add_i(cbase, (p0 * 4) as i64);
                        if let (true, Some((ra, off))) = (last, res) {
                            let r = em.add_i(ra, (p0 * 4) as i64);
                            em.b.ins().stack_store(I64, r, ss, off);
                        }
                        em.b.ins().call(f, &[wpanel, xp, c, kv, ldc, ep]);
                        if last && !rest.is_empty() {
                            let pv = em.ic(p0 as i64);
                            let cols = Cols::Const(p1 - p0);
                            post_epi(em, rest, ob, n, co, chans, pv, p_total, cols);
                        }
                    }
                };
                for_each_chunk(em, cin_g, steps, &mut phase);
            };
        let edge = cout_g % CV_CHANNELS;
        if edge == 0 {
            body(em, &mut *get, CV_CHANNELS);
        } else {
            let is_last = em.b.ins().icmp_imm_s(IntCC::Equal, ct, (ct_n - 1) as i64);
            // Both branches declare kernels through `get`, one after the other.
            let get = std::cell::RefCell::new(&mut *get);
            em.if_else(
                is_last,
                |em| body(em, &mut **get.borrow_mut(), edge),
                |em| body(em, &mut **get.borrow_mut(), CV_CHANNELS),
            );
        }
    });
}

/// Per-unit state of a direct conv (see [`emit_direct`]).
struct DirectCtx<'a> {
    d: &'a Direct<'a>,
    ops: &'a [EpOp],
    slots: &'a [Slot],
    rest: &'a [Epi],
    ss: cranelift_codegen::ir::StackSlot,
    ep: Value,
    /// First epilogue slot in `ep` (after the row map when remapping).
    ebase: usize,
    ldc: Value,
    n: Value,
    gi: Value,
    /// First grid position of the unit's block; tiles in it: full ones, the columns of the
    /// partial one, and all of them.
    q0: Value,
    xb: Value,
    ob: Value,
    nfull: Value,
    rem: Value,
    ntiles: Value,
}

/// One m-tile (`rows` output channels from tile `mt`) over every tile of the unit's block,
/// reduction steps `s0 .. s0 + slen` (an input channel and its taps per step).
#[allow(clippy::too_many_arguments)]
fn direct_tile(
    em: &mut Em,
    cx: &DirectCtx,
    get: &mut dyn FnMut(&Spec, &mut Function) -> FuncRef,
    mt: Value,
    rows: usize,
    s0: Value,
    slen: usize,
    acc: bool,
    last: bool,
) {
    let d = cx.d;
    let g = d.g;
    let isa = d.vector;
    let (mr, nr) = (isa.mr(), isa.nr());
    let p_total = g.pixels();
    let ntaps = d.taps.len();
    let k = g.cin_g() * ntaps;
    let cout_g = g.cout_g();
    let remap = row_map(g, d.pitch);
    let cog = mtile_start(em, mt, cout_g, mr);
    let gco = em.mul_i(cx.gi, cout_g as i64);
    let co = em.b.ins().iadd(gco, cog);
    // Weights: [group][mtile][k][rows], tile mt at its first row * k, from step s0.
    let wo = em.mul_i(cx.gi, (cout_g * k) as i64);
    let wo2 = em.mul_i(cog, k as i64);
    let wo = em.b.ins().iadd(wo, wo2);
    let wo3 = em.mul_i(s0, (ntaps * rows) as i64);
    let wo = em.b.ins().iadd(wo, wo3);
    let wb = em.wptr(d.wpack);
    let wpanel = em.ea(wb, wo);
    let xo = em.mul_i(s0, d.plane as i64);
    let xk = em.ea(cx.xb, xo);
    let cp = em.mul_i(co, p_total as i64);
    let crow = em.ea(cx.ob, cp);
    let mut res = None;
    if last {
        for (i, s) in cx.slots.iter().enumerate() {
            let off = (8 * (cx.ebase + i)) as i32;
            match s {
                Slot::Chan(o) => {
                    let b = em.wptr(*o);
                    let a = em.ea(b, co);
                    em.b.ins().stack_store(I64, a, cx.ss, off);
                }
                Slot::Res(v) => {
                    let base = em.vbase(v, cx.n);
                    res = Some((em.ea(base, cp), off));
                }
            }
        }
    }
    let ops = if last { cx.ops.to_vec() } else { Vec::new() };
    let rest = if last { cx.rest } else { &[][..] };
    let kv = em.ic(slen as i64);
    // Tile `j` of the block: grid position q = q0 + j*nr.
    let call = |em: &mut Em, f: FuncRef, j: Value, cols: Cols| {
        let jq = em.mul_i(j, nr as i64);
        let q = em.b.ins().iadd(cx.q0, jq);
        let xp = em.ea(xk, q);
        let c = em.ea(crow, q);
        if let Some((ra, off)) = res {
            let r = em.ea(ra, q);
            em.b.ins().stack_store(I64, r, cx.ss, off);
        }
        if let Some(m) = remap {
            store_row_map(em, cx, g, d.pitch, m.pieces, q);
        }
        if let Some(crate::plan::TapMaskPlan { table, .. }) = d.tap_masks {
            // The tile's masks: one word per tap, tiles of nr positions.
            let tile = em.b.ins().ushr_imm_u(q, nr.trailing_zeros() as i64);
            let at = em.mul_i(tile, ntaps as i64);
            let base = em.wptr(table);
            let masks = em.ea(base, at);
            em.b.ins().stack_store(I64, masks, cx.ss, 8);
        }
        em.b.ins().call(f, &[wpanel, xp, c, kv, cx.ldc, cx.ep]);
        if !rest.is_empty() {
            post_epi(em, rest, cx.ob, cx.n, co, rows, q, p_total, cols);
        }
    };
    let spec_masks = |nv: usize, masked: bool, tap_masks: TapMasks| Spec {
        mr: rows,
        nv,
        masked,
        accumulate: acc,
        xstride: d.plane,
        taps: d.taps.to_vec(),
        remap,
        prefetch_x: true,
        tap_masks,
        ops: ops.clone(),
        ..Spec::new(isa)
    };
    let z = em.ic(0);
    if remap.is_some() {
        let f = get(&spec_masks(isa.nv(), false, TapMasks::Off), em.b.func);
        em.lp(z, cx.ntiles, 1, |em, j| call(em, f, j, Cols::Const(nr)));
        return;
    }
    if d.tap_masks.is_none() {
        let spec = |nv, masked| spec_masks(nv, masked, TapMasks::Off);
        full_tiles_then_masked(em, isa, cx.nfull, cx.rem, cx.ss, &spec, get, &call);
        return;
    }
    // Tap-masked: full tiles whose every tap stays inside the channel plane load whole
    // vectors (with a window of up to 3 columns their masks are loaded once, by column);
    // the others (top and bottom rows, the partial last tile) mask their loads.
    let inner_masks = match d.tap_masks.and_then(|m| m.by_column) {
        Some(kw) => TapMasks::FmasByColumn(kw),
        None => TapMasks::Fmas,
    };
    let inner = get(&spec_masks(isa.nv(), false, inner_masks), em.b.func);
    let edge = get(
        &spec_masks(isa.nv(), false, TapMasks::FmasAndLoads),
        em.b.func,
    );
    let (q_min, q_max) = crate::plan::interior_tiles(d.taps, d.plane, nr);
    em.lp(z, cx.nfull, 1, |em, j| {
        let jq = em.mul_i(j, nr as i64);
        let q = em.b.ins().iadd(cx.q0, jq);
        let above =
            em.b.ins()
                .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, q, q_min);
        let below =
            em.b.ins()
                .icmp_imm_s(IntCC::SignedLessThanOrEqual, q, q_max);
        let interior = em.b.ins().band(above, below);
        em.if_else(
            interior,
            |em| call(em, inner, j, Cols::Const(nr)),
            |em| call(em, edge, j, Cols::Const(nr)),
        );
    });
    let spec = |nv, masked| spec_masks(nv, masked, TapMasks::FmasAndLoads);
    masked_tail(em, isa, cx.nfull, cx.rem, cx.ss, &spec, get, &call);
}

/// The row map of a direct conv's tiles: none when the grid has no garbage columns,
/// else the gap and how many grid rows a 16-lane vector can span (the planner only picks
/// pitches of at least 8, so at most 3).
fn row_map(g: &ConvGeom, pitch: usize) -> Option<Remap> {
    let gap = pitch - g.ow;
    (gap > 0).then(|| Remap {
        gap: (gap * 4) as i32,
        pieces: if pitch >= 16 { 2 } else { 3 },
    })
}

/// Writes the row map of the remapped tile at grid position `q` into `ep` (see the `asm`
/// module): for each of its two vectors, the byte offset that moves lanes of the vector's
/// first grid row to their output places, and per grid row `b` the mask of its lanes
/// (dropping garbage columns and positions past the grid): lane `l` at column `ox + l` is
/// in row `b` when `b*pitch <= ox + l < b*pitch + ow`.
fn store_row_map(em: &mut Em, cx: &DirectCtx, g: &ConvGeom, pitch: usize, pieces: usize, q: Value) {
    let gap = (pitch - g.ow) as i64;
    let grid = ((g.oh - 1) * pitch + g.ow) as i64;
    let clamp = |em: &mut Em, v: Value| {
        let z = em.ic(0);
        let s = em.ic(16);
        let v = em.b.ins().smax(v, z);
        em.b.ins().smin(v, s)
    };
    // (1 << n) - 1 for n in 0..=16.
    let bits = |em: &mut Em, n: Value| {
        let one = em.ic(1);
        let p = em.b.ins().ishl(one, n);
        em.add_i(p, -1)
    };
    let mut masks = Vec::new();
    for j in 0..2i64 {
        let qv = em.add_i(q, 16 * j);
        let (oy, ox) = em.divmod(qv, pitch);
        let gv = em.ic(grid);
        let to_end = em.b.ins().isub(gv, qv);
        for b in 0..pieces as i64 {
            let start = em.ic(b * pitch as i64);
            let start = em.b.ins().isub(start, ox);
            let lo = clamp(em, start);
            let hi = em.add_i(start, g.ow as i64);
            let hi = em.b.ins().smin(hi, to_end);
            let hi = clamp(em, hi);
            let hb = bits(em, hi);
            let lb = bits(em, lo);
            masks.push(em.b.ins().band_not(hb, lb));
        }
        let off = em.mul_i(oy, -gap * 4);
        em.b.ins().stack_store(I64, off, cx.ss, (8 + 8 * j) as i32);
    }
    for (w, chunk) in masks.chunks(4).enumerate() {
        let mut word = chunk[0];
        for (i, &m) in chunk.iter().enumerate().skip(1) {
            let sh = em.b.ins().ishl_imm_u(m, 16 * i as i64);
            word = em.b.ins().bor(word, sh);
        }
        em.b.ins()
            .stack_store(I64, word, cx.ss, (24 + 8 * w) as i32);
    }
}

/// Copies every channel plane into its padded phase planes (see `KernelKind::PadPlanes`)
/// by assembled rows (`asm/pad.rs`; the planner only makes copies it takes), one call per
/// channel.
#[allow(clippy::too_many_arguments)]
fn emit_pad_planes(
    em: &mut Em,
    x: &View,
    p: PadRows,
    fill: Option<usize>,
    vector: Vector,
    out: &View,
    lo: Value,
    hi: Value,
    get: &mut dyn FnMut(&Spec, &mut Function) -> FuncRef,
) {
    let f = get(
        &Spec::row_kernel(vector, RowKernel::PadPlanes(p)),
        em.b.func,
    );
    // Zero padding: the fill value from a stack slot.
    let zero = fill.is_none().then(|| {
        let ss =
            em.b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, 4, 2));
        let z = em.fc(0.0);
        em.b.ins().stack_store(I64, z, ss, 0);
        em.b.ins().stack_addr(I64, ss, 0)
    });
    em.lp(lo, hi, 1, |em, u| {
        let (n, c) = em.divmod(u, x.c);
        let xp = em.plane(x, n, c);
        let op = em.plane(out, n, c);
        let fp = match (fill, zero) {
            (Some(off), _) => {
                let base = em.wptr(off);
                em.ea(base, c)
            }
            (None, Some(z)) => z,
            (None, None) => unreachable!(),
        };
        let one = em.ic(1);
        let nothing = em.ic(0);
        em.b.ins().call(f, &[fp, xp, op, one, nothing, xp]);
    });
}

/// Copies one input plane into scratch with its padding, split into `sw` column phases:
/// `Q[r][y][j] = P[y][j*sw + r]` where `P` is the plane padded by `pt` rows on top and `pl`
/// columns on the left; `Q` has `ph` rows of `qw` columns per phase. With `fill`, the whole
/// of `Q` is first set to that value; without, cells outside the input are left as they are
/// (callers then only read them into lanes they discard).
#[allow(clippy::too_many_arguments)]
fn padded_copy(
    em: &mut Em,
    xb: Value,
    [h, w]: [usize; 2],
    [pt, pl]: [usize; 2],
    ph: usize,
    qw: usize,
    sw: usize,
    fill: Option<Value>,
) {
    let q = em.scratch;
    if let Some(fillv) = fill {
        let fv = em.splat(fillv);
        em.lpc(0, (sw * ph * qw).div_ceil(4) * 4, 4, |em, i| {
            let a = em.ea(q, i);
            em.st(fv, a, 0);
        });
    }
    em.lpc(0, h, 1, |em, y| {
        let src = em.mul_i(y, w as i64);
        let src = em.ea(xb, src);
        for r in 0..sw {
            // Columns j with x = j*sw + r - pl in [0, w).
            let j_lo = if pl > r { (pl - r).div_ceil(sw) } else { 0 };
            let j_hi = ((w + pl).saturating_sub(r)).div_ceil(sw).min(qw);
            if j_lo >= j_hi {
                continue;
            }
            let rowq = em.add_i(y, pt as i64);
            let rowq = em.mul_i(rowq, qw as i64);
            let rowq = em.add_i(rowq, (r * ph * qw) as i64);
            let dst = em.ea(q, rowq);
            if sw == 1 {
                let cnt = j_hi - j_lo;
                let c4 = cnt / 4 * 4;
                let x0 = j_lo - pl;
                em.lpc(0, c4, 4, |em, i| {
                    let sa = em.ea(src, i);
                    let v = em.ld4(sa, (x0 * 4) as i32);
                    let da = em.ea(dst, i);
                    em.st(v, da, (j_lo * 4) as i32);
                });
                for i in c4..cnt {
                    let v = em.ld1(src, ((x0 + i) * 4) as i32);
                    em.st(v, dst, ((j_lo + i) * 4) as i32);
                }
            } else {
                for j in j_lo..j_hi {
                    let xx = j * sw + r - pl;
                    let v = em.ld1(src, (xx * 4) as i32);
                    em.st(v, dst, (j * 4) as i32);
                }
            }
        }
    });
}

#[allow(clippy::too_many_arguments)]
fn emit_depthwise(
    em: &mut Em,
    x: &View,
    g: &ConvGeom,
    wofs: usize,
    out: &View,
    epi: &[Epi],
    lo: Value,
    hi: Value,
) {
    let [kh, kw] = g.kernel;
    let [sh, sw] = g.stride;
    let [dh, dw] = g.dilation;
    let [pt, pl, pb, _] = g.pad;
    let (h, w) = (g.h, g.w);
    let ph = h + pt + pb;
    let qw = depthwise_qw(g);
    let mult = g.cout_g();
    let (oh, ow) = (g.oh, g.ow);
    let padded = g.pad != [0; 4];
    em.lp(lo, hi, 1, |em, u| {
        let (n, co) = em.divmod(u, g.cout);
        let ci = if mult == 1 {
            co
        } else {
            em.b.ins().udiv_imm_u(co, mult as i64)
        };
        let xb = em.vbase(x, n);
        let cho = em.mul_i(ci, (h * w) as i64);
        let xb = em.ea(xb, cho);
        let fillv = if padded {
            Some(match g.fill {
                Some(f) => {
                    let fp = em.wptr(f);
                    let a = em.ea(fp, ci);
                    em.b.ins().load(F32, ro(), a, 0)
                }
                None => em.fc(0.0),
            })
        } else {
            None
        };
        let q = em.scratch;
        padded_copy(em, xb, [h, w], [pt, pl], ph, qw, sw, fillv);
        // Taps as splats.
        let mut taps = Vec::new();
        let wrow = em.mul_i(co, (kh * kw) as i64);
        let wb = em.wptr(wofs);
        let wb = em.ea(wb, wrow);
        for t in 0..kh * kw {
            let s = em.b.ins().load(F32, ro(), wb, (t * 4) as i32);
            taps.push(em.splat(s));
        }
        let ob = em.vbase(out, n);
        let oco = em.mul_i(co, (oh * ow) as i64);
        let ob = em.ea(ob, oco);
        em.lpc(0, oh, 1, |em, oy| {
            let compute = |em: &mut Em, ox: Value| -> Value {
                let mut acc = None;
                for ky in 0..kh {
                    let row = em.mul_i(oy, sh as i64);
                    let row = em.add_i(row, (ky * dh) as i64);
                    let rb = em.mul_i(row, qw as i64);
                    let rb = em.b.ins().iadd(rb, ox);
                    let rb = em.ea(q, rb);
                    for kx in 0..kw {
                        let r = (kx * dw) % sw;
                        let jo = (kx * dw) / sw;
                        let off = ((r * ph * qw + jo) * 4) as i32;
                        let v = em.ld4(rb, off);
                        let t = taps[ky * kw + kx];
                        acc = Some(match acc {
                            None => em.b.ins().fmul(t, v),
                            Some(a) => em.fmadd(t, v, a),
                        });
                    }
                }
                acc.expect("kernel has at least one tap")
            };
            let orow = em.mul_i(oy, ow as i64);
            em.store_row(ow, orow, ob, epi, n, co, compute);
        });
    });
}

#[allow(clippy::too_many_arguments)]
fn emit_dense(
    em: &mut Em,
    x: &View,
    kd: usize,
    _m: usize,
    wofs: usize,
    out: &View,
    epi: &[Epi],
    lo: Value,
    hi: Value,
) {
    em.lp(lo, hi, 1, |em, o| {
        let wrow = em.mul_i(o, kd as i64);
        let wb = em.wptr(wofs);
        let wb = em.ea(wb, wrow);
        em.lpc(0, x.n, 1, |em, n| {
            let xb = em.vbase(x, n);
            let a0 = em.b.declare_var(F32X4);
            let a1 = em.b.declare_var(F32X4);
            let z = em.vc(0.0);
            em.b.def_var(a0, z);
            em.b.def_var(a1, z);
            let k8 = kd / 8 * 8;
            em.lpc(0, k8, 8, |em, k| {
                let xa = em.ea(xb, k);
                let wa = em.ea(wb, k);
                for (j, var) in [a0, a1].into_iter().enumerate() {
                    let xv = em.ld4(xa, (j * 16) as i32);
                    let wv = em.b.ins().load(F32X4, ro(), wa, (j * 16) as i32);
                    let acc = em.b.use_var(var);
                    let nacc = em.fmadd(xv, wv, acc);
                    em.b.def_var(var, nacc);
                }
            });
            let mut acc = em.b.use_var(a0);
            let acc1 = em.b.use_var(a1);
            if k8 + 4 <= kd {
                let xv = em.ld4(xb, (k8 * 4) as i32);
                let wv = em.b.ins().load(F32X4, ro(), wb, (k8 * 4) as i32);
                acc = em.fmadd(xv, wv, acc);
            }
            let acc = em.b.ins().fadd(acc, acc1);
            let mut s = em.b.ins().extractlane(acc, 0);
            for l in 1..4u8 {
                let e = em.b.ins().extractlane(acc, l);
                s = em.b.ins().fadd(s, e);
            }
            let k4 = kd / 4 * 4;
            for k in k4..kd {
                let xv = em.ld1(xb, (k * 4) as i32);
                let wv = em.b.ins().load(F32, ro(), wb, (k * 4) as i32);
                let m = em.b.ins().fmul(xv, wv);
                s = em.b.ins().fadd(s, m);
            }
            let sv = em.splat(s);
            let z0 = em.ic(0);
            let y = em.epi(epi, sv, n, o, z0, false);
            let y = em.lane0(y);
            let ob = em.vbase(out, n);
            let a = em.ea(ob, o);
            em.st(y, a, 0);
        });
    });
}

/// Max pooling read in place by assembled AVX-512 rows (see `asm/pool.rs`): per channel
/// plane, one call per run of output rows whose windows have the same rows inside the
/// image (the top rows, the middle, the bottom rows).
#[allow(clippy::too_many_arguments)]
fn emit_max_pool_in_place(
    em: &mut Em,
    x: &View,
    p: &bnc_ir::Pool2d,
    [h, w]: [usize; 2],
    [oh, ow]: [usize; 2],
    vector: Vector,
    out: &View,
    lo: Value,
    hi: Value,
    get: &mut dyn FnMut(&Spec, &mut Function) -> FuncRef,
) {
    let [sh, sw] = p.stride;
    let rows_of = |oy: usize| -> Vec<usize> {
        (0..p.kernel[0])
            .filter(|&ky| (p.pad[0]..p.pad[0] + h).contains(&(oy * sh + ky)))
            .collect()
    };
    let mut runs: Vec<(usize, usize, Vec<usize>)> = Vec::new();
    for oy in 0..oh {
        let rows = rows_of(oy);
        match runs.last_mut() {
            Some((_, n, r)) if *r == rows => *n += 1,
            _ => runs.push((oy, 1, rows)),
        }
    }
    let c_n = x.c;
    em.lp(lo, hi, 1, |em, u| {
        let (n, c) = em.divmod(u, c_n);
        let xb = em.plane(x, n, c);
        let ob = em.plane(out, n, c);
        for (oy0, count, rows) in &runs {
            let spec = Spec::row_kernel(
                vector,
                RowKernel::MaxPool(PoolRows {
                    w,
                    ow,
                    kw: p.kernel[1],
                    sw,
                    pl: p.pad[1],
                    rows: rows.clone(),
                    row_step: sh * w,
                }),
            );
            let f = get(&spec, em.b.func);
            // Window row 0 of output row oy0 (above the plane when it is padding).
            let row0 = (oy0 * sh) as i64 - p.pad[0] as i64;
            let xp = em.add_i(xb, row0 * w as i64 * 4);
            let op = em.add_i(ob, (oy0 * ow * 4) as i64);
            let k = em.ic(*count as i64);
            let zero = em.ic(0);
            em.b.ins().call(f, &[xp, xp, op, k, zero, xp]);
        }
    });
}

/// Max/avg pooling, 4 output columns per step, on a padded copy filled with -inf (max) or
/// 0 (avg); avg multiplies by a precomputed per-position reciprocal of the divisor.
#[allow(clippy::too_many_arguments)]
fn emit_pool(
    em: &mut Em,
    x: &View,
    p: &bnc_ir::Pool2d,
    hw: [usize; 2],
    ohw: [usize; 2],
    recip: Option<usize>,
    out: &View,
    epi: &[Epi],
    lo: Value,
    hi: Value,
) {
    let [oh, ow] = ohw;
    let [kh, kw] = p.kernel;
    let [sh, sw] = p.stride;
    let (ph, qw) = pool_q(p, hw, ohw);
    let c_n = x.c;
    let is_max = recip.is_none();
    em.lp(lo, hi, 1, |em, u| {
        let (n, c) = em.divmod(u, c_n);
        let xb = em.plane(x, n, c);
        let fill = em.fc(if is_max { f32::NEG_INFINITY } else { 0.0 });
        padded_copy(em, xb, hw, [p.pad[0], p.pad[1]], ph, qw, sw, Some(fill));
        let q = em.scratch;
        let ob = em.plane(out, n, c);
        let init = em.splat(fill);
        em.lpc(0, oh, 1, |em, oy| {
            let compute = |em: &mut Em, ox: Value| -> Value {
                let mut acc = init;
                for ky in 0..kh {
                    let row = em.mul_i(oy, sh as i64);
                    let row = em.add_i(row, ky as i64);
                    let rb = em.mul_i(row, qw as i64);
                    let rb = em.b.ins().iadd(rb, ox);
                    let rb = em.ea(q, rb);
                    for kx in 0..kw {
                        let off = (((kx % sw) * ph * qw + kx / sw) * 4) as i32;
                        let v = em.ld4(rb, off);
                        acc = if is_max {
                            let gt = em.b.ins().fcmp(FloatCC::GreaterThan, v, acc);
                            let nan = em.b.ins().fcmp(FloatCC::Unordered, v, v);
                            let take = em.b.ins().bor(gt, nan);
                            let take = em.mask_f(take);
                            em.b.ins().bitselect(take, v, acc)
                        } else {
                            em.b.ins().fadd(acc, v)
                        };
                    }
                }
                if let Some(r) = recip {
                    let s = em.mul_i(oy, ow as i64);
                    let s = em.b.ins().iadd(s, ox);
                    let rp = em.wptr(r);
                    let a = em.ea(rp, s);
                    let rv = em.b.ins().load(F32X4, ro(), a, 0);
                    acc = em.b.ins().fmul(acc, rv);
                }
                acc
            };
            let orow = em.mul_i(oy, ow as i64);
            em.store_row(ow, orow, ob, epi, n, c, compute);
        });
    });
}

fn hsum(em: &mut Em, v: Value) -> Value {
    let mut s = em.b.ins().extractlane(v, 0);
    for l in 1..4u8 {
        let e = em.b.ins().extractlane(v, l);
        s = em.b.ins().fadd(s, e);
    }
    s
}

fn emit_gap(em: &mut Em, x: &View, out: &View, epi: &[Epi], lo: Value, hi: Value) {
    let s_n = x.s;
    let c_n = x.c;
    em.lp(lo, hi, 1, |em, u| {
        let (n, c) = em.divmod(u, c_n);
        let xb = em.plane(x, n, c);
        let acc = em.b.declare_var(F32X4);
        let z = em.vc(0.0);
        em.b.def_var(acc, z);
        let s4 = s_n / 4 * 4;
        em.lpc(0, s4, 4, |em, s| {
            let a = em.ea(xb, s);
            let v = em.ld4(a, 0);
            let cur = em.b.use_var(acc);
            let nv = em.b.ins().fadd(cur, v);
            em.b.def_var(acc, nv);
        });
        let accv = em.b.use_var(acc);
        let mut sum = hsum(em, accv);
        for s in s4..s_n {
            let v = em.ld1(xb, (s * 4) as i32);
            sum = em.b.ins().fadd(sum, v);
        }
        let d = em.fc(s_n as f32);
        let mean = em.b.ins().fdiv(sum, d);
        let mv = em.splat(mean);
        let z0 = em.ic(0);
        let y = em.epi(epi, mv, n, c, z0, false);
        let y = em.lane0(y);
        let ob = em.vbase(out, n);
        let a = em.ea(ob, c);
        em.st(y, a, 0);
    });
}

fn emit_softmax(em: &mut Em, x: &View, out: &View, epi: &[Epi], lo: Value, hi: Value) {
    let (c_n, s_n) = (x.c, x.s);
    em.lp(lo, hi, 1, |em, u| {
        let (n, s) = em.divmod(u, s_n);
        let xb = em.vbase(x, n);
        let xb = em.ea(xb, s);
        let ob = em.vbase(out, n);
        let ob = em.ea(ob, s);
        let mx = em.b.declare_var(F32);
        let ninf = em.fc(f32::NEG_INFINITY);
        em.b.def_var(mx, ninf);
        em.lpc(0, c_n, 1, |em, c| {
            let o = em.mul_i(c, s_n as i64);
            let a = em.ea(xb, o);
            let v = em.ld1(a, 0);
            let m = em.b.use_var(mx);
            let gt = em.b.ins().fcmp(FloatCC::GreaterThan, v, m);
            let nm = em.b.ins().select(gt, v, m);
            em.b.def_var(mx, nm);
        });
        let sum = em.b.declare_var(F32);
        let z = em.fc(0.0);
        em.b.def_var(sum, z);
        let m = em.b.use_var(mx);
        em.lpc(0, c_n, 1, |em, c| {
            let o = em.mul_i(c, s_n as i64);
            let a = em.ea(xb, o);
            let v = em.ld1(a, 0);
            let d = em.b.ins().fsub(v, m);
            let dv = em.splat(d);
            let e = em.vexp(dv);
            let e = em.lane0(e);
            let oa = em.ea(ob, o);
            em.st(e, oa, 0);
            let cur = em.b.use_var(sum);
            let ns = em.b.ins().fadd(cur, e);
            em.b.def_var(sum, ns);
        });
        let total = em.b.use_var(sum);
        em.lpc(0, c_n, 1, |em, c| {
            let o = em.mul_i(c, s_n as i64);
            let oa = em.ea(ob, o);
            let e = em.ld1(oa, 0);
            let r = em.b.ins().fdiv(e, total);
            let rv = em.splat(r);
            let y = em.epi(epi, rv, n, c, s, false);
            let y = em.lane0(y);
            em.st(y, oa, 0);
        });
    });
}

#[allow(clippy::too_many_arguments)]
fn emit_pad(
    em: &mut Em,
    x: &View,
    pads: [usize; 4],
    value: f32,
    fill: Option<usize>,
    hw: [usize; 2],
    ohw: [usize; 2],
    out: &View,
    epi: &[Epi],
    lo: Value,
    hi: Value,
) {
    let [h, w] = hw;
    let [oh, ow] = ohw;
    let c_n = x.c;
    em.lp(lo, hi, 1, |em, u| {
        let (n, c) = em.divmod(u, c_n);
        let xb = em.plane(x, n, c);
        let ob = em.plane(out, n, c);
        let fill = match fill {
            // Per-channel fill: fill[c] from the weights blob.
            Some(off) => {
                let base = em.wptr(off);
                let a = em.ea(base, c);
                em.b.ins().load(F32, ro(), a, 0)
            }
            None => em.fc(value),
        };
        em.lpc(0, oh, 1, |em, oy| {
            let iy = em.add_i(oy, -(pads[0] as i64));
            let rok = em.in_range(iy, h);
            let rowo = em.mul_i(iy, w as i64);
            em.lpc(0, ow, 1, |em, ox| {
                let ix = em.add_i(ox, -(pads[1] as i64));
                let cok = em.in_range(ix, w);
                let inb = em.b.ins().band(rok, cok);
                let idx = em.b.ins().iadd(rowo, ix);
                let a = em.ea(xb, idx);
                let a = em.b.ins().select(inb, a, xb);
                let v = em.ld1(a, 0);
                let v = em.b.ins().select(inb, v, fill);
                let s = em.mul_i(oy, ow as i64);
                let s = em.b.ins().iadd(s, ox);
                let vv = em.splat(v);
                let y = em.epi(epi, vv, n, c, s, false);
                let y = em.lane0(y);
                let oa = em.ea(ob, s);
                em.st(y, oa, 0);
            });
        });
    });
}
