//! The col2im half of a transposed conv run as a GEMM (`KernelKind::Col2Im`, planned in
//! `plan/conv_transpose.rs`); units are output planes `(n, o)`.
//!
//! Output row `oy` is phase row `qy = oy div sh` of row phase `py = oy mod sh`. The taps
//! `ky` that reach phase row `qy`, and per column phase `px` the runs of phase columns one
//! set of taps `kx` reaches, are known at compile time ([`runs`]), and the `cols` entries
//! of one tap along a run are consecutive: row `iy` of plane `o·kh·kw + ky·kw + kx`. Per
//! output row:
//!
//! 1. each column phase's runs are summed into its scratch row, 4 vectors at a time (then
//!    1, then lane by lane): the first tap's entry plus the others in `(ky, kx)` order;
//!    runs no tap reaches get 0;
//! 2. the phase rows are interleaved into the output row: stride 1 has one phase row,
//!    stride 2 unpacks pairs of vectors (low and high halves), larger strides go lane by
//!    lane;
//! 3. the row is stored through the epilogue (which starts with the bias).
//!
//! With stride = kernel and no padding (U-Net's 2x2 stride 2) every run has one tap: a
//! depth-to-space copy.

use super::*;
use crate::plan::{ConvTTap, col2im_row_floats};
use cranelift_codegen::ir::Endianness;
use cranelift_codegen::ir::types::I8X16;

/// A planned col2im.
pub(super) struct Col2Im<'a> {
    pub hw: [usize; 2],
    pub ohw: [usize; 2],
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub taps: &'a [Vec<ConvTTap>; 2],
}

/// The phase positions `0..n` of phase `ph` split into runs that one set of taps reaches:
/// `(start, end, taps)`, the set empty for runs no tap reaches.
pub(super) fn runs(taps: &[ConvTTap], ph: usize, n: usize) -> Vec<(usize, usize, Vec<usize>)> {
    let live: Vec<usize> = (0..taps.len())
        .filter(|&t| taps[t].count > 0 && taps[t].phase == ph)
        .collect();
    let mut cuts = vec![0, n];
    for &t in &live {
        cuts.push(taps[t].q0.min(n));
        cuts.push((taps[t].q0 + taps[t].count).min(n));
    }
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2)
        .map(|c| {
            let set = live
                .iter()
                .copied()
                .filter(|&t| taps[t].q0 <= c[0] && c[1] <= taps[t].q0 + taps[t].count)
                .collect();
            (c[0], c[1], set)
        })
        .collect()
}

pub(super) fn emit_col2im(em: &mut Em, io: &Io, k: &Col2Im) {
    let Io {
        x,
        out,
        epi,
        lo,
        hi,
    } = *io;
    let [h, w] = k.hw;
    let [oh, ow] = k.ohw;
    let [sh, sw] = k.stride;
    let kw = k.kernel[1];
    let khkw = k.kernel[0] * kw;
    let plane = h * w;
    let row_f = col2im_row_floats(ow);
    let phase_f = col2im_row_floats(ow.div_ceil(sw));
    let phases = sw.min(ow);
    let col_runs: Vec<_> = (0..phases)
        .map(|px| runs(&k.taps[1], px, (ow - px).div_ceil(sw)))
        .collect();
    em.lp(lo, hi, 1, |em, u| {
        let (n, o) = em.divmod(u, out.c);
        let ob = em.plane(out, n, o);
        let c0 = em.mul_i(o, khkw as i64);
        let cb = em.plane(x, n, c0);
        let row = em.scratch;
        let prow: Vec<Value> = (0..phases)
            .map(|px| em.add_i(row, ((row_f + px * phase_f) * 4) as i64))
            .collect();
        for py in 0..sh.min(oh) {
            for (ra, rb, kys) in runs(&k.taps[0], py, (oh - py).div_ceil(sh)) {
                em.lpc(ra, rb, 1, |em, qy| {
                    // 1. The phase rows, run by run.
                    let sr = em.mul_i(qy, w as i64);
                    let srow = em.ea(cb, sr);
                    for (px, runs) in col_runs.iter().enumerate() {
                        for (ca, cb_, kxs) in runs {
                            let mut offs = Vec::new();
                            for &ky in &kys {
                                let ty = k.taps[0][ky];
                                for &kx in kxs {
                                    let tx = k.taps[1][kx];
                                    let off = ((ky * kw + kx) * plane) as i64
                                        + (ty.i0 as i64 - ty.q0 as i64) * w as i64
                                        + (tx.i0 as i64 - tx.q0 as i64);
                                    offs.push((off * 4) as i32);
                                }
                            }
                            sum_run(em, prow[px], srow, *ca, *cb_, &offs);
                        }
                    }
                    // 2. Interleave the column phases.
                    let src = interleave(em, row, &prow, ow, sw);
                    // 3. Store through the epilogue.
                    let oy = em.mul_i(qy, sh as i64);
                    let oy = em.add_i(oy, py as i64);
                    let orow = em.mul_i(oy, ow as i64);
                    em.store_row(ow, orow, ob, epi, n, o, |em, ox| {
                        let a = em.ea(src, ox);
                        em.ld4(a, 0)
                    });
                });
            }
        }
    });
}

/// `dst[q] = Σ src[q + off]` over the byte offsets `offs` in order (0 when empty), for
/// the phase columns `q` in `ca..cb`.
fn sum_run(em: &mut Em, dst: Value, src: Value, ca: usize, cb: usize, offs: &[i32]) {
    let len = cb - ca;
    let c16 = ca + len / 16 * 16;
    let c4 = ca + len / 4 * 4;
    let blk = |em: &mut Em, q: Value, nv: usize, scalar: bool| {
        let d = em.ea(dst, q);
        let s = em.ea(src, q);
        for v in 0..nv {
            let step = (v * 16) as i32;
            let mut acc = None;
            for &off in offs {
                let x = if scalar {
                    em.ld1(s, off)
                } else {
                    em.ld4(s, off + step)
                };
                acc = Some(match acc {
                    Some(a) => em.b.ins().fadd(a, x),
                    None => x,
                });
            }
            let y = match acc {
                Some(a) => a,
                None if scalar => em.fc(0.0),
                None => em.vc(0.0),
            };
            em.st(y, d, step);
        }
    };
    em.lpc(ca, c16, 16, |em, q| blk(em, q, 4, false));
    em.lpc(c16, c4, 4, |em, q| blk(em, q, 1, false));
    for q in c4..cb {
        let q = em.ic(q as i64);
        blk(em, q, 1, true);
    }
}

/// The output row from its column-phase rows `prow`: the phase row itself at stride 1,
/// else interleaved into `row` (returned).
fn interleave(em: &mut Em, row: Value, prow: &[Value], ow: usize, sw: usize) -> Value {
    if prow.len() == 1 && sw == 1 {
        return prow[0];
    }
    if sw == 2 && prow.len() == 2 {
        // [a0 a1 a2 a3] and [b0 b1 b2 b3] to [a0 b0 a1 b1] [a2 b2 a3 b3] (unpcklps and
        // unpckhps as byte shuffles, which the x64 backend matches); whole pairs of
        // vectors, past `ow` into the rows' slack.
        let lo: Vec<u8> = [0u8, 16, 4, 20].iter().flat_map(|&b| b..b + 4).collect();
        let hi: Vec<u8> = lo.iter().map(|b| b + 8).collect();
        let lo = em.b.func.dfg.immediates.push(lo.into());
        let hi = em.b.func.dfg.immediates.push(hi.into());
        let le = MemFlagsData::new().with_endianness(Endianness::Little);
        em.lpc(0, ow.div_ceil(8) * 4, 4, |em, q| {
            let a = em.ea(prow[0], q);
            let a = em.ld4(a, 0);
            let b = em.ea(prow[1], q);
            let b = em.ld4(b, 0);
            let a = em.b.ins().bitcast(I8X16, le, a);
            let b = em.b.ins().bitcast(I8X16, le, b);
            let l = em.b.ins().shuffle(a, b, lo);
            let h = em.b.ins().shuffle(a, b, hi);
            let l = em.b.ins().bitcast(F32X4, le, l);
            let h = em.b.ins().bitcast(F32X4, le, h);
            let q2 = em.mul_i(q, 2);
            let d = em.ea(row, q2);
            em.st(l, d, 0);
            em.st(h, d, 16);
        });
        return row;
    }
    for (px, &p) in prow.iter().enumerate() {
        let cols = (ow - px).div_ceil(sw);
        em.lpc(0, cols, 1, |em, qx| {
            let a = em.ea(p, qx);
            let v = em.ld1(a, 0);
            let ox = em.mul_i(qx, sw as i64);
            let d = em.ea(row, ox);
            em.st(v, d, (px * 4) as i32);
        });
    }
    row
}
