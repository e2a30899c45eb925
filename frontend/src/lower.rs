//! From syntax tree to Graph IR: name resolution, attribute checking with the defaults of
//! docs/language.md, and shape inference through [`Op::infer_shape`].

use std::collections::{BTreeMap, HashMap};

use bnc_ir::optable::{AttrDefault, AttrKind};
use bnc_ir::{Graph, Node, Op, OpKind, Shape, Value, ValueId, WeightsSource};

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

/// The type of an attribute value: the table's kinds plus the string of `params`.
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
    /// A number or `[h, w]` of numbers.
    FloatPair,
    /// One of these words, as a string.
    Choice(&'static [&'static str]),
}

struct AttrSpec {
    name: &'static str,
    ty: AttrType,
    required: bool,
}

use AttrType as T;

/// The attributes an operator accepts: the table's, then `params` if it has parameters.
fn attr_specs(kind: OpKind) -> Vec<AttrSpec> {
    let mut specs: Vec<AttrSpec> = kind
        .info()
        .attrs
        .iter()
        .map(|a| AttrSpec {
            name: a.name,
            ty: match a.kind {
                AttrKind::Int => T::Int,
                AttrKind::Float => T::Float,
                AttrKind::Bool => T::Bool,
                AttrKind::Pair => T::Pair,
                AttrKind::Pad => T::Pad,
                AttrKind::FloatPair => T::FloatPair,
                AttrKind::Choice(words) => T::Choice(words),
            },
            required: a.default == AttrDefault::Required,
        })
        .collect();
    if kind.has_params() {
        specs.push(AttrSpec {
            name: "params",
            ty: T::Str,
            required: false,
        });
    }
    specs
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
    FloatPair([f64; 2]),
    Choice(&'static str),
}

/// The attributes of one call, checked against the operator's table.
struct Attrs {
    values: HashMap<&'static str, AttrValue>,
}

impl Attrs {
    /// A written attribute as the IR's value (`params` is not one).
    fn get(&self, name: &str) -> Option<bnc_ir::AttrValue> {
        use bnc_ir::AttrValue as V;
        match self.values.get(name)? {
            AttrValue::Int(v) => Some(V::Int(*v)),
            AttrValue::Float(v) => Some(V::Float(*v)),
            AttrValue::Bool(v) => Some(V::Bool(*v)),
            AttrValue::Pair(v) => Some(V::Pair(*v)),
            AttrValue::Pad(v) => Some(V::Pad(*v)),
            AttrValue::FloatPair(v) => Some(V::FloatPair(*v)),
            AttrValue::Choice(v) => Some(V::Choice(v)),
            AttrValue::Str(_) => None,
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
        let op = Op::from_attrs(kind, |name| attrs.get(name));

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
        // (A grouped conv is bounded as if it were not grouped.)
        let param_bound = if let Op::Conv2d(c) = &op {
            checked_numel(&[c.out_channels, shapes[0][1], c.kernel[0], c.kernel[1]])
        } else {
            op.weight_shape(shapes[0])
                .map_or(Some(0), |w| checked_numel(&w))
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
    if let Some(kind) = OpKind::from_name(&op.name) {
        return Ok(kind);
    }
    let names = || OpKind::ALL.iter().map(|k| k.info().name);
    let close = similar(&op.name, names(), 3);
    let help = if close.is_empty() {
        let all: Vec<&str> = names().collect();
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
fn expectation(ty: AttrType) -> String {
    let words = match ty {
        T::Choice(words) => words,
        _ => return simple_expectation(ty).to_string(),
    };
    let quoted: Vec<String> = words.iter().map(|w| format!("\"{w}\"")).collect();
    format!("one of {}", quoted.join(", "))
}

fn simple_expectation(ty: AttrType) -> &'static str {
    match ty {
        T::Int => "an integer",
        T::Float => "a number",
        T::Bool => "`true` or `false`",
        T::Str => "a string",
        T::Pair => "an integer or a list `[h, w]`",
        T::Pad => "an integer or a list `[h, w]` or `[top, left, bottom, right]`",
        T::FloatPair => "a number or a list `[h, w]` of numbers",
        T::Choice(_) => "one of a list of words",
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
        (T::Choice(words), V::Str(s)) => words
            .iter()
            .find(|w| **w == s.as_str())
            .map(|w| AttrValue::Choice(w))
            .ok_or_else(mismatch),
        (T::FloatPair, V::Int(i)) => Ok(AttrValue::FloatPair([i.as_f64(); 2])),
        (T::FloatPair, V::Float(f, _)) => Ok(AttrValue::FloatPair([*f; 2])),
        (T::FloatPair, V::List(items)) => {
            let v: Vec<f64> = items
                .iter()
                .map(|item| match &item.node {
                    Number::Int(i) => i.as_f64(),
                    Number::Float(f, _) => *f,
                })
                .collect();
            match v.as_slice() {
                &[h, w] => Ok(AttrValue::FloatPair([h, w])),
                _ => Err(mismatch()),
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
}
