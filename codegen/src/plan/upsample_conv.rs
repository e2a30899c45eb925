//! A nearest upsample by whole factors feeding a stride-1 conv, run as one transposed conv
//! on the small input (GEMM + col2im, `conv_transpose.rs`): the upsampled tensor is never
//! written, and the GEMM does `(s + d·(k − 1))` multiply-adds per axis where the conv on
//! the upsampled image does `s·k`.
//!
//! Along one axis, with factor `s`, kernel `k`, dilation `d` and leading pad `p`: the conv
//! reads `up[j] = x[j div s]` at `j = o + d·ky − p` (0 outside `0..s·H`). Input `i` and conv
//! tap `ky` meet at output `o` exactly when `0 ≤ o + d·ky − p − s·i < s`, so with
//! `t = o − s·i + P` and `P = d·(k − 1) − p`, output `o` is the transposed conv
//! `Σ_i x[i]·W_T[t]` with stride `s`, crop `P` and kernel length `s + d·(k − 1)`, where
//! `W_T[t]` sums the conv taps with `0 ≤ t − d·(k − 1 − ky) < s`. Zero padding of the
//! upsampled image is the transposed conv's edge, where no input lands, so a per-channel
//! pad fill keeps the two kernels apart; so does any nearest rounding other than
//! `j div s`, which is checked on the resize's own index table.
//!
//! Exact in real arithmetic. In f32 the only change is the order of the sums: each
//! `W_T` entry is a sum of conv weights taken in f64 and rounded once, and the output sums
//! products of distinct input values (the conv added `w·x` once per tap reading the same
//! `x`).

use bnc_ir::{Conv2d, ConvTranspose2d, Graph, Op};

use super::conv_transpose::gemm_path;

/// The transposed conv that computes conv node `conv` on the output of resize node
/// `resize`, when it is exact and does fewer multiply-adds on the GEMM path.
pub(super) fn upsample_conv(graph: &Graph, resize: usize, conv: usize) -> Option<ConvTranspose2d> {
    let (rn, cn) = (&graph.nodes[resize], &graph.nodes[conv]);
    let (Op::Resize(r), Op::Conv2d(c)) = (&rn.op, &cn.op) else {
        return None;
    };
    let (xs, us) = (graph.shape(rn.inputs[0]), graph.shape(rn.output));
    if r.bilinear() || cn.inputs[0] != rn.output || xs.len() != 4 || us.len() != 4 {
        return None;
    }
    if c.stride != [1, 1] || (c.pad_fill && c.pad != [0; 4]) {
        return None;
    }
    let mut kernel = [0; 2];
    let mut stride = [0; 2];
    let mut crop = [0; 2];
    for a in 0..2 {
        let (h, u) = (xs[2 + a], us[2 + a]);
        if h == 0 || u % h != 0 {
            return None;
        }
        let s = u / h;
        let floor = r
            .taps(a, h, u)
            .iter()
            .enumerate()
            .all(|(o, t)| t.i0 == o / s);
        let reach = c.dilation[a] * (c.kernel[a] - 1);
        if !floor || c.pad[a] > reach {
            return None;
        }
        kernel[a] = s + reach;
        stride[a] = s;
        crop[a] = reach - c.pad[a];
    }
    let upsampled_macs = c.kernel[0] * c.kernel[1] * stride[0] * stride[1];
    let taps = kernel[0] * kernel[1];
    let cin_g = xs[1] / c.groups;
    if taps >= upsampled_macs || !gemm_path(cin_g, c.out_channels, taps, xs[2] * xs[3]) {
        return None;
    }
    Some(ConvTranspose2d {
        out_channels: c.out_channels,
        kernel,
        stride,
        pad: [crop[0], crop[1], 0, 0],
        output_padding: [0, 0],
        dilation: [1, 1],
        groups: c.groups,
        bias: false,
    })
}

/// The weight of `ct` (`[C_in, C_out/g, kh_T, kw_T]`) from the conv's (`[C_out, C_in/g,
/// kh, kw]`), each entry the f64 sum of the conv taps that read the same input.
pub(super) fn upsample_conv_weight(c: &Conv2d, weight: &[f32], ct: &ConvTranspose2d) -> Vec<f32> {
    let [kh, kw] = c.kernel;
    let cout_g = c.out_channels / c.groups;
    let cin_g = weight.len() / (c.out_channels * kh * kw);
    // The conv taps each transposed tap sums, along one axis.
    let sums = |a: usize| -> Vec<Vec<usize>> {
        let (k, d, s) = (c.kernel[a], c.dilation[a], ct.stride[a]);
        (0..ct.kernel[a])
            .map(|t| {
                (0..k)
                    .filter(|&ky| {
                        let back = d * (k - 1 - ky);
                        t >= back && t - back < s
                    })
                    .collect()
            })
            .collect()
    };
    let (rows, cols) = (sums(0), sums(1));
    let mut out = Vec::with_capacity(cin_g * c.out_channels * ct.kernel[0] * ct.kernel[1]);
    for g in 0..c.groups {
        for cil in 0..cin_g {
            for ol in 0..cout_g {
                let o = g * cout_g + ol;
                let w = &weight[(o * cin_g + cil) * kh * kw..][..kh * kw];
                for ys in &rows {
                    for xs in &cols {
                        let sum: f64 = ys
                            .iter()
                            .flat_map(|&ky| xs.iter().map(move |&kx| f64::from(w[ky * kw + kx])))
                            .sum();
                        out.push(sum as f32);
                    }
                }
            }
        }
    }
    out
}
