//! Channel shuffle: a copy with the channels remapped.

use super::*;

/// Units are `(n, o)` output planes: `y[n, o, s] = epi(x[n, src(first + o), s])` with
/// `src(j) = (j mod g)·(C/g) + j div g` (`bnc_ir::shuffle_source`), 4 lanes at a time.
pub(super) fn emit_shuffle(em: &mut Em, io: &Io, groups: usize, first: usize) {
    let Io {
        x,
        out,
        epi,
        lo,
        hi,
    } = *io;
    let (c_n, s_n) = (out.c, x.s);
    let per = x.c / groups.max(1);
    em.lp(lo, hi, 1, |em, u| {
        let (n, o) = em.divmod(u, c_n);
        let j = em.add_i(o, first as i64);
        let (q, r) = em.divmod(j, groups);
        let src = em.mul_i(r, per as i64);
        let src = em.b.ins().iadd(src, q);
        let xb = em.plane(x, n, src);
        let ob = em.plane(out, n, o);
        copy_plane(em, xb, ob, s_n, epi, n, o);
    });
}
