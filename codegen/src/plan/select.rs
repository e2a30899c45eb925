//! Kernel selection: the path each fused group takes (GEMM, direct, tap-masked,
//! channel-vectorised, depthwise, row kernels, Cranelift loops) from its shapes and the
//! target's [`TargetCaps`], with the weights packed for it.

use bnc_ir::{Graph, Op, ValueId, shuffle_source};

use super::fuse::{Group, Pre};
use super::upsample_conv::upsample_conv_weight;
use super::{
    ALIGN, Blob, Blocking, CV_CHANNELS, CV_TILE_FLOATS, ConvGeom, Epi, Kernel, KernelKind, MR, NR,
    PlanOptions, View, align, avgpool_recips, balanced_tiles, depthwise_qw, fuse_prefix,
    gemm_blocking, in_place_family, pack_weights_balanced, pack_weights_chanvec,
    pack_weights_padded, pool_q, unsupported,
};
use crate::cache::CacheSizes;
use crate::error::CodegenError;
use crate::target::TargetCaps;
use crate::ukernel::Vector;

/// The workspace region after the buffers, shared by every kernel that needs a temporary
/// tensor between two of its kernels (the padded input of a direct conv): kernels run one
/// at a time, so each may use all of it.
pub(super) struct Shared {
    pub(super) offset: usize,
    pub(super) floats: usize,
}

/// Chooses and builds the kernels of one plan: what every lowering shares.
pub(super) struct Lowering<'a> {
    graph: &'a Graph,
    threads: usize,
    caps: &'a TargetCaps,
    /// The family that reads convs in place, when the target has one and it is allowed.
    in_place: Option<Vector>,
    pub blob: Blob,
    /// Floats of the planned buffers; the shared region follows them.
    buffers: usize,
    pub(super) shared: Shared,
}

/// How a conv reads its input in place (see `KernelKind::DirectConv`).
struct DirectGeom {
    /// The phases and phase plane `[hq, wq]` when the input is first copied (padded and
    /// split by the stride, see `KernelKind::PadPlanes`).
    copy: Option<(Vec<[usize; 2]>, [usize; 2])>,
    /// Read from the unpadded input with per-tap lane masks (`tap_mask_table`).
    tap_masks: bool,
    pitch: usize,
    plane: usize,
    taps: Vec<i32>,
}

/// Whether a family with lane masks runs this conv in place (no im2col; depthwise convs too, as
/// one-row tiles, instead of their Cranelift kernel). A stride-1 1x1 conv
/// without padding reads its input itself. Others read a copy of the input, padded and
/// split into stride phases, so that every tap is a constant offset from the output
/// position on a grid of the phase plane's row pitch; the grid wastes `pitch - ow`
/// columns per row, so only when that is at most a quarter of the row and the pitch is at
/// least 8 (a vector then spans at most 3 grid rows), and when the epilogue is one the
/// assembled kernels apply whole (they store through the row map). A 1x1 conv with stride
/// has no waste: its copy is the subsampled input.
fn direct_geometry(
    g: &ConvGeom,
    epi: &[Epi],
    in_place: Option<Vector>,
    caps: &TargetCaps,
    threads: usize,
) -> Option<DirectGeom> {
    let vector = in_place?;
    // The kernels address the input with i32 displacements: up to 4 reduction steps of a
    // channel plane and the taps inside one (planes beyond ~130 M floats keep im2col).
    let fits = |plane: usize| {
        plane
            .checked_mul(16)
            .is_some_and(|b| b <= i32::MAX as usize)
    };
    if g.is_pointwise() {
        if !fits(g.h * g.w) {
            return None;
        }
        return Some(DirectGeom {
            copy: None,
            tap_masks: false,
            pitch: g.ow,
            plane: g.h * g.w,
            taps: vec![0],
        });
    }
    // A stride-1 conv whose output grid is its input's (zero padding that keeps the size)
    // reads the input itself: taps are offsets on the input's own rows, and lane masks
    // drop the taps that fall in the padding. No copy and no garbage columns. Small images
    // go channel-vectorised instead, which needs the padded copy.
    let [pt, pl, _, _] = g.pad;
    if g.stride == [1, 1]
        && [g.oh, g.ow] == [g.h, g.w]
        && g.fill.is_none()
        && chanvec_pixels(g, threads).is_none()
        && fits(g.h * g.w)
    {
        let [dh, dw] = g.dilation;
        let taps = (0..g.kernel[0])
            .flat_map(|ky| {
                (0..g.kernel[1]).map(move |kx| {
                    let dy = (ky * dh) as i64 - pt as i64;
                    let dx = (kx * dw) as i64 - pl as i64;
                    (dy * g.w as i64 + dx) as i32
                })
            })
            .collect();
        return Some(DirectGeom {
            copy: None,
            tap_masks: true,
            pitch: g.w,
            plane: g.h * g.w,
            taps,
        });
    }
    let [_, _, pb, pr] = g.pad;
    let (hp, wp) = (g.h + pt + pb, g.w + pl + pr);
    let [sh, sw] = g.stride;
    let (hq, wq) = (hp.div_ceil(sh), wp.div_ceil(sw));
    let [kh, kw] = g.kernel;
    let [dh, dw] = g.dilation;
    let mut phases: Vec<[usize; 2]> = Vec::new();
    let mut taps = Vec::with_capacity(kh * kw);
    for ky in 0..kh {
        for kx in 0..kw {
            let (y, x) = (ky * dh, kx * dw);
            let ph = [y % sh, x % sw];
            let i = match phases.iter().position(|&p| p == ph) {
                Some(i) => i,
                None => {
                    phases.push(ph);
                    phases.len() - 1
                }
            };
            taps.push((i * hq * wq + (y / sh) * wq + x / sw) as i32);
        }
    }
    // The phase planes hold every output position's taps.
    debug_assert!((g.oh - 1) + (kh - 1) * dh / sh < hq && (g.ow - 1) + (kw - 1) * dw / sw < wq);
    if wq > g.ow {
        let fused = fuse_prefix(epi, g.pixels(), vector).2 == epi.len();
        // A depthwise conv's time goes to calls and memory, not to the FMAs the garbage
        // columns waste: any pitch the row map allows.
        let wasteful = wq * 3 > g.ow * 4 && g.cin_g() > 1;
        if wq < 8 || wasteful || !fused {
            return None;
        }
    }
    let plane = phases.len() * hq * wq;
    // The assembled phase copy (`isa/x64/asm/pad.rs`) takes strides of 1 or 2 along rows and
    // phase rows of up to PAD_MAX_VECTORS vectors; other convs keep im2col.
    if !fits(plane) || sw > 2 || wq > caps.pad_row_floats {
        return None;
    }
    Some(DirectGeom {
        copy: Some((phases, [hq, wq])),
        tap_masks: false,
        pitch: wq,
        plane,
        taps,
    })
}

impl<'a> Lowering<'a> {
    pub fn new(
        graph: &'a Graph,
        opts: &PlanOptions,
        caps: &'a TargetCaps,
        buffers: usize,
    ) -> Lowering<'a> {
        Lowering {
            graph,
            threads: opts.threads,
            caps,
            in_place: in_place_family(caps, opts),
            blob: Blob(Vec::new()),
            buffers,
            shared: Shared {
                offset: align(buffers),
                floats: 0,
            },
        }
    }

    /// The weight blob, and the workspace floats with the shared region.
    pub fn finish(self) -> (Vec<f32>, usize) {
        let buffers = if self.shared.floats > 0 {
            self.shared.offset + align(self.shared.floats)
        } else {
            self.buffers
        };
        (self.blob.0, buffers)
    }

    /// The kernels of one fused group: its anchor's path, chosen from the shapes and what the
    /// target has.
    pub fn lower_anchor(
        &mut self,
        g: &Group,
        node: &bnc_ir::Node,
        view: &dyn Fn(ValueId) -> View,
        out: View,
        mut epi: Vec<Epi>,
        name: String,
    ) -> Result<Vec<Kernel>, CodegenError> {
        let (graph, threads) = (self.graph, self.threads);
        // Errors name the node as the model does: by its output value.
        let node_name = format!("%{}", graph.value(node.output).name);
        let param = |s: &str| {
            graph
                .param(node, s)
                .map(|t| t.data.as_slice())
                .ok_or_else(|| {
                    CodegenError::Invalid(format!("`{node_name}`: missing parameter `{s}`"))
                })
        };
        if let Some(l) = g.load {
            let x = view(l);
            return Ok(vec![Kernel {
                name,
                sources: Vec::new(),
                kind: KernelKind::Elementwise { x },
                units: x.n * x.c,
                out,
                epi,
                scratch: 0,
            }]);
        }
        let x = view(g.inputs(graph)[0]);
        let xs = graph.shape(g.inputs(graph)[0]);
        let os = graph.shape(node.output);
        let kernel = |kind, units, scratch, epi| Kernel {
            name: name.clone(),
            sources: Vec::new(),
            kind,
            out,
            epi,
            units,
            scratch,
        };
        Ok(vec![match &node.op {
            Op::Conv2d(c) => {
                let bias = if c.bias {
                    Some(self.blob.push(param("bias")?))
                } else {
                    None
                };
                if let Some(b) = bias {
                    epi.insert(
                        0,
                        Epi::Affine {
                            scale: None,
                            shift: Some(b),
                        },
                    );
                }
                if let Some(Pre::Upsample { conv_t, .. }) = &g.pre {
                    let weight = upsample_conv_weight(c, param("weight")?, conv_t);
                    let hw = [[xs[2], xs[3]], [os[2], os[3]]];
                    return Ok(self.lower_conv_transpose(conv_t, &weight, x, hw, out, epi, name));
                }
                let fill = if c.pad_fill && c.pad != [0; 4] {
                    Some(self.blob.push(param("pad_fill")?))
                } else {
                    None
                };
                // Its own input's shape: `x` may be the shuffle it reads through.
                let xs = graph.shape(node.inputs[0]);
                let chan = match g.pre {
                    Some(Pre::Shuffle { groups, first, .. }) => {
                        let table: Vec<f32> = (first..first + xs[1])
                            .map(|j| f32::from_bits(shuffle_source(x.c, groups, j) as u32))
                            .collect();
                        Some(self.blob.push(&table))
                    }
                    _ => None,
                };
                let geom = ConvGeom {
                    cin: xs[1],
                    h: xs[2],
                    w: xs[3],
                    cout: os[1],
                    oh: os[2],
                    ow: os[3],
                    kernel: c.kernel,
                    stride: c.stride,
                    dilation: c.dilation,
                    pad: c.pad,
                    groups: c.groups,
                    fill,
                    chan,
                };
                let weight = param("weight")?;
                return Ok(self.lower_conv(&geom, weight, x, out, epi, name));
            }
            Op::Dense { bias, .. } => {
                if *bias {
                    let b = self.blob.push(param("bias")?);
                    epi.insert(
                        0,
                        Epi::Affine {
                            scale: None,
                            shift: Some(b),
                        },
                    );
                }
                // On AVX-512 a dense layer is a 1x1 conv on a 1x1 image, run by the
                // channel-vectorised kernels (weights streamed as vectors, the input
                // broadcast); below 16 inputs or outputs the Cranelift kernel stays.
                let geom = ConvGeom {
                    cin: xs[1],
                    h: 1,
                    w: 1,
                    cout: os[1],
                    oh: 1,
                    ow: 1,
                    kernel: [1, 1],
                    stride: [1, 1],
                    dilation: [1, 1],
                    pad: [0; 4],
                    groups: 1,
                    fill: None,
                    chan: None,
                };
                if chanvec_pixels(&geom, threads).is_some()
                    && let Some((v, d)) = self.direct(&geom, &epi)
                {
                    let weight = param("weight")?;
                    return Ok(self.lower_direct(v, &geom, d, weight, x, out, epi, name));
                }
                let w = self.blob.push(param("weight")?);
                kernel(
                    KernelKind::Dense {
                        x,
                        k: xs[1],
                        m: os[1],
                        w,
                    },
                    os[1],
                    0,
                    epi,
                )
            }
            Op::MaxPool(p) | Op::AvgPool(p) => {
                if p.kernel[0] * p.kernel[1] > 1024 {
                    return Err(unsupported(format!(
                        "`{node_name}`: pooling window {}x{} is larger than 1024 taps",
                        p.kernel[0], p.kernel[1]
                    )));
                }
                let hw = [xs[2], xs[3]];
                let ohw = [os[2], os[3]];
                // AVX-512 max pooling reads its input in place (see `isa/x64/asm/pool.rs`): strides
                // of 1 or 2 along the row, rows of at most POOL_MAX_VECTORS vectors, no
                // epilogue to apply.
                let max = matches!(node.op, Op::MaxPool(_));
                let in_place = self.caps.in_place().filter(|_| {
                    max && epi.is_empty()
                        && (1..=2).contains(&p.stride[1])
                        && ohw[1] <= self.caps.pool_row_floats
                });
                let kind = if max {
                    KernelKind::MaxPool {
                        x,
                        p: p.clone(),
                        hw,
                        ohw,
                        in_place,
                    }
                } else {
                    KernelKind::AvgPool {
                        x,
                        p: p.clone(),
                        hw,
                        ohw,
                        recip: self.blob.push(&avgpool_recips(p, hw, ohw)),
                    }
                };
                // The Cranelift kernels pool from a padded copy in scratch.
                let (ph, qw) = pool_q(p, hw, ohw);
                let scratch = if in_place.is_some() {
                    0
                } else {
                    p.stride[1] * ph * qw + 8
                };
                kernel(kind, x.n * x.c, scratch, epi)
            }
            Op::GlobalAvgPool => kernel(KernelKind::GlobalAvgPool { x }, x.n * x.c, 0, epi),
            Op::GlobalMaxPool => kernel(KernelKind::GlobalMaxPool { x }, x.n * x.c, 0, epi),
            Op::Softmax => kernel(KernelKind::Softmax { x }, x.n * x.s, 0, epi),
            Op::LayerNorm { eps } => {
                let mut blob_param = |s: &str| {
                    graph
                        .param(node, s)
                        .map(|t| self.blob.push(&t.data))
                        .ok_or_else(|| {
                            CodegenError::Invalid(format!("`{node_name}`: missing parameter `{s}`"))
                        })
                };
                let weight = blob_param("weight")?;
                let bias = blob_param("bias")?;
                kernel(
                    KernelKind::LayerNorm {
                        x,
                        eps: *eps as f32,
                        weight,
                        bias,
                    },
                    x.n * x.s.div_ceil(4),
                    0,
                    epi,
                )
            }
            Op::ChannelShuffle { groups } => {
                let (lo, hi) = g.channels.unwrap_or((0, x.c));
                let out = View {
                    offset: out.offset + lo * out.s,
                    c: hi - lo,
                    ..out
                };
                Kernel {
                    out,
                    ..kernel(
                        KernelKind::ChannelShuffle {
                            x,
                            groups: *groups,
                            first: lo,
                        },
                        x.n * (hi - lo),
                        0,
                        epi,
                    )
                }
            }
            Op::Pad { pads, value, fill } => kernel(
                KernelKind::Pad {
                    x,
                    pads: *pads,
                    value: *value as f32,
                    fill: if *fill {
                        let t = graph.param(node, "pad_fill").ok_or_else(|| {
                            CodegenError::Invalid(format!(
                                "`{node_name}`: missing parameter `pad_fill`"
                            ))
                        })?;
                        Some(self.blob.push(&t.data))
                    } else {
                        None
                    },
                    hw: [xs[2], xs[3]],
                    ohw: [os[2], os[3]],
                },
                x.n * x.c,
                0,
                epi,
            ),
            Op::ConvTranspose2d(c) => {
                if c.bias {
                    let b = self.blob.push(param("bias")?);
                    epi.insert(
                        0,
                        Epi::Affine {
                            scale: None,
                            shift: Some(b),
                        },
                    );
                }
                let weight = param("weight")?;
                let hw = [[xs[2], xs[3]], [os[2], os[3]]];
                return Ok(self.lower_conv_transpose(c, weight, x, hw, out, epi, name));
            }
            Op::Resize(r) => {
                let (hw, ohw) = ([xs[2], xs[3]], [os[2], os[3]]);
                if hw.iter().chain(&ohw).any(|&d| d > i32::MAX as usize) {
                    return Err(unsupported(format!(
                        "`{node_name}`: resize {hw:?} -> {ohw:?} has an axis past 2^31"
                    )));
                }
                let rows = self.blob.push(&resize_table(&r.taps(0, hw[0], ohw[0])));
                let cols = self.blob.push(&resize_table(&r.taps(1, hw[1], ohw[1])));
                let coordinates = if r.bilinear() {
                    r.coordinates.to_string()
                } else {
                    format!("{} {}", r.coordinates, r.nearest_mode)
                };
                kernel(
                    KernelKind::Resize {
                        x,
                        bilinear: r.bilinear(),
                        hw,
                        ohw,
                        rows,
                        cols,
                        coordinates,
                    },
                    x.n * x.c,
                    // The horizontally resized rows, plus a vector of slack.
                    hw[0] * ohw[1] + 4,
                    epi,
                )
            }
            // Elementwise anchors returned above (`g.load`); views and concats are no
            // kernels (`fuse::role`).
            Op::Affine
            | Op::BatchNorm { .. }
            | Op::Activation(_)
            | Op::Add
            | Op::Mul
            | Op::Flatten
            | Op::Identity
            | Op::Dropout
            | Op::SliceChannels { .. }
            | Op::Concat => {
                return Err(CodegenError::Invalid(format!(
                    "`{node_name}`: `{}` reached kernel selection, but it is not an anchor",
                    node.op.name()
                )));
            }
        }])
    }

    /// The kernels of a conv: read in place when the target can, else the depthwise
    /// kernel for one input channel per group, else an im2col GEMM on packed panels.
    pub(super) fn lower_conv(
        &mut self,
        geom: &ConvGeom,
        weight: &[f32],
        x: View,
        out: View,
        epi: Vec<Epi>,
        name: String,
    ) -> Vec<Kernel> {
        let (threads, caches, wide) = (self.threads, &self.caps.caches, self.caps.wide);
        if let Some((v, d)) = self.direct(geom, &epi) {
            debug_assert!(geom.chan.is_none(), "direct convs read channels in order");
            return self.lower_direct(v, geom, d, weight, x, out, epi, name);
        }
        let geom = geom.clone();
        let kernel = |kind, units, scratch| Kernel {
            name,
            sources: Vec::new(),
            kind,
            out,
            epi,
            units,
            scratch,
        };
        let taps = geom.kernel[0] * geom.kernel[1];
        if geom.cin_g() == 1 && geom.groups > 1 && taps <= 64 {
            let w = self.blob.push(weight);
            let qw = depthwise_qw(&geom);
            let ph = geom.h + geom.pad[0] + geom.pad[2];
            let scratch = geom.stride[1] * ph * qw + 8;
            let units = x.n * geom.cout;
            return vec![kernel(
                KernelKind::Depthwise { x, g: geom, w },
                units,
                scratch,
            )];
        }
        let k = geom.kdim();
        let cout_g = geom.cout_g();
        let (mr, nr) = match wide {
            Some(isa) => (isa.mr(), isa.nr()),
            None => (MR, NR),
        };
        let mtiles = cout_g.div_ceil(mr);
        let p = geom.pixels();
        let b = gemm_blocking(k, p, mr, nr, caches);
        // With threads, units come from pixel blocks first: every unit that splits the
        // m-tiles of one block packs that block again (on shufflenet's 58->58 1x1 convs at
        // 28x28, 8 m-chunks made the kernel 2x slower on 2 threads than on 1). Blocks are
        // at least two panels wide on average, so that none is a sliver.
        let outer = x.n * geom.groups;
        let nb = if threads > 1 && outer * p.div_ceil(b.nb) < 4 * threads {
            let blocks = (4 * threads).div_ceil(outer).min(p / (2 * nr)).max(1);
            p.div_ceil(blocks).div_ceil(nr) * nr
        } else {
            b.nb
        }
        .min(b.nb);
        let b = Blocking { nb, ..b };
        let pblocks = p.div_ceil(b.nb);
        let base = outer * pblocks;
        let mchunks = if threads > 1 && base < 4 * threads {
            mtiles.min((4 * threads).div_ceil(base))
        } else {
            1
        };
        let wpack = self.blob.push(&match wide {
            None => pack_weights_padded(weight, geom.groups, cout_g, k, mr),
            Some(_) => pack_weights_balanced(weight, geom.groups, cout_g, k, mr),
        });
        let scratch = b.nb * k + if wide.is_some() { ALIGN } else { MR * NR };
        vec![kernel(
            KernelKind::Gemm {
                x,
                g: geom,
                wpack,
                nb: b.nb,
                mchunks,
                wide,
                kc: if wide.is_some() { b.kc } else { k },
            },
            base * mchunks,
            scratch,
        )]
    }

    /// How the in-place family reads `geom`, if it does.
    fn direct(&self, geom: &ConvGeom, epi: &[Epi]) -> Option<(Vector, DirectGeom)> {
        let d = direct_geometry(geom, epi, self.in_place, self.caps, self.threads)?;
        Some((self.in_place?, d))
    }

    /// The kernels of a direct conv: the padded copy (when it needs one) and the conv.
    #[allow(clippy::too_many_arguments)]
    fn lower_direct(
        &mut self,
        vector: Vector,
        geom: &ConvGeom,
        d: DirectGeom,
        weight: &[f32],
        x: View,
        out: View,
        epi: Vec<Epi>,
        name: String,
    ) -> Vec<Kernel> {
        let (threads, caches) = (self.threads, &self.caps.caches);
        let (blob, shared) = (&mut self.blob, &mut self.shared);
        let (mr, nr) = (vector.mr(), vector.nr());
        let mut kernels = Vec::new();
        let cin_g = geom.cin_g();
        let ntaps = d.taps.len();
        let src = match d.copy {
            Some((phases, hqwq)) => {
                // Reads of a grid tile reach at most nr - 1 floats past the last plane.
                let bstride = geom.cin * d.plane;
                let padded = View {
                    storage: 0,
                    offset: shared.offset,
                    bstride,
                    n: x.n,
                    c: geom.cin,
                    s: d.plane,
                };
                shared.floats = shared.floats.max(x.n * bstride + nr + ALIGN);
                kernels.push(Kernel {
                    name: format!("{name}_pad"),
                    sources: Vec::new(),
                    kind: KernelKind::PadPlanes {
                        x,
                        hw: [geom.h, geom.w],
                        pads: [geom.pad[0], geom.pad[1]],
                        stride: geom.stride,
                        phases,
                        hqwq,
                        fill: geom.fill,
                        vector,
                    },
                    out: padded,
                    epi: Vec::new(),
                    units: x.n * geom.cin,
                    scratch: 0,
                });
                padded
            }
            None => x,
        };
        if let Some(cv) = chanvec_pixels(geom, threads) {
            // Reduction chunks whose weight rows (32 channels, 128 bytes a row) stay in half of
            // L2 while every tile of the unit uses them (in practice the whole reduction);
            // partial sums wait in scratch. Chunks for half of L1 ran the 14x14 3x3 convs of
            // resnet50 at 1.37-1.56 ms against 1.25-1.29 (`profile` bench).
            let kc = reduction_chunk(
                cin_g,
                ntaps,
                caches.l2 / 2 / (CV_CHANNELS * 4) / ntaps,
                d.plane,
                caches,
            );
            let wpack = blob.push(&pack_weights_chanvec(
                weight,
                geom.groups,
                geom.cout_g(),
                geom.kdim(),
            ));
            let ctiles = geom.cout_g().div_ceil(CV_CHANNELS);
            kernels.push(Kernel {
                name,
                sources: Vec::new(),
                kind: KernelKind::DirectConv {
                    x: src,
                    g: geom.clone(),
                    wpack,
                    kc,
                    pitch: d.pitch,
                    plane: d.plane,
                    taps: d.taps,
                    nb: 0,
                    mchunks: 1,
                    m_major: false,
                    tap_masks: None,
                    chanvec: Some(cv),
                    vector,
                },
                out,
                epi,
                units: x.n * geom.groups * ctiles,
                scratch: geom.pixels().div_ceil(cv) * CV_TILE_FLOATS,
            });
            return kernels;
        }
        let grid = (geom.oh - 1) * d.pitch + geom.ow;
        let whole = grid.div_ceil(nr) * nr;
        let nb_max = if whole * cin_g <= caches.whole_budget() {
            whole
        } else {
            ((caches.in_place_budget() / cin_g) / nr * nr).clamp(nr, whole)
        };
        // Blocks of equal size (whole tiles), so that units split across threads weigh the same.
        let pblocks = grid.div_ceil(nb_max);
        let nb = grid.div_ceil(pblocks).div_ceil(nr) * nr;
        let pblocks = grid.div_ceil(nb);
        let base = x.n * geom.groups * pblocks;
        let mtiles = balanced_tiles(geom.cout_g(), mr).0;
        // With threads, one unit per m-tile: splitting them costs nothing here (there is no
        // packed block to share) and balances threads better than coarser chunks.
        let mchunks = if threads > 1 { mtiles } else { 1 };
        // Units run pixel block by pixel block (each block's input read from L2 by every
        // m-tile) unless that splits across threads worse than m-tile by m-tile: 14x14 has 7
        // tiles of 32 positions, in blocks of 4 and 3 tiles, one per thread.
        let m_major = threads > 1 && {
            let block_tiles = |pb: usize| (grid - pb * nb).min(nb).div_ceil(nr);
            let (_, q, rem) = balanced_tiles(geom.cout_g(), mr);
            let rows = |mt: usize| q + usize::from(mt < rem);
            let mut pixel_major = Vec::new();
            let mut m_major = Vec::new();
            for _ in 0..x.n * geom.groups {
                for pb in 0..pblocks {
                    pixel_major.extend((0..mtiles).map(|mt| block_tiles(pb) * rows(mt)));
                }
            }
            for mt in 0..mtiles {
                for _ in 0..x.n * geom.groups {
                    m_major.extend((0..pblocks).map(|pb| block_tiles(pb) * rows(mt)));
                }
            }
            heaviest_piece(&m_major, threads) * 20 < heaviest_piece(&pixel_major, threads) * 19
        };
        let kc = reduction_chunk(
            cin_g,
            ntaps,
            gemm_blocking(geom.kdim(), geom.pixels(), mr, nr, caches).kc / ntaps,
            d.plane,
            caches,
        );
        let wpack = blob.push(&pack_weights_balanced(
            weight,
            geom.groups,
            geom.cout_g(),
            geom.kdim(),
            mr,
        ));
        let tap_masks = d.tap_masks.then(|| {
            let table = tap_mask_table(geom, nr);
            let kw = geom.kernel[1];
            debug_assert!(interior_masks_by_column(geom, &table, &d.taps, d.plane, nr));
            TapMaskPlan {
                by_column: (kw <= 3).then_some(kw as u8),
                table: blob.push(&table),
            }
        });
        kernels.push(Kernel {
            name,
            sources: Vec::new(),
            kind: KernelKind::DirectConv {
                x: src,
                g: geom.clone(),
                wpack,
                kc,
                pitch: d.pitch,
                plane: d.plane,
                taps: d.taps,
                nb,
                mchunks,
                m_major,
                tap_masks,
                chanvec: None,
                vector,
            },
            out,
            epi,
            units: base * mchunks,
            scratch: 0,
        });
        kernels
    }
}

/// The per-tap lane masks of a conv read from its unpadded input.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TapMaskPlan {
    /// Blob offset of `tap_mask_table`.
    pub table: usize,
    /// The window width when it is at most 3: the tiles that read only inside the plane
    /// then run `TapMasks::FmasByColumn` (their masks depend on the window column only,
    /// see `interior_masks_by_column`), with no mask loads in the k loop.
    pub by_column: Option<u8>,
}

/// Whether every full tile that reads only inside the plane has masks that depend on the
/// window column only. It follows from the geometry: a lane whose column is inside the
/// image and whose tap address is inside the plane reads a row inside the image, and a
/// lane whose column is outside is masked for every row of the window alike. Checked in
/// debug builds on every tap-masked conv the tests compile.
fn interior_masks_by_column(
    g: &ConvGeom,
    table: &[f32],
    taps: &[i32],
    plane: usize,
    nr: usize,
) -> bool {
    let (kw, ntaps) = (g.kernel[1], taps.len());
    let (q_min, q_max) = interior_tiles(taps, plane, nr);
    (0..g.oh * g.ow / nr).all(|i| {
        let q = (i * nr) as i64;
        let words = &table[i * ntaps..(i + 1) * ntaps];
        !(q_min..=q_max).contains(&q)
            || (0..ntaps).all(|t| words[t].to_bits() == words[t % kw].to_bits())
    })
}

/// `[q_min, q_max]`: the grid positions of the `nr`-wide tiles of a tap-masked conv whose
/// every tap reads inside the channel plane (`q + min tap >= 0`, `q + nr + max tap <=
/// plane`); those load whole vectors.
pub(crate) fn interior_tiles(taps: &[i32], plane: usize, nr: usize) -> (i64, i64) {
    let lo_tap = taps.iter().copied().min().unwrap_or(0) as i64;
    let hi_tap = taps.iter().copied().max().unwrap_or(0) as i64;
    (-lo_tap, plane as i64 - nr as i64 - hi_tap)
}

/// Lane masks of a conv read from its unpadded input (see `asm::Spec::tap_masks`): per
/// tile of `nr` output positions (two vectors of 16), per tap, one u32 word (stored as f32
/// bits) whose low and high halves are the two vectors' masks: lane `l` is set when its
/// position `p < oh * ow` reads an input pixel inside the image through the tap.
fn tap_mask_table(g: &ConvGeom, nr: usize) -> Vec<f32> {
    let pixels = g.oh * g.ow;
    let [kh, kw] = g.kernel;
    let [dh, dw] = g.dilation;
    let inside = |v: i64, n: usize| (0..n as i64).contains(&v);
    let mut table = Vec::new();
    for tile in 0..pixels.div_ceil(nr) {
        for ky in 0..kh {
            for kx in 0..kw {
                let mut word = 0u32;
                for lane in 0..nr {
                    let p = tile * nr + lane;
                    let (oy, ox) = ((p / g.ow) as i64, (p % g.ow) as i64);
                    let iy = oy + (ky * dh) as i64 - g.pad[0] as i64;
                    let ix = ox + (kx * dw) as i64 - g.pad[1] as i64;
                    if p < pixels && inside(iy, g.h) && inside(ix, g.w) {
                        word |= 1 << lane;
                    }
                }
                table.push(f32::from_bits(word));
            }
        }
    }
    table
}

/// Reduction rows per chunk of a direct conv: `cin` input channels of `ntaps` taps each,
/// at most `steps_max` channels a chunk (and no more than L2 aliasing allows for input
/// planes `plane` floats apart), in chunks of equal size.
fn reduction_chunk(
    cin: usize,
    ntaps: usize,
    steps_max: usize,
    plane: usize,
    caches: &CacheSizes,
) -> usize {
    let steps_max = steps_max.min(caches.alias_steps(plane * 4)).max(1);
    let chunks = cin.div_ceil(steps_max);
    cin.div_ceil(chunks) * ntaps
}

/// The heaviest piece when units of these costs (in unit order) are split among
/// `threads` the way the run splits them ([`super::piece_units`]).
fn heaviest_piece(costs: &[usize], threads: usize) -> usize {
    let t = threads.min(costs.len()).max(1);
    (0..t)
        .map(|i| {
            let (lo, hi) = super::piece_units(i, t, costs.len());
            costs[lo..hi].iter().sum()
        })
        .max()
        .unwrap_or(0)
}

/// Pixels per tile when a direct conv is channel-vectorised: when there are enough output
/// channels for whole vectors and it is not depthwise, on images of at most 64 pixels and
/// 8 columns (7x7 in the classic networks: pixel vectors would fill 49 of 64 lanes), and
/// for windows of several taps on images up to 28x28 when the 32-channel tiles (the units)
/// give every thread two. A tile is a run of up to 12 consecutive output pixels.
///
/// On the 3x3 convs of resnet50's 28x28 and 14x14 layers these ran 1.18-1.23 and
/// 1.26-1.32 ms against 1.27-1.40 and 1.37-1.56 for pixel vectors (whose last tile of a
/// 14x14 plane is mostly empty); on 56x56 they were slower, on 1x1 convs (short
/// reductions) the strided stores of the epilogue cost more than they save, and on the
/// stride-2 3x3 into 28x28 (its four phase planes, 1.7 MB, read once per channel tile)
/// they took 1.82 ms against 1.49-1.56.
fn chanvec_pixels(g: &ConvGeom, threads: usize) -> Option<usize> {
    let small = g.ow <= 8 && g.pixels() <= 64;
    let mid = g.pixels() <= 28 * 28
        && g.kernel[0] * g.kernel[1] > 1
        && g.stride == [1, 1]
        && g.cout_g().div_ceil(CV_CHANNELS) >= 2 * threads.max(1);
    ((small || mid) && g.cout_g() >= 16 && g.cin_g() >= 16).then_some(12)
}

/// The blob table of a resize along one axis (`KernelKind::Resize`): `[i0; n] [i1; n]
/// [1 - w; n] [w; n]`, the indices stored as i32 bit patterns.
fn resize_table(taps: &[bnc_ir::ResizeTap]) -> Vec<f32> {
    let bits = |i: usize| f32::from_bits(i as u32);
    let mut t: Vec<f32> = taps.iter().map(|t| bits(t.i0)).collect();
    t.extend(taps.iter().map(|t| bits(t.i1)));
    t.extend(taps.iter().map(|t| (1.0 - t.w) as f32));
    t.extend(taps.iter().map(|t| t.w as f32));
    t
}
