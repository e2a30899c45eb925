//! Lowering a [`Graph`] to a [`Plan`]: fused groups, buffer placement (in-place concat,
//! aliases for flatten/identity), static liveness-based workspace layout, and weight packing.
//!
//! A plan is a list of [`Kernel`]s run in order. Every tensor a kernel touches is a [`View`]:
//! a storage slot (workspace, a graph input or a graph output), an element offset, and a
//! batch stride; inside one batch item the tensor is the contiguous `[C, S]` block, `S` being
//! the product of the axes after the channel axis. A value written in place into a concat has
//! the concat's batch stride, so every kernel reads and writes through views.

mod conv_transpose;
mod epilogue;
mod fuse;
mod gather;
mod memory;
mod pack;
mod select;
mod text;
mod upsample_conv;

use bnc_ir::{Activation, Graph, Pool2d, Shape};

use crate::error::CodegenError;
use crate::target::TargetCaps;
use crate::ukernel::Vector;

pub(crate) use conv_transpose::{col2im_is_copy, col2im_row_floats};
pub(crate) use epilogue::{Slot, fuse_prefix};
pub(crate) use pack::*;
pub(crate) use select::{TapMaskPlan, interior_tiles};
pub(crate) use text::{PlanTarget, plan_text};

use fuse::{EpiDesc, Step};

/// Fallback GEMM tile: `MR` output channels by `NR` pixels (see `lower::emit_ukernel`).
pub(crate) const MR: usize = 8;
pub(crate) const NR: usize = 4;
/// Alignment of workspace buffers and blob entries, in floats (64 bytes).
const ALIGN: usize = 16;

/// Storage slot 0 is the workspace; slots `1..=ni` the graph inputs; then the graph outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct View {
    pub storage: usize,
    pub offset: usize,
    pub bstride: usize,
    pub n: usize,
    pub c: usize,
    pub s: usize,
}

/// An elementwise operation applied to a kernel's result before it is stored.
#[derive(Clone, Debug)]
pub(crate) enum Epi {
    /// `y = x * scale[c] + shift[c]`; offsets of the vectors in the blob.
    Affine {
        scale: Option<usize>,
        shift: Option<usize>,
    },
    /// `y = x + other`, same shape.
    Add(View),
    /// `y = x * other`, same shape.
    Mul(View),
    /// `y = x * other[n, c]` (an `[N, C, 1, 1]` gate).
    MulChan(View),
    Act(Activation),
}

#[derive(Clone, Debug)]
pub(crate) struct ConvGeom {
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub oh: usize,
    pub ow: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    pub pad: [usize; 4],
    pub groups: usize,
    /// Blob offset of the per-input-channel pad fill, if any.
    pub fill: Option<usize>,
    /// Blob offset of a table of `cin` u32s: input channel `i` is channel `table[i]` of
    /// the kernel's `x` (a channel shuffle read through its permutation, see
    /// `fuse::Pre::Shuffle`; GEMM and depthwise kernels only).
    pub chan: Option<usize>,
}

impl ConvGeom {
    pub fn cin_g(&self) -> usize {
        self.cin / self.groups
    }
    pub fn cout_g(&self) -> usize {
        self.cout / self.groups
    }
    pub fn kdim(&self) -> usize {
        self.cin_g() * self.kernel[0] * self.kernel[1]
    }
    pub fn pixels(&self) -> usize {
        self.oh * self.ow
    }
    pub fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.pad == [0; 4]
    }
}

#[derive(Clone, Debug)]
pub(crate) enum KernelKind {
    /// Conv as GEMM on packed panels; pixels in blocks of `nb`; `mchunks` splits the
    /// m-tiles of a block across units for parallelism.
    ///
    /// Fallback (`wide == None`): weights at `wpack` laid out `[group][mtile][k][MR]`, rows
    /// past `cout_g` zero. Wide: the balanced m-tiles of `pack_weights_balanced` (no padding,
    /// no thin edge tile); the reduction runs in chunks of `kc`.
    Gemm {
        x: View,
        g: ConvGeom,
        wpack: usize,
        nb: usize,
        mchunks: usize,
        wide: Option<Vector>,
        kc: usize,
    },
    /// Conv read in place from `x` by assembled kernels with lane masks, no packing: `x` is the
    /// conv's input (a stride-1 1x1 conv) or its `PadPlanes` copy (padded and split into
    /// stride phases, so every tap is a constant offset). The output is computed on a grid
    /// of positions `q = oy * pitch + ox` (`ox < ow` valid; `pitch == ow` for a 1x1 conv
    /// read straight from its input, else the phase planes' row); tap `t` of input channel
    /// `ci` reads
    /// `x[ci * plane + q + taps[t]]`. Weights as in `Gemm` (wide); the reduction runs in
    /// chunks of `kc` (a multiple of the tap count); units split the grid into blocks of
    /// `nb` positions and the m-tiles into `mchunks`.
    DirectConv {
        x: View,
        g: ConvGeom,
        wpack: usize,
        kc: usize,
        pitch: usize,
        plane: usize,
        taps: Vec<i32>,
        nb: usize,
        mchunks: usize,
        /// Units in m-chunk order (all pixel blocks of a chunk, then the next chunk)
        /// instead of pixel-block order.
        m_major: bool,
        /// The lane masks when `x` is the unpadded input of a zero-padded conv; taps may
        /// then be negative.
        tap_masks: Option<TapMaskPlan>,
        /// Channel-vectorised tiles of this many pixels (small images, see
        /// `isa/x64/asm/chanvec.rs`): weights `[group][32-channel tile][k][32]` zero-padded,
        /// one unit per channel tile, tiles are runs of one output row, `nb` and `mchunks`
        /// unused.
        chanvec: Option<usize>,
        /// The microkernel family that runs it.
        vector: Vector,
    },
    /// The input of a `DirectConv`: each channel plane, padded by `pads = [top, left]`
    /// (zeros, or the per-channel fill at blob offset `fill`; also past the bottom and right
    /// edges), split by `stride` into phases: phase `i` of the list, `(py, px)`, is an
    /// `hqwq` plane with `out[y][x] = padded[y * sh + py][x * sw + px]`, the phases of one
    /// channel one after another.
    PadPlanes {
        x: View,
        hw: [usize; 2],
        pads: [usize; 2],
        stride: [usize; 2],
        phases: Vec<[usize; 2]>,
        hqwq: [usize; 2],
        fill: Option<usize>,
        /// The row-kernel family that copies it.
        vector: Vector,
    },
    /// Conv with one input channel per group (depthwise, any multiplier): weights at `w`
    /// as `[cout][kh*kw]`.
    Depthwise {
        x: View,
        g: ConvGeom,
        w: usize,
    },
    /// `[N, K] x [M, K]^T`, weights at `w` as `[M][K]`.
    Dense {
        x: View,
        k: usize,
        m: usize,
        w: usize,
    },
    MaxPool {
        x: View,
        p: Pool2d,
        hw: [usize; 2],
        ohw: [usize; 2],
        /// Read in place by this family's assembled rows (x64: `isa/x64/asm/pool.rs`), no
        /// padded copy.
        in_place: Option<Vector>,
    },
    /// `recip`: blob offset of `1 / divisor` per output position (plus 4 pad floats).
    AvgPool {
        x: View,
        p: Pool2d,
        hw: [usize; 2],
        ohw: [usize; 2],
        recip: usize,
    },
    GlobalAvgPool {
        x: View,
    },
    /// Elementwise: load `x`, apply the epilogue, store (also plain copies).
    Elementwise {
        x: View,
    },
    Softmax {
        x: View,
    },
    /// Channels `first..first + out.c` of the channel shuffle of `x` (all of its `C`
    /// channels): output plane `(n, o)` is input plane `(n, src(first + o))`,
    /// `src(j) = (j mod groups)·(C/groups) + j div groups`; one unit per output plane.
    ChannelShuffle {
        x: View,
        groups: usize,
        first: usize,
    },
    Pad {
        x: View,
        pads: [usize; 4],
        value: f32,
        /// Weights-blob offset of a per-channel fill (`pad_fill`), replacing `value`.
        fill: Option<usize>,
        hw: [usize; 2],
        ohw: [usize; 2],
    },
    /// Resize of each `(n, c)` plane, `hw` to `ohw`, separable: a horizontal pass writes
    /// the `hw[0]` input rows resized to `ohw[1]` columns into scratch, then every output
    /// row combines (bilinear) or copies (nearest) the scratch rows it reads. The blob holds,
    /// at `rows`, `[y0; oh] [y1; oh] [wy0; oh] [wy1; oh]` and at `cols` the same four arrays
    /// over `ow` (indices as i32 bit patterns), precomputed by `bnc_ir::Resize::taps`.
    Resize {
        x: View,
        bilinear: bool,
        hw: [usize; 2],
        ohw: [usize; 2],
        rows: usize,
        cols: usize,
        /// What the plan text prints: `"half_pixel"`, or `"asymmetric floor"` for nearest.
        coordinates: String,
    },
    /// The maximum of each `(n, c)` plane (NaN if the plane holds one).
    GlobalMaxPool {
        x: View,
    },
    /// Transposed conv, phase-split (groups of fewer than `GEMM_MIN_CIN` input channels;
    /// the others run as a `Gemm` into `cols` and a [`KernelKind::Col2Im`]), one unit per
    /// output plane `(n, o)`. Kernel tap `(ky, kx)` reaches
    /// inputs `iy0..iy0 + cnt` × `ix0..ix0 + cnt` of one stride phase of the output; scratch
    /// holds the output phase-split (`stride[0]·stride[1]` planes of `phase[0] × phase[1]`),
    /// filled per rectangle of positions the same taps reach, accumulating in registers over
    /// channels and taps (`lower/conv_transpose.rs`); the planes are then interleaved into
    /// the output through the epilogue (bias first). The blob holds the weight repacked
    /// `[out][in / groups][kh][kw]` at `w`.
    ConvTranspose {
        x: View,
        hw: [usize; 2],
        ohw: [usize; 2],
        cin_g: usize,
        cout_g: usize,
        w: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        /// Per axis, per kernel tap: where its contributions land ([`ConvTTap`]).
        taps: [Vec<ConvTTap>; 2],
        /// Rows and columns of one phase plane: `ceil(oh / sh)`, `ceil(ow / sw)`.
        phase: [usize; 2],
    },
    /// The second half of a transposed conv run as a GEMM (`plan/conv_transpose.rs`): `x`
    /// holds per batch item `cols`, `[C_out·kh·kw][H·W]` (row `o·kh·kw + ky·kw + kx`), and
    /// each output `(o, oy, ox)` is the sum, in `(ky, kx)` order, of the `cols` entries of
    /// the taps landing on it (none: 0), stored through the epilogue (bias first). One unit
    /// per output plane `(n, o)`; when no two taps of an axis share a stride phase (stride
    /// = kernel, no padding: U-Net's 2x2 stride 2) it is a depth-to-space copy.
    Col2Im {
        x: View,
        hw: [usize; 2],
        ohw: [usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
        /// Per axis, per kernel tap: where its contributions land ([`ConvTTap`]).
        taps: [Vec<ConvTTap>; 2],
    },
    /// Layer normalisation over the channels at each position of `[N, C, S]`: one unit per
    /// group of 4 positions (the last group of an item, if partial, lane by lane); weight
    /// and bias at blob offsets `weight`, `bias`.
    LayerNorm {
        x: View,
        eps: f32,
        weight: usize,
        bias: usize,
    },
}

/// Along one axis, the output positions one kernel tap `k` of a transposed conv writes:
/// inputs `i0..i0 + count` land on outputs `(q0 + j)·stride + phase`, `j < count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvTTap {
    pub phase: usize,
    pub q0: usize,
    pub i0: usize,
    pub count: usize,
}

impl ConvTTap {
    /// The taps of one axis: input `i` and tap `k` write output `i·stride + k·dilation −
    /// pad`, kept when it is in `0..out`.
    pub(crate) fn axis(
        input: usize,
        out: usize,
        kernel: usize,
        stride: usize,
        dilation: usize,
        pad: usize,
    ) -> Vec<ConvTTap> {
        (0..kernel)
            .map(|k| {
                let base = (k * dilation) as i64 - pad as i64;
                let s = stride as i64;
                // The first input whose output is >= 0 and the last one below `out`.
                let lo = if base >= 0 { 0 } else { (-base + s - 1) / s };
                let hi = ((out as i64 - 1 - base).div_euclid(s)).min(input as i64 - 1);
                if hi < lo {
                    return ConvTTap {
                        phase: 0,
                        q0: 0,
                        i0: 0,
                        count: 0,
                    };
                }
                let first = (lo * s + base) as usize;
                ConvTTap {
                    phase: first % stride,
                    q0: first / stride,
                    i0: lo as usize,
                    count: (hi - lo + 1) as usize,
                }
            })
            .collect()
    }
}

impl KernelKind {
    /// The tensor the kernel reads (its first input).
    pub fn input(&self) -> View {
        match self {
            KernelKind::Gemm { x, .. }
            | KernelKind::DirectConv { x, .. }
            | KernelKind::PadPlanes { x, .. }
            | KernelKind::Depthwise { x, .. }
            | KernelKind::Dense { x, .. }
            | KernelKind::MaxPool { x, .. }
            | KernelKind::AvgPool { x, .. }
            | KernelKind::GlobalAvgPool { x }
            | KernelKind::Elementwise { x }
            | KernelKind::Softmax { x }
            | KernelKind::Pad { x, .. }
            | KernelKind::Resize { x, .. }
            | KernelKind::ChannelShuffle { x, .. }
            | KernelKind::GlobalMaxPool { x }
            | KernelKind::ConvTranspose { x, .. }
            | KernelKind::Col2Im { x, .. }
            | KernelKind::LayerNorm { x, .. } => *x,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Kernel {
    pub name: String,
    /// The graph nodes this kernel computes, by output value name (anchor first, then the
    /// fused epilogue); for a copy, the value copied.
    pub sources: Vec<String>,
    pub kind: KernelKind,
    pub out: View,
    pub epi: Vec<Epi>,
    /// Independent work units; a call computes units `[lo, hi)`.
    pub units: usize,
    /// Per-thread scratch the kernel needs, in floats.
    pub scratch: usize,
}

pub(crate) struct Plan {
    pub kernels: Vec<Kernel>,
    pub blob: Vec<f32>,
    /// Floats of planned buffers; per-thread scratch follows them.
    pub buffers: usize,
    pub scratch: usize,
    pub threads: usize,
    pub inputs: Vec<(String, Shape)>,
    pub outputs: Vec<(String, Shape)>,
    pub flops: u64,
    /// Where each value lives (for `--emit=plan`), in value order.
    pub layout: Vec<Placement>,
}

/// Where the planner put one value.
#[derive(Clone, Debug)]
pub(crate) enum Placement {
    /// Its own workspace buffer, `floats` long, in use from kernel `live.0` to `live.1`.
    Buffer {
        value: String,
        offset: usize,
        floats: usize,
        live: (usize, usize),
    },
    /// Written in place inside another value (a concat slice, a flatten, an output).
    View {
        value: String,
        of: String,
        offset: usize,
    },
    /// Lives in the caller's storage `storage` (an input or an output buffer).
    Caller { value: String, storage: usize },
}

impl Plan {
    pub fn workspace_floats(&self) -> usize {
        self.buffers + self.scratch * self.threads
    }
}

/// The units `[lo, hi)` piece `i` of `pieces` runs when a kernel's `units` are split into
/// contiguous ranges (the plan weighs unit orders with the same split; the
/// runtime's pool runs them so).
pub(crate) fn piece_units(i: usize, pieces: usize, units: usize) -> (usize, usize) {
    (i * units / pieces, (i + 1) * units / pieces)
}

/// What the plan is for, besides the target.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PlanOptions {
    pub threads: usize,
    /// Fuse affine/batchnorm nodes into the epilogue of the kernel before them.
    pub fuse_affine: bool,
    /// Read convs in place where the target can (else im2col GEMMs).
    pub direct: bool,
}

/// The family that reads convs in place, when the target has one and `opts` allows it
/// (the one place that decides it: fusion and kernel selection both ask).
fn in_place_family(caps: &TargetCaps, opts: &PlanOptions) -> Option<Vector> {
    caps.in_place().filter(|_| opts.direct)
}

fn unsupported(msg: impl Into<String>) -> CodegenError {
    CodegenError::Unsupported(msg.into())
}

/// `(N, C, S)` of a shape: batch, channel, and everything after.
fn ncs(shape: &Shape) -> (usize, usize, usize) {
    match shape.len() {
        0 => (1, 1, 1),
        1 => (shape[0], 1, 1),
        _ => (shape[0], shape[1], shape[2..].iter().product()),
    }
}

fn numel(shape: &Shape) -> usize {
    shape.iter().product()
}

fn align(x: usize) -> usize {
    x.div_ceil(ALIGN) * ALIGN
}

pub(crate) struct Blob(pub Vec<f32>);

impl Blob {
    fn push(&mut self, data: &[f32]) -> usize {
        let off = align(self.0.len());
        self.0.resize(off, 0.0);
        self.0.extend_from_slice(data);
        off
    }
}

/// Plans `graph` for a target: fusion ([`fuse`]), memory ([`memory`]), then a kernel per
/// step on the path the target's capabilities allow ([`select`]), with its weights packed.
pub(crate) fn plan(
    graph: &Graph,
    opts: &PlanOptions,
    caps: &TargetCaps,
) -> Result<Plan, CodegenError> {
    graph
        .verify()
        .map_err(|e| CodegenError::Invalid(e.to_string()))?;
    let threads = opts.threads.max(1);
    let opts = &PlanOptions { threads, ..*opts };
    if let Some(v) = graph.values.iter().find(|v| v.shape.contains(&0)) {
        return Err(unsupported(format!(
            "`{}` has no elements (shape {:?})",
            v.name, v.shape
        )));
    }
    let shape = |v: bnc_ir::ValueId| graph.shape(v);
    // Unless the target reads convs in place, every conv runs as a packed GEMM or a
    // depthwise kernel, both of which can read a shuffle through its permutation.
    let chan_tables = in_place_family(caps, opts).is_none();
    let groups = fuse::fuse(graph, opts.fuse_affine, chan_tables)?;
    let (steps, layout) = memory::place(graph, groups)?;

    // ---- Kernels: the path of each step ------------------------------------------------
    let mut lower = select::Lowering::new(graph, opts, caps, layout.buffers);
    let mut kernels = Vec::new();
    // Kernels `step_kernels[i].0 ..= step_kernels[i].1` run step `i`.
    let mut step_kernels = Vec::with_capacity(steps.len());
    for step in &steps {
        let first = kernels.len();
        match step {
            Step::Copy { src, dst, dst_off } => {
                let x = layout.view(*src);
                let out = layout.region(*dst, *dst_off, x.c);
                kernels.push(Kernel {
                    name: format!("copy_{}", kernels.len()),
                    sources: vec![layout.value_name(*src)],
                    kind: KernelKind::Elementwise { x },
                    units: x.n * x.c,
                    out,
                    epi: Vec::new(),
                    scratch: 0,
                });
            }
            Step::Gather {
                src,
                x,
                groups,
                first,
                count,
                dst,
                dst_off,
            } => {
                let x = layout.view(*x);
                let out = layout.region(*dst, *dst_off, *count);
                kernels.push(Kernel {
                    name: format!("gather_{}", kernels.len()),
                    sources: vec![layout.value_name(*src)],
                    kind: KernelKind::ChannelShuffle {
                        x,
                        groups: *groups,
                        first: *first,
                    },
                    units: x.n * count,
                    out,
                    epi: Vec::new(),
                    scratch: 0,
                });
            }
            Step::Group(g) => {
                let node = &graph.nodes[g.anchor];
                let mut epi = Vec::new();
                for e in &g.epi {
                    epi.push(match e {
                        EpiDesc::Affine(s, t) => Epi::Affine {
                            scale: s.as_deref().map(|s| lower.blob.push(s)),
                            shift: t.as_deref().map(|t| lower.blob.push(t)),
                        },
                        EpiDesc::Add(o) => Epi::Add(layout.view(*o)),
                        EpiDesc::Mul(o) => Epi::Mul(layout.view(*o)),
                        EpiDesc::MulChan(o) => Epi::MulChan(layout.view(*o)),
                        EpiDesc::Act(a) => Epi::Act(a.clone()),
                    });
                }
                let out = layout.view(g.out);
                let name = format!(
                    "k{}_{}",
                    kernels.len(),
                    graph.value(node.output).name.replace(['.', '-'], "_")
                );
                let ks = lower.lower_anchor(g, node, &|v| layout.view(v), out, epi, name)?;
                let sources: Vec<String> = g
                    .nodes
                    .iter()
                    .map(|&n| layout.value_name(graph.nodes[n].output))
                    .collect();
                kernels.extend(ks.into_iter().map(|k| Kernel {
                    sources: sources.clone(),
                    ..k
                }));
            }
        }
        step_kernels.push((first, kernels.len().saturating_sub(1).max(first)));
    }
    let placements = layout.placements(&step_kernels);
    let (blob, buffers) = lower.finish();
    let scratch = kernels.iter().map(|k| align(k.scratch)).max().unwrap_or(0);
    let flops = graph
        .nodes
        .iter()
        .map(|n| {
            let s: Vec<&Shape> = n.inputs.iter().map(|&v| shape(v)).collect();
            n.op.flops(&s, shape(n.output))
        })
        .sum();
    Ok(Plan {
        kernels,
        blob,
        buffers,
        scratch,
        threads,
        inputs: graph
            .inputs
            .iter()
            .map(|&v| (graph.value(v).name.clone(), shape(v).clone()))
            .collect(),
        outputs: graph
            .outputs
            .iter()
            .map(|&v| (graph.value(v).name.clone(), shape(v).clone()))
            .collect(),
        flops,
        layout: placements,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheSizes;

    fn plan_for_caps(g: &Graph, opts: &PlanOptions, caps: &TargetCaps) -> Plan {
        plan(g, opts, caps).unwrap()
    }

    fn model(body: &str) -> Graph {
        let src = format!("model t {{\n  weights random(seed = 1)\n{body}\n}}\n");
        bnc_frontend::load_str(&src, "t.nn", std::path::Path::new(".")).unwrap()
    }

    /// The planner plans for any family its caps describe, x86 or not: a NEON-like family
    /// (4 lanes, an 8x12 tile, no lane masks) gets GEMMs packed for its own tile and none of
    /// the paths that need masks.
    #[test]
    fn plans_for_a_family_it_has_never_heard_of() {
        let g = model(
            "  input x: f32[1, 32, 14, 14]\n  c = conv2d(x, out = 20, kernel = 3, pad = 1)\n  \
             p = maxpool(c, kernel = 2)\n  output p",
        );
        let neon = Vector {
            name: "neon",
            vl: 4,
            mr: 8,
            nv: 3,
            masks: false,
            act: false,
        };
        let caps = TargetCaps {
            wide: Some(neon),
            pool_row_floats: 0,
            pad_row_floats: 0,
            caches: CacheSizes::DEFAULT,
        };
        let opts = PlanOptions {
            threads: 1,
            fuse_affine: true,
            direct: true,
        };
        let plan = plan_for_caps(&g, &opts, &caps);
        let KernelKind::Gemm { wide, wpack, .. } = &plan.kernels[0].kind else {
            panic!("expected a GEMM: {:?}", plan.kernels[0].kind);
        };
        assert_eq!(*wide, Some(neon));
        // 20 output channels in balanced tiles of at most 8 rows (7 + 7 + 6): the packed
        // weights are exactly 20 x K, where the portable 8-row packing pads to 24 x K.
        let k = 32 * 9;
        assert_eq!(plan.blob.len() - wpack, 20 * k);
        let portable = TargetCaps { wide: None, ..caps };
        let fallback = plan_for_caps(&g, &opts, &portable);
        let KernelKind::Gemm { wpack, .. } = &fallback.kernels[0].kind else {
            panic!("expected a GEMM");
        };
        assert_eq!(fallback.blob.len() - wpack, 24 * k);
        assert!(matches!(
            plan.kernels[1].kind,
            KernelKind::MaxPool { in_place: None, .. }
        ));
        let text = plan_text(
            &plan,
            &PlanTarget {
                level: "neon",
                gemm: ("neon", neon.mr, neon.nr()),
                caches: CacheSizes::DEFAULT,
            },
        );
        assert!(text.contains("gemm neon conv 3x3 32->20 14x14"), "{text}");
    }
}
