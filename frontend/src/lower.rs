//! From syntax tree to Graph IR: name resolution, attribute checking with the defaults of
//! docs/language.md, and shape inference through [`Op::infer_shape`].

use std::collections::{BTreeMap, HashMap};

use bnc_ir::{Activation, Conv2d, Graph, Node, Op, Pool2d, Shape, Value, ValueId, WeightsSource};

use crate::ast::{self, Attr, Binding, Ident, IntLit, Item, Model, Number, Spanned, WeightsSpec};
use crate::diag::{Error, Span};

/// Largest number of elements a tensor may have (16 GiB of f32).
pub const MAX_ELEMENTS: u64 = 1 << 32;

/// Largest value of a size-like attribute (`out`, `kernel`, `pad`, ...). Keeps the shape
/// arithmetic far from overflow.
pub const MAX_ATTR_VALUE: u64 = i32::MAX as u64;

/// A lowered model plus what the weights loader needs to point errors at the source.
#[derive(Clone, Debug)]
pub struct Lowered {
    pub graph: Graph,
    /// Per node (same order as `graph.nodes`): its binding.
    pub nodes: Vec<NodeOrigin>,
    /// The span of the `weights` line's source (file string or seed).
    pub weights_span: Span,
}

/// Where a node was written.
#[derive(Clone, Debug)]
pub struct NodeOrigin {
    /// The binding's name.
    pub name_span: Span,
    /// The `params = "..."` value, if written.
    pub params_span: Option<Span>,
}

/// The operators of the language, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpKind {
    Conv2d,
    Dense,
    BatchNorm,
    Affine,
    Relu,
    Relu6,
    Sigmoid,
    Silu,
    HardSwish,
    HardSigmoid,
    Tanh,
    LeakyRelu,
    Clip,
    Add,
    Mul,
    Concat,
    MaxPool,
    AvgPool,
    GlobalAvgPool,
    Pad,
    Flatten,
    Identity,
    Dropout,
    Softmax,
}

const OPERATORS: &[(&str, OpKind)] = &[
    ("conv2d", OpKind::Conv2d),
    ("dense", OpKind::Dense),
    ("batchnorm", OpKind::BatchNorm),
    ("affine", OpKind::Affine),
    ("relu", OpKind::Relu),
    ("relu6", OpKind::Relu6),
    ("sigmoid", OpKind::Sigmoid),
    ("silu", OpKind::Silu),
    ("hardswish", OpKind::HardSwish),
    ("hardsigmoid", OpKind::HardSigmoid),
    ("tanh", OpKind::Tanh),
    ("leaky_relu", OpKind::LeakyRelu),
    ("clip", OpKind::Clip),
    ("add", OpKind::Add),
    ("mul", OpKind::Mul),
    ("concat", OpKind::Concat),
    ("maxpool", OpKind::MaxPool),
    ("avgpool", OpKind::AvgPool),
    ("global_avgpool", OpKind::GlobalAvgPool),
    ("pad", OpKind::Pad),
    ("flatten", OpKind::Flatten),
    ("identity", OpKind::Identity),
    ("dropout", OpKind::Dropout),
    ("softmax", OpKind::Softmax),
];

/// The type of an attribute value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AttrType {
    /// A non-negative integer.
    Int,
    /// A number (an integer is accepted).
    Float,
    Bool,
    Str,
    /// `n` or `[h, w]`.
    Pair,
    /// `n`, `[h, w]` or `[top, left, bottom, right]`.
    Pad,
}

struct AttrSpec {
    name: &'static str,
    ty: AttrType,
    required: bool,
}

const fn req(name: &'static str, ty: AttrType) -> AttrSpec {
    AttrSpec {
        name,
        ty,
        required: true,
    }
}

const fn opt(name: &'static str, ty: AttrType) -> AttrSpec {
    AttrSpec {
        name,
        ty,
        required: false,
    }
}

use AttrType as T;

const CONV_ATTRS: &[AttrSpec] = &[
    req("out", T::Int),
    req("kernel", T::Pair),
    opt("stride", T::Pair),
    opt("pad", T::Pad),
    opt("dilation", T::Pair),
    opt("groups", T::Int),
    opt("bias", T::Bool),
    opt("pad_fill", T::Bool),
    opt("params", T::Str),
];
const DENSE_ATTRS: &[AttrSpec] = &[
    req("out", T::Int),
    opt("bias", T::Bool),
    opt("params", T::Str),
];
const BN_ATTRS: &[AttrSpec] = &[opt("eps", T::Float), opt("params", T::Str)];
const AFFINE_ATTRS: &[AttrSpec] = &[opt("params", T::Str)];
const LEAKY_ATTRS: &[AttrSpec] = &[opt("alpha", T::Float)];
const CLIP_ATTRS: &[AttrSpec] = &[opt("min", T::Float), opt("max", T::Float)];
const MAXPOOL_ATTRS: &[AttrSpec] = &[
    req("kernel", T::Pair),
    opt("stride", T::Pair),
    opt("pad", T::Pad),
    opt("ceil_mode", T::Bool),
];
const AVGPOOL_ATTRS: &[AttrSpec] = &[
    req("kernel", T::Pair),
    opt("stride", T::Pair),
    opt("pad", T::Pad),
    opt("ceil_mode", T::Bool),
    opt("count_include_pad", T::Bool),
];
const PAD_ATTRS: &[AttrSpec] = &[
    req("pads", T::Pad),
    opt("value", T::Float),
    opt("pad_fill", T::Bool),
    opt("params", T::Str),
];

fn attr_specs(kind: OpKind) -> &'static [AttrSpec] {
    match kind {
        OpKind::Conv2d => CONV_ATTRS,
        OpKind::Dense => DENSE_ATTRS,
        OpKind::BatchNorm => BN_ATTRS,
        OpKind::Affine => AFFINE_ATTRS,
        OpKind::LeakyRelu => LEAKY_ATTRS,
        OpKind::Clip => CLIP_ATTRS,
        OpKind::MaxPool => MAXPOOL_ATTRS,
        OpKind::AvgPool => AVGPOOL_ATTRS,
        OpKind::Pad => PAD_ATTRS,
        _ => &[],
    }
}

/// A checked attribute value.
#[derive(Clone, Debug)]
enum AttrValue {
    Int(usize),
    Float(f64),
    Bool(bool),
    Str(String),
    Pair([usize; 2]),
    Pad([usize; 4]),
}

/// The attributes of one call, checked against the operator's table.
struct Attrs {
    values: HashMap<&'static str, AttrValue>,
}

impl Attrs {
    fn int(&self, name: &str, default: usize) -> usize {
        match self.values.get(name) {
            Some(AttrValue::Int(v)) => *v,
            _ => default,
        }
    }
    fn float(&self, name: &str, default: f64) -> f64 {
        match self.values.get(name) {
            Some(AttrValue::Float(v)) => *v,
            _ => default,
        }
    }
    fn bool(&self, name: &str, default: bool) -> bool {
        match self.values.get(name) {
            Some(AttrValue::Bool(v)) => *v,
            _ => default,
        }
    }
    fn pair(&self, name: &str, default: [usize; 2]) -> [usize; 2] {
        match self.values.get(name) {
            Some(AttrValue::Pair(v)) => *v,
            _ => default,
        }
    }
    fn pad(&self, name: &str, default: [usize; 4]) -> [usize; 4] {
        match self.values.get(name) {
            Some(AttrValue::Pad(v)) => *v,
            _ => default,
        }
    }
    fn string(&self, name: &str) -> Option<&str> {
        match self.values.get(name) {
            Some(AttrValue::Str(s)) => Some(s),
            _ => None,
        }
    }
}

/// `[1, 16, 8, 8]`.
pub(crate) fn fmt_shape(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(", "))
}

/// Number of elements, or `None` past [`MAX_ELEMENTS`].
pub(crate) fn checked_numel(shape: &[usize]) -> Option<u64> {
    let mut n: u64 = 1;
    for &d in shape {
        n = n.checked_mul(d as u64)?;
    }
    (n <= MAX_ELEMENTS).then_some(n)
}

/// Levenshtein distance, for "did you mean" hints.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Up to `limit` candidates close to `target`, closest first.
pub(crate) fn similar<'a>(
    target: &str,
    candidates: impl Iterator<Item = &'a str>,
    limit: usize,
) -> Vec<&'a str> {
    // Hints are a nicety: skip them rather than spend seconds on a huge model.
    const MAX_CANDIDATES: usize = 50_000;
    let candidates: Vec<&str> = candidates.take(MAX_CANDIDATES + 1).collect();
    if candidates.len() > MAX_CANDIDATES {
        return Vec::new();
    }
    let max_dist = (target.chars().count() / 3).max(2);
    let target_len = target.chars().count();
    let mut scored: Vec<(usize, &str)> = candidates
        .into_iter()
        // The distance is at least the difference in length; skip hopeless ones cheaply.
        .filter(|c| {
            c.len().abs_diff(target.len()) <= 4 * max_dist
                && c.chars().count().abs_diff(target_len) <= max_dist
        })
        .map(|c| (edit_distance(target, c), c))
        .filter(|&(d, _)| d <= max_dist)
        .collect();
    scored.sort();
    scored.dedup();
    scored.into_iter().take(limit).map(|(_, c)| c).collect()
}

/// `` `a` or `b` ``.
fn or_list(names: &[&str]) -> String {
    let q: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    q.join(" or ")
}

/// Lowers a parsed model. Parameters are not loaded yet (`graph.params` is empty).
pub fn lower(model: &Model) -> Result<Lowered, Error> {
    Lowerer::new(model).run(model)
}

struct Lowerer<'m> {
    values: Vec<Value>,
    inputs: Vec<ValueId>,
    nodes: Vec<Node>,
    origins: Vec<NodeOrigin>,
    /// Names defined so far, with the span of their definition.
    defined: HashMap<&'m str, (ValueId, Span)>,
    /// Every name defined anywhere in the model (first definition), to tell "used before
    /// its definition" from "never defined".
    all_definitions: HashMap<&'m str, Span>,
}

impl<'m> Lowerer<'m> {
    fn new(model: &'m Model) -> Lowerer<'m> {
        let mut all_definitions = HashMap::new();
        for item in &model.items {
            let name = match item {
                Item::Input(i) => &i.name,
                Item::Binding(b) => &b.name,
                _ => continue,
            };
            all_definitions
                .entry(name.name.as_str())
                .or_insert_with(|| name.span.clone());
        }
        Lowerer {
            values: Vec::new(),
            inputs: Vec::new(),
            nodes: Vec::new(),
            origins: Vec::new(),
            defined: HashMap::new(),
            all_definitions,
        }
    }

    fn run(mut self, model: &'m Model) -> Result<Lowered, Error> {
        let mut weights: Option<(WeightsSource, Span, Span)> = None;
        let mut outputs: Vec<&Ident> = Vec::new();
        for item in &model.items {
            match item {
                Item::Weights(w) => {
                    if let Some((_, _, first)) = &weights {
                        return Err(Error::at(
                            w.span.clone(),
                            "duplicate `weights` line",
                            "second `weights` line",
                        )
                        .with_label(first.clone(), "first `weights` line here")
                        .with_help("a model has exactly one `weights` line"));
                    }
                    let (source, span) = match &w.source {
                        WeightsSpec::File { path, span } => {
                            (WeightsSource::File(path.clone()), span.clone())
                        }
                        WeightsSpec::Random { seed, span } => {
                            let Some(seed) = seed.as_u64() else {
                                return Err(Error::at(
                                    span.clone(),
                                    format!(
                                        "the seed must be a non-negative integer, found `{seed}`"
                                    ),
                                    "negative seed",
                                ));
                            };
                            (WeightsSource::Random { seed }, span.clone())
                        }
                    };
                    weights = Some((source, span, w.span.clone()));
                }
                Item::Input(input) => self.input(input)?,
                Item::Binding(b) => self.binding(b)?,
                Item::Output(o) => outputs.extend(o.names.iter()),
            }
        }
        let Some((weights, weights_span, _)) = weights else {
            return Err(Error::at(
                model.name.span.clone(),
                format!("model `{}` has no `weights` line", model.name.name),
                "in this model",
            )
            .with_help("add `weights \"file.safetensors\"` or `weights random(seed = 0)`"));
        };
        if self.inputs.is_empty() {
            return Err(Error::at(
                model.name.span.clone(),
                format!("model `{}` has no `input`", model.name.name),
                "in this model",
            )
            .with_help("declare an input, e.g. `input x: f32[1, 3, 224, 224]`"));
        }
        if outputs.is_empty() {
            return Err(Error::at(
                model.name.span.clone(),
                format!("model `{}` has no `output`", model.name.name),
                "in this model",
            )
            .with_help("name the model's results, e.g. `output y`"));
        }
        let mut output_ids = Vec::with_capacity(outputs.len());
        for name in outputs {
            match self.defined.get(name.name.as_str()) {
                Some((id, _)) => output_ids.push(*id),
                None => {
                    let mut e = Error::at(
                        name.span.clone(),
                        format!("output `{}` is never defined", name.name),
                        "not defined anywhere in the model",
                    );
                    if let Some(hint) = self.did_you_mean(&name.name) {
                        e = e.with_help(hint);
                    }
                    return Err(e);
                }
            }
        }
        Ok(Lowered {
            graph: Graph {
                name: model.name.name.clone(),
                weights,
                values: self.values,
                inputs: self.inputs,
                nodes: self.nodes,
                outputs: output_ids,
                params: BTreeMap::new(),
            },
            nodes: self.origins,
            weights_span,
        })
    }

    fn did_you_mean(&self, name: &str) -> Option<String> {
        let close = similar(name, self.defined.keys().copied(), 3);
        (!close.is_empty()).then(|| format!("did you mean {}?", or_list(&close)))
    }

    /// Records a new name, refusing duplicates.
    fn define(&mut self, name: &'m Ident, shape: Shape) -> Result<ValueId, Error> {
        if let Some((_, first)) = self.defined.get(name.name.as_str()) {
            return Err(Error::at(
                name.span.clone(),
                format!("`{}` is defined twice", name.name),
                "defined again here",
            )
            .with_label(first.clone(), "first defined here")
            .with_help("every name is defined once; rename one of them"));
        }
        let id = ValueId(self.values.len());
        self.values.push(Value {
            name: name.name.clone(),
            shape,
        });
        self.defined
            .insert(name.name.as_str(), (id, name.span.clone()));
        Ok(id)
    }

    fn input(&mut self, input: &'m ast::InputItem) -> Result<(), Error> {
        let mut shape = Vec::with_capacity(input.dims.len());
        for dim in &input.dims {
            match dim.node.as_u64() {
                Some(d) if d > 0 && d <= MAX_ELEMENTS && usize::try_from(d).is_ok() => {
                    shape.push(d as usize)
                }
                Some(d) if d > 0 => {
                    return Err(Error::at(
                        dim.span.clone(),
                        format!(
                            "tensor too large: dimension {d} is more than {MAX_ELEMENTS} elements"
                        ),
                        "too large",
                    ));
                }
                _ => {
                    return Err(Error::at(
                        dim.span.clone(),
                        format!(
                            "a dimension must be a positive integer, found `{}`",
                            dim.node
                        ),
                        "expected a positive integer",
                    ));
                }
            }
        }
        if checked_numel(&shape).is_none() {
            let span = input
                .dims
                .first()
                .map_or(input.span.clone(), |d| d.span.start..input.span.end);
            return Err(Error::at(
                span,
                format!(
                    "tensor too large: f32{} has more than {MAX_ELEMENTS} elements",
                    fmt_shape(&shape)
                ),
                "too many elements",
            ));
        }
        let id = self.define(&input.name, shape)?;
        self.inputs.push(id);
        Ok(())
    }

    fn undefined(&self, arg: &Ident) -> Error {
        let mut e = Error::at(
            arg.span.clone(),
            format!("undefined name `{}`", arg.name),
            "not defined above this line",
        );
        if let Some(later) = self.all_definitions.get(arg.name.as_str()) {
            e = e
                .with_label(later.clone(), "defined here, after its use")
                .with_help("a binding may only use names defined above it; move the definition up");
        } else if let Some(hint) = self.did_you_mean(&arg.name) {
            e = e.with_help(hint);
        }
        e
    }

    fn binding(&mut self, b: &'m Binding) -> Result<(), Error> {
        let kind = lookup_op(&b.op)?;
        let mut inputs = Vec::with_capacity(b.args.len());
        for arg in &b.args {
            match self.defined.get(arg.name.as_str()) {
                Some((id, _)) => inputs.push(*id),
                None => return Err(self.undefined(arg)),
            }
        }
        let attrs = check_attrs(kind, &b.op.name, &b.attrs, &b.args_span)?;
        let op = build_op(kind, &attrs);

        let (lo, hi) = op.arity();
        if b.args.len() < lo || b.args.len() > hi {
            let want = if lo == hi {
                format!("{lo} input{}", if lo == 1 { "" } else { "s" })
            } else {
                format!("at least {lo} input{}", if lo == 1 { "" } else { "s" })
            };
            return Err(Error::at(
                b.args_span.clone(),
                format!("`{}` takes {want}, found {}", b.op.name, b.args.len()),
                format!(
                    "{} input{} given",
                    b.args.len(),
                    if b.args.len() == 1 { "" } else { "s" }
                ),
            ));
        }

        let shapes: Vec<&Shape> = inputs.iter().map(|id| &self.values[id.0].shape).collect();
        let shape_error = |message: String| {
            let mut e = Error::at(b.name.span.clone(), message, "in this binding");
            for (arg, shape) in b.args.iter().zip(&shapes).take(8) {
                e = e.with_label(
                    arg.span.clone(),
                    format!("`{}` is f32{}", arg.name, fmt_shape(shape)),
                );
            }
            e
        };
        if b.op.name == "concat" {
            // Guard the channel sum of the shape rule against overflow.
            let total = shapes.iter().try_fold(0u64, |acc, s| {
                acc.checked_add(s.get(1).copied().unwrap_or(0) as u64)
            });
            if total.is_none_or(|t| t > MAX_ELEMENTS) {
                return Err(shape_error(format!(
                    "tensor too large: `{}` has too many channels",
                    b.name.name
                )));
            }
        }
        let out_shape = op.infer_shape(&shapes).map_err(|msg| {
            if msg.starts_with("tensor too large") {
                shape_error(msg)
            } else {
                shape_error(format!("shape error in `{}`: {msg}", b.name.name))
            }
        })?;
        if checked_numel(&out_shape).is_none() {
            return Err(shape_error(format!(
                "tensor too large: `{}` would be f32{}, more than {MAX_ELEMENTS} elements",
                b.name.name,
                fmt_shape(&out_shape)
            )));
        }
        // `param_specs` multiplies channel and kernel sizes; make sure that cannot overflow
        // and that the parameter tensors stay within the size limit.
        let param_bound = match &op {
            Op::Conv2d(c) => {
                checked_numel(&[c.out_channels, shapes[0][1], c.kernel[0], c.kernel[1]])
            }
            Op::Dense { out_features, .. } => checked_numel(&[*out_features, shapes[0][1]]),
            _ => Some(0),
        };
        if param_bound.is_none() {
            return Err(shape_error(format!(
                "tensor too large: the parameters of `{}` would have more than {MAX_ELEMENTS} elements",
                b.name.name
            )));
        }
        let specs = op.param_specs(&shapes);
        let (params, params_span) = if specs.is_empty() {
            (None, None)
        } else {
            let written = b.attrs.iter().find(|a| a.key.name == "params");
            let prefix = attrs.string("params").unwrap_or(&b.name.name).to_string();
            (Some(prefix), written.map(|a| a.value.span.clone()))
        };
        let output = self.define(&b.name, out_shape)?;
        self.nodes.push(Node {
            op,
            inputs,
            output,
            params,
        });
        self.origins.push(NodeOrigin {
            name_span: b.name.span.clone(),
            params_span,
        });
        Ok(())
    }
}

fn lookup_op(op: &Ident) -> Result<OpKind, Error> {
    if let Some((_, kind)) = OPERATORS.iter().find(|(name, _)| *name == op.name) {
        return Ok(*kind);
    }
    let close = similar(&op.name, OPERATORS.iter().map(|(n, _)| *n), 3);
    let help = if close.is_empty() {
        let all: Vec<&str> = OPERATORS.iter().map(|(n, _)| *n).collect();
        format!("the operators are {}", all.join(", "))
    } else {
        format!("did you mean {}?", or_list(&close))
    };
    Err(Error::at(
        op.span.clone(),
        format!("unknown operator `{}`", crate::parser::shorten(&op.name)),
        "not an operator",
    )
    .with_help(help))
}

/// Checks every attribute against the operator's table: known, not repeated, of the right
/// type, and all required ones present.
fn check_attrs(
    kind: OpKind,
    op_name: &str,
    attrs: &[Attr],
    args_span: &Span,
) -> Result<Attrs, Error> {
    let specs = attr_specs(kind);
    let mut values = HashMap::new();
    let mut seen: HashMap<&str, &Span> = HashMap::new();
    for attr in attrs {
        let key = attr.key.name.as_str();
        let Some(spec) = specs.iter().find(|s| s.name == key) else {
            let help = if specs.is_empty() {
                format!("`{op_name}` takes no attributes")
            } else {
                let names: Vec<&str> = specs.iter().map(|s| s.name).collect();
                format!("valid attributes of `{op_name}`: {}", names.join(", "))
            };
            return Err(Error::at(
                attr.key.span.clone(),
                format!(
                    "unknown attribute `{}` for `{op_name}`",
                    crate::parser::shorten(key)
                ),
                "unknown attribute",
            )
            .with_help(help));
        };
        if let Some(first) = seen.insert(spec.name, &attr.key.span) {
            return Err(Error::at(
                attr.key.span.clone(),
                format!("duplicate attribute `{key}`"),
                "given again here",
            )
            .with_label(first.clone(), "first given here"));
        }
        values.insert(spec.name, convert(spec, &attr.value)?);
    }
    for spec in specs.iter().filter(|s| s.required) {
        if !values.contains_key(spec.name) {
            let example = match spec.ty {
                T::Pair => "3",
                T::Pad => "1",
                _ => "16",
            };
            return Err(Error::at(
                args_span.clone(),
                format!(
                    "`{op_name}` is missing the required attribute `{}`",
                    spec.name
                ),
                format!("`{}` not given", spec.name),
            )
            .with_help(format!("add `{} = {example}`", spec.name)));
        }
    }
    Ok(Attrs { values })
}

/// What an attribute type accepts, for messages.
fn expectation(ty: AttrType) -> &'static str {
    match ty {
        T::Int => "an integer",
        T::Float => "a number",
        T::Bool => "`true` or `false`",
        T::Str => "a string",
        T::Pair => "an integer or a list `[h, w]`",
        T::Pad => "an integer or a list `[h, w]` or `[top, left, bottom, right]`",
    }
}

fn convert(spec: &AttrSpec, value: &Spanned<ast::Value>) -> Result<AttrValue, Error> {
    let name = spec.name;
    let mismatch = || {
        Error::at(
            value.span.clone(),
            format!(
                "`{name}` expects {}, found {}",
                expectation(spec.ty),
                value.node.describe()
            ),
            format!("expected {}", expectation(spec.ty)),
        )
    };
    let size = |int: &IntLit, span: &Span| -> Result<usize, Error> {
        match int.as_u64() {
            // MAX_ATTR_VALUE fits in a 32-bit usize.
            Some(v) if v <= MAX_ATTR_VALUE => Ok(v as usize),
            Some(v) => Err(Error::at(
                span.clone(),
                format!("`{name}` value {v} is too large (the maximum is {MAX_ATTR_VALUE})"),
                "too large",
            )),
            None => Err(Error::at(
                span.clone(),
                format!("`{name}` expects a non-negative integer, found `{int}`"),
                "negative",
            )),
        }
    };
    let list_ints = |items: &[Spanned<Number>]| -> Result<Vec<usize>, Error> {
        items
            .iter()
            .map(|item| match &item.node {
                Number::Int(i) => size(i, &item.span),
                Number::Float(_, text) => Err(Error::at(
                    item.span.clone(),
                    format!("`{name}` expects integers, found float `{text}`"),
                    "expected an integer",
                )),
            })
            .collect()
    };
    use ast::Value as V;
    match (spec.ty, &value.node) {
        (T::Int, V::Int(i)) => size(i, &value.span).map(AttrValue::Int),
        (T::Float, V::Int(i)) => Ok(AttrValue::Float(i.as_f64())),
        (T::Float, V::Float(f, _)) => Ok(AttrValue::Float(*f)),
        (T::Bool, V::Bool(b)) => Ok(AttrValue::Bool(*b)),
        (T::Str, V::Str(s)) => {
            if s.is_empty() {
                Err(Error::at(
                    value.span.clone(),
                    format!("`{name}` must not be empty"),
                    "empty string",
                ))
            } else {
                Ok(AttrValue::Str(s.clone()))
            }
        }
        (T::Pair | T::Pad, V::Int(i)) => {
            let n = size(i, &value.span)?;
            Ok(if spec.ty == T::Pair {
                AttrValue::Pair([n, n])
            } else {
                AttrValue::Pad([n; 4])
            })
        }
        (T::Pair | T::Pad, V::List(items)) => {
            let v = list_ints(items)?;
            match (spec.ty, v.as_slice()) {
                (T::Pair, &[h, w]) => Ok(AttrValue::Pair([h, w])),
                (T::Pad, &[h, w]) => Ok(AttrValue::Pad([h, w, h, w])),
                (T::Pad, &[t, l, b, r]) => Ok(AttrValue::Pad([t, l, b, r])),
                _ => Err(mismatch()),
            }
        }
        _ => Err(mismatch()),
    }
}

/// The operator with its attributes, defaults as in docs/language.md.
fn build_op(kind: OpKind, a: &Attrs) -> Op {
    let pool = |a: &Attrs, count_include_pad: bool| {
        let kernel = a.pair("kernel", [1, 1]);
        Pool2d {
            kernel,
            stride: a.pair("stride", kernel),
            pad: a.pad("pad", [0; 4]),
            ceil_mode: a.bool("ceil_mode", false),
            count_include_pad,
        }
    };
    match kind {
        OpKind::Conv2d => Op::Conv2d(Conv2d {
            out_channels: a.int("out", 0),
            kernel: a.pair("kernel", [1, 1]),
            stride: a.pair("stride", [1, 1]),
            pad: a.pad("pad", [0; 4]),
            dilation: a.pair("dilation", [1, 1]),
            groups: a.int("groups", 1),
            bias: a.bool("bias", true),
            pad_fill: a.bool("pad_fill", false),
        }),
        OpKind::Dense => Op::Dense {
            out_features: a.int("out", 0),
            bias: a.bool("bias", true),
        },
        OpKind::BatchNorm => Op::BatchNorm {
            eps: a.float("eps", 1e-5),
        },
        OpKind::Affine => Op::Affine,
        OpKind::Relu => Op::Activation(Activation::Relu),
        OpKind::Relu6 => Op::Activation(Activation::Relu6),
        OpKind::Sigmoid => Op::Activation(Activation::Sigmoid),
        OpKind::Silu => Op::Activation(Activation::Silu),
        OpKind::HardSwish => Op::Activation(Activation::HardSwish),
        OpKind::HardSigmoid => Op::Activation(Activation::HardSigmoid),
        OpKind::Tanh => Op::Activation(Activation::Tanh),
        OpKind::LeakyRelu => Op::Activation(Activation::LeakyRelu {
            alpha: a.float("alpha", 0.01),
        }),
        OpKind::Clip => Op::Activation(Activation::Clip {
            min: a.float("min", f64::NEG_INFINITY),
            max: a.float("max", f64::INFINITY),
        }),
        OpKind::Add => Op::Add,
        OpKind::Mul => Op::Mul,
        OpKind::Concat => Op::Concat,
        // `count_include_pad` means nothing for max pooling; it is kept false there.
        OpKind::MaxPool => Op::MaxPool(pool(a, false)),
        OpKind::AvgPool => Op::AvgPool(pool(a, a.bool("count_include_pad", true))),
        OpKind::GlobalAvgPool => Op::GlobalAvgPool,
        OpKind::Pad => Op::Pad {
            pads: a.pad("pads", [0; 4]),
            value: a.float("value", 0.0),
            fill: a.bool("pad_fill", false),
        },
        OpKind::Flatten => Op::Flatten,
        OpKind::Identity => Op::Identity,
        OpKind::Dropout => Op::Dropout,
        OpKind::Softmax => Op::Softmax,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_works() {
        assert_eq!(edit_distance("conv2d", "conv3d"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn similar_ranks_closest_first() {
        let names = ["c1.weight", "c1.bias", "c2.weight", "zzz"];
        assert_eq!(
            similar("c1.weigth", names.iter().copied(), 5),
            vec!["c1.weight", "c2.weight"]
        );
    }

    #[test]
    fn every_operator_has_a_table_entry() {
        for (name, kind) in OPERATORS {
            let op = build_op(
                *kind,
                &Attrs {
                    values: HashMap::new(),
                },
            );
            assert_eq!(op.name(), *name);
        }
    }
}
