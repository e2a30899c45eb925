//! Transposed convolution, phase-split (`KernelKind::ConvTranspose`): units are output
//! planes `(n, o)`. Only groups of fewer than 4 input channels (depthwise decoders) and
//! `cols` past i32 offsets run here; the others run as a packed GEMM plus a col2im pass
//! (`plan/conv_transpose.rs`, `lower/col2im.rs`).
//!
//! A transposed conv scatters: input `(iy, ix)` of channel `ci` adds `W[ci, o, ky, kx]·x` to
//! output `(iy·sh + ky·dh − pad_top, ix·sw + kx·dw − pad_left)`. For one tap `(ky, kx)` the
//! inputs that land inside the output form a rectangle (`ConvTTap`, computed at plan time),
//! and their outputs all sit in one stride phase `(oy mod sh, ox mod sw)`, consecutive in
//! that phase. Scratch holds the output plane phase-split (one plane per phase):
//!
//! 1. zero the phase planes;
//! 2. per phase, split its rows and its columns into runs that one set of taps reaches
//!    (known at compile time), and for each rectangle of runs gather: a block of 4 f32x4
//!    (then single f32x4, then scalar) phase positions accumulates in registers over the
//!    group's input channels, and for each channel over the rectangle's taps, reading
//!    contiguous input rows, and is stored once. The order of the sums per output
//!    (channel, ky, kx) is the scatter's, so results match it bit for bit;
//! 3. interleave the phases into each output row (stride 1: no interleaving) and store it
//!    through the epilogue, which starts with the bias.
//!
//! Positions no tap reaches (output padding, phases without taps) stay 0 and get the bias,
//! as in the interpreter.
//!
//! The first version scattered tap by tap, a read-modify-write pass over a phase plane per
//! tap and channel. This gather took 13.4 ms (1 thread) on a U-Net up-step 1x64x56x56 → 32
//! channels 2x2 stride 2, the GEMM + col2im path 1.7 ms (BENCHMARKS.md, same command): every
//! output plane here rereads the whole input, outside the packed microkernels.

use super::*;
use crate::plan::ConvTTap;

/// A transposed conv's geometry, as planned.
pub(super) struct ConvT<'a> {
    pub hw: [usize; 2],
    pub ohw: [usize; 2],
    pub cin_g: usize,
    pub cout_g: usize,
    /// Blob offset of the weight, `[out][in / groups][kh][kw]`.
    pub w: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub taps: &'a [Vec<ConvTTap>; 2],
    pub phase: [usize; 2],
}

/// The phase positions `0..n` of phase `ph` split into runs that one set of taps reaches:
/// `(start, end, taps)`, runs no tap reaches left out.
fn segments(taps: &[ConvTTap], ph: usize, n: usize) -> Vec<(usize, usize, Vec<usize>)> {
    let mut r = runs(taps, ph, n);
    r.retain(|s| !s.2.is_empty());
    r
}

pub(super) fn emit_conv_transpose(em: &mut Em, io: &Io, k: &ConvT) {
    let Io {
        x,
        out,
        epi,
        lo,
        hi,
    } = *io;
    let groups = x.c / k.cin_g;
    let cout = k.cout_g * groups;
    let [_, w] = k.hw;
    let [oh, ow] = k.ohw;
    let [sh, sw] = k.stride;
    let [_, p1] = k.phase;
    let plane = k.phase[0] * p1;
    let planes = sh * sw * plane;
    let [kh, kw] = k.kernel;
    let khkw = kh * kw;
    let cin_g = k.cin_g;
    em.lp(lo, hi, 1, |em, u| {
        let (n, o) = em.divmod(u, cout);
        let ob = em.plane(out, n, o);
        let acc = em.scratch;
        // 1. Zero the phase planes (the last vector may run into the slack).
        let zero = em.vc(0.0);
        em.lpc(0, planes, 4, |em, i| {
            let a = em.ea(acc, i);
            em.st(zero, a, 0);
        });
        // 2. Gather into the phase planes: per phase, per rectangle of phase positions that
        // one set of taps reaches, a block of output vectors accumulates in registers over
        // the group's input channels and those taps (the scatter's order: channel, ky, kx).
        let g = em.b.ins().udiv_imm_u(o, k.cout_g as i64);
        let ci0 = em.mul_i(g, cin_g as i64);
        let xb = em.plane(x, n, ci0);
        let wt = em.wptr(k.w);
        let wo = em.mul_i(o, (cin_g * khkw) as i64);
        let wbase = em.ea(wt, wo);
        let xs = x.s;
        for py in 0..sh.min(oh) {
            let rows = (oh - py).div_ceil(sh);
            for px in 0..sw.min(ow) {
                let cols = (ow - px).div_ceil(sw);
                let rsegs = segments(&k.taps[0], py, rows);
                let csegs = segments(&k.taps[1], px, cols);
                for (ra, rb, kys) in &rsegs {
                    for (ca, cb, kxs) in &csegs {
                        // (weight index, input byte offset from (qy·w + qx)).
                        let mut tl = Vec::new();
                        for &ky in kys {
                            let ty = k.taps[0][ky];
                            for &kx in kxs {
                                let tx = k.taps[1][kx];
                                let off = (ty.i0 as i64 - ty.q0 as i64) * w as i64
                                    + (tx.i0 as i64 - tx.q0 as i64);
                                tl.push((ky * kw + kx, (off * 4) as i32));
                            }
                        }
                        let pbase = (py * sw + px) * plane;
                        let (ca, cb) = (*ca, *cb);
                        let len = cb - ca;
                        let c16 = ca + len / 16 * 16;
                        let c4 = ca + len / 4 * 4;
                        em.lpc(*ra, *rb, 1, |em, qy| {
                            let dr = em.mul_i(qy, p1 as i64);
                            let dr = em.add_i(dr, pbase as i64);
                            let drow = em.ea(acc, dr);
                            let sr = em.mul_i(qy, w as i64);
                            let xrow = em.ea(xb, sr);
                            let blk = |em: &mut Em, c: Value, nv: usize, scalar: bool| {
                                let d = em.ea(drow, c);
                                let s0 = em.ea(xrow, c);
                                let ty = if scalar { F32 } else { F32X4 };
                                let z = if scalar { em.fc(0.0) } else { em.vc(0.0) };
                                let vars: Vec<Variable> = (0..nv)
                                    .map(|_| {
                                        let v = em.b.declare_var(ty);
                                        em.b.def_var(v, z);
                                        v
                                    })
                                    .collect();
                                em.lpc(0, cin_g, 1, |em, cil| {
                                    let xo = em.mul_i(cil, xs as i64);
                                    let xp = em.ea(s0, xo);
                                    let wr = em.mul_i(cil, khkw as i64);
                                    let wrow = em.ea(wbase, wr);
                                    for &(wi, off) in &tl {
                                        let wv = em.b.ins().load(F32, ro(), wrow, (wi * 4) as i32);
                                        let wv = if scalar { wv } else { em.splat(wv) };
                                        for (v, &var) in vars.iter().enumerate() {
                                            let xv = if scalar {
                                                em.ld1(xp, off)
                                            } else {
                                                em.ld4(xp, off + (v * 16) as i32)
                                            };
                                            let a = em.b.use_var(var);
                                            let a = em.fmadd(wv, xv, a);
                                            em.b.def_var(var, a);
                                        }
                                    }
                                });
                                for (v, &var) in vars.iter().enumerate() {
                                    let a = em.b.use_var(var);
                                    em.st(a, d, (v * 16) as i32);
                                }
                            };
                            em.lpc(ca, c16, 16, |em, c| blk(em, c, 4, false));
                            em.lpc(c16, c4, 4, |em, c| blk(em, c, 1, false));
                            for c in c4..cb {
                                let c = em.ic(c as i64);
                                blk(em, c, 1, true);
                            }
                        });
                    }
                }
            }
        }
        // 3. Output rows, phase by phase of the rows: interleave the column phases into
        // one row, then store it through the epilogue.
        let row = em.add_i(acc, ((planes + 4) * 4) as i64);
        for py in 0..sh.min(oh) {
            let rows = (oh - py).div_ceil(sh);
            em.lpc(0, rows, 1, |em, qy| {
                let oy = em.mul_i(qy, sh as i64);
                let oy = em.add_i(oy, py as i64);
                let orow = em.mul_i(oy, ow as i64);
                let qrow = em.mul_i(qy, p1 as i64);
                let src = if sw == 1 {
                    let base = em.add_i(acc, (py * plane * 4) as i64);
                    em.ea(base, qrow)
                } else {
                    for px in 0..sw.min(ow) {
                        let cols = (ow - px).div_ceil(sw);
                        let base = em.add_i(acc, ((py * sw + px) * plane * 4) as i64);
                        let prow = em.ea(base, qrow);
                        em.lpc(0, cols, 1, |em, qx| {
                            let a = em.ea(prow, qx);
                            let v = em.ld1(a, 0);
                            let ox = em.mul_i(qx, sw as i64);
                            let ox = em.add_i(ox, px as i64);
                            let d = em.ea(row, ox);
                            em.st(v, d, 0);
                        });
                    }
                    row
                };
                em.store_row(ow, orow, ob, epi, n, o, |em, ox| {
                    let a = em.ea(src, ox);
                    em.ld4(a, 0)
                });
            });
        }
    });
}
