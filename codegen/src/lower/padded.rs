//! Padded, stride-phase copies (assembled `PadPlanes`, and the Cranelift copy pooling and
//! depthwise convs read) and depthwise convs.

use super::*;

/// Copies every channel plane into its padded phase planes (see `KernelKind::PadPlanes`)
/// by assembled rows (`isa/x64/asm/pad.rs`; the planner only makes copies it takes), one call per
/// channel.
pub(super) fn emit_pad_planes(
    em: &mut Em,
    io: &Io,
    p: PadRows,
    fill: Option<usize>,
    vector: Vector,
    get: &mut dyn FnMut(&Spec, &mut Function) -> FuncRef,
) {
    let Io { x, out, lo, hi, .. } = *io;
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
pub(super) fn padded_copy(
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

pub(super) fn emit_depthwise(em: &mut Em, io: &Io, g: &ConvGeom, wofs: usize) {
    let Io {
        x,
        out,
        epi,
        lo,
        hi,
    } = *io;
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
        // The input channel, through the conv's channel table if it has one.
        let src = match g.chan {
            Some(t) => {
                let t = em.wptr(t);
                let a = em.ea(t, ci);
                let c = em.b.ins().load(I32, ro(), a, 0);
                em.b.ins().uextend(I64, c)
            }
            None => ci,
        };
        let cho = em.mul_i(src, (h * w) as i64);
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
