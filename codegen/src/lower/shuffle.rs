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
        copy_plane(em, xb, ob, s_n, epi, n, o);
    });
}
