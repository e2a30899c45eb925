//! The reference interpreter: evaluates a [`Graph`] node by node, written for clarity. Every
//! pass and every compiled kernel is checked against it.
//!
//! Semantics are PyTorch's (NCHW, batch `N >= 1`). Tensors are stored as f32; sums (conv,
//! dense, pooling, softmax), batchnorm and activations are computed in f64 and rounded once.
//! Shapes and parameter tensors come from [`Op::infer_shape`] and [`Op::param_specs`],
//! activations from [`Activation::apply`]: nothing here re-derives them.

use std::borrow::Cow;
use std::fmt;

use crate::op::{Activation, Conv2d, ConvTranspose2d, Op, Pool2d};
use crate::{Graph, Node, Shape, Tensor, ValueId};

/// Why a graph (or one node) could not be evaluated.
#[derive(Clone, Debug, PartialEq)]
pub enum InterpError {
    /// `run` was given the wrong number of input tensors.
    InputCount { expected: usize, got: usize },
    /// An input tensor does not have the shape the graph declares for it.
    InputShape {
        input: String,
        expected: Shape,
        got: Shape,
    },
    /// A tensor whose data length disagrees with its own shape.
    MalformedTensor {
        what: String,
        shape: Shape,
        len: usize,
    },
    /// A parameter the node needs is not in `graph.params` (or the node has no prefix).
    MissingParam { node: String, param: String },
    /// A parameter exists but has the wrong shape.
    ParamShape {
        param: String,
        expected: Shape,
        got: Shape,
    },
    /// The operator rejects its inputs (arity or shapes), per [`Op::infer_shape`].
    BadNode { node: String, message: String },
    /// The graph itself is inconsistent: a value read before it is defined, an id out of
    /// range, or a node whose result disagrees with the shape declared for its output.
    InvalidGraph(String),
}

impl fmt::Display for InterpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InterpError::InputCount { expected, got } => {
                write!(f, "the graph takes {expected} input(s), got {got}")
            }
            InterpError::InputShape {
                input,
                expected,
                got,
            } => write!(
                f,
                "input `{input}` must have shape {expected:?}, got {got:?}"
            ),
            InterpError::MalformedTensor { what, shape, len } => {
                write!(f, "{what} has shape {shape:?} but {len} data element(s)")
            }
            InterpError::MissingParam { node, param } => {
                write!(f, "`{node}` needs parameter `{param}`, which is missing")
            }
            InterpError::ParamShape {
                param,
                expected,
                got,
            } => write!(
                f,
                "parameter `{param}` has shape {got:?}, expected {expected:?}"
            ),
            InterpError::BadNode { node, message } => write!(f, "`{node}`: {message}"),
            InterpError::InvalidGraph(message) => write!(f, "invalid graph: {message}"),
        }
    }
}

impl std::error::Error for InterpError {}

/// Runs the graph on `inputs` (one per `graph.inputs`, in order, with the declared shapes)
/// and returns the tensors of `graph.outputs`, in order. Intermediate tensors are dropped
/// after their last use.
pub fn run(graph: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>, InterpError> {
    let slots = execute(graph, inputs, false)?;
    graph
        .outputs
        .iter()
        .map(|&id| match slots.get(id.0).and_then(Option::as_ref) {
            Some(t) => Ok(Tensor::clone(t)),
            None => Err(InterpError::InvalidGraph(format!(
                "output {} is never defined",
                id.0
            ))),
        })
        .collect()
}

/// Runs the graph and returns every value, indexed by [`ValueId`] (for debugging passes).
pub fn run_all(graph: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>, InterpError> {
    let slots = execute(graph, inputs, true)?;
    slots
        .into_iter()
        .enumerate()
        .map(|(i, slot)| match slot {
            Some(t) => Ok(t.into_owned()),
            None => Err(InterpError::InvalidGraph(format!(
                "value `{}` is never defined",
                graph.values[i].name
            ))),
        })
        .collect()
}

/// Evaluates the whole graph. Slots hold borrowed graph inputs and owned node results; unless
/// `keep_all`, a slot is emptied after the last node that reads it (graph outputs are kept).
fn execute<'a>(
    graph: &Graph,
    inputs: &'a [Tensor],
    keep_all: bool,
) -> Result<Vec<Option<Cow<'a, Tensor>>>, InterpError> {
    if inputs.len() != graph.inputs.len() {
        return Err(InterpError::InputCount {
            expected: graph.inputs.len(),
            got: inputs.len(),
        });
    }
    let n_values = graph.values.len();
    let check_id = |id: ValueId| {
        if id.0 < n_values {
            Ok(())
        } else {
            Err(InterpError::InvalidGraph(format!(
                "value id {} out of range ({n_values} values)",
                id.0
            )))
        }
    };

    let mut slots: Vec<Option<Cow<'a, Tensor>>> = vec![None; n_values];
    for (&id, tensor) in graph.inputs.iter().zip(inputs) {
        check_id(id)?;
        let value = graph.value(id);
        if tensor.shape != value.shape {
            return Err(InterpError::InputShape {
                input: value.name.clone(),
                expected: value.shape.clone(),
                got: tensor.shape.clone(),
            });
        }
        check_tensor(tensor, || format!("input `{}`", value.name))?;
        slots[id.0] = Some(Cow::Borrowed(tensor));
    }

    // The index of the last node reading each value; graph outputs live to the end.
    let mut last_use: Vec<Option<usize>> = vec![None; n_values];
    for (i, node) in graph.nodes.iter().enumerate() {
        for &id in &node.inputs {
            check_id(id)?;
            last_use[id.0] = Some(i);
        }
    }
    let mut is_output = vec![false; n_values];
    for &id in &graph.outputs {
        check_id(id)?;
        is_output[id.0] = true;
    }
    let keep = |id: ValueId| keep_all || is_output[id.0];

    for (i, node) in graph.nodes.iter().enumerate() {
        check_id(node.output)?;
        let name = &graph.value(node.output).name;
        let args = node
            .inputs
            .iter()
            .map(|&id| {
                slots[id.0].as_deref().ok_or_else(|| {
                    InterpError::InvalidGraph(format!(
                        "`{name}` reads `{}` before it is defined",
                        graph.value(id).name
                    ))
                })
            })
            .collect::<Result<Vec<&Tensor>, _>>()?;
        let result = eval_node(graph, node, &args)?;
        if &result.shape != graph.shape(node.output) {
            return Err(InterpError::InvalidGraph(format!(
                "`{name}` is declared with shape {:?} but computes {:?}",
                graph.shape(node.output),
                result.shape
            )));
        }
        if slots[node.output.0].is_some() {
            return Err(InterpError::InvalidGraph(format!(
                "value `{name}` is defined twice"
            )));
        }
        if last_use[node.output.0].is_some() || keep(node.output) {
            slots[node.output.0] = Some(Cow::Owned(result));
        }
        for &id in &node.inputs {
            if last_use[id.0] == Some(i) && !keep(id) {
                slots[id.0] = None;
            }
        }
    }
    Ok(slots)
}

fn check_tensor(t: &Tensor, what: impl FnOnce() -> String) -> Result<(), InterpError> {
    if t.shape.iter().product::<usize>() == t.data.len() {
        Ok(())
    } else {
        Err(InterpError::MalformedTensor {
            what: what(),
            shape: t.shape.clone(),
            len: t.data.len(),
        })
    }
}

/// Evaluates one node on the given input tensors; its parameters are looked up with
/// [`Graph::param`] and must have the shapes [`Op::param_specs`] gives.
pub fn eval_node(graph: &Graph, node: &Node, inputs: &[&Tensor]) -> Result<Tensor, InterpError> {
    let node_name = graph.values.get(node.output.0).map_or_else(
        || format!("node writing value {}", node.output.0),
        |v| v.name.clone(),
    );
    for (i, t) in inputs.iter().enumerate() {
        check_tensor(t, || format!("input {i} of `{node_name}`"))?;
    }
    let shapes: Vec<&Shape> = inputs.iter().map(|t| &t.shape).collect();
    let out_shape = node
        .op
        .infer_shape(&shapes)
        .map_err(|message| InterpError::BadNode {
            node: node_name.clone(),
            message,
        })?;
    let prefix = node.params.as_deref().unwrap_or("<no prefix>");
    for spec in node.op.param_specs(&shapes) {
        let param = format!("{prefix}.{}", spec.suffix);
        match graph.param(node, spec.suffix) {
            None => {
                return Err(InterpError::MissingParam {
                    node: node_name,
                    param,
                });
            }
            Some(t) if t.shape != spec.shape => {
                return Err(InterpError::ParamShape {
                    param,
                    expected: spec.shape,
                    got: t.shape.clone(),
                });
            }
            Some(t) => check_tensor(t, || format!("parameter `{param}`"))?,
        }
    }
    // Every parameter named by `param_specs` is now known to exist with the right shape.
    let param = |suffix: &str| -> Result<&[f32], InterpError> {
        graph
            .param(node, suffix)
            .map(|t| t.data.as_slice())
            .ok_or_else(|| InterpError::MissingParam {
                node: node_name.clone(),
                param: format!("{prefix}.{suffix}"),
            })
    };

    let x = inputs[0];
    let data = match &node.op {
        Op::Conv2d(c) => {
            let bias = if c.bias { Some(param("bias")?) } else { None };
            let fill = if c.pad_fill {
                Some(param("pad_fill")?)
            } else {
                None
            };
            conv2d(c, x, param("weight")?, bias, fill, &out_shape)
        }
        Op::Dense { bias, .. } => {
            let b = if *bias { Some(param("bias")?) } else { None };
            dense(x, param("weight")?, b, &out_shape)
        }
        Op::BatchNorm { eps } => batchnorm(
            x,
            param("weight")?,
            param("bias")?,
            param("running_mean")?,
            param("running_var")?,
            *eps,
        ),
        Op::Affine => affine(x, param("scale")?, param("shift")?),
        Op::Activation(a) => activation(a, &x.data),
        Op::Add => add(x, inputs[1]),
        Op::Mul => mul(x, inputs[1]),
        Op::Concat => concat(inputs),
        Op::MaxPool(p) => maxpool(p, x, &out_shape),
        Op::AvgPool(p) => avgpool(p, x, &out_shape),
        Op::GlobalAvgPool => global_avgpool(x),
        Op::Pad { pads, value, fill } => {
            let fill = if *fill {
                Some(param("pad_fill")?)
            } else {
                None
            };
            pad(x, pads, *value, fill, &out_shape)
        }
        Op::Flatten | Op::Identity | Op::Dropout => x.data.clone(),
        Op::Softmax => softmax(x),
        Op::Resize(r) => resize(r, x, &out_shape),
        Op::ChannelShuffle { groups } => channel_shuffle(x, *groups),
        Op::SliceChannels { start, end } => slice_channels(x, *start, *end),
        Op::GlobalMaxPool => global_maxpool(x),
        Op::ConvTranspose2d(c) => {
            let bias = if c.bias { Some(param("bias")?) } else { None };
            conv_transpose2d(c, x, param("weight")?, bias, &out_shape)
        }
        Op::LayerNorm { eps } => layer_norm(x, param("weight")?, param("bias")?, *eps),
    };
    Ok(Tensor::new(out_shape, data))
}

/// `[N, C, rest...]` as `(N, C, product of rest)`: the layout of per-channel operators on
/// both `[N, C]` and NCHW tensors.
fn channel_layout(shape: &Shape) -> (usize, usize, usize) {
    (shape[0], shape[1], shape[2..].iter().product())
}

/// Direct convolution. Each input plane is first copied, as f64, into a buffer that already
/// holds its padding (0, or the channel's `pad_fill` value), so the inner loops need no bounds
/// checks: output channel `o` accumulates `weight[o, ci, ky, kx] * padded[c][iy][ix]` over
/// the input channels `c` of its group (`o / (out / groups)`), one kernel tap at a time, a
/// whole output row per inner loop.
fn conv2d(
    c: &Conv2d,
    x: &Tensor,
    weight: &[f32],
    bias: Option<&[f32]>,
    pad_fill: Option<&[f32]>,
    out_shape: &Shape,
) -> Vec<f32> {
    let (n, cin, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (cout, oh, ow) = (out_shape[1], out_shape[2], out_shape[3]);
    let [kh, kw] = c.kernel;
    let [sh, sw] = c.stride;
    let [dh, dw] = c.dilation;
    let [pt, pl, pb, pr] = c.pad;
    let cin_g = cin / c.groups;
    let cout_g = cout / c.groups;
    let (ph, pw) = (h + pt + pb, w + pl + pr);

    let mut padded = vec![0.0f64; cin * ph * pw];
    let mut acc = vec![0.0f64; oh * ow];
    let mut out = vec![0.0f32; n * cout * oh * ow];
    for b in 0..n {
        for ch in 0..cin {
            let plane = &mut padded[ch * ph * pw..(ch + 1) * ph * pw];
            plane.fill(pad_fill.map_or(0.0, |f| f64::from(f[ch])));
            let src = &x.data[(b * cin + ch) * h * w..(b * cin + ch + 1) * h * w];
            for (y, src_row) in src.chunks_exact(w).enumerate() {
                let start = (y + pt) * pw + pl;
                for (d, &v) in plane[start..start + w].iter_mut().zip(src_row) {
                    *d = f64::from(v);
                }
            }
        }
        for o in 0..cout {
            let group = o / cout_g;
            acc.fill(bias.map_or(0.0, |bs| f64::from(bs[o])));
            for ci in 0..cin_g {
                let ch = group * cin_g + ci;
                let plane = &padded[ch * ph * pw..(ch + 1) * ph * pw];
                let taps = &weight[(o * cin_g + ci) * kh * kw..(o * cin_g + ci + 1) * kh * kw];
                for ky in 0..kh {
                    for kx in 0..kw {
                        let wv = f64::from(taps[ky * kw + kx]);
                        for oy in 0..oh {
                            let row_start = (oy * sh + ky * dh) * pw + kx * dw;
                            let acc_row = &mut acc[oy * ow..(oy + 1) * ow];
                            if sw == 1 {
                                let in_row = &plane[row_start..row_start + ow];
                                for (a, &v) in acc_row.iter_mut().zip(in_row) {
                                    *a += wv * v;
                                }
                            } else {
                                let in_row = &plane[row_start..row_start + (ow - 1) * sw + 1];
                                for (a, &v) in acc_row.iter_mut().zip(in_row.iter().step_by(sw)) {
                                    *a += wv * v;
                                }
                            }
                        }
                    }
                }
            }
            let dst = &mut out[(b * cout + o) * oh * ow..(b * cout + o + 1) * oh * ow];
            for (d, &a) in dst.iter_mut().zip(&acc) {
                *d = a as f32;
            }
        }
    }
    out
}

/// Transposed convolution as a scatter: input position `(iy, ix)` of channel `c` adds
/// `weight[c, o, ky, kx]·x[c, iy, ix]` to output position
/// `(iy·sh − pad_top + ky·dh, ix·sw − pad_left + kx·dw)` of every output channel `o` of its
/// group, when that position is inside the (cropped) output. Sums in f64, rounded once.
fn conv_transpose2d(
    c: &ConvTranspose2d,
    x: &Tensor,
    weight: &[f32],
    bias: Option<&[f32]>,
    out_shape: &Shape,
) -> Vec<f32> {
    let (n, cin, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (cout, oh, ow) = (out_shape[1], out_shape[2], out_shape[3]);
    let [kh, kw] = c.kernel;
    let [sh, sw] = c.stride;
    let [dh, dw] = c.dilation;
    let (pt, pl) = (c.pad[0] as isize, c.pad[1] as isize);
    let cin_g = cin / c.groups;
    let cout_g = cout / c.groups;
    let mut acc = vec![0.0f64; cout * oh * ow];
    let mut out = Vec::with_capacity(n * cout * oh * ow);
    for b in 0..n {
        for (o, plane) in acc.chunks_exact_mut(oh * ow).enumerate() {
            plane.fill(bias.map_or(0.0, |bs| f64::from(bs[o])));
        }
        for ci in 0..cin {
            let src = &x.data[(b * cin + ci) * h * w..(b * cin + ci + 1) * h * w];
            let group = ci / cin_g;
            for ol in 0..cout_g {
                let o = group * cout_g + ol;
                let taps = &weight[(ci * cout_g + ol) * kh * kw..(ci * cout_g + ol + 1) * kh * kw];
                let plane = &mut acc[o * oh * ow..(o + 1) * oh * ow];
                for ky in 0..kh {
                    for kx in 0..kw {
                        let wv = f64::from(taps[ky * kw + kx]);
                        for iy in 0..h {
                            let oy = (iy * sh + ky * dh) as isize - pt;
                            if oy < 0 || oy >= oh as isize {
                                continue;
                            }
                            for ix in 0..w {
                                let ox = (ix * sw + kx * dw) as isize - pl;
                                if ox < 0 || ox >= ow as isize {
                                    continue;
                                }
                                plane[oy as usize * ow + ox as usize] +=
                                    wv * f64::from(src[iy * w + ix]);
                            }
                        }
                    }
                }
            }
        }
        out.extend(acc.iter().map(|&a| a as f32));
    }
    out
}

/// `y[n, o] = sum_c x[n, c] * weight[o, c] + bias[o]`.
fn dense(x: &Tensor, weight: &[f32], bias: Option<&[f32]>, out_shape: &Shape) -> Vec<f32> {
    let (n, cin) = (x.shape[0], x.shape[1]);
    let cout = out_shape[1];
    let mut out = Vec::with_capacity(n * cout);
    for row in x.data.chunks_exact(cin).take(n) {
        for o in 0..cout {
            let w_row = &weight[o * cin..(o + 1) * cin];
            let mut acc = bias.map_or(0.0, |b| f64::from(b[o]));
            for (&a, &b) in row.iter().zip(w_row) {
                acc += f64::from(a) * f64::from(b);
            }
            out.push(acc as f32);
        }
    }
    out
}

/// Applies `f(channel, x)` to every element of an `[N, C]` or `[N, C, ...]` tensor.
fn per_channel(x: &Tensor, f: impl Fn(usize, f64) -> f64) -> Vec<f32> {
    let (n, c, inner) = channel_layout(&x.shape);
    let mut out = Vec::with_capacity(x.data.len());
    for b in 0..n {
        for ch in 0..c {
            let start = (b * c + ch) * inner;
            for &v in &x.data[start..start + inner] {
                out.push(f(ch, f64::from(v)) as f32);
            }
        }
    }
    out
}

/// `y = gamma * (x - mean) / sqrt(var + eps) + beta`, in f64.
fn batchnorm(
    x: &Tensor,
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f64,
) -> Vec<f32> {
    let std: Vec<f64> = var.iter().map(|&v| (f64::from(v) + eps).sqrt()).collect();
    per_channel(x, |c, v| {
        f64::from(gamma[c]) * (v - f64::from(mean[c])) / std[c] + f64::from(beta[c])
    })
}

/// `y = scale[c] * x + shift[c]`, in f64.
fn affine(x: &Tensor, scale: &[f32], shift: &[f32]) -> Vec<f32> {
    per_channel(x, |c, v| f64::from(scale[c]) * v + f64::from(shift[c]))
}

fn activation(a: &Activation, data: &[f32]) -> Vec<f32> {
    data.iter().map(|&v| a.apply(f64::from(v)) as f32).collect()
}

/// Elementwise sum (f32 addition is correctly rounded, so f64 would give the same result).
fn add(a: &Tensor, b: &Tensor) -> Vec<f32> {
    a.data.iter().zip(&b.data).map(|(x, y)| x + y).collect()
}

/// Elementwise product of equal shapes, or a 4-D tensor times an `[N, C, 1, 1]` one (on
/// either side), broadcast over H×W.
fn mul(a: &Tensor, b: &Tensor) -> Vec<f32> {
    if a.shape == b.shape {
        return a.data.iter().zip(&b.data).map(|(x, y)| x * y).collect();
    }
    // `infer_shape` accepted the pair, so one side is [N, C, 1, 1]: one scalar per plane.
    let (big, small) = if b.data.len() < a.data.len() {
        (a, b)
    } else {
        (b, a)
    };
    let plane = big.shape[2] * big.shape[3];
    let mut out = Vec::with_capacity(big.data.len());
    for (chunk, &s) in big.data.chunks_exact(plane).zip(&small.data) {
        out.extend(chunk.iter().map(|&v| v * s));
    }
    out
}

/// Concatenation along axis 1: for each batch item, each input's `[C_i, rest...]` block in
/// turn.
fn concat(inputs: &[&Tensor]) -> Vec<f32> {
    let n = inputs[0].shape[0];
    let total = inputs.iter().map(|t| t.data.len()).sum();
    let mut out = Vec::with_capacity(total);
    for b in 0..n {
        for t in inputs {
            let block = t.data.len() / n;
            out.extend_from_slice(&t.data[b * block..(b + 1) * block]);
        }
    }
    out
}

/// Output channel `o` is input channel [`crate::shuffle_source`]`(C, groups, o)`.
fn channel_shuffle(x: &Tensor, groups: usize) -> Vec<f32> {
    let (n, c, plane) = channel_layout(&x.shape);
    let mut out = Vec::with_capacity(x.data.len());
    for b in 0..n {
        for o in 0..c {
            let src = (b * c + crate::shuffle_source(c, groups, o)) * plane;
            out.extend_from_slice(&x.data[src..src + plane]);
        }
    }
    out
}

/// Channels `start..end`, every image.
fn slice_channels(x: &Tensor, start: usize, end: usize) -> Vec<f32> {
    let (n, c, plane) = channel_layout(&x.shape);
    let mut out = Vec::with_capacity(n * (end - start) * plane);
    for b in 0..n {
        out.extend_from_slice(&x.data[(b * c + start) * plane..(b * c + end) * plane]);
    }
    out
}

/// The `[start, end)` range of input indices a pooling window covers along one axis, where
/// `start` may be negative (in the leading padding).
fn window(o: usize, stride: usize, pad_begin: usize, kernel: usize) -> (isize, isize) {
    let start = (o * stride) as isize - pad_begin as isize;
    (start, start + kernel as isize)
}

/// Max pooling: padding never wins (it acts as -inf); NaN propagates as in PyTorch.
fn maxpool(p: &Pool2d, x: &Tensor, out_shape: &Shape) -> Vec<f32> {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (oh, ow) = (out_shape[2], out_shape[3]);
    let mut out = Vec::with_capacity(n * c * oh * ow);
    for plane in x.data.chunks_exact(h * w).take(n * c) {
        for oy in 0..oh {
            let (y0, y1) = window(oy, p.stride[0], p.pad[0], p.kernel[0]);
            let (y0, y1) = (y0.max(0) as usize, y1.min(h as isize) as usize);
            for ox in 0..ow {
                let (x0, x1) = window(ox, p.stride[1], p.pad[1], p.kernel[1]);
                let (x0, x1) = (x0.max(0) as usize, x1.min(w as isize) as usize);
                let mut m = f32::NEG_INFINITY;
                for y in y0..y1 {
                    for &v in &plane[y * w + x0..y * w + x1] {
                        if v > m || v.is_nan() {
                            m = v;
                        }
                    }
                }
                out.push(m);
            }
        }
    }
    out
}

/// Resize (ONNX semantics, [`crate::Resize::taps`]), separable and in f64: each output is
/// `(1 − wy)·((1 − wx)·x[y0, x0] + wx·x[y0, x1]) + wy·((1 − wx)·x[y1, x0] + wx·x[y1, x1])`
/// for bilinear (every term, even of weight 0, as ONNX's reference does); nearest copies
/// `x[y0, x0]`.
fn resize(r: &crate::Resize, x: &Tensor, out_shape: &Shape) -> Vec<f32> {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (oh, ow) = (out_shape[2], out_shape[3]);
    let ty = r.taps(0, h, oh);
    let tx = r.taps(1, w, ow);
    let mut out = Vec::with_capacity(n * c * oh * ow);
    for plane in x.data.chunks_exact(h * w).take(n * c) {
        let at = |y: usize, x: usize| plane[y * w + x] as f64;
        for t in &ty {
            for u in &tx {
                let v = if r.bilinear() {
                    let row = |y| (1.0 - u.w) * at(y, u.i0) + u.w * at(y, u.i1);
                    (1.0 - t.w) * row(t.i0) + t.w * row(t.i1)
                } else {
                    at(t.i0, u.i0)
                };
                out.push(v as f32);
            }
        }
    }
    out
}

/// Average pooling with PyTorch's divisor: with `count_include_pad`, the window clipped to
/// the padded input (`[-pad_begin, size + pad_end)`), so padding counts but a ceil-mode window
/// running past the padded edge does not; without it, the number of real input elements.
fn avgpool(p: &Pool2d, x: &Tensor, out_shape: &Shape) -> Vec<f32> {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (oh, ow) = (out_shape[2], out_shape[3]);
    let (h_end_padded, w_end_padded) = ((h + p.pad[2]) as isize, (w + p.pad[3]) as isize);
    let mut out = Vec::with_capacity(n * c * oh * ow);
    for plane in x.data.chunks_exact(h * w).take(n * c) {
        for oy in 0..oh {
            let (y0, y1) = window(oy, p.stride[0], p.pad[0], p.kernel[0]);
            let padded_rows = y1.min(h_end_padded) - y0;
            let (y0, y1) = (y0.max(0) as usize, y1.min(h as isize) as usize);
            for ox in 0..ow {
                let (x0, x1) = window(ox, p.stride[1], p.pad[1], p.kernel[1]);
                let padded_cols = x1.min(w_end_padded) - x0;
                let (x0, x1) = (x0.max(0) as usize, x1.min(w as isize) as usize);
                let mut sum = 0.0f64;
                for y in y0..y1 {
                    for &v in &plane[y * w + x0..y * w + x1] {
                        sum += f64::from(v);
                    }
                }
                let divisor = if p.count_include_pad {
                    padded_rows * padded_cols
                } else {
                    ((y1 - y0) * (x1 - x0)) as isize
                };
                out.push((sum / divisor as f64) as f32);
            }
        }
    }
    out
}

/// The mean of each `[H, W]` plane.
fn global_avgpool(x: &Tensor) -> Vec<f32> {
    let plane = x.shape[2] * x.shape[3];
    x.data
        .chunks_exact(plane)
        .map(|p| (p.iter().map(|&v| f64::from(v)).sum::<f64>() / plane as f64) as f32)
        .collect()
}

/// The maximum of each `[H, W]` plane; a NaN in the plane gives NaN (as `maxpool`).
fn global_maxpool(x: &Tensor) -> Vec<f32> {
    let plane = x.shape[2] * x.shape[3];
    x.data
        .chunks_exact(plane)
        .map(|p| {
            p.iter().fold(
                f32::NEG_INFINITY,
                |m, &v| {
                    if v > m || v.is_nan() { v } else { m }
                },
            )
        })
        .collect()
}

/// Constant padding of each `[H, W]` plane by `[top, left, bottom, right]`.
/// Constant padding; with `fill`, plane (n, c) pads with `fill[c]` instead of `value`.
fn pad(
    x: &Tensor,
    pads: &[usize; 4],
    value: f64,
    fill: Option<&[f32]>,
    out_shape: &Shape,
) -> Vec<f32> {
    let (c, h, w) = (x.shape[1], x.shape[2], x.shape[3]);
    let (oh, ow) = (out_shape[2], out_shape[3]);
    let mut out = vec![value as f32; out_shape.iter().product()];
    for (plane, (src, dst)) in x
        .data
        .chunks_exact(h * w)
        .zip(out.chunks_exact_mut(oh * ow))
        .enumerate()
    {
        if let Some(fill) = fill {
            dst.fill(fill[plane % c]);
        }
        for (y, row) in src.chunks_exact(w).enumerate() {
            let start = (y + pads[0]) * ow + pads[1];
            dst[start..start + w].copy_from_slice(row);
        }
    }
    out
}

/// Layer normalisation over axis 1 of `[N, C]` or NCHW, in f64: at each position the mean
/// and the biased variance of the C channels, then `(x − mean)/√(var + eps)·w[c] + b[c]`.
fn layer_norm(x: &Tensor, weight: &[f32], bias: &[f32], eps: f64) -> Vec<f32> {
    let (n, c, inner) = channel_layout(&x.shape);
    let mut out = vec![0.0f32; x.data.len()];
    for b in 0..n {
        for i in 0..inner {
            let at = |ch: usize| (b * c + ch) * inner + i;
            let mean = (0..c).map(|ch| f64::from(x.data[at(ch)])).sum::<f64>() / c as f64;
            let var = (0..c)
                .map(|ch| (f64::from(x.data[at(ch)]) - mean).powi(2))
                .sum::<f64>()
                / c as f64;
            let rstd = 1.0 / (var + eps).sqrt();
            for ch in 0..c {
                let v = (f64::from(x.data[at(ch)]) - mean) * rstd;
                out[at(ch)] = (v * f64::from(weight[ch]) + f64::from(bias[ch])) as f32;
            }
        }
    }
    out
}

/// Softmax over axis 1 of `[N, C]` or NCHW, in f64, after subtracting the maximum.
fn softmax(x: &Tensor) -> Vec<f32> {
    let (n, c, inner) = channel_layout(&x.shape);
    let mut out = vec![0.0f32; x.data.len()];
    let mut exps = vec![0.0f64; c];
    for b in 0..n {
        for i in 0..inner {
            let at = |ch: usize| (b * c + ch) * inner + i;
            let max = (0..c)
                .map(|ch| f64::from(x.data[at(ch)]))
                .fold(f64::NEG_INFINITY, f64::max);
            let mut sum = 0.0;
            for (ch, e) in exps.iter_mut().enumerate() {
                *e = (f64::from(x.data[at(ch)]) - max).exp();
                sum += *e;
            }
            for (ch, e) in exps.iter().enumerate() {
                out[at(ch)] = (e / sum) as f32;
            }
        }
    }
    out
}
