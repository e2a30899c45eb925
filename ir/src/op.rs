//! Operators: their attributes, shape rules and parameter tensors. Each rule lives here once;
//! the frontend, the verifier, the interpreter and the passes all call it.

use crate::Shape;
use crate::optable::{AttrValue, Flops, OpKind, ParamShape, ShapeRule};

/// A 2-D convolution. `pad` is `[top, left, bottom, right]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2d {
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 4],
    pub dilation: [usize; 2],
    pub groups: usize,
    pub bias: bool,
    /// Padding reads a per-input-channel fill value (`<params>.pad_fill`) instead of 0.
    /// Folding a BN forward into a padded conv needs it (docs/folding.md).
    pub pad_fill: bool,
}

/// A transposed 2-D convolution (PyTorch `ConvTranspose2d`, ONNX `ConvTranspose`): input
/// position `i` adds `weight[c, o, k]·x[c, i]` to output position `i·stride − pad_begin +
/// k·dilation`. The weight is `[in, out / groups, kh, kw]`; `pad` (`[top, left, bottom,
/// right]`) crops the full output and `output_padding` grows it at the bottom and right:
/// `out = (in − 1)·stride − pad_begin − pad_end + dilation·(k − 1) + output_padding + 1`.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvTranspose2d {
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 4],
    pub output_padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
    pub bias: bool,
}

impl ConvTranspose2d {
    /// The output length along `axis` (0 = H, 1 = W) for an input of length `input`, or
    /// `None` if the crop leaves nothing.
    pub fn out_len(&self, axis: usize, input: usize) -> Option<usize> {
        let full = input
            .checked_sub(1)?
            .checked_mul(self.stride[axis])?
            .checked_add(self.dilation[axis].checked_mul(self.kernel[axis].checked_sub(1)?)?)?
            .checked_add(self.output_padding[axis])?
            .checked_add(1)?;
        let out = full
            .checked_sub(self.pad[axis])?
            .checked_sub(self.pad[axis + 2])?;
        (out > 0).then_some(out)
    }

    /// Whether every output position receives every kernel tap from some input position
    /// along `axis` (stride 1 and a crop of at least `dilation·(k − 1)` on the leading side
    /// and `dilation·(k − 1) + output_padding` on the trailing side): then a per-input-channel
    /// shift adds the same amount at every output position, `Σ_c t_c·Σ_k W[c, o, k]`.
    /// Otherwise it depends on the position (strides leave phases with fewer taps, borders
    /// receive fewer taps, output padding receives none).
    pub fn every_tap_everywhere(&self, axis: usize) -> bool {
        let span = self.dilation[axis] * (self.kernel[axis] - 1);
        self.stride[axis] == 1
            && self.pad[axis] >= span
            && self.pad[axis + 2] >= span + self.output_padding[axis]
    }

    /// [`ConvTranspose2d::every_tap_everywhere`] on both axes.
    pub fn shift_is_uniform(&self) -> bool {
        self.every_tap_everywhere(0) && self.every_tap_everywhere(1)
    }
}

/// A 2-D max or average pooling window. `pad` is `[top, left, bottom, right]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Pool2d {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 4],
    /// Output size rounds up (PyTorch `ceil_mode`); a window never starts in the right or
    /// bottom padding.
    pub ceil_mode: bool,
    /// Average pooling only: zero padding counts in the divisor.
    pub count_include_pad: bool,
}

/// The `mode` words of `resize`.
pub const RESIZE_MODES: [&str; 2] = ["nearest", "bilinear"];
/// The `coordinates` words of `resize`: ONNX's `coordinate_transformation_mode`s.
pub const RESIZE_COORDINATES: [&str; 4] = [
    "half_pixel",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
];
/// The `nearest_mode` words of `resize` (ONNX's).
pub const RESIZE_NEAREST_MODES: [&str; 4] =
    ["floor", "round_prefer_floor", "round_prefer_ceil", "ceil"];

/// A spatial resize of an NCHW tensor (ONNX `Resize` with `mode` nearest or linear over H
/// and W). The output is `size`, or `floor(input · scale)` per axis when `size` is `[0, 0]`.
/// The source coordinate of an output index uses `scale` when it is set (non-zero), else
/// `size / input`, as ONNX does with its `scales` and `sizes` inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Resize {
    /// `"nearest"` or `"bilinear"` (one of [`RESIZE_MODES`]).
    pub mode: &'static str,
    pub size: [usize; 2],
    pub scale: [f64; 2],
    /// One of [`RESIZE_COORDINATES`].
    pub coordinates: &'static str,
    /// One of [`RESIZE_NEAREST_MODES`]; used by nearest only.
    pub nearest_mode: &'static str,
}

/// One output index of a resize along one axis: `(1 − w)·x[i0] + w·x[i1]` (nearest: `w = 0`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResizeTap {
    pub i0: usize,
    pub i1: usize,
    pub w: f64,
}

impl Resize {
    pub fn bilinear(&self) -> bool {
        self.mode == "bilinear"
    }

    /// The output length along `axis` (0 = H, 1 = W) for an input of length `input`, or
    /// `None` if neither size nor a positive scale gives one.
    pub fn out_len(&self, axis: usize, input: usize) -> Option<usize> {
        if self.size[axis] != 0 {
            return Some(self.size[axis]);
        }
        let s = self.scale[axis];
        if !(s.is_finite() && s > 0.0) {
            return None;
        }
        let out = (input as f64 * s).floor();
        (out >= 1.0 && out <= u32::MAX as f64).then_some(out as usize)
    }

    /// The taps of every output index along `axis`, following the ONNX Resize definition:
    /// the output index is mapped to a source coordinate by `coordinates`, then rounded by
    /// `nearest_mode` (nearest) or split between its two neighbours (bilinear), with indices
    /// clamped to the input.
    pub fn taps(&self, axis: usize, input: usize, output: usize) -> Vec<ResizeTap> {
        let scale = if self.scale[axis] > 0.0 {
            self.scale[axis]
        } else {
            output as f64 / input as f64
        };
        let last = input.saturating_sub(1) as f64;
        (0..output)
            .map(|o| {
                let o = o as f64;
                let src = match self.coordinates {
                    "half_pixel" => (o + 0.5) / scale - 0.5,
                    "pytorch_half_pixel" => {
                        if output > 1 {
                            (o + 0.5) / scale - 0.5
                        } else {
                            0.0
                        }
                    }
                    "align_corners" => {
                        if output > 1 {
                            o * last / (output - 1) as f64
                        } else {
                            0.0
                        }
                    }
                    _ => o / scale, // asymmetric
                };
                let clamp = |i: f64| i.clamp(0.0, last) as usize;
                if self.bilinear() {
                    let f = src.floor();
                    ResizeTap {
                        i0: clamp(f),
                        i1: clamp(f + 1.0),
                        w: src - f,
                    }
                } else {
                    let r = match self.nearest_mode {
                        "floor" => src.floor(),
                        "ceil" => src.ceil(),
                        "round_prefer_ceil" => (src + 0.5).floor(),
                        // round_prefer_floor: halves go down.
                        _ => (src - 0.5).ceil(),
                    };
                    let i = clamp(r);
                    ResizeTap {
                        i0: i,
                        i1: i,
                        w: 0.0,
                    }
                }
            })
            .collect()
    }
}

/// Elementwise activation functions (`Pow`: `x^exponent`, with a constant exponent that
/// [`pow_is_supported`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Activation {
    Relu,
    Relu6,
    LeakyRelu {
        alpha: f64,
    },
    Clip {
        min: f64,
        max: f64,
    },
    Sigmoid,
    Silu,
    HardSwish,
    HardSigmoid,
    Tanh,
    Sqrt,
    Pow {
        exponent: f64,
    },
    /// The exact GELU, `x·Φ(x) = x·(1 + erf(x/√2))/2`.
    Gelu,
}

impl Activation {
    /// The activation's kind in the operator table.
    pub fn kind(&self) -> OpKind {
        match self {
            Activation::Relu => OpKind::Relu,
            Activation::Relu6 => OpKind::Relu6,
            Activation::LeakyRelu { .. } => OpKind::LeakyRelu,
            Activation::Clip { .. } => OpKind::Clip,
            Activation::Sigmoid => OpKind::Sigmoid,
            Activation::Silu => OpKind::Silu,
            Activation::HardSwish => OpKind::HardSwish,
            Activation::HardSigmoid => OpKind::HardSigmoid,
            Activation::Tanh => OpKind::Tanh,
            Activation::Sqrt => OpKind::Sqrt,
            Activation::Pow { .. } => OpKind::Pow,
            Activation::Gelu => OpKind::Gelu,
        }
    }

    pub fn name(&self) -> &'static str {
        self.kind().info().name
    }

    /// The function itself, in f64 (PyTorch definitions: hardsigmoid is relu6(x + 3) / 6).
    pub fn apply(&self, x: f64) -> f64 {
        match *self {
            Activation::Relu => x.max(0.0),
            Activation::Relu6 => x.clamp(0.0, 6.0),
            Activation::LeakyRelu { alpha } => {
                if x >= 0.0 {
                    x
                } else {
                    alpha * x
                }
            }
            Activation::Clip { min, max } => x.max(min).min(max),
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::Silu => x / (1.0 + (-x).exp()),
            Activation::HardSwish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
            Activation::HardSigmoid => (x + 3.0).clamp(0.0, 6.0) / 6.0,
            Activation::Tanh => x.tanh(),
            Activation::Sqrt => x.sqrt(),
            Activation::Pow { exponent } => x.powf(exponent),
            // 1 + erf(x/√2) = erfc(−x/√2), without cancellation for negative x.
            Activation::Gelu => 0.5 * x * libm::erfc(-x * std::f64::consts::FRAC_1_SQRT_2),
        }
    }
}

/// Every operator of the language.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Conv2d(Conv2d),
    /// Fully connected layer on `[N, C]`: weight `[out, C]`.
    Dense {
        out_features: usize,
        bias: bool,
    },
    /// Batch normalization at inference, on `[N, C]` or `[N, C, H, W]`.
    BatchNorm {
        eps: f64,
    },
    /// Per-channel affine map `y = scale[c]·x + shift[c]` (what a BN becomes after
    /// canonicalization, and what is left of one that cannot fold away).
    Affine,
    Activation(Activation),
    /// Elementwise sum of two tensors of the same shape.
    Add,
    /// Elementwise product: same shapes, or one side `[N, C, 1, 1]` broadcast over H×W.
    Mul,
    /// Concatenation along the channel axis (axis 1).
    Concat,
    MaxPool(Pool2d),
    AvgPool(Pool2d),
    GlobalAvgPool,
    /// Constant padding of H and W: `pads` is `[top, left, bottom, right]`. With `fill`,
    /// channel c pads with `<params>.pad_fill[c]` instead of `value` (what a BN moved
    /// through a pad leaves behind).
    Pad {
        pads: [usize; 4],
        value: f64,
        fill: bool,
    },
    /// `[N, ...]` to `[N, product of the rest]`.
    Flatten,
    Identity,
    /// A no-op at inference.
    Dropout,
    /// Softmax over the channel axis (axis 1).
    Softmax,
    /// Spatial resize (nearest or bilinear) of an NCHW tensor.
    Resize(Resize),
    /// Channel shuffle (ShuffleNet): output channel `j·groups + i` is input channel
    /// `i·(C/groups) + j`, what Reshape `[N, g, C/g, H, W]` → Transpose `[0, 2, 1, 3, 4]` →
    /// Reshape `[N, C, H, W]` computes.
    ChannelShuffle {
        groups: usize,
    },
    /// Channels `start..end` of the input (a channel split's output).
    SliceChannels {
        start: usize,
        end: usize,
    },
    /// Maximum over H×W of each channel: `[N, C, H, W]` to `[N, C, 1, 1]`.
    GlobalMaxPool,
    /// Transposed 2-D convolution (weight `[in, out / groups, kh, kw]`).
    ConvTranspose2d(ConvTranspose2d),
    /// Layer normalisation over the channel axis of `[N, C]` or NCHW: at each position,
    /// `y[c] = (x[c] − mean) / √(var + eps) · weight[c] + bias[c]`, mean and (biased) variance
    /// over the C channels (ONNX LayerNormalization over the last axis of the NHWC view).
    LayerNorm {
        eps: f64,
    },
}

/// The largest `|exponent|` of `pow`.
pub const POW_LARGEST: f64 = 8.0;

/// Whether `pow` computes `x^exponent`: the exponent is a multiple of 0.5 with
/// `|exponent| <= POW_LARGEST`, which the compiled kernel computes exactly as multiplications,
/// a square root and a reciprocal (there is no general `exp(e·log x)`).
pub fn pow_is_supported(exponent: f64) -> bool {
    exponent.abs() <= POW_LARGEST && (2.0 * exponent).fract() == 0.0
}

/// The input channel that [`Op::ChannelShuffle`] with `groups` groups over `channels`
/// channels copies to output channel `out`.
pub fn shuffle_source(channels: usize, groups: usize, out: usize) -> usize {
    let per = channels / groups;
    (out % groups) * per + out / groups
}

/// How a parameter tensor is used, so that random initialisation can give it realistic
/// values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// A conv or dense weight; `fan_in` inputs feed each output.
    Weight {
        fan_in: usize,
    },
    /// A conv or dense bias.
    Bias,
    BnWeight,
    BnBias,
    BnMean,
    BnVar,
    AffineScale,
    AffineShift,
    PadFill,
}

/// A parameter tensor an operator needs: `<prefix>.<suffix>` with this shape.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub suffix: &'static str,
    pub shape: Shape,
    pub kind: ParamKind,
}

fn fmt_shape(s: &Shape) -> String {
    let dims: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(", "))
}

/// Output size of a sliding window along one axis, or `None` if no window fits.
pub fn window_out(
    input: usize,
    pad_begin: usize,
    pad_end: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    ceil_mode: bool,
) -> Option<usize> {
    let span = dilation
        .checked_mul(kernel.checked_sub(1)?)?
        .checked_add(1)?;
    let padded = input.checked_add(pad_begin)?.checked_add(pad_end)?;
    if padded < span || stride == 0 {
        return None;
    }
    let steps = padded - span;
    let mut out = if ceil_mode {
        steps.div_ceil(stride) + 1
    } else {
        steps / stride + 1
    };
    // PyTorch: in ceil mode the last window must start inside the input or left padding.
    if ceil_mode && (out - 1) * stride >= input + pad_begin {
        out -= 1;
    }
    Some(out)
}

impl Op {
    /// The operator's kind: its entry in the operator table.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Conv2d(_) => OpKind::Conv2d,
            Op::Dense { .. } => OpKind::Dense,
            Op::BatchNorm { .. } => OpKind::BatchNorm,
            Op::Affine => OpKind::Affine,
            Op::Activation(a) => a.kind(),
            Op::Add => OpKind::Add,
            Op::Mul => OpKind::Mul,
            Op::Concat => OpKind::Concat,
            Op::MaxPool(_) => OpKind::MaxPool,
            Op::AvgPool(_) => OpKind::AvgPool,
            Op::GlobalAvgPool => OpKind::GlobalAvgPool,
            Op::Pad { .. } => OpKind::Pad,
            Op::Flatten => OpKind::Flatten,
            Op::Identity => OpKind::Identity,
            Op::Dropout => OpKind::Dropout,
            Op::Softmax => OpKind::Softmax,
            Op::Resize(_) => OpKind::Resize,
            Op::ChannelShuffle { .. } => OpKind::ChannelShuffle,
            Op::SliceChannels { .. } => OpKind::SliceChannels,
            Op::GlobalMaxPool => OpKind::GlobalMaxPool,
            Op::ConvTranspose2d(_) => OpKind::ConvTranspose2d,
            Op::LayerNorm { .. } => OpKind::LayerNorm,
        }
    }

    /// The operator's name in the language.
    pub fn name(&self) -> &'static str {
        self.kind().info().name
    }

    /// How many inputs the operator takes: `(min, max)`.
    pub fn arity(&self) -> (usize, usize) {
        self.kind().info().inputs
    }

    /// The output shape for these input shapes, or a message saying what is wrong. Every
    /// way into the IR (`.nn` lowering, ONNX import, passes) comes through here, so the size
    /// limits of [`crate::limits`] hold for every value and parameter of every graph.
    pub fn infer_shape(&self, inputs: &[&Shape]) -> Result<Shape, String> {
        let shape = self.infer_shape_unchecked(inputs)?;
        crate::limits::check_shape(&shape)?;
        if let Some(weight) = self.weight_shape(inputs[0]) {
            crate::limits::check_shape(&weight).map_err(|e| format!("{e} (the weight)"))?;
        }
        Ok(shape)
    }

    fn infer_shape_unchecked(&self, inputs: &[&Shape]) -> Result<Shape, String> {
        let (lo, hi) = self.arity();
        if inputs.len() < lo || inputs.len() > hi {
            return Err(if lo == hi {
                format!(
                    "`{}` takes {} input(s), got {}",
                    self.name(),
                    lo,
                    inputs.len()
                )
            } else {
                format!(
                    "`{}` takes at least {} input(s), got {}",
                    self.name(),
                    lo,
                    inputs.len()
                )
            });
        }
        let x = inputs[0];
        let need_rank = |ranks: &[usize]| -> Result<(), String> {
            if ranks.contains(&x.len()) {
                Ok(())
            } else {
                let want: Vec<String> = ranks.iter().map(|r| format!("{r}-D")).collect();
                Err(format!(
                    "`{}` expects a {} input, got shape {}",
                    self.name(),
                    want.join(" or "),
                    fmt_shape(x)
                ))
            }
        };
        match self.kind().info().shape {
            ShapeRule::Conv => {
                let Op::Conv2d(c) = self else {
                    return Err(self.table_mismatch());
                };
                need_rank(&[4])?;
                let cin = x[1];
                if c.groups == 0 || c.out_channels == 0 {
                    return Err("`groups` and `out` must be positive".into());
                }
                if !cin.is_multiple_of(c.groups) {
                    return Err(format!(
                        "input channels ({cin}) are not divisible by groups ({})",
                        c.groups
                    ));
                }
                if !c.out_channels.is_multiple_of(c.groups) {
                    return Err(format!(
                        "output channels ({}) are not divisible by groups ({})",
                        c.out_channels, c.groups
                    ));
                }
                if c.kernel.contains(&0) || c.stride.contains(&0) || c.dilation.contains(&0) {
                    return Err("kernel, stride and dilation must be positive".into());
                }
                let h = window_out(
                    x[2],
                    c.pad[0],
                    c.pad[2],
                    c.kernel[0],
                    c.stride[0],
                    c.dilation[0],
                    false,
                );
                let w = window_out(
                    x[3],
                    c.pad[1],
                    c.pad[3],
                    c.kernel[1],
                    c.stride[1],
                    c.dilation[1],
                    false,
                );
                match (h, w) {
                    (Some(h), Some(w)) => Ok(vec![x[0], c.out_channels, h, w]),
                    _ => Err(format!(
                        "kernel {}x{} (dilation {}x{}) does not fit the padded input {}",
                        c.kernel[0],
                        c.kernel[1],
                        c.dilation[0],
                        c.dilation[1],
                        fmt_shape(x)
                    )),
                }
            }
            ShapeRule::Dense => {
                let Op::Dense { out_features, .. } = self else {
                    return Err(self.table_mismatch());
                };
                need_rank(&[2])?;
                if *out_features == 0 {
                    return Err("`out` must be positive".into());
                }
                Ok(vec![x[0], *out_features])
            }
            ShapeRule::SameChannelwise => {
                need_rank(&[2, 4])?;
                Ok(x.clone())
            }
            ShapeRule::Same => {
                if let Op::Activation(Activation::Pow { exponent }) = self
                    && !pow_is_supported(*exponent)
                {
                    return Err(format!(
                        "`pow` with exponent {exponent} is not supported: the exponent must be a multiple of 0.5 between -{POW_LARGEST} and {POW_LARGEST}"
                    ));
                }
                Ok(x.clone())
            }
            ShapeRule::Equal => {
                if inputs[0] != inputs[1] {
                    return Err(format!(
                        "`{}` needs equal shapes, got {} and {}",
                        self.name(),
                        fmt_shape(inputs[0]),
                        fmt_shape(inputs[1])
                    ));
                }
                Ok(x.clone())
            }
            ShapeRule::Broadcast => {
                let (a, b) = (inputs[0], inputs[1]);
                if a == b {
                    return Ok(a.clone());
                }
                let per_channel = |big: &Shape, small: &Shape| {
                    big.len() == 4 && *small == vec![big[0], big[1], 1, 1]
                };
                if per_channel(a, b) {
                    Ok(a.clone())
                } else if per_channel(b, a) {
                    Ok(b.clone())
                } else {
                    Err(format!(
                        "`mul` needs equal shapes or one side [N, C, 1, 1], got {} and {}",
                        fmt_shape(a),
                        fmt_shape(b)
                    ))
                }
            }
            ShapeRule::ConcatChannels => {
                need_rank(&[2, 4])?;
                let mut channels = 0;
                for s in inputs {
                    let same_rest =
                        s.len() == x.len() && s[0] == x[0] && s.iter().skip(2).eq(x.iter().skip(2));
                    if !same_rest {
                        return Err(format!(
                            "`concat` inputs must agree on every axis but channels, got {} and {}",
                            fmt_shape(x),
                            fmt_shape(s)
                        ));
                    }
                    channels = s[1]
                        .checked_add(channels)
                        .ok_or_else(|| crate::limits::too_large(x))?;
                }
                let mut out = x.clone();
                out[1] = channels;
                Ok(out)
            }
            ShapeRule::Window => {
                let (Op::MaxPool(p) | Op::AvgPool(p)) = self else {
                    return Err(self.table_mismatch());
                };
                need_rank(&[4])?;
                if p.kernel.contains(&0) || p.stride.contains(&0) {
                    return Err("kernel and stride must be positive".into());
                }
                if p.pad[0] > p.kernel[0] / 2
                    || p.pad[2] > p.kernel[0] / 2
                    || p.pad[1] > p.kernel[1] / 2
                    || p.pad[3] > p.kernel[1] / 2
                {
                    return Err(format!(
                        "pooling padding {:?} is more than half the kernel {}x{}",
                        p.pad, p.kernel[0], p.kernel[1]
                    ));
                }
                let h = window_out(
                    x[2],
                    p.pad[0],
                    p.pad[2],
                    p.kernel[0],
                    p.stride[0],
                    1,
                    p.ceil_mode,
                );
                let w = window_out(
                    x[3],
                    p.pad[1],
                    p.pad[3],
                    p.kernel[1],
                    p.stride[1],
                    1,
                    p.ceil_mode,
                );
                match (h, w) {
                    (Some(h), Some(w)) => Ok(vec![x[0], x[1], h, w]),
                    _ => Err(format!(
                        "pooling window {}x{} does not fit the padded input {}",
                        p.kernel[0],
                        p.kernel[1],
                        fmt_shape(x)
                    )),
                }
            }
            ShapeRule::Global => {
                need_rank(&[4])?;
                Ok(vec![x[0], x[1], 1, 1])
            }
            ShapeRule::Pad => {
                let Op::Pad { pads, .. } = self else {
                    return Err(self.table_mismatch());
                };
                need_rank(&[4])?;
                let grow = |d: usize, a: usize, b: usize| {
                    d.checked_add(a)
                        .and_then(|d| d.checked_add(b))
                        .ok_or_else(|| crate::limits::too_large(x))
                };
                Ok(vec![
                    x[0],
                    x[1],
                    grow(x[2], pads[0], pads[2])?,
                    grow(x[3], pads[1], pads[3])?,
                ])
            }
            ShapeRule::Flatten => {
                if x.is_empty() {
                    return Err("`flatten` needs at least a batch axis".into());
                }
                let rest =
                    crate::limits::numel(&x[1..]).ok_or_else(|| crate::limits::too_large(x))?;
                Ok(vec![x[0], rest])
            }
            ShapeRule::Resize => {
                let Op::Resize(r) = self else {
                    return Err(self.table_mismatch());
                };
                need_rank(&[4])?;
                if x[2] == 0 || x[3] == 0 {
                    return Err(format!(
                        "`resize` needs a non-empty input, got {}",
                        fmt_shape(x)
                    ));
                }
                for s in r.scale {
                    if !(s.is_finite() && s >= 0.0) {
                        return Err(format!("`resize` scale must be positive, got {s}"));
                    }
                }
                match (r.out_len(0, x[2]), r.out_len(1, x[3])) {
                    (Some(h), Some(w)) => Ok(vec![x[0], x[1], h, w]),
                    _ => Err(format!(
                        "`resize` needs a `size` or a positive `scale` giving at least 1x1 \
                         (size {:?}, scale {:?}, input {})",
                        r.size,
                        r.scale,
                        fmt_shape(x)
                    )),
                }
            }
            ShapeRule::ShuffleChannels => {
                let Op::ChannelShuffle { groups } = self else {
                    return Err(self.table_mismatch());
                };
                need_rank(&[2, 4])?;
                if *groups == 0 || !x[1].is_multiple_of(*groups) {
                    return Err(format!(
                        "`channel_shuffle` needs channels ({}) divisible by groups ({groups})",
                        x[1]
                    ));
                }
                Ok(x.clone())
            }
            ShapeRule::SliceChannels => {
                let Op::SliceChannels { start, end } = self else {
                    return Err(self.table_mismatch());
                };
                need_rank(&[2, 4])?;
                if start >= end || *end > x[1] {
                    return Err(format!(
                        "`slice_channels` needs 0 <= start < end <= channels, got {start}..{end} of {}",
                        x[1]
                    ));
                }
                let mut out = x.clone();
                out[1] = end - start;
                Ok(out)
            }
            ShapeRule::ConvTranspose => {
                let Op::ConvTranspose2d(c) = self else {
                    return Err(self.table_mismatch());
                };
                need_rank(&[4])?;
                let cin = x[1];
                if c.groups == 0 || c.out_channels == 0 {
                    return Err("`groups` and `out` must be positive".into());
                }
                if !cin.is_multiple_of(c.groups) || !c.out_channels.is_multiple_of(c.groups) {
                    return Err(format!(
                        "input ({cin}) and output ({}) channels must be divisible by groups ({})",
                        c.out_channels, c.groups
                    ));
                }
                if c.kernel.contains(&0) || c.stride.contains(&0) || c.dilation.contains(&0) {
                    return Err("kernel, stride and dilation must be positive".into());
                }
                if x[2] == 0 || x[3] == 0 {
                    return Err(format!(
                        "`conv_transpose2d` needs a non-empty input, got {}",
                        fmt_shape(x)
                    ));
                }
                for a in 0..2 {
                    if c.output_padding[a] >= c.stride[a].max(c.dilation[a]) {
                        return Err(format!(
                            "output_padding {:?} must be smaller than the stride {:?} or the \
                             dilation {:?}",
                            c.output_padding, c.stride, c.dilation
                        ));
                    }
                }
                match (c.out_len(0, x[2]), c.out_len(1, x[3])) {
                    (Some(h), Some(w)) => Ok(vec![x[0], c.out_channels, h, w]),
                    _ => Err(format!(
                        "padding {:?} crops away the whole output of a {}x{} (stride {}x{}, \
                         dilation {}x{}) transposed conv over {}",
                        c.pad,
                        c.kernel[0],
                        c.kernel[1],
                        c.stride[0],
                        c.stride[1],
                        c.dilation[0],
                        c.dilation[1],
                        fmt_shape(x)
                    )),
                }
            }
        }
    }

    /// The parameter tensors the operator reads, given its input shapes (which must have
    /// passed [`Op::infer_shape`]): the table's [`crate::optable::ParamSlot`]s whose
    /// condition holds.
    pub fn param_specs(&self, inputs: &[&Shape]) -> Vec<ParamSpec> {
        let attrs = self.attributes();
        let enabled = |name: &str| {
            attrs
                .iter()
                .any(|(k, v)| *k == name && *v == AttrValue::Bool(true))
        };
        let weight = self.weight_shape(inputs[0]);
        self.kind()
            .info()
            .params
            .iter()
            .filter(|slot| slot.when.is_none_or(enabled))
            .map(|slot| {
                let (shape, kind) = match slot.shape {
                    ParamShape::Weight => {
                        let w = weight
                            .clone()
                            .expect("the table gives this operator a weight");
                        let fan_in = w[1..].iter().product();
                        (w, ParamKind::Weight { fan_in })
                    }
                    ParamShape::OutChannels => {
                        (vec![self.out_channels(weight.as_ref())], slot.kind)
                    }
                    ParamShape::InChannels => (vec![inputs[0][1]], slot.kind),
                };
                ParamSpec {
                    suffix: slot.suffix,
                    shape,
                    kind,
                }
            })
            .collect()
    }

    /// The weight's shape of a conv2d (`[out, in / groups, kh, kw]`) or dense (`[out, in]`)
    /// layer reading `input`; `None` for operators without a weight.
    pub fn weight_shape(&self, input: &Shape) -> Option<Shape> {
        if let Op::Conv2d(c) = self {
            Some(vec![
                c.out_channels,
                input[1] / c.groups,
                c.kernel[0],
                c.kernel[1],
            ])
        } else if let Op::ConvTranspose2d(c) = self {
            Some(vec![
                input[1],
                c.out_channels / c.groups,
                c.kernel[0],
                c.kernel[1],
            ])
        } else if let Op::Dense { out_features, .. } = self {
            Some(vec![*out_features, input[1]])
        } else {
            None
        }
    }

    /// A layer's output channels: the weight's first axis, but `out` for a transposed conv
    /// (whose weight is `[in, out / groups, kh, kw]`).
    fn out_channels(&self, weight: Option<&Shape>) -> usize {
        match self {
            Op::ConvTranspose2d(c) => c.out_channels,
            _ => weight.expect("a layer with a weight")[0],
        }
    }

    /// Multiply-accumulates (for conv/dense) or elementwise operations for one run, a rough
    /// measure of work used in reports.
    pub fn flops(&self, inputs: &[&Shape], output: &Shape) -> u64 {
        let numel = |s: &Shape| s.iter().product::<usize>() as u64;
        match self.kind().info().flops {
            Flops::Zero => 0,
            Flops::PerOutput(n) => n * numel(output),
            // Each input element meets `out / groups · kh · kw` weights.
            Flops::Layer if matches!(self, Op::ConvTranspose2d(_)) => {
                let per_input: usize = self
                    .weight_shape(inputs[0])
                    .map_or(0, |w| w[1..].iter().product());
                2 * numel(inputs[0]) * per_input as u64
            }
            Flops::Layer => {
                let fan_in: usize = self
                    .weight_shape(inputs[0])
                    .map_or(0, |w| w[1..].iter().product());
                2 * numel(output) * fan_in as u64
            }
            Flops::Window => {
                let (Op::MaxPool(p) | Op::AvgPool(p)) = self else {
                    return numel(output);
                };
                numel(output) * (p.kernel[0] * p.kernel[1]) as u64
            }
            Flops::PerInput => numel(inputs[0]),
        }
    }

    /// The error for an operator whose table entry names a rule its attributes do not fit.
    fn table_mismatch(&self) -> String {
        format!(
            "internal error: the operator table's rule for `{}` does not fit it",
            self.name()
        )
    }
}
