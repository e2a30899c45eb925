//! Per-channel affine maps and the weight arithmetic that folds them into convs and dense
//! layers. Every fold in bnc (the baselines and the e-graph) computes new weights here, in
//! f64 from the f32 originals, rounding once at the end.

use std::ops::Range;

use bnc_ir::{Graph, Node, Op, Tensor};

/// `y[c] = scale[c]·x[c] + shift[c]`, per channel.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelMap {
    pub scale: Vec<f64>,
    pub shift: Vec<f64>,
}

/// Why a fold would not be exact.
#[derive(Clone, Debug, PartialEq)]
pub enum NotExact {
    /// A conv pads, and input channel `channel` has scale 0 with a shift different from the
    /// pad value: no pad fill reproduces the border.
    ZeroScaleAtPaddedBorder { channel: usize },
    /// Inverting a map with a zero scale.
    ZeroScale { channel: usize },
    /// A folded weight, bias or pad fill does not fit in f32 (a fill `−t/s` with a subnormal
    /// `s`, a compensation `W/s`).
    Overflow { what: &'static str },
    /// A folded weight or scale is subnormal in f32: compiled kernels flush it to zero.
    Subnormal { what: &'static str },
    /// A transposed conv whose output positions do not all receive every tap (stride > 1,
    /// a crop smaller than the kernel, output padding) reads a map with a non-zero shift on
    /// input channel `channel`: the shift would add a different amount at different output
    /// positions, which no bias reproduces.
    ShiftVariesWithPosition { channel: usize },
}

impl std::fmt::Display for NotExact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotExact::ZeroScaleAtPaddedBorder { channel } => write!(
                f,
                "channel {channel} has scale 0 and the conv pads: no pad fill keeps the border exact"
            ),
            NotExact::ZeroScale { channel } => {
                write!(
                    f,
                    "channel {channel} has scale 0, so the map has no inverse"
                )
            }
            NotExact::Overflow { what } => write!(f, "the folded {what} overflows f32"),
            NotExact::ShiftVariesWithPosition { channel } => write!(
                f,
                "channel {channel} has a shift, and the transposed conv gives its output \
                 positions different sets of taps, so the shift is not a bias"
            ),
            NotExact::Subnormal { what } => write!(
                f,
                "a folded {what} is subnormal in f32, which compiled code flushes to zero"
            ),
        }
    }
}

impl ChannelMap {
    pub fn identity(channels: usize) -> ChannelMap {
        ChannelMap {
            scale: vec![1.0; channels],
            shift: vec![0.0; channels],
        }
    }

    pub fn len(&self) -> usize {
        self.scale.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scale.is_empty()
    }

    /// The inference-time map of a batch-norm: `s = γ/√(σ²+ε)`, `t = β − s·μ`, in f64.
    pub fn from_batchnorm(
        gamma: &[f32],
        beta: &[f32],
        mean: &[f32],
        var: &[f32],
        eps: f64,
    ) -> ChannelMap {
        let scale: Vec<f64> = gamma
            .iter()
            .zip(var)
            .map(|(&g, &v)| g as f64 / (v as f64 + eps).sqrt())
            .collect();
        let shift = beta
            .iter()
            .zip(mean)
            .zip(&scale)
            .map(|((&b, &m), &s)| b as f64 - s * m as f64)
            .collect();
        ChannelMap { scale, shift }
    }

    /// The map of an `affine` node.
    pub fn of_affine(graph: &Graph, node: &Node) -> ChannelMap {
        debug_assert_eq!(node.op, Op::Affine);
        let get = |suffix| {
            graph
                .param(node, suffix)
                .expect("verified graph has affine parameters")
                .data
                .iter()
                .map(|&v| v as f64)
                .collect()
        };
        ChannelMap {
            scale: get("scale"),
            shift: get("shift"),
        }
    }

    /// `after ∘ self`: first `self`, then `after`.
    pub fn then(&self, after: &ChannelMap) -> ChannelMap {
        ChannelMap {
            scale: self
                .scale
                .iter()
                .zip(&after.scale)
                .map(|(a, b)| a * b)
                .collect(),
            shift: self
                .shift
                .iter()
                .zip(&after.scale)
                .zip(&after.shift)
                .map(|((t1, s2), t2)| s2 * t1 + t2)
                .collect(),
        }
    }

    /// The inverse map `x = (y − t)/s`, if every scale is non-zero.
    pub fn inverse(&self) -> Result<ChannelMap, NotExact> {
        if let Some(channel) = self.scale.iter().position(|&s| s == 0.0) {
            return Err(NotExact::ZeroScale { channel });
        }
        Ok(ChannelMap {
            scale: self.scale.iter().map(|s| 1.0 / s).collect(),
            shift: self
                .shift
                .iter()
                .zip(&self.scale)
                .map(|(t, s)| -t / s)
                .collect(),
        })
    }

    pub fn slice(&self, channels: Range<usize>) -> ChannelMap {
        ChannelMap {
            scale: self.scale[channels.clone()].to_vec(),
            shift: self.shift[channels].to_vec(),
        }
    }

    pub fn is_identity(&self) -> bool {
        self.scale.iter().all(|&s| s == 1.0) && self.shift.iter().all(|&t| t == 0.0)
    }

    /// The map as `affine` parameters (`scale`, `shift`), rounded to f32.
    pub fn to_params(&self) -> Vec<(&'static str, Tensor)> {
        let f32s = |v: &[f64]| Tensor::new(vec![v.len()], v.iter().map(|&x| x as f32).collect());
        vec![("scale", f32s(&self.scale)), ("shift", f32s(&self.shift))]
    }
}

/// New parameters for a conv or dense layer that absorbed maps on its input and output.
#[derive(Clone, Debug, PartialEq)]
pub struct Absorbed {
    pub weight: Tensor,
    pub bias: Tensor,
    /// Per-input-channel pad fill, when the conv pads and some fill is not 0.
    pub pad_fill: Option<Tensor>,
}

impl Absorbed {
    /// The absorbed layer's operator (bias on, pad fill as needed) and its parameters.
    pub fn into_op_and_params(self, op: &Op) -> (Op, Vec<(&'static str, Tensor)>) {
        let mut params = vec![("weight", self.weight), ("bias", self.bias)];
        let op = match op {
            Op::Conv2d(c) => {
                let mut c = c.clone();
                c.bias = true;
                c.pad_fill = self.pad_fill.is_some();
                if let Some(fill) = self.pad_fill {
                    params.push(("pad_fill", fill));
                }
                Op::Conv2d(c)
            }
            Op::Dense { out_features, .. } => Op::Dense {
                out_features: *out_features,
                bias: true,
            },
            Op::ConvTranspose2d(c) => {
                let mut c = c.clone();
                c.bias = true;
                Op::ConvTranspose2d(c)
            }
            other => panic!("cannot absorb a map into `{}`", other.name()),
        };
        (op, params)
    }
}

/// The parameters of `node` (a conv or dense) after absorbing `before` on its input channels
/// and `after` on its output channels:
/// `after(W ∗ pad_fill(before(x)) + b)` becomes `W' ∗ pad_fill'(x) + b'` with
/// `W'[o,i] = s_after[o]·W[o,i]·s_before[i]`,
/// `b'[o] = s_after[o]·(b[o] + Σ_{i,kh,kw} W[o,i]·t_before[i]) + t_after[o]` and
/// `fill'[i] = (fill[i] − t_before[i]) / s_before[i]`.
pub fn absorb(
    graph: &Graph,
    node: &Node,
    before: Option<&ChannelMap>,
    after: Option<&ChannelMap>,
) -> Result<Absorbed, NotExact> {
    let weight = graph
        .param(node, "weight")
        .expect("verified graph has weights");
    if let Op::ConvTranspose2d(c) = &node.op {
        return absorb_transposed(graph, node, c, weight, before, after);
    }
    let out_channels = weight.shape[0];
    let in_per_group = weight.shape[1];
    let taps: usize = weight.shape[2..].iter().product();
    let (groups, pads, old_fill) = match &node.op {
        Op::Conv2d(c) => (
            c.groups,
            c.pad.iter().any(|&p| p > 0),
            graph.param(node, "pad_fill"),
        ),
        Op::Dense { .. } => (1, false, None),
        other => panic!("cannot absorb a map into `{}`", other.name()),
    };
    let in_channels = in_per_group * groups;
    let out_per_group = out_channels / groups;
    let bias: Vec<f64> = match graph.param(node, "bias") {
        Some(b) => b.data.iter().map(|&v| v as f64).collect(),
        None => vec![0.0; out_channels],
    };
    let identity_in = ChannelMap::identity(in_channels);
    let identity_out = ChannelMap::identity(out_channels);
    let before = before.unwrap_or(&identity_in);
    let after = after.unwrap_or(&identity_out);
    assert_eq!(
        before.len(),
        in_channels,
        "input map does not match the layer"
    );
    assert_eq!(
        after.len(),
        out_channels,
        "output map does not match the layer"
    );

    let pad_fill = if pads {
        let old = |i: usize| old_fill.map_or(0.0, |f| f.data[i] as f64);
        let mut fill = Vec::with_capacity(in_channels);
        for i in 0..in_channels {
            let (s, t) = (before.scale[i], before.shift[i]);
            if s == 0.0 {
                // The channel is the constant t inside; only a border of the same value is
                // reproducible (and then any fill works: the weight becomes 0).
                if t != old(i) {
                    return Err(NotExact::ZeroScaleAtPaddedBorder { channel: i });
                }
                fill.push(0.0);
            } else {
                fill.push((old(i) - t) / s);
            }
        }
        if !crate::conditioning::fits_f32(fill.iter().copied()) {
            return Err(NotExact::Overflow { what: "pad fill" });
        }
        fill.iter()
            .any(|&f| f != 0.0)
            .then(|| Tensor::new(vec![in_channels], fill.iter().map(|&f| f as f32).collect()))
    } else {
        None
    };

    let mut new_weight = vec![0f32; weight.data.len()];
    let mut new_bias = vec![0f32; out_channels];
    let mut subnormal = false;
    for o in 0..out_channels {
        let group = o / out_per_group;
        let mut folded_shift = 0.0;
        for local in 0..in_per_group {
            let i = group * in_per_group + local;
            let base = (o * in_per_group + local) * taps;
            for k in 0..taps {
                let w = weight.data[base + k] as f64;
                folded_shift += w * before.shift[i];
                let folded = after.scale[o] * w * before.scale[i];
                new_weight[base + k] = folded as f32;
                // Only a prologue scale matters: a tiny output scale loses what the
                // unfolded BN loses too, but a tiny input scale meets the large values a
                // fold made (`t/s`) elsewhere.
                subnormal |=
                    before.scale[i] != 1.0 && folded != 0.0 && !(folded as f32).is_normal();
            }
        }
        new_bias[o] = (after.scale[o] * (bias[o] + folded_shift) + after.shift[o]) as f32;
    }
    if !new_weight.iter().all(|w| w.is_finite()) {
        return Err(NotExact::Overflow { what: "weight" });
    }
    if subnormal {
        return Err(NotExact::Subnormal { what: "weight" });
    }
    if !new_bias.iter().all(|b| b.is_finite()) {
        return Err(NotExact::Overflow { what: "bias" });
    }
    Ok(Absorbed {
        weight: Tensor::new(weight.shape.clone(), new_weight),
        bias: Tensor::new(vec![out_channels], new_bias),
        pad_fill,
    })
}

/// [`absorb`] for a transposed conv (weight `[in, out / groups, kh, kw]`):
/// `W'[i, o] = s_after[o]·W[i, o]·s_before[i]`,
/// `b'[o] = s_after[o]·(b[o] + Σ_{i,kh,kw} W[i, o]·t_before[i]) + t_after[o]`.
/// The input shift becomes part of the bias only when every output position receives every
/// tap ([`bnc_ir::ConvTranspose2d::shift_is_uniform`]); otherwise a non-zero input shift is
/// refused ([`NotExact::ShiftVariesWithPosition`]), and only scales fold into the input side.
fn absorb_transposed(
    graph: &Graph,
    node: &Node,
    c: &bnc_ir::ConvTranspose2d,
    weight: &Tensor,
    before: Option<&ChannelMap>,
    after: Option<&ChannelMap>,
) -> Result<Absorbed, NotExact> {
    let in_channels = weight.shape[0];
    let out_per_group = weight.shape[1];
    let taps: usize = weight.shape[2..].iter().product();
    let out_channels = c.out_channels;
    let in_per_group = in_channels / c.groups;
    let bias: Vec<f64> = match graph.param(node, "bias") {
        Some(b) => b.data.iter().map(|&v| v as f64).collect(),
        None => vec![0.0; out_channels],
    };
    let identity_in = ChannelMap::identity(in_channels);
    let identity_out = ChannelMap::identity(out_channels);
    let before = before.unwrap_or(&identity_in);
    let after = after.unwrap_or(&identity_out);
    assert_eq!(
        before.len(),
        in_channels,
        "input map does not match the layer"
    );
    assert_eq!(
        after.len(),
        out_channels,
        "output map does not match the layer"
    );
    if !c.shift_is_uniform()
        && let Some(channel) = before.shift.iter().position(|&t| t != 0.0)
    {
        return Err(NotExact::ShiftVariesWithPosition { channel });
    }
    let mut new_weight = vec![0f32; weight.data.len()];
    let mut folded_shift = vec![0.0f64; out_channels];
    let mut subnormal = false;
    for i in 0..in_channels {
        let group = i / in_per_group;
        for local in 0..out_per_group {
            let o = group * out_per_group + local;
            let base = (i * out_per_group + local) * taps;
            for k in 0..taps {
                let w = weight.data[base + k] as f64;
                folded_shift[o] += w * before.shift[i];
                let folded = after.scale[o] * w * before.scale[i];
                new_weight[base + k] = folded as f32;
                subnormal |=
                    before.scale[i] != 1.0 && folded != 0.0 && !(folded as f32).is_normal();
            }
        }
    }
    let new_bias: Vec<f32> = (0..out_channels)
        .map(|o| (after.scale[o] * (bias[o] + folded_shift[o]) + after.shift[o]) as f32)
        .collect();
    if !new_weight.iter().all(|w| w.is_finite()) {
        return Err(NotExact::Overflow { what: "weight" });
    }
    if subnormal {
        return Err(NotExact::Subnormal { what: "weight" });
    }
    if !new_bias.iter().all(|b| b.is_finite()) {
        return Err(NotExact::Overflow { what: "bias" });
    }
    Ok(Absorbed {
        weight: Tensor::new(weight.shape.clone(), new_weight),
        bias: Tensor::new(vec![out_channels], new_bias),
        pad_fill: None,
    })
}

/// Replaces `node`'s operator and parameters with an absorbed version. The prefix is kept
/// when no other node reads it; otherwise (a shared or copied layer) a fresh one is made.
pub fn apply_absorbed(graph: &mut Graph, node_index: usize, absorbed: Absorbed) {
    let (op, params) = absorbed.into_op_and_params(&graph.nodes[node_index].op);
    replace_params(graph, node_index, op, params);
}

/// Whether a layer can absorb a per-channel map on its input and on its output (conv2d,
/// dense and affine: [`bnc_ir::MapRule::Absorbs`] in the operator table).
pub fn is_absorber(op: &Op) -> bool {
    op.kind().info().maps == bnc_ir::MapRule::Absorbs
}

/// What an absorbing layer becomes: a conv/dense with new parameters, or an affine with a
/// new map.
#[derive(Clone, Debug, PartialEq)]
pub enum Absorption {
    Layer(Absorbed),
    Affine(ChannelMap),
    /// A layer_norm's new `weight` and `bias` after absorbing a map on its output.
    Norm {
        weight: Tensor,
        bias: Tensor,
    },
}

impl Absorption {
    /// The operator `op` of the absorbing node becomes, and its new parameters.
    pub fn into_op_and_params(self, op: &Op) -> (Op, Vec<(&'static str, Tensor)>) {
        match self {
            Absorption::Layer(absorbed) => absorbed.into_op_and_params(op),
            Absorption::Affine(map) => (Op::Affine, map.to_params()),
            Absorption::Norm { weight, bias } => {
                (op.clone(), vec![("weight", weight), ("bias", bias)])
            }
        }
    }

    /// Whether a conv now pads with a per-channel fill.
    pub fn has_pad_fill(&self) -> bool {
        matches!(self, Absorption::Layer(a) if a.pad_fill.is_some())
    }
}

/// The new map of an `affine` node after absorbing `before` on its input and `after` on its
/// output: `after ∘ F ∘ before`.
pub fn absorb_into_affine(
    graph: &Graph,
    node: &Node,
    before: Option<&ChannelMap>,
    after: Option<&ChannelMap>,
) -> ChannelMap {
    let own = ChannelMap::of_affine(graph, node);
    let map = match before {
        Some(b) => b.then(&own),
        None => own,
    };
    match after {
        Some(a) => map.then(a),
        None => map,
    }
}

/// [`absorb`] for any absorbing layer (conv2d, dense or affine; see [`is_absorber`]).
pub fn absorb_any(
    graph: &Graph,
    node: &Node,
    before: Option<&ChannelMap>,
    after: Option<&ChannelMap>,
) -> Result<Absorption, NotExact> {
    match node.op {
        Op::Affine => {
            let map = absorb_into_affine(graph, node, before, after);
            let values = map.scale.iter().chain(&map.shift).copied();
            if !crate::conditioning::fits_f32(values) {
                return Err(NotExact::Overflow { what: "map" });
            }
            if !crate::conditioning::factors_normal(map.scale.iter().copied()) {
                return Err(NotExact::Subnormal { what: "scale" });
            }
            Ok(Absorption::Affine(map))
        }
        _ => absorb(graph, node, before, after).map(Absorption::Layer),
    }
}

/// The parameters of a layer_norm (`w·n + b`, per channel) after absorbing the map `after`
/// on its output: `w' = s·w`, `b' = s·b + t`, in f64 rounded once.
pub fn absorb_output(
    graph: &Graph,
    node: &Node,
    after: &ChannelMap,
) -> Result<Absorption, NotExact> {
    let get = |suffix| {
        graph
            .param(node, suffix)
            .expect("verified graph has layer_norm parameters")
    };
    let (w, b) = (get("weight"), get("bias"));
    assert_eq!(
        w.data.len(),
        after.len(),
        "output map does not match the layer"
    );
    let weight: Vec<f64> = w
        .data
        .iter()
        .zip(&after.scale)
        .map(|(&w, s)| s * w as f64)
        .collect();
    let bias: Vec<f64> = b
        .data
        .iter()
        .zip(after.scale.iter().zip(&after.shift))
        .map(|(&b, (s, t))| s * b as f64 + t)
        .collect();
    if !crate::conditioning::fits_f32(weight.iter().chain(&bias).copied()) {
        return Err(NotExact::Overflow { what: "weight" });
    }
    let f32s = |v: &[f64]| Tensor::new(vec![v.len()], v.iter().map(|&x| x as f32).collect());
    Ok(Absorption::Norm {
        weight: f32s(&weight),
        bias: f32s(&bias),
    })
}

/// Applies an [`Absorption`] computed by [`absorb_any`] to the node it was computed for.
pub fn apply_absorption(graph: &mut Graph, node_index: usize, absorption: Absorption) {
    let (op, params) = absorption.into_op_and_params(&graph.nodes[node_index].op);
    replace_params(graph, node_index, op, params);
}

/// Gives `node` a new operator and parameters, keeping its prefix when no other node reads it.
fn replace_params(
    graph: &mut Graph,
    node_index: usize,
    op: Op,
    params: Vec<(&'static str, Tensor)>,
) {
    let node = &graph.nodes[node_index];
    let base = node
        .params
        .clone()
        .unwrap_or_else(|| graph.value(node.output).name.clone());
    let shared = graph
        .nodes
        .iter()
        .enumerate()
        .any(|(i, n)| i != node_index && n.params.as_deref() == Some(base.as_str()));
    if !shared {
        // Free the prefix: drop the tensors this node read under it.
        let shapes: Vec<&bnc_ir::Shape> = node.inputs.iter().map(|&i| graph.shape(i)).collect();
        let old: Vec<String> = node
            .op
            .param_specs(&shapes)
            .iter()
            .map(|spec| format!("{base}.{}", spec.suffix))
            .collect();
        for name in old {
            graph.params.remove(&name);
        }
    }
    let prefix = graph.add_params(&base, params);
    let node = &mut graph.nodes[node_index];
    node.op = op;
    node.params = Some(prefix);
}
