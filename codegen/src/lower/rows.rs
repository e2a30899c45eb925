//! Softmax over channels and constant/fill padding.

use super::*;

pub(super) fn emit_softmax(em: &mut Em, io: &Io) {
    let Io {
        x,
        out,
        epi,
        lo,
        hi,
    } = *io;
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

pub(super) fn emit_pad(
    em: &mut Em,
    io: &Io,
    pads: [usize; 4],
    value: f32,
    fill: Option<usize>,
    hw: [usize; 2],
    ohw: [usize; 2],
) {
    let Io {
        x,
        out,
        epi,
        lo,
        hi,
    } = *io;
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
