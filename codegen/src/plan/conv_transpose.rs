//! Planning of transposed convs: a GEMM then a col2im pass, or the phase-split kernel.
//!
//! Per group, `cols[(o, ky, kx), (iy, ix)] = Σ_ci W[ci, o, ky, kx]·x[ci, iy, ix]` is a 1x1
//! conv of the input to `C_out·kh·kw` channels, planned as any conv (`lower_conv`: the
//! packed GEMM, or in place where the target reads convs so), writing `cols` into the
//! shared workspace region. `KernelKind::Col2Im` then sums, for every output position, the
//! `cols` entries of the taps landing on it and stores through the epilogue.
//!
//! Summation order per output: the GEMM's over the group's input channels (in order, in
//! reduction chunks each accumulated onto the last), then the taps in `(ky, kx)` order,
//! then the bias (first epilogue step). The phase-split kernel sums over `(ci, ky, kx)`
//! instead, so the paths round differently; both are checked against the f64 interpreter.
//! Every output is computed whole by one unit of each kernel, so threads do not change it.
//!
//! The phase-split kernel (`KernelKind::ConvTranspose`) stays for groups of fewer than
//! [`GEMM_MIN_CIN`] input channels (depthwise decoders: a reduction that short leaves the
//! GEMM nothing to amortise its packing on) and for `cols` too large for i32 offsets.

use bnc_ir::ConvTranspose2d;

use super::select::Lowering;
use super::{ALIGN, ConvGeom, ConvTTap, Epi, Kernel, KernelKind, View};

/// Input channels per group from which a transposed conv runs as GEMM + col2im.
const GEMM_MIN_CIN: usize = 4;

impl Lowering<'_> {
    /// The kernels of a transposed conv with input `x` (`[N, C_in, H, W]`, `hw`) and output
    /// `out` (`ohw`); the bias, if any, is already the first epilogue step.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn lower_conv_transpose(
        &mut self,
        c: &ConvTranspose2d,
        weight: &[f32],
        x: View,
        [hw, ohw]: [[usize; 2]; 2],
        out: View,
        epi: Vec<Epi>,
        name: String,
    ) -> Vec<Kernel> {
        let cout = out.c;
        let (cin_g, cout_g) = (x.c / c.groups, cout / c.groups);
        let taps = c.kernel[0] * c.kernel[1];
        let axis = |a: usize| {
            ConvTTap::axis(
                hw[a],
                ohw[a],
                c.kernel[a],
                c.stride[a],
                c.dilation[a],
                c.pad[a],
            )
        };
        let tap_axes = [axis(0), axis(1)];
        let plane = hw[0] * hw[1];
        if gemm_path(cin_g, cout, taps, plane) {
            let rows = cout * taps;
            // [C_in, C_out/g, kh, kw] -> per group `[(o, ky, kx)][C_in/g]`.
            let mut packed = Vec::with_capacity(weight.len());
            for g in 0..c.groups {
                for ol in 0..cout_g {
                    for t in 0..taps {
                        packed.extend(
                            (0..cin_g)
                                .map(|cil| weight[((g * cin_g + cil) * cout_g + ol) * taps + t]),
                        );
                    }
                }
            }
            let geom = ConvGeom {
                cin: x.c,
                h: hw[0],
                w: hw[1],
                cout: rows,
                oh: hw[0],
                ow: hw[1],
                kernel: [1, 1],
                stride: [1, 1],
                dilation: [1, 1],
                pad: [0; 4],
                groups: c.groups,
                fill: None,
                chan: None,
            };
            let cols = View {
                storage: 0,
                offset: self.shared.offset,
                bstride: rows * plane,
                n: x.n,
                c: rows,
                s: plane,
            };
            // The col2im reads whole vectors up to 3 floats past a `cols` row.
            self.shared.floats = self.shared.floats.max(x.n * rows * plane + ALIGN);
            let mut kernels =
                self.lower_conv(&geom, &packed, x, cols, Vec::new(), format!("{name}_gemm"));
            debug_assert!(
                kernels
                    .iter()
                    .all(|k| !matches!(k.kind, KernelKind::PadPlanes { .. })),
                "a 1x1 conv needs no padded copy in the shared region"
            );
            let [_, ow] = ohw;
            let sw = c.stride[1];
            let phase_w = ow.div_ceil(sw);
            kernels.push(Kernel {
                name,
                sources: Vec::new(),
                kind: KernelKind::Col2Im {
                    x: cols,
                    hw,
                    ohw,
                    kernel: c.kernel,
                    stride: c.stride,
                    taps: tap_axes,
                },
                out,
                epi,
                units: x.n * cout,
                // The output row, then one row per column phase, each padded for the
                // vector reads and writes past their ends.
                scratch: col2im_row_floats(ow) + sw.min(ow) * col2im_row_floats(phase_w),
            });
            return kernels;
        }
        // [C_in, C_out/g, kh, kw] -> [C_out][C_in/g][kh][kw].
        let mut packed = Vec::with_capacity(weight.len());
        for o in 0..cout {
            let (g, ol) = (o / cout_g, o % cout_g);
            for cil in 0..cin_g {
                let ci = g * cin_g + cil;
                let at = (ci * cout_g + ol) * taps;
                packed.extend_from_slice(&weight[at..at + taps]);
            }
        }
        let w = self.blob.push(&packed);
        let phase = [ohw[0].div_ceil(c.stride[0]), ohw[1].div_ceil(c.stride[1])];
        let planes = c.stride[0] * c.stride[1] * phase[0] * phase[1];
        vec![Kernel {
            name,
            sources: Vec::new(),
            kind: KernelKind::ConvTranspose {
                x,
                hw,
                ohw,
                cin_g,
                cout_g,
                w,
                kernel: c.kernel,
                stride: c.stride,
                taps: tap_axes,
                phase,
            },
            out,
            epi,
            units: x.n * cout,
            // The phase planes and one interleaved output row, each with a vector of slack.
            scratch: planes + 4 + ohw[1] + 4,
        }]
    }
}

/// Whether a transposed conv with `cin_g` input channels per group, `cout` outputs,
/// `taps` kernel taps and `plane` input pixels runs as GEMM + col2im (else phase-split).
pub(super) fn gemm_path(cin_g: usize, cout: usize, taps: usize, plane: usize) -> bool {
    // The col2im addresses a unit's taps by i32 offsets from its first `cols` plane.
    let offsets_fit = cout
        .checked_mul(taps)
        .and_then(|n| n.checked_mul(plane * 4))
        .is_some_and(|b| b <= i32::MAX as usize);
    cin_g >= GEMM_MIN_CIN && offsets_fit
}

/// Floats of one col2im scratch row of `n` values: whole 8-float pairs of vectors plus a
/// vector of slack, rounded to the alignment.
pub(crate) fn col2im_row_floats(n: usize) -> usize {
    (n.div_ceil(8) * 8 + 4).div_ceil(ALIGN) * ALIGN
}

/// Whether at most one tap lands on every output position (along each axis, no two taps'
/// runs of one stride phase overlap): the col2im is then a copy.
pub(crate) fn col2im_is_copy(taps: &[Vec<ConvTTap>; 2]) -> bool {
    taps.iter().all(|axis| {
        let live: Vec<&ConvTTap> = axis.iter().filter(|t| t.count > 0).collect();
        live.iter().enumerate().all(|(i, a)| {
            live[i + 1..]
                .iter()
                .all(|b| a.phase != b.phase || a.q0 + a.count <= b.q0 || b.q0 + b.count <= a.q0)
        })
    })
}
