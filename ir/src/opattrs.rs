//! Between an [`Op`] and its attributes as the operator table names them: what the printer
//! writes, and what `.nn` lowering builds an operator from.

use crate::optable::{AttrDefault, AttrValue, OpKind};
use crate::{Activation, Conv2d, ConvTranspose2d, Op, Pool2d, Resize};

impl Op {
    /// The operator's attributes as `(name, value)`, in the table's order (the order
    /// [`crate::optable::OpInfo::attrs`] lists them).
    pub fn attributes(&self) -> Vec<(&'static str, AttrValue)> {
        use AttrValue::{Bool, Float, Int, Pad, Pair};
        let pool = |p: &Pool2d| {
            vec![
                ("kernel", Pair(p.kernel)),
                ("stride", Pair(p.stride)),
                ("pad", Pad(p.pad)),
                ("ceil_mode", Bool(p.ceil_mode)),
            ]
        };
        match self {
            Op::Conv2d(c) => vec![
                ("out", Int(c.out_channels)),
                ("kernel", Pair(c.kernel)),
                ("stride", Pair(c.stride)),
                ("pad", Pad(c.pad)),
                ("dilation", Pair(c.dilation)),
                ("groups", Int(c.groups)),
                ("bias", Bool(c.bias)),
                ("pad_fill", Bool(c.pad_fill)),
            ],
            Op::Dense { out_features, bias } => {
                vec![("out", Int(*out_features)), ("bias", Bool(*bias))]
            }
            Op::BatchNorm { eps } => vec![("eps", Float(*eps))],
            Op::Activation(a) => a.attributes(),
            Op::MaxPool(p) => pool(p),
            Op::AvgPool(p) => {
                let mut a = pool(p);
                a.push(("count_include_pad", Bool(p.count_include_pad)));
                a
            }
            Op::Pad { pads, value, fill } => vec![
                ("pads", Pad(*pads)),
                ("value", Float(*value)),
                ("pad_fill", Bool(*fill)),
            ],
            Op::Resize(r) => vec![
                ("mode", AttrValue::Choice(r.mode)),
                ("size", Pair(r.size)),
                ("scale", AttrValue::FloatPair(r.scale)),
                ("coordinates", AttrValue::Choice(r.coordinates)),
                ("nearest_mode", AttrValue::Choice(r.nearest_mode)),
            ],
            Op::ChannelShuffle { groups } => vec![("groups", Int(*groups))],
            Op::SliceChannels { start, end } => vec![("start", Int(*start)), ("end", Int(*end))],
            Op::ConvTranspose2d(c) => vec![
                ("out", Int(c.out_channels)),
                ("kernel", Pair(c.kernel)),
                ("stride", Pair(c.stride)),
                ("pad", Pad(c.pad)),
                ("output_padding", Pair(c.output_padding)),
                ("dilation", Pair(c.dilation)),
                ("groups", Int(c.groups)),
                ("bias", Bool(c.bias)),
            ],
            Op::LayerNorm { eps } => vec![("eps", Float(*eps))],
            Op::Affine
            | Op::Add
            | Op::Mul
            | Op::Concat
            | Op::GlobalAvgPool
            | Op::Flatten
            | Op::Identity
            | Op::Dropout
            | Op::Softmax
            | Op::GlobalMaxPool => Vec::new(),
        }
    }

    /// The operator of kind `kind` with the attributes `given` returns, and the table's
    /// defaults for the others. A required attribute that is missing (callers check for
    /// them) reads as 0, `[1, 1]` or no padding.
    pub fn from_attrs(kind: OpKind, given: impl Fn(&str) -> Option<AttrValue>) -> Op {
        let specs = kind.info().attrs;
        let get = |name: &str| -> Option<AttrValue> {
            let mut name = name;
            // Follow `SameAs` defaults (pool stride = kernel); the table has no cycles.
            for _ in 0..specs.len() + 1 {
                if let Some(v) = given(name) {
                    return Some(v);
                }
                let spec = specs.iter().find(|s| s.name == name)?;
                match spec.default {
                    AttrDefault::Required => return None,
                    AttrDefault::Int(v) => return Some(AttrValue::Int(v)),
                    AttrDefault::Float(v) => return Some(AttrValue::Float(v)),
                    AttrDefault::Bool(v) => return Some(AttrValue::Bool(v)),
                    AttrDefault::Pair(v) => return Some(AttrValue::Pair(v)),
                    AttrDefault::Pad(v) => return Some(AttrValue::Pad(v)),
                    AttrDefault::FloatPair(v) => return Some(AttrValue::FloatPair(v)),
                    AttrDefault::Choice(v) => return Some(AttrValue::Choice(v)),
                    AttrDefault::SameAs(other) => name = other,
                }
            }
            None
        };
        let int = |n: &str| match get(n) {
            Some(AttrValue::Int(v)) => v,
            _ => 0,
        };
        let float = |n: &str| match get(n) {
            Some(AttrValue::Float(v)) => v,
            _ => 0.0,
        };
        let bool = |n: &str| matches!(get(n), Some(AttrValue::Bool(true)));
        let pair = |n: &str| match get(n) {
            Some(AttrValue::Pair(v)) => v,
            _ => [1, 1],
        };
        let pad = |n: &str| match get(n) {
            Some(AttrValue::Pad(v)) => v,
            _ => [0; 4],
        };
        let choice = |n: &str| match get(n) {
            Some(AttrValue::Choice(v)) => v,
            _ => "",
        };
        let float_pair = |n: &str| match get(n) {
            Some(AttrValue::FloatPair(v)) => v,
            _ => [0.0; 2],
        };
        let pool = |count_include_pad| Pool2d {
            kernel: pair("kernel"),
            stride: pair("stride"),
            pad: pad("pad"),
            ceil_mode: bool("ceil_mode"),
            count_include_pad,
        };
        let act = Op::Activation;
        match kind {
            OpKind::Conv2d => Op::Conv2d(Conv2d {
                out_channels: int("out"),
                kernel: pair("kernel"),
                stride: pair("stride"),
                pad: pad("pad"),
                dilation: pair("dilation"),
                groups: int("groups"),
                bias: bool("bias"),
                pad_fill: bool("pad_fill"),
            }),
            OpKind::Dense => Op::Dense {
                out_features: int("out"),
                bias: bool("bias"),
            },
            OpKind::BatchNorm => Op::BatchNorm { eps: float("eps") },
            OpKind::Affine => Op::Affine,
            OpKind::Relu => act(Activation::Relu),
            OpKind::Relu6 => act(Activation::Relu6),
            OpKind::Sigmoid => act(Activation::Sigmoid),
            OpKind::Silu => act(Activation::Silu),
            OpKind::HardSwish => act(Activation::HardSwish),
            OpKind::HardSigmoid => act(Activation::HardSigmoid),
            OpKind::Tanh => act(Activation::Tanh),
            OpKind::LeakyRelu => act(Activation::LeakyRelu {
                alpha: float("alpha"),
            }),
            OpKind::Clip => act(Activation::Clip {
                min: float("min"),
                max: float("max"),
            }),
            OpKind::Add => Op::Add,
            OpKind::Mul => Op::Mul,
            OpKind::Concat => Op::Concat,
            // `count_include_pad` means nothing for max pooling; it is kept false there.
            OpKind::MaxPool => Op::MaxPool(pool(false)),
            OpKind::AvgPool => Op::AvgPool(pool(bool("count_include_pad"))),
            OpKind::GlobalAvgPool => Op::GlobalAvgPool,
            OpKind::Pad => Op::Pad {
                pads: pad("pads"),
                value: float("value"),
                fill: bool("pad_fill"),
            },
            OpKind::Flatten => Op::Flatten,
            OpKind::Identity => Op::Identity,
            OpKind::Dropout => Op::Dropout,
            OpKind::Softmax => Op::Softmax,
            OpKind::Resize => Op::Resize(Resize {
                mode: choice("mode"),
                size: pair("size"),
                scale: float_pair("scale"),
                coordinates: choice("coordinates"),
                nearest_mode: choice("nearest_mode"),
            }),
            OpKind::ChannelShuffle => Op::ChannelShuffle {
                groups: int("groups"),
            },
            OpKind::SliceChannels => Op::SliceChannels {
                start: int("start"),
                end: int("end"),
            },
            OpKind::GlobalMaxPool => Op::GlobalMaxPool,
            OpKind::Sqrt => act(Activation::Sqrt),
            OpKind::Pow => act(Activation::Pow {
                exponent: float("exponent"),
            }),
            OpKind::ConvTranspose2d => Op::ConvTranspose2d(ConvTranspose2d {
                out_channels: int("out"),
                kernel: pair("kernel"),
                stride: pair("stride"),
                pad: pad("pad"),
                output_padding: match get("output_padding") {
                    Some(AttrValue::Pair(v)) => v,
                    _ => [0, 0],
                },
                dilation: pair("dilation"),
                groups: int("groups"),
                bias: bool("bias"),
            }),
            OpKind::LayerNorm => Op::LayerNorm { eps: float("eps") },
            OpKind::Gelu => act(Activation::Gelu),
        }
    }
}

impl Activation {
    /// The activation's attributes, as [`Op::attributes`].
    pub fn attributes(&self) -> Vec<(&'static str, AttrValue)> {
        match self {
            Activation::LeakyRelu { alpha } => vec![("alpha", AttrValue::Float(*alpha))],
            Activation::Pow { exponent } => vec![("exponent", AttrValue::Float(*exponent))],
            Activation::Clip { min, max } => vec![
                ("min", AttrValue::Float(*min)),
                ("max", AttrValue::Float(*max)),
            ],
            Activation::Relu
            | Activation::Relu6
            | Activation::Sigmoid
            | Activation::Silu
            | Activation::HardSwish
            | Activation::HardSigmoid
            | Activation::Tanh
            | Activation::Sqrt
            | Activation::Gelu => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind builds an operator of that kind whose attributes are the table's, in the
    /// table's order, with the table's defaults.
    #[test]
    fn table_and_operators_agree() {
        for &kind in OpKind::ALL {
            let op = Op::from_attrs(kind, |_| None);
            assert_eq!(op.kind(), kind);
            assert_eq!(op.name(), kind.info().name);
            assert_eq!(OpKind::from_name(kind.info().name), Some(kind));
            let names: Vec<&str> = op.attributes().iter().map(|(n, _)| *n).collect();
            let table: Vec<&str> = kind.info().attrs.iter().map(|s| s.name).collect();
            assert_eq!(names, table, "{kind:?}");
            for (spec, (_, value)) in kind.info().attrs.iter().zip(op.attributes()) {
                let default = match spec.default {
                    AttrDefault::Int(v) => Some(AttrValue::Int(v)),
                    AttrDefault::Float(v) => Some(AttrValue::Float(v)),
                    AttrDefault::Bool(v) => Some(AttrValue::Bool(v)),
                    AttrDefault::Pair(v) => Some(AttrValue::Pair(v)),
                    AttrDefault::Pad(v) => Some(AttrValue::Pad(v)),
                    AttrDefault::FloatPair(v) => Some(AttrValue::FloatPair(v)),
                    AttrDefault::Choice(v) => Some(AttrValue::Choice(v)),
                    AttrDefault::Required | AttrDefault::SameAs(_) => None,
                };
                if let Some(d) = default {
                    assert_eq!(value, d, "{kind:?}.{}", spec.name);
                }
            }
            // Shape rules that need attributes find them.
            let x = vec![1, 4, 8, 8];
            let e = op.infer_shape(&[&x, &x]).err().unwrap_or_default();
            assert!(!e.contains("internal error"), "{kind:?}: {e}");
        }
    }
}
