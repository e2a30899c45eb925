//! Weight packing and blocking: how each path lays out its weights in the blob and splits
//! its work into cache-sized blocks.

use bnc_ir::Pool2d;

use super::ConvGeom;
use crate::cache::CacheSizes;

/// Splits `m` rows into `(tiles, q, rem)`: `tiles = ceil(m / mr)` tiles, the first `rem`
/// of `q + 1` rows and the others of `q` (all within one of each other, at most `mr`), so
/// no tile is a thin edge (slow per FLOP) and threads get even work. Tile `t` starts at
/// row `t * q + min(t, rem)`.
pub(crate) fn balanced_tiles(m: usize, mr: usize) -> (usize, usize, usize) {
    let tiles = m.div_ceil(mr);
    (tiles, m / tiles, m % tiles)
}

/// Packs `[groups * cout_g][k]` weights into the balanced m-tiles of `balanced_tiles`:
/// per group, tile `t` is `[k][rows_t]` at `row_start(t) * k`.
pub(crate) fn pack_weights_balanced(
    weight: &[f32],
    groups: usize,
    cout_g: usize,
    k: usize,
    mr: usize,
) -> Vec<f32> {
    let (tiles, q, rem) = balanced_tiles(cout_g, mr);
    let mut packed = vec![0.0f32; groups * cout_g * k];
    for gi in 0..groups {
        for t in 0..tiles {
            let (start, rows) = (t * q + t.min(rem), q + usize::from(t < rem));
            for r in 0..rows {
                let co = start + r;
                let row = &weight[(gi * cout_g + co) * k..(gi * cout_g + co + 1) * k];
                let tile = gi * cout_g * k + start * k;
                for (kk, &wv) in row.iter().enumerate() {
                    packed[tile + kk * rows + r] = wv;
                }
            }
        }
    }
    packed
}

/// Output channels per channel-vectorised tile (two 16-lane vectors).
pub(crate) const CV_CHANNELS: usize = 32;
/// Floats of one channel-vectorised tile's partial sums (12 pixels x 32 channels).
pub(crate) const CV_TILE_FLOATS: usize = 12 * CV_CHANNELS;

/// Packs `[groups * cout_g][k]` weights for channel-vectorised kernels: per group, tiles of
/// 32 channels `[k][32]`, the last one `[k][16 * vectors]` (its vectors only), zeros past
/// `cout_g`. Group `g` starts at `g * chanvec_group_floats`, tile `t` of it `t * k * 32`
/// further.
pub(crate) fn pack_weights_chanvec(
    weight: &[f32],
    groups: usize,
    cout_g: usize,
    k: usize,
) -> Vec<f32> {
    let gs = chanvec_group_floats(cout_g, k);
    let mut packed = vec![0.0f32; groups * gs];
    for gi in 0..groups {
        for co in 0..cout_g {
            let (ct, lane) = (co / CV_CHANNELS, co % CV_CHANNELS);
            let width = (cout_g - ct * CV_CHANNELS).min(CV_CHANNELS).div_ceil(16) * 16;
            let tile = gi * gs + ct * k * CV_CHANNELS;
            let row = &weight[(gi * cout_g + co) * k..(gi * cout_g + co + 1) * k];
            for (kk, &wv) in row.iter().enumerate() {
                packed[tile + kk * width + lane] = wv;
            }
        }
    }
    packed
}

/// Floats of one group's channel-vectorised weights (see `pack_weights_chanvec`).
pub(crate) fn chanvec_group_floats(cout_g: usize, k: usize) -> usize {
    cout_g.div_ceil(16) * 16 * k
}

/// Cache blocking of one GEMM: pixels per packed block and the reduction chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Blocking {
    /// Pixels per packed input block (a multiple of `nr`, or the whole image rounded up).
    pub nb: usize,
    /// Reduction chunk: the `mr x kc` weight micro-panel stays in half of L1 while the
    /// kernel sweeps the input panels of a block.
    pub kc: usize,
}

/// Blocking derived from the shapes and the cache sizes (not tuned per model):
///
/// * `kc`: the weight micro-panel `mr * kc` floats fills at most half of L1, so it stays
///   resident across the `nb / nr` micro-kernel calls that reuse it; a longer `K` is split
///   into equal chunks (multiples of 4, the kernels' unroll).
/// * `nb`: the packed input block `nb * K` floats stays within half of L2 (it is re-read once
///   per weight panel), or 3/4 of L2 when that covers the whole image, so each weight panel
///   is then read from memory exactly once.
pub(crate) fn gemm_blocking(
    k: usize,
    pixels: usize,
    mr: usize,
    nr: usize,
    caches: &CacheSizes,
) -> Blocking {
    let whole = pixels.div_ceil(nr) * nr;
    let nb = if whole * k <= caches.whole_budget() {
        whole
    } else {
        ((caches.pack_budget() / k) / nr * nr).clamp(nr, whole)
    };
    let kmax = (caches.l1d / 2 / (4 * mr)) / 4 * 4;
    let kc = if k <= kmax {
        k
    } else {
        let chunks = k.div_ceil(kmax);
        k.div_ceil(chunks).div_ceil(4) * 4
    };
    Blocking { nb, kc }
}

/// Packs `[groups * cout_g][k]` weights into m-tile panels `[group][mtile][k][mr]`, every
/// tile `mr` rows, zeros past `cout_g` (the fallback microkernel's layout).
pub(crate) fn pack_weights_padded(
    weight: &[f32],
    groups: usize,
    cout_g: usize,
    k: usize,
    mr: usize,
) -> Vec<f32> {
    let gstride = cout_g.div_ceil(mr) * mr * k;
    let mut packed = vec![0.0f32; groups * gstride];
    for gi in 0..groups {
        for co in 0..cout_g {
            let (mt, r) = (co / mr, co % mr);
            let tile = gi * gstride + mt * mr * k;
            let row = &weight[(gi * cout_g + co) * k..(gi * cout_g + co + 1) * k];
            for (kk, &wv) in row.iter().enumerate() {
                packed[tile + kk * mr + r] = wv;
            }
        }
    }
    packed
}

/// Width of one phase row of the depthwise kernel's padded input copy: the output width
/// rounded up to the vector width, plus the columns the taps reach.
pub(crate) fn depthwise_qw(g: &ConvGeom) -> usize {
    g.ow.div_ceil(4) * 4 + ((g.kernel[1] - 1) * g.dilation[1]) / g.stride[1] + 1
}

/// `1 / divisor` of every avgpool output position, with PyTorch's divisor rule (the same
/// as the interpreter's), followed by 4 zeros so a vector read past the end stays inside.
pub(crate) fn avgpool_recips(p: &Pool2d, [h, w]: [usize; 2], [oh, ow]: [usize; 2]) -> Vec<f32> {
    let count = |o: usize, s: usize, pb: usize, pe: usize, k: usize, size: usize| -> i64 {
        let start = (o * s) as i64 - pb as i64;
        let end = start + k as i64;
        if p.count_include_pad {
            end.min((size + pe) as i64) - start
        } else {
            end.min(size as i64) - start.max(0)
        }
    };
    let mut v = Vec::with_capacity(oh * ow + 4);
    for oy in 0..oh {
        let rows = count(oy, p.stride[0], p.pad[0], p.pad[2], p.kernel[0], h);
        for ox in 0..ow {
            let cols = count(ox, p.stride[1], p.pad[1], p.pad[3], p.kernel[1], w);
            v.push((1.0 / (rows * cols).max(1) as f64) as f32);
        }
    }
    v.extend([0.0; 4]);
    v
}

/// Geometry of a pool's padded copy: rows per phase and row width (`ph`, `qw`).
pub(crate) fn pool_q(p: &bnc_ir::Pool2d, hw: [usize; 2], ohw: [usize; 2]) -> (usize, usize) {
    let ph = (hw[0] + p.pad[0] + p.pad[2]).max((ohw[0] - 1) * p.stride[0] + p.kernel[0]);
    let qw = ohw[1].div_ceil(4) * 4 + (p.kernel[1] - 1) / p.stride[1] + 1;
    (ph, qw)
}
