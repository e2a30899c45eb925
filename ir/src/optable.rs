//! The operator table: every fact about an operator that does not depend on its attribute
//! values, written once (in the spirit of MLIR's ODS). The printer, `.nn` lowering, ONNX
//! import, shape inference, parameter specs and the folding passes read it from here.
//!
//! [`OpKind::info`] is an exhaustive `match`, so a new [`OpKind`] does not compile until it
//! has an entry. docs/adding-an-operator.md lists what else a new operator needs.

use crate::ParamKind;

macro_rules! op_kinds {
    ($($(#[$meta:meta])* $kind:ident),* $(,)?) => {
        /// The operators of the language, without their attributes: one per `.nn` name.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum OpKind {
            $($(#[$meta])* $kind),*
        }

        impl OpKind {
            /// Every operator kind, in table order.
            pub const ALL: &'static [OpKind] = &[$(OpKind::$kind),*];
        }
    };
}

op_kinds! {
    Conv2d, Dense, BatchNorm, Affine,
    Relu, Relu6, Sigmoid, Silu, HardSwish, HardSigmoid, Tanh, LeakyRelu, Clip,
    Add, Mul, Concat, MaxPool, AvgPool, GlobalAvgPool, Pad, Flatten, Identity, Dropout, Softmax,
    Resize,
    ChannelShuffle, SliceChannels,
    GlobalMaxPool,
    Sqrt, Pow,
    ConvTranspose2d,
    LayerNorm, Gelu,
}

/// What the table knows about one operator.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OpInfo {
    /// The operator's name in the `.nn` language.
    pub name: &'static str,
    /// How many inputs it takes: `(min, max)`.
    pub inputs: (usize, usize),
    /// How many outputs it produces (every operator of the language has one).
    pub outputs: usize,
    /// Its attributes, in printing order. `params` is not listed: an operator with
    /// [`OpInfo::params`] accepts it.
    pub attrs: &'static [AttrSpec],
    /// How its output shape follows from its input shapes.
    pub shape: ShapeRule,
    /// The parameter tensors it may read, in order.
    pub params: &'static [ParamSlot],
    /// How a per-channel affine map meets it (what the folding passes may do).
    pub maps: MapRule,
    /// How its work is counted in reports.
    pub flops: Flops,
    /// ONNX operators the importer turns into it (some only in a pattern: `Mul(x,
    /// Sigmoid(x))` is a silu; Identity and Dropout are dropped rather than emitted).
    pub onnx: &'static [&'static str],
}

/// The type of an attribute's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrKind {
    /// A non-negative integer.
    Int,
    /// A number (an integer is accepted).
    Float,
    Bool,
    /// `n` or `[h, w]`.
    Pair,
    /// `n`, `[h, w]` or `[top, left, bottom, right]`.
    Pad,
    /// A number or `[h, w]` of numbers.
    FloatPair,
    /// One of these words, written as a string (`mode = "bilinear"`).
    Choice(&'static [&'static str]),
}

/// An attribute's value when it is not written.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AttrDefault {
    /// It must be written.
    Required,
    Int(usize),
    Float(f64),
    Bool(bool),
    Pair([usize; 2]),
    Pad([usize; 4]),
    FloatPair([f64; 2]),
    Choice(&'static str),
    /// The value of another attribute of the same call (pool `stride` defaults to `kernel`).
    SameAs(&'static str),
}

/// One attribute of an operator.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttrSpec {
    pub name: &'static str,
    pub kind: AttrKind,
    pub default: AttrDefault,
}

/// An attribute value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AttrValue {
    Int(usize),
    Float(f64),
    Bool(bool),
    Pair([usize; 2]),
    Pad([usize; 4]),
    FloatPair([f64; 2]),
    /// One of the words of an [`AttrKind::Choice`].
    Choice(&'static str),
}

/// How the output shape follows from the input shapes ([`crate::Op::infer_shape`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShapeRule {
    /// The input's shape, any rank (elementwise).
    Same,
    /// The input's shape, which must be `[N, C]` or `[N, C, H, W]` (per-channel operators).
    SameChannelwise,
    /// Equal input shapes, kept.
    Equal,
    /// Equal shapes, or one side `[N, C, 1, 1]` broadcast over H×W.
    Broadcast,
    /// Inputs agreeing on every axis but channels; channels add up.
    ConcatChannels,
    /// A convolution window with `out` channels.
    Conv,
    /// `[N, C]` to `[N, out]`.
    Dense,
    /// A pooling window, channels kept.
    Window,
    /// `[N, C, H, W]` to `[N, C, 1, 1]`.
    Global,
    /// H and W grow by `pads`.
    Pad,
    /// `[N, ...]` to `[N, product of the rest]`.
    Flatten,
    /// `[N, C, H, W]` to `[N, C, size]`, or `floor([H, W]·scale)` without a size.
    Resize,
    /// The input's shape, `[N, C]` or `[N, C, H, W]`, with `C` a multiple of `groups`.
    ShuffleChannels,
    /// Channels `start..end` of an `[N, C]` or `[N, C, H, W]` input.
    SliceChannels,
    /// A transposed convolution with `out` channels:
    /// `(in − 1)·stride − pad_begin − pad_end + dilation·(k − 1) + output_padding + 1`.
    ConvTranspose,
}

/// The shape of a parameter tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamShape {
    /// The operator's weight ([`crate::Op::weight_shape`]).
    Weight,
    /// One value per output channel (the weight's first axis; `out` for a transposed conv).
    OutChannels,
    /// One value per input channel.
    InChannels,
}

/// A parameter tensor an operator may read, `<prefix>.<suffix>`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ParamSlot {
    pub suffix: &'static str,
    pub shape: ParamShape,
    /// For [`ParamShape::Weight`] the `fan_in` is filled in from the weight's shape.
    pub kind: ParamKind,
    /// Read only when this boolean attribute is true.
    pub when: Option<&'static str>,
}

/// How an operator meets a per-channel affine map `m(x)[c] = s[c]·x[c] + t[c]` on its
/// input, as the folding passes (closure, e-graph rules) use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapRule {
    /// Its own parameters absorb the map (conv2d, dense, affine).
    Absorbs,
    /// Per channel it commutes with every map: `f(m(x)) = m(f(x))` (it moves, averages or
    /// copies values within a channel).
    Commutes,
    /// Like [`MapRule::Commutes`], unless it counts zero padding in an average (the padded
    /// zeros are not mapped).
    CommutesUnlessPaddingCounted,
    /// Monotone and commutes with shifts: maps whose scales are all ≥ 0 pass (maxpool).
    NonNegativeScale,
    /// Positively homogeneous: the scale of maps whose scales are ≥ 0 passes, the shift does
    /// not (relu, leaky_relu).
    ScaleOnly,
    /// Commutes when no spatial axes are flattened; otherwise each channel's entry is
    /// repeated for its H·W features (flatten).
    RepeatPerPosition,
    /// Passes a map only when it pads with a per-channel fill, which the map then
    /// transforms (pad).
    NeedsFill,
    /// Sums its inputs: maps with equal scales pass, their shifts add up (add).
    SumsInputs,
    /// Concatenates channels: the inputs' maps concatenate (concat).
    Concatenates,
    /// Permutes channels, copying values: a map passes with its vectors permuted the same
    /// way (channel_shuffle).
    Permutes,
    /// Keeps a range of channels, copying values: a map passes with its vectors sliced
    /// (slice_channels).
    Slices,
    /// No map passes (batchnorm too: canonicalize turns it into affine first).
    Blocks,
    /// No map on its input passes, but a per-channel map on its output is absorbed by its
    /// own per-channel weight and bias (layer_norm: `s·(w·n + b) + t = (s·w)·n + (s·b + t)`).
    AbsorbsOutput,
}

/// [`MapRule`] for one node, with the conditions on its attributes and input shape settled
/// ([`crate::Op::transparency`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transparency {
    Absorbs,
    Commutes,
    NonNegativeScale,
    ScaleOnly,
    /// Flatten of H×W: `positions = H·W` features per channel.
    Repeat {
        positions: usize,
    },
    NeedsFill,
    SumsInputs,
    Concatenates,
    /// Output channel `j·groups + i` is input channel `i·(C/groups) + j`
    /// ([`crate::shuffle_source`]).
    Permutes {
        groups: usize,
    },
    /// Output channel `k` is input channel `start + k`, for `k < end − start`.
    Slices {
        start: usize,
        end: usize,
    },
    /// No map passes; the text says what blocks it.
    Blocks(&'static str),
    /// A map on its output folds into its parameters; a map on its input is blocked.
    AbsorbsOutput,
}

/// How an operator's work is counted ([`crate::Op::flops`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flops {
    /// None: it only moves data (or nothing).
    Zero,
    /// This many operations per output element.
    PerOutput(u64),
    /// A multiply-add per weight tap and output element.
    Layer,
    /// One operation per window tap and output element.
    Window,
    /// One operation per input element.
    PerInput,
}

use AttrDefault as D;
use AttrKind as K;

const fn attr(name: &'static str, kind: AttrKind, default: AttrDefault) -> AttrSpec {
    AttrSpec {
        name,
        kind,
        default,
    }
}

const fn param(suffix: &'static str, shape: ParamShape, kind: ParamKind) -> ParamSlot {
    ParamSlot {
        suffix,
        shape,
        kind,
        when: None,
    }
}

const fn param_if(
    suffix: &'static str,
    shape: ParamShape,
    kind: ParamKind,
    when: &'static str,
) -> ParamSlot {
    ParamSlot {
        suffix,
        shape,
        kind,
        when: Some(when),
    }
}

const fn unary(name: &'static str, maps: MapRule, onnx: &'static [&'static str]) -> OpInfo {
    OpInfo {
        name,
        inputs: (1, 1),
        outputs: 1,
        attrs: &[],
        shape: ShapeRule::Same,
        params: &[],
        maps,
        flops: Flops::PerOutput(1),
        onnx,
    }
}

const POOL_ATTRS: [AttrSpec; 4] = [
    attr("kernel", K::Pair, D::Required),
    attr("stride", K::Pair, D::SameAs("kernel")),
    attr("pad", K::Pad, D::Pad([0; 4])),
    attr("ceil_mode", K::Bool, D::Bool(false)),
];

impl OpKind {
    /// The operator's table entry.
    pub const fn info(self) -> OpInfo {
        use MapRule as M;
        use ParamShape as P;
        const WEIGHT: ParamKind = ParamKind::Weight { fan_in: 0 };
        match self {
            OpKind::Conv2d => OpInfo {
                attrs: const {
                    &[
                        attr("out", K::Int, D::Required),
                        attr("kernel", K::Pair, D::Required),
                        attr("stride", K::Pair, D::Pair([1, 1])),
                        attr("pad", K::Pad, D::Pad([0; 4])),
                        attr("dilation", K::Pair, D::Pair([1, 1])),
                        attr("groups", K::Int, D::Int(1)),
                        attr("bias", K::Bool, D::Bool(true)),
                        attr("pad_fill", K::Bool, D::Bool(false)),
                    ]
                },
                shape: ShapeRule::Conv,
                params: const {
                    &[
                        param("weight", P::Weight, WEIGHT),
                        param_if("bias", P::OutChannels, ParamKind::Bias, "bias"),
                        param_if("pad_fill", P::InChannels, ParamKind::PadFill, "pad_fill"),
                    ]
                },
                flops: Flops::Layer,
                ..unary("conv2d", M::Absorbs, &["Conv"])
            },
            OpKind::Dense => OpInfo {
                attrs: const {
                    &[
                        attr("out", K::Int, D::Required),
                        attr("bias", K::Bool, D::Bool(true)),
                    ]
                },
                shape: ShapeRule::Dense,
                params: const {
                    &[
                        param("weight", P::Weight, WEIGHT),
                        param_if("bias", P::OutChannels, ParamKind::Bias, "bias"),
                    ]
                },
                flops: Flops::Layer,
                ..unary("dense", M::Absorbs, &["Gemm", "MatMul"])
            },
            OpKind::BatchNorm => OpInfo {
                attrs: const { &[attr("eps", K::Float, D::Float(1e-5))] },
                shape: ShapeRule::SameChannelwise,
                params: const {
                    &[
                        param("weight", P::InChannels, ParamKind::BnWeight),
                        param("bias", P::InChannels, ParamKind::BnBias),
                        param("running_mean", P::InChannels, ParamKind::BnMean),
                        param("running_var", P::InChannels, ParamKind::BnVar),
                    ]
                },
                flops: Flops::PerOutput(2),
                ..unary("batchnorm", M::Blocks, &["BatchNormalization"])
            },
            OpKind::Affine => OpInfo {
                shape: ShapeRule::SameChannelwise,
                params: const {
                    &[
                        param("scale", P::InChannels, ParamKind::AffineScale),
                        param("shift", P::InChannels, ParamKind::AffineShift),
                    ]
                },
                flops: Flops::PerOutput(2),
                // An elementwise Add/Sub/Mul/Div with a per-channel constant.
                ..unary("affine", M::Absorbs, &["Add", "Sub", "Mul", "Div"])
            },
            OpKind::Relu => unary("relu", M::ScaleOnly, &["Relu", "Clip"]),
            OpKind::Relu6 => unary("relu6", M::Blocks, &["Clip"]),
            OpKind::Sigmoid => unary("sigmoid", M::Blocks, &["Sigmoid"]),
            OpKind::Silu => unary("silu", M::Blocks, &["Mul"]),
            OpKind::HardSwish => unary("hardswish", M::Blocks, &["HardSwish", "Mul"]),
            OpKind::HardSigmoid => unary("hardsigmoid", M::Blocks, &["HardSigmoid"]),
            OpKind::Tanh => unary("tanh", M::Blocks, &["Tanh"]),
            OpKind::LeakyRelu => OpInfo {
                attrs: const { &[attr("alpha", K::Float, D::Float(0.01))] },
                ..unary("leaky_relu", M::ScaleOnly, &["LeakyRelu"])
            },
            OpKind::Clip => OpInfo {
                attrs: const {
                    &[
                        attr("min", K::Float, D::Float(f64::NEG_INFINITY)),
                        attr("max", K::Float, D::Float(f64::INFINITY)),
                    ]
                },
                ..unary("clip", M::Blocks, &["Clip"])
            },
            OpKind::Add => OpInfo {
                inputs: (2, 2),
                shape: ShapeRule::Equal,
                ..unary("add", M::SumsInputs, &["Add"])
            },
            OpKind::Mul => OpInfo {
                inputs: (2, 2),
                shape: ShapeRule::Broadcast,
                ..unary("mul", M::Blocks, &["Mul"])
            },
            OpKind::Concat => OpInfo {
                inputs: (1, usize::MAX),
                shape: ShapeRule::ConcatChannels,
                flops: Flops::Zero,
                ..unary("concat", M::Concatenates, &["Concat"])
            },
            OpKind::MaxPool => OpInfo {
                attrs: &POOL_ATTRS,
                shape: ShapeRule::Window,
                flops: Flops::Window,
                ..unary("maxpool", M::NonNegativeScale, &["MaxPool"])
            },
            OpKind::AvgPool => OpInfo {
                attrs: const {
                    &[
                        POOL_ATTRS[0],
                        POOL_ATTRS[1],
                        POOL_ATTRS[2],
                        POOL_ATTRS[3],
                        attr("count_include_pad", K::Bool, D::Bool(true)),
                    ]
                },
                shape: ShapeRule::Window,
                flops: Flops::Window,
                ..unary("avgpool", M::CommutesUnlessPaddingCounted, &["AveragePool"])
            },
            OpKind::GlobalAvgPool => OpInfo {
                shape: ShapeRule::Global,
                flops: Flops::PerInput,
                // ReduceMean over H and W.
                ..unary(
                    "global_avgpool",
                    M::Commutes,
                    &["GlobalAveragePool", "ReduceMean"],
                )
            },
            OpKind::Pad => OpInfo {
                attrs: const {
                    &[
                        attr("pads", K::Pad, D::Required),
                        attr("value", K::Float, D::Float(0.0)),
                        attr("pad_fill", K::Bool, D::Bool(false)),
                    ]
                },
                shape: ShapeRule::Pad,
                params: const {
                    &[param_if(
                        "pad_fill",
                        P::InChannels,
                        ParamKind::PadFill,
                        "pad_fill",
                    )]
                },
                flops: Flops::Zero,
                ..unary("pad", M::NeedsFill, &["Pad"])
            },
            OpKind::Flatten => OpInfo {
                shape: ShapeRule::Flatten,
                flops: Flops::Zero,
                // Reshapes, squeezes and means that only drop 1×1 axes or flatten.
                ..unary(
                    "flatten",
                    M::RepeatPerPosition,
                    &["Flatten", "Reshape", "Squeeze", "Unsqueeze", "ReduceMean"],
                )
            },
            OpKind::Identity => OpInfo {
                flops: Flops::Zero,
                ..unary("identity", M::Commutes, &["Identity"])
            },
            OpKind::Dropout => OpInfo {
                flops: Flops::Zero,
                ..unary("dropout", M::Commutes, &["Dropout"])
            },
            OpKind::Softmax => OpInfo {
                shape: ShapeRule::SameChannelwise,
                ..unary("softmax", M::Blocks, &["Softmax"])
            },
            OpKind::Resize => OpInfo {
                attrs: const {
                    &[
                        attr(
                            "mode",
                            K::Choice(&crate::op::RESIZE_MODES),
                            D::Choice("nearest"),
                        ),
                        attr("size", K::Pair, D::Pair([0, 0])),
                        attr("scale", K::FloatPair, D::FloatPair([0.0, 0.0])),
                        attr(
                            "coordinates",
                            K::Choice(&crate::op::RESIZE_COORDINATES),
                            D::Choice("asymmetric"),
                        ),
                        attr(
                            "nearest_mode",
                            K::Choice(&crate::op::RESIZE_NEAREST_MODES),
                            D::Choice("floor"),
                        ),
                    ]
                },
                shape: ShapeRule::Resize,
                // Bilinear: 4 multiply-adds per output (nearest counts the same).
                flops: Flops::PerOutput(8),
                // Nearest copies values within a channel; bilinear weights sum to 1 per
                // output, so a per-channel affine map commutes with either.
                ..unary("resize", M::Commutes, &["Resize", "Upsample"])
            },
            OpKind::ChannelShuffle => OpInfo {
                attrs: const { &[attr("groups", K::Int, D::Required)] },
                shape: ShapeRule::ShuffleChannels,
                flops: Flops::Zero,
                // Reshape [N, g, C/g, H, W] → Transpose [0, 2, 1, 3, 4] → Reshape [N, C, H, W].
                ..unary("channel_shuffle", M::Permutes, &["Reshape", "Transpose"])
            },
            OpKind::SliceChannels => OpInfo {
                attrs: const {
                    &[
                        attr("start", K::Int, D::Required),
                        attr("end", K::Int, D::Required),
                    ]
                },
                shape: ShapeRule::SliceChannels,
                flops: Flops::Zero,
                ..unary("slice_channels", M::Slices, &["Split", "Slice"])
            },
            OpKind::GlobalMaxPool => OpInfo {
                shape: ShapeRule::Global,
                flops: Flops::PerInput,
                // ReduceMax over H and W. Max is monotone and commutes with shifts: a map
                // whose scales are all >= 0 passes (a negative scale turns max into min).
                ..unary(
                    "global_maxpool",
                    M::NonNegativeScale,
                    &["GlobalMaxPool", "ReduceMax"],
                )
            },
            OpKind::Sqrt => unary("sqrt", M::Blocks, &["Sqrt"]),
            OpKind::Pow => OpInfo {
                attrs: const { &[attr("exponent", K::Float, D::Required)] },
                // Pow(x, c) with a constant scalar exponent only.
                ..unary("pow", M::Blocks, &["Pow"])
            },
            OpKind::ConvTranspose2d => OpInfo {
                attrs: const {
                    &[
                        attr("out", K::Int, D::Required),
                        attr("kernel", K::Pair, D::Required),
                        attr("stride", K::Pair, D::Pair([1, 1])),
                        attr("pad", K::Pad, D::Pad([0; 4])),
                        attr("output_padding", K::Pair, D::Pair([0, 0])),
                        attr("dilation", K::Pair, D::Pair([1, 1])),
                        attr("groups", K::Int, D::Int(1)),
                        attr("bias", K::Bool, D::Bool(true)),
                    ]
                },
                shape: ShapeRule::ConvTranspose,
                params: const {
                    &[
                        param("weight", P::Weight, WEIGHT),
                        param_if("bias", P::OutChannels, ParamKind::Bias, "bias"),
                    ]
                },
                flops: Flops::Layer,
                // A map on its output folds into the weight's output channels and the bias;
                // on its input the scale folds into the weight's input channels, the shift
                // only where every output position receives every tap
                // (`ConvTranspose2d::shift_is_uniform`; passes/src/affine.rs checks it).
                ..unary("conv_transpose2d", M::Absorbs, &["ConvTranspose"])
            },
            OpKind::LayerNorm => OpInfo {
                attrs: const { &[attr("eps", K::Float, D::Float(1e-5))] },
                shape: ShapeRule::SameChannelwise,
                params: const {
                    &[
                        param("weight", P::InChannels, ParamKind::BnWeight),
                        param("bias", P::InChannels, ParamKind::BnBias),
                    ]
                },
                // Mean, variance, normalise, scale and shift.
                flops: Flops::PerOutput(6),
                // Over the channels at each position: LayerNormalization over the last axis
                // of the NHWC view of an NCHW tensor (Transpose [0, 2, 3, 1] .. [0, 3, 1, 2]),
                // or over axis 1 of [N, C].
                ..unary("layer_norm", M::AbsorbsOutput, &["LayerNormalization"])
            },
            // The exact (erf) form: x·(1 + erf(x/√2))/2. `Erf` maps only inside that pattern.
            OpKind::Gelu => unary("gelu", M::Blocks, &["Gelu", "Erf"]),
        }
    }

    /// The operator called `name` in the `.nn` language.
    pub fn from_name(name: &str) -> Option<OpKind> {
        OpKind::ALL.iter().copied().find(|k| k.info().name == name)
    }

    /// Whether some operator is imported from the ONNX operator `op_type`.
    pub fn is_onnx_mapped(op_type: &str) -> bool {
        OpKind::ALL.iter().any(|k| k.info().onnx.contains(&op_type))
    }

    /// The one operator imported from `op_type`, if exactly one lists it.
    pub fn from_onnx(op_type: &str) -> Option<OpKind> {
        let mut kinds = OpKind::ALL
            .iter()
            .copied()
            .filter(|k| k.info().onnx.contains(&op_type));
        let kind = kinds.next()?;
        kinds.next().is_none().then_some(kind)
    }

    /// Whether an operator of this kind reads parameter tensors (and so accepts `params`).
    pub fn has_params(self) -> bool {
        !self.info().params.is_empty()
    }
}

impl std::fmt::Display for AttrValue {
    /// As written in the `.nn` language (floats in their shortest exact form).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttrValue::Int(v) => write!(f, "{v}"),
            AttrValue::Float(v) => write!(f, "{v:?}"),
            AttrValue::Bool(v) => write!(f, "{v}"),
            AttrValue::Pair(v) => write!(f, "{}", crate::printer::dims(v)),
            AttrValue::Pad(v) => write!(f, "{}", crate::printer::dims(v)),
            AttrValue::FloatPair([h, w]) => write!(f, "[{h:?}, {w:?}]"),
            AttrValue::Choice(s) => write!(f, "\"{s}\""),
        }
    }
}

impl crate::Op {
    /// How a per-channel map on the input meets this node: the table's [`MapRule`] with its
    /// conditions on attributes and on the input's shape settled.
    pub fn transparency(&self, input_shape: &[usize]) -> Transparency {
        match self.kind().info().maps {
            MapRule::Absorbs => Transparency::Absorbs,
            MapRule::Commutes => Transparency::Commutes,
            MapRule::CommutesUnlessPaddingCounted => {
                if let crate::Op::AvgPool(p) = self
                    && p.count_include_pad
                    && p.pad != [0; 4]
                {
                    Transparency::Blocks("avgpool counting its zero padding")
                } else {
                    Transparency::Commutes
                }
            }
            MapRule::NonNegativeScale => Transparency::NonNegativeScale,
            MapRule::ScaleOnly => Transparency::ScaleOnly,
            MapRule::RepeatPerPosition => {
                let positions = input_shape.get(2..).map_or(1, |s| s.iter().product());
                if positions == 1 {
                    Transparency::Commutes
                } else {
                    Transparency::Repeat { positions }
                }
            }
            MapRule::NeedsFill => Transparency::NeedsFill,
            MapRule::SumsInputs => Transparency::SumsInputs,
            MapRule::Concatenates => Transparency::Concatenates,
            MapRule::Permutes => match self {
                crate::Op::ChannelShuffle { groups } => Transparency::Permutes { groups: *groups },
                _ => Transparency::Blocks(self.name()),
            },
            MapRule::Slices => match self {
                crate::Op::SliceChannels { start, end } => Transparency::Slices {
                    start: *start,
                    end: *end,
                },
                _ => Transparency::Blocks(self.name()),
            },
            MapRule::Blocks => Transparency::Blocks(self.name()),
            MapRule::AbsorbsOutput => Transparency::AbsorbsOutput,
        }
    }
}
