//! Lowering a [`Graph`] to a [`Plan`]: fused groups, buffer placement (in-place concat,
//! aliases for flatten/identity), static liveness-based workspace layout, and weight packing.
//!
//! A plan is a list of [`Kernel`]s run in order. Every tensor a kernel touches is a [`View`]:
//! a storage slot (workspace, a graph input or a graph output), an element offset, and a
//! batch stride; inside one batch item the tensor is the contiguous `[C, S]` block, `S` being
//! the product of the axes after the channel axis. A value written in place into a concat has
//! the concat's batch stride, so every kernel reads and writes through views.

use std::collections::HashSet;

use bnc_ir::{Activation, Graph, Op, Pool2d, Shape, ValueId};

use crate::CodegenError;
use crate::asm::Isa;
use crate::cache::CacheSizes;

/// Fallback GEMM tile: `MR` output channels by `NR` pixels (see `emit::emit_ukernel`).
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
        wide: Option<Isa>,
        kc: usize,
    },
    /// Conv read in place from `x` by assembled AVX-512 kernels, no packing: `x` is the
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
        /// `asm/chanvec.rs`): weights `[group][32-channel tile][k][32]` zero-padded, one
        /// unit per channel tile, tiles are runs of one output row, `nb` and `mchunks`
        /// unused.
        chanvec: Option<usize>,
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
        /// Read in place by assembled AVX-512 rows (`asm/pool.rs`), no padded copy.
        in_place: bool,
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
    Pad {
        x: View,
        pads: [usize; 4],
        value: f32,
        /// Weights-blob offset of a per-channel fill (`pad_fill`), replacing `value`.
        fill: Option<usize>,
        hw: [usize; 2],
        ohw: [usize; 2],
    },
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
            | KernelKind::Pad { x, .. } => *x,
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

struct Blob(Vec<f32>);

impl Blob {
    fn push(&mut self, data: &[f32]) -> usize {
        let off = align(self.0.len());
        self.0.resize(off, 0.0);
        self.0.extend_from_slice(data);
        off
    }
}

/// The elementwise part of a fused group, before views are known.
enum EpiDesc {
    Affine(Option<Vec<f32>>, Option<Vec<f32>>),
    Add(ValueId),
    Mul(ValueId),
    MulChan(ValueId),
    Act(Activation),
}

struct Group {
    anchor: usize,
    /// The anchor and the nodes fused after it.
    nodes: Vec<usize>,
    /// For an elementwise anchor: the value loaded.
    load: Option<ValueId>,
    epi: Vec<EpiDesc>,
    out: ValueId,
    last: usize,
}

/// One step of the schedule before views are resolved.
enum Step {
    Group(Group),
    /// Copy a value into a region (concat slice or a graph output).
    Copy {
        src: ValueId,
        dst: ValueId,
        /// Element offset into `dst`'s location (channel offset times S).
        dst_off: usize,
    },
}

fn is_elementwise(op: &Op) -> bool {
    matches!(
        op,
        Op::Affine | Op::BatchNorm { .. } | Op::Activation(_) | Op::Add | Op::Mul
    )
}

fn is_alias(op: &Op) -> bool {
    matches!(op, Op::Flatten | Op::Identity | Op::Dropout)
}

/// Affine vectors of an affine or batchnorm node (batchnorm computed in f64).
fn affine_params(graph: &Graph, node: usize) -> Result<(Vec<f32>, Vec<f32>), CodegenError> {
    let n = &graph.nodes[node];
    let get = |s: &str| {
        graph
            .param(n, s)
            .map(|t| t.data.clone())
            .ok_or_else(|| CodegenError::Invalid(format!("missing parameter `{s}`")))
    };
    match n.op {
        Op::Affine => Ok((get("scale")?, get("shift")?)),
        Op::BatchNorm { eps } => {
            let (g, b, m, v) = (
                get("weight")?,
                get("bias")?,
                get("running_mean")?,
                get("running_var")?,
            );
            let mut s = Vec::with_capacity(g.len());
            let mut t = Vec::with_capacity(g.len());
            for c in 0..g.len() {
                let sc = f64::from(g[c]) / (f64::from(v[c]) + eps).sqrt();
                s.push(sc as f32);
                t.push((f64::from(b[c]) - sc * f64::from(m[c])) as f32);
            }
            Ok((s, t))
        }
        _ => Err(unsupported("not an affine node")),
    }
}

/// Plans `graph` for `threads` threads; `wide` selects the assembled GEMM microkernels
/// (their tile shape drives weight packing and blocking), `None` the f32x4 fallback.
/// `fuse_affine: false` keeps every affine/batchnorm out of other kernels' epilogues (it
/// becomes its own elementwise kernel; for measuring what fusing it saves).
pub(crate) fn plan(
    graph: &Graph,
    threads: usize,
    wide: Option<Isa>,
    fuse_affine: bool,
    direct: bool,
    caches: &CacheSizes,
) -> Result<Plan, CodegenError> {
    graph
        .verify()
        .map_err(|e| CodegenError::Invalid(e.to_string()))?;
    let threads = threads.max(1);
    if let Some(v) = graph.values.iter().find(|v| v.shape.contains(&0)) {
        return Err(unsupported(format!(
            "`{}` has no elements (shape {:?})",
            v.name, v.shape
        )));
    }
    let nv = graph.values.len();
    let nn = graph.nodes.len();
    let shape = |v: ValueId| graph.shape(v);

    // Readers of each value: node inputs and graph outputs.
    let mut readers = vec![0usize; nv];
    let mut reader_node: Vec<Option<usize>> = vec![None; nv];
    for (i, n) in graph.nodes.iter().enumerate() {
        for v in &n.inputs {
            readers[v.0] += 1;
            reader_node[v.0] = Some(i);
        }
    }
    let mut is_output = vec![false; nv];
    for o in &graph.outputs {
        readers[o.0] += 1;
        is_output[o.0] = true;
    }

    // ---- Fusion: anchors and their epilogues --------------------------------------------
    let mut taken = vec![false; nn];
    let mut groups: Vec<Group> = Vec::new();
    for i in 0..nn {
        let node = &graph.nodes[i];
        if taken[i] || matches!(node.op, Op::Concat) || is_alias(&node.op) {
            continue;
        }
        taken[i] = true;
        let mut epi = Vec::new();
        let mut load = None;
        if is_elementwise(&node.op) {
            let desc = match &node.op {
                Op::Affine | Op::BatchNorm { .. } => {
                    load = Some(node.inputs[0]);
                    let (s, t) = affine_params(graph, i)?;
                    EpiDesc::Affine(Some(s), Some(t))
                }
                Op::Activation(a) => {
                    load = Some(node.inputs[0]);
                    EpiDesc::Act(a.clone())
                }
                Op::Add => {
                    load = Some(node.inputs[0]);
                    EpiDesc::Add(node.inputs[1])
                }
                Op::Mul => {
                    let (a, b) = (node.inputs[0], node.inputs[1]);
                    if shape(a) == shape(b) {
                        load = Some(a);
                        EpiDesc::Mul(b)
                    } else if numel(shape(a)) >= numel(shape(b)) {
                        load = Some(a);
                        EpiDesc::MulChan(b)
                    } else {
                        load = Some(b);
                        EpiDesc::MulChan(a)
                    }
                }
                _ => unreachable!(),
            };
            epi.push(desc);
        }
        let mut nodes = vec![i];
        // Extend the chain while the current value has exactly one reader, an elementwise
        // node producing the same shape.
        let mut cur = node.output;
        let mut last = i;
        while readers[cur.0] == 1 && !is_output[cur.0] {
            let Some(j) = reader_node[cur.0] else { break };
            let nj = &graph.nodes[j];
            if taken[j] || !is_elementwise(&nj.op) || shape(nj.output) != shape(cur) {
                break;
            }
            if !fuse_affine && matches!(nj.op, Op::Affine | Op::BatchNorm { .. }) {
                break;
            }
            let other = nj.inputs.iter().copied().find(|&v| v != cur);
            let desc = match &nj.op {
                Op::Affine | Op::BatchNorm { .. } => {
                    let (s, t) = affine_params(graph, j)?;
                    EpiDesc::Affine(Some(s), Some(t))
                }
                Op::Activation(a) => EpiDesc::Act(a.clone()),
                Op::Add => match other {
                    Some(o) => EpiDesc::Add(o),
                    None => break,
                },
                Op::Mul => match other {
                    Some(o) if shape(o) == shape(cur) => EpiDesc::Mul(o),
                    Some(o) => EpiDesc::MulChan(o),
                    None => break,
                },
                _ => break,
            };
            epi.push(desc);
            nodes.push(j);
            taken[j] = true;
            cur = nj.output;
            last = j;
        }
        groups.push(Group {
            anchor: i,
            nodes,
            load,
            epi,
            out: cur,
            last,
        });
    }

    // ---- Placement: aliases and in-place concat ------------------------------------------
    let mut alias: Vec<Option<(ValueId, usize)>> = vec![None; nv];
    let mut materialized = vec![false; nv]; // written by a kernel or a concat
    for g in &groups {
        materialized[g.out.0] = true;
    }
    for n in &graph.nodes {
        if is_alias(&n.op) {
            alias[n.output.0] = Some((n.inputs[0], 0));
        }
        if matches!(n.op, Op::Concat) {
            materialized[n.output.0] = true;
        }
    }
    let resolve = |alias: &Vec<Option<(ValueId, usize)>>, v: ValueId| -> (ValueId, usize) {
        let (mut cur, mut off) = (v, 0);
        let mut guard = 0;
        while let Some((next, o)) = alias[cur.0] {
            cur = next;
            off += o;
            guard += 1;
            if guard > nv {
                break;
            }
        }
        (cur, off)
    };
    let mut steps: Vec<(usize, Step)> = Vec::new();
    for (ci, node) in graph.nodes.iter().enumerate().rev() {
        if !matches!(node.op, Op::Concat) {
            continue;
        }
        let out = node.output;
        let (_, _, s) = ncs(shape(out));
        // Every input already placed contiguously, in order: the concat is a view of them.
        if alias[out.0].is_none() && !is_output[out.0] {
            let first = resolve(&alias, node.inputs[0]);
            let mut expect = first.1;
            let mut ok = true;
            for &x in &node.inputs {
                let (r, o) = resolve(&alias, x);
                if alias[x.0].is_none() || r != first.0 || o != expect || r == x {
                    ok = false;
                    break;
                }
                expect += ncs(shape(x)).1 * s;
            }
            if ok {
                alias[out.0] = Some((node.inputs[0], 0));
                continue;
            }
        }
        let mut seen = HashSet::new();
        let mut coff = 0;
        for &x in &node.inputs {
            let eligible = alias[x.0].is_none()
                && materialized[x.0]
                && !is_output[x.0]
                && x != out
                && seen.insert(x);
            if eligible {
                alias[x.0] = Some((out, coff * s));
            } else {
                steps.push((
                    ci,
                    Step::Copy {
                        src: x,
                        dst: out,
                        dst_off: coff * s,
                    },
                ));
            }
            coff += ncs(shape(x)).1;
        }
    }
    // Cycle guard: every alias chain must end.
    for v in 0..nv {
        let mut cur = ValueId(v);
        let mut guard = 0;
        while let Some((next, _)) = alias[cur.0] {
            cur = next;
            guard += 1;
            if guard > nv {
                return Err(CodegenError::Invalid(
                    "alias cycle in buffer placement".into(),
                ));
            }
        }
    }
    for g in groups {
        steps.push((g.last, Step::Group(g)));
    }
    steps.sort_by_key(|(pos, _)| *pos);
    let mut steps: Vec<Step> = steps.into_iter().map(|(_, s)| s).collect();

    // Storage of roots: graph inputs, graph outputs, or the workspace.
    let ni = graph.inputs.len();
    let mut root_storage: Vec<Option<usize>> = vec![None; nv];
    for (i, v) in graph.inputs.iter().enumerate() {
        root_storage[v.0] = Some(1 + i);
    }
    for (j, v) in graph.outputs.iter().enumerate() {
        if alias[v.0].is_none() && root_storage[v.0].is_none() {
            root_storage[v.0] = Some(1 + ni + j);
        }
    }
    // Outputs not written in place get a copy at the end, into a fresh output root.
    let mut out_values: Vec<ValueId> = Vec::new();
    let mut extra_values: Vec<(ValueId, Shape)> = Vec::new();
    for (j, &v) in graph.outputs.iter().enumerate() {
        let (root, off) = resolve(&alias, v);
        if root == v && off == 0 && root_storage[v.0] == Some(1 + ni + j) {
            out_values.push(v);
        } else if root != v
            && off == 0
            && root_storage[root.0].is_none()
            && numel(shape(root)) == numel(shape(v))
        {
            // An output that views a whole workspace root (identity, flatten): the root
            // lives in the output buffer instead, no copy.
            root_storage[root.0] = Some(1 + ni + j);
            out_values.push(v);
        } else {
            // A pseudo value id beyond the graph's values stands for output j's own buffer.
            let pseudo = ValueId(nv + extra_values.len());
            extra_values.push((pseudo, shape(v).clone()));
            steps.push(Step::Copy {
                src: v,
                dst: pseudo,
                dst_off: 0,
            });
            out_values.push(pseudo);
            let _ = j;
        }
    }
    let total_values = nv + extra_values.len();
    let shape_of = |v: ValueId| -> Shape {
        if v.0 < nv {
            shape(v).clone()
        } else {
            extra_values[v.0 - nv].1.clone()
        }
    };
    root_storage.resize(total_values, None);
    for (j, &v) in out_values.iter().enumerate() {
        if v.0 >= nv {
            root_storage[v.0] = Some(1 + ni + j);
        }
    }
    alias.resize(total_values, None);

    // ---- Liveness and workspace layout -------------------------------------------------
    let step_values = |s: &Step| -> Vec<ValueId> {
        match s {
            Step::Group(g) => {
                let mut v = Vec::new();
                if g.load.is_none() {
                    v.extend(graph.nodes[g.anchor].inputs.iter().copied());
                } else {
                    v.extend(g.load);
                }
                for e in &g.epi {
                    match e {
                        EpiDesc::Add(o) | EpiDesc::Mul(o) | EpiDesc::MulChan(o) => v.push(*o),
                        _ => {}
                    }
                }
                v.push(g.out);
                v
            }
            Step::Copy { src, dst, .. } => vec![*src, *dst],
        }
    };
    let mut interval: Vec<Option<(usize, usize)>> = vec![None; total_values];
    for (si, s) in steps.iter().enumerate() {
        for v in step_values(s) {
            let (r, _) = resolve(&alias, v);
            let iv = interval[r.0].get_or_insert((si, si));
            iv.0 = iv.0.min(si);
            iv.1 = iv.1.max(si);
        }
    }
    let mut ws_roots: Vec<(usize, usize, (usize, usize))> = Vec::new(); // (root, floats, interval)
    for (r, iv) in interval.iter().enumerate() {
        if let Some(iv) = iv
            && root_storage[r].is_none()
            && alias[r].is_none()
        {
            ws_roots.push((r, align(numel(&shape_of(ValueId(r)))), *iv));
        }
    }
    ws_roots.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut placed: Vec<(usize, usize, (usize, usize))> = Vec::new(); // (offset, size, iv)
    let mut ws_offset = vec![0usize; total_values];
    let mut buffers = 0;
    for (r, size, iv) in ws_roots {
        let mut conflicts: Vec<(usize, usize)> = placed
            .iter()
            .filter(|(_, _, piv)| piv.0 <= iv.1 && iv.0 <= piv.1)
            .map(|(o, s, _)| (*o, *s))
            .collect();
        conflicts.sort();
        let mut off = 0;
        for (o, s) in conflicts {
            if off + size <= o {
                break;
            }
            off = off.max(o + s);
        }
        placed.push((off, size, iv));
        ws_offset[r] = off;
        buffers = buffers.max(off + size);
        root_storage[r] = Some(0);
    }

    let view = |v: ValueId| -> View {
        let (r, off) = resolve(&alias, v);
        let rs = shape_of(r);
        let (rn, _, _) = ncs(&rs);
        let (n, c, s) = ncs(&shape_of(v));
        let storage = root_storage[r.0].unwrap_or(0);
        let base = if storage == 0 { ws_offset[r.0] } else { 0 };
        View {
            storage,
            offset: base + off,
            bstride: numel(&rs) / rn.max(1),
            n,
            c,
            s,
        }
    };

    // ---- Kernels ----------------------------------------------------------------------
    let mut blob = Blob(Vec::new());
    let mut kernels = Vec::new();
    // One region after the buffers, shared by every kernel that needs a temporary tensor
    // between two of its kernels (the padded input of a direct conv): kernels run one at a
    // time, so each may use all of it.
    let mut shared = Shared {
        offset: align(buffers),
        floats: 0,
    };
    let value_name = |v: ValueId| -> String {
        if v.0 < nv {
            graph.value(v).name.clone()
        } else {
            let j = out_values.iter().position(|&o| o == v).unwrap_or(0);
            format!("{} (copy)", graph.value(graph.outputs[j]).name)
        }
    };
    // Kernels `step_kernels[i].0 ..= step_kernels[i].1` run step `i`.
    let mut step_kernels = Vec::with_capacity(steps.len());
    for step in &steps {
        let first = kernels.len();
        match step {
            Step::Copy { src, dst, dst_off } => {
                let x = view(*src);
                let mut out = view(*dst);
                out.offset += dst_off;
                out.c = x.c;
                kernels.push(Kernel {
                    name: format!("copy_{}", kernels.len()),
                    sources: vec![value_name(*src)],
                    kind: KernelKind::Elementwise { x },
                    units: x.n * x.c,
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
                            scale: s.as_deref().map(|s| blob.push(s)),
                            shift: t.as_deref().map(|t| blob.push(t)),
                        },
                        EpiDesc::Add(o) => Epi::Add(view(*o)),
                        EpiDesc::Mul(o) => Epi::Mul(view(*o)),
                        EpiDesc::MulChan(o) => Epi::MulChan(view(*o)),
                        EpiDesc::Act(a) => Epi::Act(a.clone()),
                    });
                }
                let out = view(g.out);
                let name = format!(
                    "k{}_{}",
                    kernels.len(),
                    graph.value(node.output).name.replace(['.', '-'], "_")
                );
                let ks = lower_anchor(
                    graph,
                    g,
                    node,
                    &mut blob,
                    &view,
                    out,
                    epi,
                    name,
                    threads,
                    wide,
                    direct,
                    caches,
                    &mut shared,
                )?;
                let sources: Vec<String> = g
                    .nodes
                    .iter()
                    .map(|&n| value_name(graph.nodes[n].output))
                    .collect();
                kernels.extend(ks.into_iter().map(|k| Kernel {
                    sources: sources.clone(),
                    ..k
                }));
            }
        }
        step_kernels.push((first, kernels.len().saturating_sub(1).max(first)));
    }
    let mut layout = Vec::new();
    for v in 0..total_values {
        let value = value_name(ValueId(v));
        if let Some((of, offset)) = alias[v] {
            layout.push(Placement::View {
                value,
                of: value_name(of),
                offset,
            });
        } else if let Some(iv) = interval[v] {
            layout.push(match root_storage[v] {
                Some(0) | None => Placement::Buffer {
                    value,
                    offset: ws_offset[v],
                    floats: align(numel(&shape_of(ValueId(v)))),
                    live: (step_kernels[iv.0].0, step_kernels[iv.1].1),
                },
                Some(storage) => Placement::Caller { value, storage },
            });
        }
    }
    if shared.floats > 0 {
        buffers = shared.offset + align(shared.floats);
    }
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
        blob: blob.0,
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
        layout,
    })
}

/// The workspace region shared by kernels for temporaries (see `plan`).
struct Shared {
    offset: usize,
    floats: usize,
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

/// Whether the AVX-512 path runs this conv in place (no im2col; depthwise convs too, as
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
    wide: Option<Isa>,
    threads: usize,
) -> Option<DirectGeom> {
    if wide != Some(Isa::Avx512) {
        return None;
    }
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
        let fused = crate::emit::fuse_prefix(epi, g.pixels(), Isa::Avx512).2 == epi.len();
        // A depthwise conv's time goes to calls and memory, not to the FMAs the garbage
        // columns waste: any pitch the row map allows.
        let wasteful = wq * 3 > g.ow * 4 && g.cin_g() > 1;
        if wq < 8 || wasteful || !fused {
            return None;
        }
    }
    let plane = phases.len() * hq * wq;
    // The assembled phase copy (`asm/pad.rs`) takes strides of 1 or 2 along rows and
    // phase rows of up to PAD_MAX_VECTORS vectors; other convs keep im2col.
    if !fits(plane) || sw > 2 || wq > crate::asm::PAD_MAX_VECTORS * 16 {
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

#[allow(clippy::too_many_arguments)]
fn lower_anchor(
    graph: &Graph,
    g: &Group,
    node: &bnc_ir::Node,
    blob: &mut Blob,
    view: &dyn Fn(ValueId) -> View,
    out: View,
    mut epi: Vec<Epi>,
    name: String,
    threads: usize,
    wide: Option<Isa>,
    direct: bool,
    caches: &CacheSizes,
    shared: &mut Shared,
) -> Result<Vec<Kernel>, CodegenError> {
    let param = |s: &str| {
        graph
            .param(node, s)
            .map(|t| t.data.as_slice())
            .ok_or_else(|| CodegenError::Invalid(format!("`{name}`: missing parameter `{s}`")))
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
    let x = view(node.inputs[0]);
    let xs = graph.shape(node.inputs[0]);
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
                Some(blob.push(param("bias")?))
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
            let fill = if c.pad_fill && c.pad != [0; 4] {
                Some(blob.push(param("pad_fill")?))
            } else {
                None
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
            };
            let weight = param("weight")?;
            let taps = c.kernel[0] * c.kernel[1];
            if let Some(d) = direct_geometry(&geom, &epi, wide.filter(|_| direct), threads) {
                return Ok(lower_direct(
                    &geom, d, weight, blob, x, out, epi, name, threads, caches, shared,
                ));
            } else if geom.cin_g() == 1 && geom.groups > 1 && taps <= 64 {
                let w = blob.push(weight);
                let qw = depthwise_qw(&geom);
                let ph = geom.h + geom.pad[0] + geom.pad[2];
                let scratch = geom.stride[1] * ph * qw + 8;
                kernel(
                    KernelKind::Depthwise { x, g: geom, w },
                    x.n * os[1],
                    scratch,
                    epi,
                )
            } else {
                let k = geom.kdim();
                let cout_g = geom.cout_g();
                let (mr, nr) = match wide {
                    Some(isa) => (isa.mr(), isa.nr()),
                    None => (MR, NR),
                };
                let mtiles = cout_g.div_ceil(mr);
                let p = geom.pixels();
                let b = gemm_blocking(k, p, mr, nr, caches);
                let pblocks = p.div_ceil(b.nb);
                let base = x.n * geom.groups * pblocks;
                let mchunks = if threads > 1 && base < 4 * threads {
                    mtiles.min((4 * threads).div_ceil(base))
                } else {
                    1
                };
                let wpack = blob.push(&match wide {
                    None => pack_weights_padded(weight, geom.groups, cout_g, k, mr),
                    Some(_) => pack_weights_balanced(weight, geom.groups, cout_g, k, mr),
                });
                let scratch = b.nb * k + if wide.is_some() { ALIGN } else { MR * NR };
                kernel(
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
                    epi,
                )
            }
        }
        Op::Dense { bias, .. } => {
            if *bias {
                let b = blob.push(param("bias")?);
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
            };
            if chanvec_pixels(&geom, threads).is_some()
                && let Some(d) = direct_geometry(&geom, &epi, wide.filter(|_| direct), threads)
            {
                let weight = param("weight")?;
                return Ok(lower_direct(
                    &geom, d, weight, blob, x, out, epi, name, threads, caches, shared,
                ));
            }
            let w = blob.push(param("weight")?);
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
                return Err(unsupported(format!("`{name}`: pooling window too large")));
            }
            let hw = [xs[2], xs[3]];
            let ohw = [os[2], os[3]];
            // AVX-512 max pooling reads its input in place (see `asm/pool.rs`): strides
            // of 1 or 2 along the row, rows of at most POOL_MAX_VECTORS vectors, no
            // epilogue to apply.
            let max = matches!(node.op, Op::MaxPool(_));
            let in_place = max
                && wide == Some(Isa::Avx512)
                && epi.is_empty()
                && (1..=2).contains(&p.stride[1])
                && ohw[1] <= crate::asm::POOL_MAX_VECTORS * 16;
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
                    recip: blob.push(&avgpool_recips(p, hw, ohw)),
                }
            };
            // The Cranelift kernels pool from a padded copy in scratch.
            let (ph, qw) = crate::emit::pool_q(p, hw, ohw);
            let scratch = if in_place {
                0
            } else {
                p.stride[1] * ph * qw + 8
            };
            kernel(kind, x.n * x.c, scratch, epi)
        }
        Op::GlobalAvgPool => kernel(KernelKind::GlobalAvgPool { x }, x.n * x.c, 0, epi),
        Op::Softmax => kernel(KernelKind::Softmax { x }, x.n * x.s, 0, epi),
        Op::Pad { pads, value, fill } => kernel(
            KernelKind::Pad {
                x,
                pads: *pads,
                value: *value as f32,
                fill: if *fill {
                    let t = graph
                        .param(node, "pad_fill")
                        .ok_or_else(|| unsupported("pad without its pad_fill"))?;
                    Some(blob.push(&t.data))
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
        other => {
            return Err(unsupported(format!(
                "operator `{}` cannot be compiled",
                other.name()
            )));
        }
    }])
}

/// The kernels of a direct conv: the padded copy (when it needs one) and the conv.
#[allow(clippy::too_many_arguments)]
fn lower_direct(
    geom: &ConvGeom,
    d: DirectGeom,
    weight: &[f32],
    blob: &mut Blob,
    x: View,
    out: View,
    epi: Vec<Epi>,
    name: String,
    threads: usize,
    caches: &CacheSizes,
    shared: &mut Shared,
) -> Vec<Kernel> {
    let isa = Isa::Avx512;
    let (mr, nr) = (isa.mr(), isa.nr());
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
        },
        out,
        epi,
        units: base * mchunks,
        scratch: 0,
    });
    kernels
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
/// `threads` the way the run splits them ([`crate::pool::piece_units`]).
fn heaviest_piece(costs: &[usize], threads: usize) -> usize {
    let t = threads.min(costs.len()).max(1);
    (0..t)
        .map(|i| {
            let (lo, hi) = crate::pool::piece_units(i, t, costs.len());
            costs[lo..hi].iter().sum()
        })
        .max()
        .unwrap_or(0)
}

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
fn avgpool_recips(p: &Pool2d, [h, w]: [usize; 2], [oh, ow]: [usize; 2]) -> Vec<f32> {
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
