//! Layer normalisation over the channels at each position of an `[N, C, S]` tensor.

use super::*;

/// Units are `(n, g)`: the 4 positions `4g..4g + 4` of item `n`, normalised together (one
/// f32x4 lane per position) by reading each channel plane at that offset; a partial last
/// group runs position by position. Three passes over the channels: the mean, the biased
/// variance around it (both summed with Kahan compensation, so a sum over hundreds of
/// channels stays within a few ulp), then `(x − mean)·rstd·weight[c] + bias[c]` and the
/// epilogue.
pub(super) fn emit_layer_norm(em: &mut Em, io: &Io, eps: f32, weight: usize, bias: usize) {
    let (lo, hi, s_n) = (io.lo, io.hi, io.x.s);
    let groups = s_n.div_ceil(4);
    let full = s_n / 4;
    em.lp(lo, hi, 1, |em, u| {
        let (n, g) = em.divmod(u, groups);
        if full == groups {
            let s = em.mul_i(g, 4);
            norm_at(em, io, n, s, true, eps, weight, bias);
        } else {
            let whole = em.b.ins().icmp_imm_s(IntCC::SignedLessThan, g, full as i64);
            em.if_else(
                whole,
                |em| {
                    let s = em.mul_i(g, 4);
                    norm_at(em, io, n, s, true, eps, weight, bias);
                },
                |em| {
                    em.lpc(full * 4, s_n, 1, |em, s| {
                        norm_at(em, io, n, s, false, eps, weight, bias);
                    });
                },
            );
        }
    });
}

/// Normalises position `s` of item `n` (4 positions from `s` when `vec`).
#[allow(clippy::too_many_arguments)]
fn norm_at(
    em: &mut Em,
    io: &Io,
    n: Value,
    s: Value,
    vec: bool,
    eps: f32,
    weight: usize,
    bias: usize,
) {
    let (x, out, epi) = (io.x, io.out, io.epi);
    let (c_n, s_n) = (x.c, x.s);
    let xb = em.vbase(x, n);
    let xb = em.ea(xb, s);
    let ob = em.vbase(out, n);
    let ob = em.ea(ob, s);
    let load = |em: &mut Em, c: Value| {
        let o = em.mul_i(c, s_n as i64);
        let a = em.ea(xb, o);
        if vec {
            em.ld4(a, 0)
        } else {
            let v = em.ld1(a, 0);
            em.splat(v)
        }
    };
    // Kahan sum of `term(c)` over the channels.
    let kahan = |em: &mut Em, term: &dyn Fn(&mut Em, Value) -> Value| {
        let sum = em.b.declare_var(F32X4);
        let comp = em.b.declare_var(F32X4);
        let z = em.vc(0.0);
        em.b.def_var(sum, z);
        em.b.def_var(comp, z);
        em.lpc(0, c_n, 1, |em, c| {
            let v = term(em, c);
            let cur = em.b.use_var(sum);
            let k = em.b.use_var(comp);
            let y = em.b.ins().fsub(v, k);
            let t = em.b.ins().fadd(cur, y);
            let d = em.b.ins().fsub(t, cur);
            let nk = em.b.ins().fsub(d, y);
            em.b.def_var(sum, t);
            em.b.def_var(comp, nk);
        });
        em.b.use_var(sum)
    };
    let count = em.vc(c_n as f32);
    let total = kahan(em, &|em, c| load(em, c));
    let mean = em.b.ins().fdiv(total, count);
    let squares = kahan(em, &|em, c| {
        let v = load(em, c);
        let d = em.b.ins().fsub(v, mean);
        em.b.ins().fmul(d, d)
    });
    let var = em.b.ins().fdiv(squares, count);
    let e = em.vc(eps);
    let ve = em.b.ins().fadd(var, e);
    let sd = em.b.ins().sqrt(ve);
    let one = em.vc(1.0);
    let rstd = em.b.ins().fdiv(one, sd);
    em.lpc(0, c_n, 1, |em, c| {
        let v = load(em, c);
        let d = em.b.ins().fsub(v, mean);
        let nv = em.b.ins().fmul(d, rstd);
        let wp = em.wptr(weight);
        let wa = em.ea(wp, c);
        let w = em.b.ins().load(F32, ro(), wa, 0);
        let w = em.splat(w);
        let bp = em.wptr(bias);
        let ba = em.ea(bp, c);
        let b = em.b.ins().load(F32, ro(), ba, 0);
        let b = em.splat(b);
        let y = em.fmadd(nv, w, b);
        let y = em.epi(epi, y, n, c, s, vec);
        let o = em.mul_i(c, s_n as i64);
        let oa = em.ea(ob, o);
        if vec {
            em.st(y, oa, 0);
        } else {
            let y = em.lane0(y);
            em.st(y, oa, 0);
        }
    });
}
