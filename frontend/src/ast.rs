//! The syntax tree of a `.nn` file, with a byte span on every piece so that later stages can
//! point at exactly what is wrong.

use crate::diag::Span;

/// `model NAME { items }`.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub name: Ident,
    pub items: Vec<Item>,
    /// From `model` to the closing `}`.
    pub span: Span,
}

/// A name with its span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Weights(WeightsItem),
    Input(InputItem),
    Binding(Binding),
    Output(OutputItem),
}

impl Item {
    pub fn span(&self) -> &Span {
        match self {
            Item::Weights(w) => &w.span,
            Item::Input(i) => &i.span,
            Item::Binding(b) => &b.span,
            Item::Output(o) => &o.span,
        }
    }
}

/// `weights "file"` or `weights random(seed = N)`.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightsItem {
    pub source: WeightsSpec,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum WeightsSpec {
    /// The path as written (escapes resolved) and the span of the string literal.
    File { path: String, span: Span },
    /// The seed literal and its span.
    Random { seed: IntLit, span: Span },
}

/// `input NAME: f32[d0, d1, ...]`.
#[derive(Clone, Debug, PartialEq)]
pub struct InputItem {
    pub name: Ident,
    /// The element type as written (always `f32` after parsing).
    pub dtype: Ident,
    pub dims: Vec<Spanned<IntLit>>,
    pub span: Span,
}

/// `NAME = OP(arg, ..., key = value, ...)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    pub name: Ident,
    pub op: Ident,
    pub args: Vec<Ident>,
    pub attrs: Vec<Attr>,
    /// From the name to the closing `)`.
    pub span: Span,
    /// From `(` to `)`.
    pub args_span: Span,
}

/// `key = value` inside a call.
#[derive(Clone, Debug, PartialEq)]
pub struct Attr {
    pub key: Ident,
    pub value: Spanned<Value>,
}

/// `output a, b`.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputItem {
    pub names: Vec<Ident>,
    pub span: Span,
}

/// Anything with a span.
#[derive(Clone, Debug, PartialEq)]
pub struct Spanned<T> {
    pub node: T,
    pub span: Span,
}

/// An integer literal: magnitude and sign kept apart so that `-0` and `u64::MAX` both fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntLit {
    pub negative: bool,
    pub magnitude: u64,
}

impl IntLit {
    /// The value if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        (!self.negative || self.magnitude == 0).then_some(self.magnitude)
    }

    pub fn as_f64(&self) -> f64 {
        let m = self.magnitude as f64;
        if self.negative { -m } else { m }
    }
}

impl std::fmt::Display for IntLit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.negative {
            write!(f, "-{}", self.magnitude)
        } else {
            write!(f, "{}", self.magnitude)
        }
    }
}

/// A number inside a list.
#[derive(Clone, Debug, PartialEq)]
pub enum Number {
    Int(IntLit),
    /// The value and its text as written (for messages).
    Float(f64, String),
}

/// An attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(IntLit),
    Float(f64, String),
    Bool(bool),
    Str(String),
    List(Vec<Spanned<Number>>),
}

impl Value {
    /// How the value is described in a "found ..." message.
    pub fn describe(&self) -> String {
        match self {
            Value::Int(i) => format!("integer `{i}`"),
            Value::Float(_, text) => format!("float `{text}`"),
            Value::Bool(b) => format!("boolean `{b}`"),
            Value::Str(s) => format!("string {}", crate::parser::shorten(&format!("{s:?}"))),
            Value::List(items) => format!("a list of {} numbers", items.len()),
        }
    }
}
