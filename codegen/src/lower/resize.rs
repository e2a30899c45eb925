//! Resize (`KernelKind::Resize`): units are `(n, c)` planes. The source indices and weights
//! of every output row and column were computed at plan time (`bnc_ir::Resize::taps`) and
//! sit in the weights blob, so the kernel is index loads, loads and multiply-adds:
//!
//! 1. horizontal pass, scalar: for each of the `h` input rows, `t[y][ox] = wx0·x[y][x0] +
//!    wx1·x[y][x1]` (nearest: `x[y][x0]`) into this thread's scratch;
//! 2. vertical pass, f32x4 along the output row: `out[oy][ox..] = wy0·t[y0][ox..] +
//!    wy1·t[y1][ox..]` (nearest: `t[y0][ox..]`), through the epilogue.
//!
//! The order of operations is the interpreter's (`(1 − w)·a + w·b` per axis, columns
//! first), so the two agree to f32 rounding.

use super::*;

/// The table at blob offset `base` over `len` entries: `[i0; len] [i1; len] [1 − w; len]
/// [w; len]`. Entry `k`'s `(i0, i1, 1 − w, w)`; `i1` and the weights only for bilinear.
fn tap(
    em: &mut Em,
    base: usize,
    len: usize,
    k: Value,
    bilinear: bool,
) -> (Value, Option<(Value, Value, Value)>) {
    let t = em.wptr(base);
    let a = em.ea(t, k);
    let step = (len * 4) as i32;
    let i0 = em.b.ins().load(I32, ro(), a, 0);
    let i0 = em.b.ins().uextend(I64, i0);
    if !bilinear {
        return (i0, None);
    }
    let i1 = em.b.ins().load(I32, ro(), a, step);
    let i1 = em.b.ins().uextend(I64, i1);
    let w0 = em.b.ins().load(F32, ro(), a, 2 * step);
    let w1 = em.b.ins().load(F32, ro(), a, 3 * step);
    (i0, Some((i1, w0, w1)))
}

pub(super) fn emit_resize(
    em: &mut Em,
    io: &Io,
    bilinear: bool,
    [h, w]: [usize; 2],
    [oh, ow]: [usize; 2],
    rows: usize,
    cols: usize,
) {
    let Io {
        x,
        out,
        epi,
        lo,
        hi,
    } = *io;
    let c_n = x.c;
    em.lp(lo, hi, 1, |em, u| {
        let (n, c) = em.divmod(u, c_n);
        let xb = em.plane(x, n, c);
        let ob = em.plane(out, n, c);
        let t = em.scratch;
        // 1. Every input row resized to `ow` columns.
        em.lpc(0, h, 1, |em, y| {
            let xrow = em.mul_i(y, w as i64);
            let xrow = em.ea(xb, xrow);
            let trow = em.mul_i(y, ow as i64);
            let trow = em.ea(t, trow);
            em.lpc(0, ow, 1, |em, ox| {
                let (i0, rest) = tap(em, cols, ow, ox, bilinear);
                let a0 = em.ea(xrow, i0);
                let v0 = em.ld1(a0, 0);
                let v = match rest {
                    Some((i1, w0, w1)) => {
                        let a1 = em.ea(xrow, i1);
                        let v1 = em.ld1(a1, 0);
                        let m = em.b.ins().fmul(w0, v0);
                        em.fmadd(w1, v1, m)
                    }
                    None => v0,
                };
                let ta = em.ea(trow, ox);
                em.st(v, ta, 0);
            });
        });
        // 2. Each output row from the one or two scratch rows it reads.
        em.lpc(0, oh, 1, |em, oy| {
            let (y0, rest) = tap(em, rows, oh, oy, bilinear);
            let r0 = em.mul_i(y0, ow as i64);
            let r0 = em.ea(t, r0);
            let r1 = rest.map(|(y1, w0, w1)| {
                let r1 = em.mul_i(y1, ow as i64);
                let r1 = em.ea(t, r1);
                (r1, em.splat(w0), em.splat(w1))
            });
            let orow = em.mul_i(oy, ow as i64);
            em.store_row(ow, orow, ob, epi, n, c, |em, ox| {
                let a0 = em.ea(r0, ox);
                let v0 = em.ld4(a0, 0);
                match r1 {
                    Some((r1, w0, w1)) => {
                        let a1 = em.ea(r1, ox);
                        let v1 = em.ld4(a1, 0);
                        let m = em.b.ins().fmul(w0, v0);
                        em.fmadd(w1, v1, m)
                    }
                    None => v0,
                }
            });
        });
    });
}
