//! Fusion: each kernel computes one anchor node (a conv, pool, dense, ... or an elementwise
//! node that starts a chain) and the chain of elementwise nodes after it that nothing else
//! reads, applied as its epilogue before the result is stored.

use bnc_ir::{Activation, ConvTranspose2d, Graph, Op, ValueId};

use super::numel;
use super::upsample_conv::upsample_conv;
use crate::error::CodegenError;

/// The elementwise part of a fused group, before views are known.
pub(super) enum EpiDesc {
    Affine(Option<Vec<f32>>, Option<Vec<f32>>),
    Add(ValueId),
    Mul(ValueId),
    MulChan(ValueId),
    Act(Activation),
}

pub(super) struct Group {
    pub anchor: usize,
    /// An operator the anchor conv reads through (it reads that operator's input).
    pub pre: Option<Pre>,
    /// The anchor (after `pre`, if any) and the nodes fused after it.
    pub nodes: Vec<usize>,
    /// For a channel shuffle: computes only output channels `[lo, hi)`, the rest being
    /// read through the permutation by `Step::Gather`s (`gather.rs`).
    pub channels: Option<(usize, usize)>,
    /// For an elementwise anchor: the value loaded.
    pub load: Option<ValueId>,
    pub epi: Vec<EpiDesc>,
    pub out: ValueId,
    pub last: usize,
}

/// What a conv computes inside its own kernels before it.
#[derive(Clone, Debug)]
pub(super) enum Pre {
    /// Nearest upsample node `node` (`upsample_conv.rs`), run with the conv as the one
    /// transposed conv `conv_t`: the upsampled tensor is never stored.
    Upsample {
        node: usize,
        conv_t: ConvTranspose2d,
    },
    /// Channels `first..` of channel shuffle node `node` (of `groups`)'s output (the conv's
    /// input, or the channel slice of it the conv reads), read by the GEMM's packing or the
    /// depthwise kernel from the shuffle's input through the permutation
    /// (`ConvGeom::chan`). The shuffle itself computes only what other readers need
    /// (`gather.rs`).
    Shuffle {
        node: usize,
        groups: usize,
        first: usize,
    },
}

impl Group {
    /// The values the anchor's kernels read (besides epilogue operands).
    pub fn inputs<'g>(&self, graph: &'g Graph) -> &'g [ValueId] {
        let node = match self.pre {
            Some(Pre::Upsample { node, .. } | Pre::Shuffle { node, .. }) => node,
            None => self.anchor,
        };
        &graph.nodes[node].inputs
    }

    /// Every value the group's kernels read: the anchor's inputs, then those of the nodes
    /// fused after it (including the values passed along the chain).
    pub fn reads(&self, graph: &Graph) -> Vec<ValueId> {
        let mut reads = self.inputs(graph).to_vec();
        for &n in self.nodes.iter().skip_while(|&&n| n != self.anchor).skip(1) {
            reads.extend(&graph.nodes[n].inputs);
        }
        reads
    }
}

/// The shuffle node and first channel a conv reading `v` reads through, when `v`
/// is a channel shuffle's output or a channel slice of one.
fn shuffle_read(graph: &Graph, producer: &[Option<usize>], v: ValueId) -> Option<Pre> {
    let mut node = producer[v.0]?;
    let mut first = 0;
    if let Op::SliceChannels { start, .. } = graph.nodes[node].op {
        first = start;
        node = producer[graph.nodes[node].inputs[0].0]?;
    }
    let shuffle = &graph.nodes[node];
    match shuffle.op {
        Op::ChannelShuffle { groups } if graph.shape(shuffle.output).len() == 4 => {
            Some(Pre::Shuffle {
                node,
                groups,
                first,
            })
        }
        _ => None,
    }
}

/// One step of the schedule before views are resolved.
pub(super) enum Step {
    Group(Group),
    /// Copy a value into a region (concat slice or a graph output).
    Copy {
        src: ValueId,
        dst: ValueId,
        /// Element offset into `dst`'s location (channel offset times S).
        dst_off: usize,
    },
    /// Copy channels `first..first + count` of `channel_shuffle(x, groups)` (the value
    /// `src`) into a region, read from `x` through the permutation (`gather.rs`).
    Gather {
        src: ValueId,
        x: ValueId,
        groups: usize,
        first: usize,
        count: usize,
        dst: ValueId,
        dst_off: usize,
    },
}

/// How the planner treats an operator. Exhaustive, so that a new operator is a compile
/// error here until it is given a role (and, for an anchor, a path in `select.rs`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Computed by a kernel of its own, which may fuse an epilogue after it.
    Anchor,
    /// Applied in the epilogue of the kernel before it (or its own elementwise kernel).
    Elementwise,
    /// A view of its input: no kernel.
    Alias,
    /// Its inputs are written into slices of its buffer (or copied there).
    Concat,
}

pub(super) fn role(op: &Op) -> Role {
    match op {
        Op::Conv2d(_)
        | Op::Dense { .. }
        | Op::MaxPool(_)
        | Op::AvgPool(_)
        | Op::GlobalAvgPool
        | Op::Pad { .. }
        | Op::Softmax
        | Op::Resize(_)
        | Op::ChannelShuffle { .. }
        | Op::GlobalMaxPool
        | Op::ConvTranspose2d(_)
        | Op::LayerNorm { .. } => Role::Anchor,
        Op::Affine | Op::BatchNorm { .. } | Op::Activation(_) | Op::Add | Op::Mul => {
            Role::Elementwise
        }
        Op::Flatten | Op::Identity | Op::Dropout => Role::Alias,
        // A view at channel offset `start` with the source's batch stride.
        Op::SliceChannels { .. } => Role::Alias,
        Op::Concat => Role::Concat,
    }
}

pub(super) fn is_elementwise(op: &Op) -> bool {
    role(op) == Role::Elementwise
}

pub(super) fn is_alias(op: &Op) -> bool {
    role(op) == Role::Alias
}

/// Affine vectors of an affine or batchnorm node (batchnorm computed in f64).
pub(super) fn affine_params(
    graph: &Graph,
    node: usize,
) -> Result<(Vec<f32>, Vec<f32>), CodegenError> {
    let n = &graph.nodes[node];
    let get = |s: &str| {
        graph.param(n, s).map(|t| t.data.clone()).ok_or_else(|| {
            let node = &graph.value(n.output).name;
            CodegenError::Invalid(format!("`%{node}`: missing parameter `{s}`"))
        })
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
        _ => Err(CodegenError::Unsupported("not an affine node".into())),
    }
}

/// The fused groups of `graph`, in node order. `fuse_affine: false` keeps every
/// affine/batchnorm out of other kernels' epilogues (it becomes its own elementwise kernel;
/// for measuring what fusing it saves).
/// `chan_tables`: convs run as packed GEMMs or depthwise kernels (none is read in place),
/// which find their input channels through a table, so they may read a channel shuffle
/// through its permutation.
pub(super) fn fuse(
    graph: &Graph,
    fuse_affine: bool,
    chan_tables: bool,
) -> Result<Vec<Group>, CodegenError> {
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
    // Nearest upsamples read by one conv alone, computed by that conv's kernels.
    let mut pre: Vec<Option<Pre>> = vec![None; nn];
    for (i, n) in graph.nodes.iter().enumerate() {
        if matches!(n.op, Op::Resize(_))
            && readers[n.output.0] == 1
            && !is_output[n.output.0]
            && let Some(j) = reader_node[n.output.0]
            && let Some(conv_t) = upsample_conv(graph, i, j)
        {
            pre[j] = Some(Pre::Upsample { node: i, conv_t });
            taken[i] = true;
        }
    }
    // Convs reading a channel shuffle (or a slice of one) read it through its permutation.
    // The shuffle stays a group: `gather.rs` narrows or drops it.
    if chan_tables {
        let mut producer = vec![None; nv];
        for (i, n) in graph.nodes.iter().enumerate() {
            producer[n.output.0] = Some(i);
        }
        for (j, n) in graph.nodes.iter().enumerate() {
            if matches!(n.op, Op::Conv2d(_)) && pre[j].is_none() {
                pre[j] = shuffle_read(graph, &producer, n.inputs[0]);
            }
        }
    }
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
        let upsample = match pre[i] {
            Some(Pre::Upsample { node, .. }) => Some(node),
            _ => None,
        };
        let mut nodes: Vec<usize> = upsample.into_iter().chain([i]).collect();
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
            pre: pre[i].take(),
            nodes,
            channels: None,
            load,
            epi,
            out: cur,
            last,
        });
    }
    Ok(groups)
}
