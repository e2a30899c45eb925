//! Dense layers with the Cranelift kernel.

use super::*;

pub(super) fn emit_dense(em: &mut Em, io: &Io, kd: usize, _m: usize, wofs: usize) {
    let Io {
        x,
        out,
        epi,
        lo,
        hi,
    } = *io;
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
