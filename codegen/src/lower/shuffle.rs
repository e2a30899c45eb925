//! Channel shuffle: a copy with the channels remapped.

use super::*;

/// Units are `(n, o)` output planes: `y[n, o, s] = epi(x[n, src(o), s])` with
/// `src(o) = (o mod g)·(C/g) + o div g` (`bnc_ir::shuffle_source`), 4 lanes at a time.
pub(super) fn emit_shuffle(em: &mut Em, io: &Io, groups: usize) {
    let Io {
        x,
        out,
        epi,
        lo,
        hi,
    } = *io;
    let (c_n, s_n) = (x.c, x.s);
    let per = c_n / groups.max(1);
    em.lp(lo, hi, 1, |em, u| {
        let (n, o) = em.divmod(u, c_n);
        let (q, r) = em.divmod(o, groups);
        let src = em.mul_i(r, per as i64);
        let src = em.b.ins().iadd(src, q);
        let xb = em.plane(x, n, src);
        let ob = em.plane(out, n, o);
        let s4 = s_n / 4 * 4;
        em.lpc(0, s4, 4, |em, s| {
            let a = em.ea(xb, s);
            let v = em.ld4(a, 0);
            let y = em.epi(epi, v, n, o, s, true);
            let oa = em.ea(ob, s);
            em.st(y, oa, 0);
        });
        for s in s4..s_n {
            let v = em.ld1(xb, (s * 4) as i32);
            let v = em.splat(v);
            let si = em.ic(s as i64);
            let y = em.epi(epi, v, n, o, si, false);
            let y = em.lane0(y);
            em.st(y, ob, (s * 4) as i32);
        }
    });
}
