//! ONNX graph → bnc graph: walks the nodes in order, folds constant (shape) computations,
//! maps each operator to the IR, and collects every node it cannot map.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use bnc_ir::{
    Activation, Conv2d, ConvTranspose2d, Graph, Node, Op, OpKind, Pool2d, Shape, Tensor, ValueId,
    WeightsSource,
};

use super::proto::{AttributeProto, GraphProto, NodeProto, TensorProto};
use super::tensor::{self, Const};
use super::{EVALUATED_AT_IMPORT, OnnxOptions, names};

/// What an ONNX value name stands for while importing.
#[derive(Clone, Debug)]
enum Val {
    /// Known at import time (an initializer, a Constant, or a folded shape computation).
    Const(Const),
    /// A tensor computed at run time: a value of the bnc graph.
    Dyn(ValueId),
    /// Produced by a node that could not be imported (already reported); `true` when it
    /// would have been a runtime tensor, `false` for a constant.
    Poison(bool),
    /// The first steps of a channel shuffle of the runtime tensor `x` (`[N, C, H, W]`):
    /// Reshape to `[N, groups, C/groups, H, W]`, and with `transposed` the Transpose
    /// `[0, 2, 1, 3, 4]` after it. Only the rest of the pattern may read it.
    Grouped {
        x: ValueId,
        groups: usize,
        transposed: bool,
    },
    /// The NHWC view (Transpose `[0, 2, 3, 1]`) of the NCHW runtime tensor `x`. Only
    /// operators acting on the last axis read it (LayerNormalization over it, MatMul by a
    /// constant, per-last-axis constants, GELU and plain activations), imported as their
    /// NCHW equivalents on `x`; Transpose `[0, 3, 1, 2]` gives `x` back.
    Nhwc(ValueId),
    /// A step of the exact GELU `x·(1 + erf(x/√2))/2` of the runtime tensor `x` (its NHWC
    /// view when `nhwc`). Only the next step of the pattern may read it.
    Gelu {
        x: ValueId,
        nhwc: bool,
        stage: GeluStage,
    },
}

impl Val {
    /// Whether it is computed at run time (or part of a pattern on a runtime tensor).
    fn is_runtime(&self) -> bool {
        matches!(
            self,
            Val::Dyn(_) | Val::Grouped { .. } | Val::Nhwc(_) | Val::Gelu { .. }
        )
    }
}

/// How far a GELU pattern has got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GeluStage {
    /// `erf(x/√2)`.
    Erf,
    /// `1 + erf(x/√2)`.
    OnePlus,
    /// `x·(1 + erf(x/√2))`.
    Times,
    /// `(1 + erf(x/√2))/2`.
    Half,
}

/// A node that could not be imported, and why.
pub(crate) struct Failure {
    pub node: String,
    pub op_type: String,
    pub reason: String,
}

pub(crate) struct Importer<'a> {
    opset: i64,
    base_dir: &'a Path,
    graph: Graph,
    env: HashMap<String, Val>,
    /// Initializer names: their names give parameter prefixes.
    initializers: HashSet<String>,
    /// How many node inputs and graph outputs read each ONNX name.
    consumers: HashMap<String, usize>,
    /// The node producing each bnc value.
    producer: HashMap<ValueId, usize>,
    value_names: HashSet<String>,
    prefixes: HashSet<String>,
    pub failures: Vec<Failure>,
}

type R<T> = Result<T, String>;

impl<'a> Importer<'a> {
    pub fn new(model_name: String, weights_file: String, opset: i64, base_dir: &'a Path) -> Self {
        Importer {
            opset,
            base_dir,
            graph: Graph {
                name: model_name,
                weights: WeightsSource::File(weights_file),
                values: Vec::new(),
                inputs: Vec::new(),
                nodes: Vec::new(),
                outputs: Vec::new(),
                params: BTreeMap::new(),
            },
            env: HashMap::new(),
            initializers: HashSet::new(),
            consumers: HashMap::new(),
            producer: HashMap::new(),
            value_names: HashSet::new(),
            prefixes: HashSet::new(),
            failures: Vec::new(),
        }
    }

    /// Imports `g`. Problems that stop the import at once (a corrupt initializer, a dynamic
    /// input shape) are returned as `Err`; nodes that cannot be mapped are collected in
    /// `failures` and the walk goes on, so every one of them is reported.
    pub fn run(mut self, g: &GraphProto, options: &OnnxOptions) -> R<(Graph, Vec<Failure>)> {
        for t in &g.initializer {
            let c = tensor::decode(t, self.base_dir)
                .map_err(|e| format!("initializer `{}` {e}", t.name()))?;
            self.initializers.insert(t.name().to_string());
            self.env.insert(t.name().to_string(), Val::Const(c));
        }
        for n in &g.node {
            for i in &n.input {
                *self.consumers.entry(i.clone()).or_default() += 1;
            }
        }
        for o in &g.output {
            *self.consumers.entry(o.name().to_string()).or_default() += 1;
        }
        self.inputs(g, options)?;
        for n in order(g)? {
            self.node(n);
        }
        self.outputs(g)?;
        let mut graph = self.graph;
        graph.remove_dead();
        Ok((graph, self.failures))
    }

    fn inputs(&mut self, g: &GraphProto, options: &OnnxOptions) -> R<()> {
        let mut overrides: BTreeMap<&str, &Vec<usize>> = options
            .input_shapes
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        if let Some(name) = overrides
            .keys()
            .find(|k| !g.input.iter().any(|vi| vi.name() == **k) || self.env.contains_key(**k))
        {
            return Err(format!(
                "--input-shape names `{name}`, which is not an input of the model"
            ));
        }
        for vi in &g.input {
            let name = vi.name();
            if self.env.contains_key(name) {
                continue; // an initializer listed as an input (old exporters)
            }
            let tt = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
                Some(super::proto::type_proto::Value::TensorType(tt)) => tt,
                _ => return Err(format!("graph input `{name}` is not a tensor")),
            };
            if tt.elem_type() != 1 {
                let ty = super::proto::tensor_proto::DataType::try_from(tt.elem_type())
                    .map(|d| d.as_str_name().to_string())
                    .unwrap_or_else(|_| tt.elem_type().to_string());
                return Err(format!(
                    "graph input `{name}` has element type {ty}; bnc takes float32 inputs only"
                ));
            }
            let shape: Shape = if let Some(fixed) = overrides.remove(name) {
                if let Some(s) = &tt.shape
                    && s.dim.len() != fixed.len()
                {
                    return Err(format!(
                        "--input-shape gives `{name}` {} dimension(s), but the model's input has {}",
                        fixed.len(),
                        s.dim.len()
                    ));
                }
                fixed.clone()
            } else {
                let dims = tt
                    .shape
                    .as_ref()
                    .ok_or_else(|| format!("graph input `{name}` has no shape"))?;
                let mut shape = Vec::new();
                for (axis, d) in dims.dim.iter().enumerate() {
                    use super::proto::tensor_shape_proto::dimension::Value as D;
                    match &d.value {
                        Some(D::DimValue(v)) if *v > 0 => shape.push(*v as usize),
                        other => {
                            let what = match other {
                                Some(D::DimParam(p)) if !p.is_empty() => format!("`{p}`"),
                                _ => "of unknown size".to_string(),
                            };
                            let example: Vec<String> = dims
                                .dim
                                .iter()
                                .map(|d| match &d.value {
                                    Some(D::DimValue(v)) if *v > 0 => v.to_string(),
                                    _ => "1".to_string(),
                                })
                                .collect();
                            return Err(format!(
                                "graph input `{name}` has a dynamic dimension {what} (axis {axis}); bnc compiles for static shapes: export the model with a fixed batch size, or fix it with --input-shape {name}={}",
                                example.join(",")
                            ));
                        }
                    }
                }
                shape
            };
            bnc_ir::limits::check_shape(&shape)
                .map_err(|e| format!("graph input `{name}`: {e}"))?;
            let vname = self.fresh_value(name);
            let id = self.graph.add_value(vname, shape);
            self.graph.inputs.push(id);
            self.env.insert(name.to_string(), Val::Dyn(id));
        }
        if self.graph.inputs.is_empty() {
            return Err("the model has no runtime input".into());
        }
        Ok(())
    }

    fn outputs(&mut self, g: &GraphProto) -> R<()> {
        for o in &g.output {
            let name = o.name();
            let id = match self.env.get(name) {
                Some(Val::Dyn(id)) => *id,
                Some(Val::Poison(_)) => continue,
                Some(Val::Grouped { .. }) => {
                    return Err(format!(
                        "graph output `{name}` is a 5-D channel-shuffle intermediate; bnc needs [N, C, H, W] or [N, C] outputs"
                    ));
                }
                Some(Val::Nhwc(_)) => {
                    return Err(format!(
                        "graph output `{name}` is the NHWC view (Transpose [0, 2, 3, 1]) of a tensor; bnc needs [N, C, H, W] or [N, C] outputs (transpose it back with [0, 3, 1, 2])"
                    ));
                }
                Some(Val::Gelu { .. }) => {
                    return Err(format!(
                        "graph output `{name}` is part of a GELU pattern x·(1 + erf(x/√2))/2 that is not completed"
                    ));
                }
                Some(Val::Const(_)) => {
                    return Err(format!(
                        "graph output `{name}` is a constant; bnc needs outputs computed from the inputs"
                    ));
                }
                None => return Err(format!("graph output `{name}` is never computed")),
            };
            let want = names::value_name(name);
            let current = self.graph.value(id).name.clone();
            let id = if current == want {
                id
            } else if !self.graph.inputs.contains(&id)
                && !self.graph.outputs.contains(&id)
                && !self.value_names.contains(&want)
            {
                self.value_names.remove(&current);
                self.value_names.insert(want.clone());
                self.graph.values[id.0].name = want;
                id
            } else {
                self.emit(name, Op::Identity, vec![id], None)?
            };
            if self.graph.outputs.contains(&id) {
                let copy = self.emit(name, Op::Identity, vec![id], None)?;
                self.graph.outputs.push(copy);
            } else {
                self.graph.outputs.push(id);
            }
        }
        if self.graph.outputs.is_empty() && self.failures.is_empty() {
            return Err("the model has no outputs".into());
        }
        Ok(())
    }

    fn fresh_value(&mut self, onnx_name: &str) -> String {
        let base = names::value_name(onnx_name);
        let name = names::fresh(&base, &self.value_names);
        self.value_names.insert(name.clone());
        name
    }

    /// A parameter prefix for a node: the initializer's own name minus `.suffix` when it is
    /// an identifier (`layer1.0.conv1.weight` → `layer1.0.conv1`), else a sanitised name.
    fn prefix(&mut self, param: Option<&str>, suffix: &str, node_name: &str) -> String {
        let from_param = param
            .filter(|p| self.initializers.contains(*p))
            .and_then(|p| p.strip_suffix(&format!(".{suffix}")))
            .filter(|p| names::is_identifier(p) && !self.prefixes.contains(*p))
            .map(str::to_string);
        let name = from_param.unwrap_or_else(|| {
            let base =
                names::identifier(param.filter(|_| node_name.is_empty()).unwrap_or(node_name));
            names::fresh(&base, &self.prefixes)
        });
        self.prefixes.insert(name.clone());
        name
    }

    /// Adds a node computing the ONNX value `onnx_out`.
    fn emit(
        &mut self,
        onnx_out: &str,
        op: Op,
        inputs: Vec<ValueId>,
        params: Option<(String, Vec<(&str, Tensor)>)>,
    ) -> R<ValueId> {
        let shapes: Vec<&Shape> = inputs.iter().map(|&i| self.graph.shape(i)).collect();
        let shape = op.infer_shape(&shapes)?;
        let name = self.fresh_value(onnx_out);
        let id = self.graph.add_value(name, shape);
        let prefix = params.map(|(prefix, tensors)| {
            for (suffix, t) in tensors {
                self.graph.params.insert(format!("{prefix}.{suffix}"), t);
            }
            prefix
        });
        self.producer.insert(id, self.graph.nodes.len());
        self.graph.nodes.push(Node {
            op,
            inputs,
            output: id,
            params: prefix,
        });
        Ok(id)
    }

    fn node(&mut self, n: &NodeProto) {
        let op_type = n.op_type().to_string();
        let name = if n.name().is_empty() {
            format!(
                "{}#{}",
                op_type,
                n.output.first().map_or("", |s| s.as_str())
            )
        } else {
            n.name().to_string()
        };
        let poison = |this: &mut Self, runtime: bool| {
            for o in &n.output {
                this.env.insert(o.clone(), Val::Poison(runtime));
            }
        };
        let known =
            OpKind::is_onnx_mapped(&op_type) || EVALUATED_AT_IMPORT.contains(&op_type.as_str());
        let mut inputs: Vec<Option<Val>> = Vec::with_capacity(n.input.len());
        let mut missing = None;
        for i in &n.input {
            if i.is_empty() {
                inputs.push(None);
            } else {
                match self.env.get(i) {
                    Some(v) => inputs.push(Some(v.clone())),
                    None => {
                        missing = Some(i.clone());
                        inputs.push(Some(Val::Poison(true)));
                    }
                }
            }
        }
        let domain_ok = matches!(n.domain(), "" | "ai.onnx");
        let runtime_in = inputs.iter().any(|v| {
            matches!(
                v,
                Some(Val::Dyn(_) | Val::Grouped { .. } | Val::Poison(true))
            ) || v.as_ref().is_some_and(Val::is_runtime)
        });
        let fail = |this: &mut Self, reason: String| {
            this.failures.push(Failure {
                node: name.clone(),
                op_type: if domain_ok {
                    op_type.clone()
                } else {
                    format!("{}:{}", n.domain(), op_type)
                },
                reason,
            });
            poison(this, runtime_in);
        };
        if let Some(m) = missing {
            return fail(
                self,
                format!("reads `{m}`, which no node or initializer defines"),
            );
        }
        if !domain_ok {
            return fail(
                self,
                format!("operator domain `{}` is not supported", n.domain()),
            );
        }
        let poisoned = inputs.iter().any(|v| matches!(v, Some(Val::Poison(_))));
        if poisoned {
            // Downstream of a node already reported: report only what could not be imported
            // in any case, so that the list of unsupported operators is complete.
            if !known {
                return fail(self, "operator not supported".into());
            }
            if runtime_in && !OpKind::is_onnx_mapped(&op_type) && op_type != "Shape" {
                return fail(
                    self,
                    format!(
                        "bnc evaluates `{op_type}` only on constants (shape computations); here it reads a runtime tensor"
                    ),
                );
            }
            return poison(self, runtime_in && op_type != "Shape");
        }
        let all_const = inputs
            .iter()
            .all(|v| !v.as_ref().is_some_and(Val::is_runtime));
        let result = if EVALUATED_AT_IMPORT.contains(&op_type.as_str())
            && (all_const || op_type == "Shape")
        {
            self.fold(n, &inputs).map(|c| vec![Val::Const(c)])
        } else if OpKind::is_onnx_mapped(&op_type) {
            if all_const {
                Err("all inputs are constants, but bnc folds this operator only as part of a graph on runtime tensors".to_string())
            } else {
                self.map(n, &name, &inputs)
            }
        } else if EVALUATED_AT_IMPORT.contains(&op_type.as_str()) {
            Err(format!(
                "bnc evaluates `{op_type}` only on constants (shape computations); here it reads a runtime tensor"
            ))
        } else {
            Err("operator not supported".into())
        };
        match result {
            Ok(vals) => {
                for (o, v) in n.output.iter().zip(vals) {
                    if !o.is_empty() {
                        self.env.insert(o.clone(), v);
                    }
                }
                // Extra outputs (MaxPool indices, Dropout mask, BN training stats) must be
                // unused.
                for o in n.output.iter().skip(1) {
                    if !o.is_empty() && !self.env.contains_key(o) {
                        if self.consumers.get(o).copied().unwrap_or(0) > 0 {
                            return fail(
                                self,
                                format!(
                                    "its output `{o}` is used, but bnc computes only the first output"
                                ),
                            );
                        }
                        self.env.insert(o.clone(), Val::Poison(false));
                    }
                }
            }
            Err(reason) => fail(self, reason),
        }
    }

    // ----- constant folding -------------------------------------------------------------

    fn fold(&mut self, n: &NodeProto, inputs: &[Option<Val>]) -> R<Const> {
        let a = Attrs(&n.attribute);
        let c = |i: usize| -> R<&Const> {
            match inputs.get(i) {
                Some(Some(Val::Const(c))) => Ok(c),
                _ => Err(format!("input {i} is missing")),
            }
        };
        let opt = |i: usize| -> Option<&Const> {
            match inputs.get(i) {
                Some(Some(Val::Const(c))) => Some(c),
                _ => None,
            }
        };
        match n.op_type() {
            "Constant" => {
                if let Some(t) = a.tensor("value") {
                    tensor::decode(t, self.base_dir)
                } else if let Some(f) = a.float("value_float") {
                    Ok(Const::floats(vec![], vec![f]))
                } else if let Some(v) = a.0.iter().find(|x| x.name() == "value_floats") {
                    Ok(Const::floats(vec![v.floats.len()], v.floats.clone()))
                } else if let Some(i) = a.int("value_int") {
                    Ok(Const::ints(vec![], vec![i]))
                } else if let Some(v) = a.ints("value_ints") {
                    Ok(Const::ints(vec![v.len()], v))
                } else {
                    Err("Constant without a numeric value".into())
                }
            }
            "Shape" => {
                let shape: Vec<i64> = match inputs.first().and_then(Option::as_ref) {
                    Some(Val::Dyn(id)) => self.graph.shape(*id).iter().map(|&d| d as i64).collect(),
                    Some(Val::Const(c)) => c.shape.iter().map(|&d| d as i64).collect(),
                    Some(Val::Grouped {
                        x,
                        groups,
                        transposed,
                    }) => grouped_shape(self.graph.shape(*x), *groups, *transposed)
                        .iter()
                        .map(|&d| d as i64)
                        .collect(),
                    _ => return Err("input 0 is missing".into()),
                };
                let r = shape.len() as i64;
                let norm = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
                let start = norm(a.int("start").unwrap_or(0));
                let end = norm(a.int("end").unwrap_or(r));
                let v = shape[start..end.max(start)].to_vec();
                Ok(Const::ints(vec![v.len()], v))
            }
            "Gather" => tensor::gather(c(0)?, c(1)?, a.int("axis").unwrap_or(0)),
            "Unsqueeze" | "Squeeze" => {
                let x = c(0)?;
                let axes = match opt(1) {
                    Some(ax) => Some(ax.to_i64()),
                    None => a.ints("axes"),
                };
                let shape = squeeze_shape(n.op_type(), &x.shape, axes.as_deref())?;
                Ok(Const {
                    shape,
                    data: x.data.clone(),
                })
            }
            "Concat" => {
                let parts: Vec<&Const> = inputs
                    .iter()
                    .map(|v| match v {
                        Some(Val::Const(c)) => Ok(c),
                        _ => Err("Concat input missing".to_string()),
                    })
                    .collect::<R<_>>()?;
                tensor::concat(&parts, a.int("axis").unwrap_or(0))
            }
            "Cast" => {
                let x = c(0)?;
                let to = a.int("to").ok_or("Cast without `to`")?;
                let data = match to {
                    1 | 10 | 11 | 16 => tensor::Data::F(x.to_f32()),
                    9 => tensor::Data::I(x.to_f32().iter().map(|&v| i64::from(v != 0.0)).collect()),
                    2..=7 | 12 | 13 => tensor::Data::I(x.to_i64()),
                    _ => return Err(format!("Cast to type {to} is not supported")),
                };
                Ok(Const {
                    shape: x.shape.clone(),
                    data,
                })
            }
            "Slice" => {
                let x = c(0)?;
                if self.opset < 10 {
                    let starts = a.ints("starts").ok_or("Slice without starts")?;
                    let ends = a.ints("ends").ok_or("Slice without ends")?;
                    let axes = a.ints("axes");
                    tensor::slice(x, &starts, &ends, axes.as_deref(), None)
                } else {
                    let starts = c(1)?.to_i64();
                    let ends = c(2)?.to_i64();
                    let axes = opt(3).map(Const::to_i64);
                    let steps = opt(4).map(Const::to_i64);
                    tensor::slice(x, &starts, &ends, axes.as_deref(), steps.as_deref())
                }
            }
            "Reshape" => {
                let x = c(0)?;
                let spec = c(1)?.to_i64();
                let shape = tensor::reshape_target(&x.shape, &spec, a.int("allowzero") == Some(1))?;
                Ok(Const {
                    shape,
                    data: x.data.clone(),
                })
            }
            "Flatten" => {
                let x = c(0)?;
                let ax = tensor::axis(a.int("axis").unwrap_or(1), x.shape.len(), true)?;
                let shape = vec![
                    x.shape[..ax].iter().product(),
                    x.shape[ax..].iter().product(),
                ];
                Ok(Const {
                    shape,
                    data: x.data.clone(),
                })
            }
            "Identity" => Ok(c(0)?.clone()),
            "Add" | "Sub" | "Mul" | "Div" => tensor::binary(n.op_type(), c(0)?, c(1)?),
            "Transpose" => {
                let x = c(0)?;
                let perm: Vec<usize> = match a.ints("perm") {
                    Some(p) => p
                        .iter()
                        .map(|&v| usize::try_from(v).map_err(|_| "negative perm".to_string()))
                        .collect::<R<_>>()?,
                    None => (0..x.shape.len()).rev().collect(),
                };
                tensor::transpose(x, &perm)
            }
            "ConstantOfShape" => {
                let dims = c(0)?.to_i64();
                let (shape, count) = tensor::checked_numel(&dims)?;
                let value = match a.tensor("value") {
                    Some(t) => tensor::decode(t, self.base_dir)?,
                    None => Const::floats(vec![1], vec![0.0]),
                };
                if value.numel() != 1 {
                    return Err("ConstantOfShape value must have one element".into());
                }
                Ok(match value.data {
                    tensor::Data::F(v) => Const::floats(shape, vec![v[0]; count]),
                    tensor::Data::I(v) => Const::ints(shape, vec![v[0]; count]),
                })
            }
            other => Err(format!("cannot fold `{other}`")),
        }
    }

    // ----- mapping to the IR ------------------------------------------------------------

    fn map(&mut self, n: &NodeProto, name: &str, inputs: &[Option<Val>]) -> R<Vec<Val>> {
        let a = Attrs(&n.attribute);
        let out = n.output.first().map(String::as_str).unwrap_or(name);
        let dynamic = |i: usize| -> R<ValueId> {
            match inputs.get(i) {
                Some(Some(Val::Dyn(id))) => Ok(*id),
                Some(Some(Val::Const(_))) => Err(format!(
                    "input {i} (`{}`) is a constant; bnc needs a runtime tensor there",
                    n.input[i]
                )),
                Some(Some(Val::Grouped { .. })) => Err(grouped_misuse(&n.input[i])),
                Some(Some(Val::Nhwc(_))) => Err(nhwc_misuse(&n.input[i], n.op_type())),
                Some(Some(Val::Gelu { .. })) => Err(gelu_misuse(&n.input[i])),
                _ => Err(format!("input {i} is missing")),
            }
        };
        let constant = |i: usize| -> R<Option<&Const>> {
            match inputs.get(i) {
                Some(Some(Val::Const(c))) => Ok(Some(c)),
                Some(Some(v)) if v.is_runtime() => Err(format!(
                    "input {i} (`{}`) is computed at run time; bnc needs a constant (an initializer) there",
                    n.input[i]
                )),
                _ => Ok(None),
            }
        };
        let input_name = |i: usize| n.input.get(i).map(String::as_str);
        let one = |v: ValueId| Ok(vec![Val::Dyn(v)]);
        let act = |this: &mut Self, act: Activation| -> R<Vec<Val>> {
            let x = dynamic(0)?;
            one(this.emit(out, Op::Activation(act), vec![x], None)?)
        };
        if let Some(result) = self.map_nhwc_gelu(n, name, out, inputs) {
            return result;
        }
        match n.op_type() {
            "Conv" => {
                let x = dynamic(0)?;
                let w = constant(1)?.ok_or("Conv without weights")?;
                let b = constant(2)?;
                let xs = self.graph.shape(x).clone();
                let ConvGeometry {
                    kernel,
                    stride,
                    dilation,
                    groups,
                } = conv_geometry(&a, "convolutions", &xs, w)?;
                if w.shape[1].checked_mul(groups) != Some(xs[1]) {
                    return Err(format!(
                        "weight {:?} with group {groups} does not fit {} input channels",
                        w.shape, xs[1]
                    ));
                }
                let pad = a.pads(&[xs[2], xs[3]], kernel, stride, dilation)?;
                let prefix = self.prefix(input_name(1), "weight", name);
                let tensors = weight_and_bias(w, b, w.shape[0])?;
                let op = Op::Conv2d(Conv2d {
                    out_channels: w.shape[0],
                    kernel,
                    stride,
                    pad,
                    dilation,
                    groups,
                    bias: b.is_some(),
                    pad_fill: false,
                });
                one(self.emit(out, op, vec![x], Some((prefix, tensors)))?)
            }
            "ConvTranspose" => {
                let x = dynamic(0)?;
                let w = constant(1)?.ok_or("ConvTranspose without weights")?;
                let b = constant(2)?;
                let xs = self.graph.shape(x).clone();
                let ConvGeometry {
                    kernel,
                    stride,
                    dilation,
                    groups,
                } = conv_geometry(&a, "transposed convolutions", &xs, w)?;
                // The weight is [C_in, C_out / group, kh, kw].
                if w.shape[0] != xs[1] || !xs[1].is_multiple_of(groups) {
                    return Err(format!(
                        "weight {:?} with group {groups} does not fit {} input channels",
                        w.shape, xs[1]
                    ));
                }
                let out_channels = w.shape[1]
                    .checked_mul(groups)
                    .ok_or("too many output channels")?;
                let output_padding = match a.ints("output_padding") {
                    None => [0, 0],
                    Some(v) if v.len() == 2 && v.iter().all(|&p| p >= 0) => {
                        [v[0] as usize, v[1] as usize]
                    }
                    Some(v) => {
                        return Err(format!(
                            "output_padding {v:?} is not two non-negative numbers"
                        ));
                    }
                };
                let pad = conv_transpose_pads(
                    &a,
                    [xs[2], xs[3]],
                    kernel,
                    stride,
                    dilation,
                    output_padding,
                )?;
                let prefix = self.prefix(input_name(1), "weight", name);
                let tensors = weight_and_bias(w, b, out_channels)?;
                let op = Op::ConvTranspose2d(ConvTranspose2d {
                    out_channels,
                    kernel,
                    stride,
                    pad,
                    output_padding,
                    dilation,
                    groups,
                    bias: b.is_some(),
                });
                one(self.emit(out, op, vec![x], Some((prefix, tensors)))?)
            }
            "Gemm" => {
                let x = dynamic(0)?;
                let b = constant(1)?.ok_or("Gemm without B")?;
                let c = constant(2)?;
                if a.int("transA").unwrap_or(0) != 0 {
                    return Err("transA = 1 is not supported (the input must be [N, K])".into());
                }
                let alpha = a.float("alpha").unwrap_or(1.0);
                let beta = a.float("beta").unwrap_or(1.0);
                let trans_b = a.int("transB").unwrap_or(0) != 0;
                self.dense(
                    out,
                    name,
                    x,
                    b,
                    trans_b,
                    alpha,
                    c.map(|c| (c, beta)),
                    input_name(1),
                )
            }
            "MatMul" => {
                let x = dynamic(0)?;
                let b = constant(1)?.ok_or("MatMul without a constant right-hand side")?;
                self.dense(out, name, x, b, false, 1.0, None, input_name(1))
            }
            "BatchNormalization" => {
                let x = dynamic(0)?;
                if a.int("training_mode").unwrap_or(0) != 0 {
                    return Err("training_mode = 1 is not supported (inference only)".into());
                }
                let xs = self.graph.shape(x).clone();
                if xs.len() != 2 && xs.len() != 4 {
                    return Err(format!(
                        "input shape {xs:?}: bnc's batchnorm takes [N, C] or NCHW"
                    ));
                }
                let c = xs[1];
                let mut tensors = Vec::new();
                for (i, suffix) in [
                    (1, "weight"),
                    (2, "bias"),
                    (3, "running_mean"),
                    (4, "running_var"),
                ] {
                    let t = constant(i)?.ok_or_else(|| format!("{suffix} input is missing"))?;
                    if t.numel() != c {
                        return Err(format!(
                            "{suffix} has {} values for {c} channels",
                            t.numel()
                        ));
                    }
                    tensors.push((suffix, Tensor::new(vec![c], t.to_f32())));
                }
                let eps = f64::from(a.float("epsilon").unwrap_or(1e-5));
                let prefix = self.prefix(input_name(1), "weight", name);
                one(self.emit(out, Op::BatchNorm { eps }, vec![x], Some((prefix, tensors)))?)
            }
            "LeakyRelu" => {
                let alpha = f64::from(a.float("alpha").unwrap_or(0.01));
                act(self, Activation::LeakyRelu { alpha })
            }
            "Clip" => {
                let bound = |v: Option<f64>, default: f64| match v {
                    Some(v) if v.abs() >= f64::from(f32::MAX) => default,
                    Some(v) => v,
                    None => default,
                };
                let (min, max) = if self.opset < 11 {
                    (a.float("min").map(f64::from), a.float("max").map(f64::from))
                } else {
                    let s = |i: usize| -> R<Option<f64>> {
                        match constant(i)? {
                            Some(c) => c
                                .scalar_f64()
                                .map(Some)
                                .ok_or_else(|| format!("Clip input {i} is not a scalar")),
                            None => Ok(None),
                        }
                    };
                    (s(1)?, s(2)?)
                };
                if min.is_some_and(f64::is_nan) || max.is_some_and(f64::is_nan) {
                    return Err("Clip bounds must be numbers, not NaN".into());
                }
                let min = bound(min, f64::NEG_INFINITY);
                let max = bound(max, f64::INFINITY);
                let act_ = if min == 0.0 && max == 6.0 {
                    Activation::Relu6
                } else if min == 0.0 && max == f64::INFINITY {
                    Activation::Relu
                } else {
                    Activation::Clip { min, max }
                };
                act(self, act_)
            }
            "HardSigmoid" => {
                let alpha = f64::from(a.float("alpha").unwrap_or(0.2));
                let beta = f64::from(a.float("beta").unwrap_or(0.5));
                let x = dynamic(0)?;
                if (alpha - 1.0 / 6.0).abs() < 1e-6 && beta == 0.5 {
                    return one(self.emit(
                        out,
                        Op::Activation(Activation::HardSigmoid),
                        vec![x],
                        None,
                    )?);
                }
                // clamp(αx + β, 0, 1) = hardsigmoid(6αx + 6β − 3).
                let xs = self.graph.shape(x).clone();
                if xs.len() != 2 && xs.len() != 4 {
                    return Err(format!(
                        "HardSigmoid with alpha = {alpha}, beta = {beta} on shape {xs:?}: only alpha = 1/6, beta = 0.5 works on any rank"
                    ));
                }
                let c = xs[1];
                let scale = vec![(6.0 * alpha) as f32; c];
                let shift = vec![(6.0 * beta - 3.0) as f32; c];
                let y = self.affine(&format!("{out}_scaled"), name, x, scale, shift)?;
                one(self.emit(out, Op::Activation(Activation::HardSigmoid), vec![y], None)?)
            }
            "Add" | "Sub" | "Mul" | "Div" => self.arith(n, out, name, inputs),
            "Concat" => {
                let ids: Vec<ValueId> = (0..inputs.len()).map(dynamic).collect::<R<_>>()?;
                let rank = self.graph.shape(ids[0]).len();
                let ax = tensor::axis(a.int("axis").ok_or("Concat without axis")?, rank, false)?;
                if ax != 1 {
                    return Err(format!(
                        "concatenation along axis {ax}; bnc concatenates channels (axis 1) only"
                    ));
                }
                one(self.emit(out, Op::Concat, ids, None)?)
            }
            "MaxPool" | "AveragePool" => {
                let x = dynamic(0)?;
                let xs = self.graph.shape(x).clone();
                if xs.len() != 4 {
                    return Err(format!(
                        "only 2-D pooling (NCHW input) is supported; input {xs:?}"
                    ));
                }
                let k = a.ints("kernel_shape").ok_or("no kernel_shape")?;
                if k.len() != 2 || k.iter().any(|&v| v < 1) {
                    return Err(format!("kernel_shape {k:?} is not a 2-D kernel"));
                }
                let kernel = [k[0] as usize, k[1] as usize];
                let stride = a.pair("strides", 1)?;
                if a.pair("dilations", 1)? != [1, 1] {
                    return Err("pooling with dilations is not supported".into());
                }
                let pad = a.pads(&[xs[2], xs[3]], kernel, stride, [1, 1])?;
                let pool = Pool2d {
                    kernel,
                    stride,
                    pad,
                    ceil_mode: a.int("ceil_mode").unwrap_or(0) != 0,
                    count_include_pad: a.int("count_include_pad").unwrap_or(0) != 0,
                };
                let op = if n.op_type() == "MaxPool" {
                    if a.int("storage_order").unwrap_or(0) != 0 {
                        // Only affects the indices output, which must be unused anyway.
                    }
                    Op::MaxPool(Pool2d {
                        count_include_pad: false,
                        ..pool
                    })
                } else {
                    Op::AvgPool(pool)
                };
                one(self.emit(out, op, vec![x], None)?)
            }
            "GlobalAveragePool" => {
                let x = dynamic(0)?;
                one(self.emit(out, Op::GlobalAvgPool, vec![x], None)?)
            }
            // The spatial mean or max: global pooling (keepdims = 0 flattens the pooled
            // [N, C, 1, 1] to [N, C]).
            "ReduceMean" | "ReduceMax" => {
                let x = dynamic(0)?;
                let xs = self.graph.shape(x).clone();
                let op_type = n.op_type();
                let (pool, what) = if op_type == "ReduceMean" {
                    (Op::GlobalAvgPool, "mean")
                } else {
                    (Op::GlobalMaxPool, "max")
                };
                let axes = match constant(1)? {
                    Some(c) => Some(c.to_i64()),
                    None => a.ints("axes"),
                };
                let mut axes: Vec<usize> = axes
                    .ok_or_else(|| format!("{op_type} over all axes is not supported"))?
                    .iter()
                    .map(|&v| tensor::axis(v, xs.len(), false))
                    .collect::<R<_>>()?;
                axes.sort_unstable();
                if xs.len() != 4 || axes != [2, 3] {
                    return Err(format!(
                        "{op_type} over axes {axes:?} of {xs:?}; bnc maps only the spatial {what} (axes [2, 3] of NCHW)"
                    ));
                }
                let keep = a.int("keepdims").unwrap_or(1) != 0;
                let tmp = if keep {
                    out.to_string()
                } else {
                    format!("{out}_pooled")
                };
                let g = self.emit(&tmp, pool, vec![x], None)?;
                if keep {
                    one(g)
                } else {
                    one(self.emit(out, Op::Flatten, vec![g], None)?)
                }
            }
            "Pad" => {
                let x = dynamic(0)?;
                let xs = self.graph.shape(x).clone();
                let mode = a.string("mode").unwrap_or_else(|| "constant".into());
                if mode != "constant" {
                    return Err(format!("mode `{mode}` is not supported (constant only)"));
                }
                let (pads, value) = if self.opset < 11 {
                    (
                        a.ints("pads").ok_or("Pad without pads")?,
                        f64::from(a.float("value").unwrap_or(0.0)),
                    )
                } else {
                    let pads = constant(1)?.ok_or("Pad without pads")?.to_i64();
                    let value = match constant(2)? {
                        Some(c) => c.scalar_f64().ok_or("constant_value is not a scalar")?,
                        None => 0.0,
                    };
                    (pads, value)
                };
                let r = xs.len();
                let mut full = vec![0i64; 2 * r];
                match constant(3)? {
                    Some(axes) => {
                        let axes = axes.to_i64();
                        if pads.len() != 2 * axes.len() {
                            return Err("pads do not match axes".into());
                        }
                        for (k, &ax) in axes.iter().enumerate() {
                            let ax = tensor::axis(ax, r, false)?;
                            full[ax] = pads[k];
                            full[ax + r] = pads[k + axes.len()];
                        }
                    }
                    None => {
                        if pads.len() != 2 * r {
                            return Err(format!("{} pads for a rank-{r} input", pads.len()));
                        }
                        full = pads;
                    }
                }
                if r != 4 || full[0] != 0 || full[1] != 0 || full[4] != 0 || full[5] != 0 {
                    return Err(format!(
                        "pads {full:?} on {xs:?}: bnc pads only H and W of NCHW"
                    ));
                }
                if full.iter().any(|&p| p < 0) {
                    return Err(format!(
                        "negative pads {full:?} (cropping) are not supported"
                    ));
                }
                if full.iter().all(|&p| p == 0) {
                    return one(x);
                }
                let pads = [
                    full[2] as usize,
                    full[3] as usize,
                    full[6] as usize,
                    full[7] as usize,
                ];
                one(self.emit(
                    out,
                    Op::Pad {
                        pads,
                        value,
                        fill: false,
                    },
                    vec![x],
                    None,
                )?)
            }
            "Flatten" => {
                let x = dynamic(0)?;
                let xs = self.graph.shape(x).clone();
                let ax = tensor::axis(a.int("axis").unwrap_or(1), xs.len(), true)?;
                let target = vec![xs[..ax].iter().product(), xs[ax..].iter().product()];
                self.reshape_like(out, x, target)
            }
            "Reshape" => {
                let spec = constant(1)?.ok_or("Reshape without a shape")?.to_i64();
                let allowzero = a.int("allowzero") == Some(1);
                if let Some(Some(Val::Grouped {
                    x,
                    groups,
                    transposed,
                })) = inputs.first()
                {
                    // The last step of a channel shuffle: back to [N, C, H, W].
                    let xs = self.graph.shape(*x).clone();
                    let from = grouped_shape(&xs, *groups, *transposed);
                    let target = tensor::reshape_target(&from, &spec, allowzero)?;
                    if target != xs {
                        return Err(format!(
                            "reshape of the channel-shuffle intermediate {from:?} to {target:?}; bnc accepts only {xs:?} (Reshape [N, g, C/g, H, W] → Transpose [0, 2, 1, 3, 4] → Reshape [N, C, H, W])"
                        ));
                    }
                    return if *transposed {
                        let op = Op::ChannelShuffle { groups: *groups };
                        one(self.emit(out, op, vec![*x], None)?)
                    } else {
                        one(*x)
                    };
                }
                let x = dynamic(0)?;
                let xs = self.graph.shape(x).clone();
                let target = tensor::reshape_target(&xs, &spec, allowzero)?;
                // The first step of a channel shuffle: [N, C, H, W] → [N, g, C/g, H, W].
                if xs.len() == 4
                    && target.len() == 5
                    && target[0] == xs[0]
                    && target[1] >= 1
                    && target[1].checked_mul(target[2]) == Some(xs[1])
                    && target[3..] == xs[2..]
                {
                    return Ok(vec![Val::Grouped {
                        x,
                        groups: target[1],
                        transposed: false,
                    }]);
                }
                self.reshape_like(out, x, target)
            }
            "Transpose" => {
                let perm = a.ints("perm");
                if let Some(Some(Val::Grouped {
                    x,
                    groups,
                    transposed,
                })) = inputs.first()
                {
                    if perm.as_deref() != Some(&[0, 2, 1, 3, 4][..]) {
                        return Err(format!(
                            "Transpose {perm:?} of the channel-shuffle intermediate {:?}; bnc accepts only perm [0, 2, 1, 3, 4]",
                            grouped_shape(self.graph.shape(*x), *groups, *transposed)
                        ));
                    }
                    return Ok(vec![Val::Grouped {
                        x: *x,
                        groups: *groups,
                        transposed: !*transposed,
                    }]);
                }
                let x = dynamic(0)?;
                let rank = self.graph.shape(x).len() as i64;
                let identity: Vec<i64> = (0..rank).collect();
                if perm.as_ref() == Some(&identity) {
                    return one(x);
                }
                if rank == 4 && perm.as_deref() == Some(&[0, 2, 3, 1][..]) {
                    return Ok(vec![Val::Nhwc(x)]);
                }
                Err(format!(
                    "Transpose {perm:?} of a runtime tensor of shape {:?}; bnc transposes runtime tensors only inside a channel shuffle (Reshape [N, g, C/g, H, W] → Transpose [0, 2, 1, 3, 4] → Reshape [N, C, H, W]) or to an NHWC view and back (Transpose [0, 2, 3, 1] … Transpose [0, 3, 1, 2] around operators on the last axis)",
                    self.graph.shape(x)
                ))
            }
            "Slice" => {
                let x = dynamic(0)?;
                let xs = self.graph.shape(x).clone();
                let ints = |i: usize, attr: &str| -> R<Option<Vec<i64>>> {
                    if self.opset < 10 {
                        Ok(a.ints(attr))
                    } else {
                        Ok(constant(i)?.map(Const::to_i64))
                    }
                };
                let starts = ints(1, "starts")?.ok_or("Slice without starts")?;
                let ends = ints(2, "ends")?.ok_or("Slice without ends")?;
                let axes = ints(3, "axes")?.unwrap_or_else(|| (0..starts.len() as i64).collect());
                let steps = if self.opset < 10 {
                    None
                } else {
                    constant(4)?.map(Const::to_i64)
                };
                if starts.len() != ends.len() || axes.len() != starts.len() {
                    return Err("Slice starts, ends and axes differ in length".into());
                }
                let mut range = (0, xs.get(1).copied().unwrap_or(0));
                for (k, &ax) in axes.iter().enumerate() {
                    let ax = tensor::axis(ax, xs.len(), false)?;
                    let step = steps.as_ref().and_then(|s| s.get(k)).copied().unwrap_or(1);
                    let dim = xs[ax] as i64;
                    let clamp = |v: i64| (if v < 0 { v + dim } else { v }).clamp(0, dim) as usize;
                    let (s, e) = (clamp(starts[k]), clamp(ends[k]));
                    let whole = step == 1 && s == 0 && e == xs[ax];
                    if ax == 1 && step == 1 && (xs.len() == 2 || xs.len() == 4) {
                        range = (s, e);
                    } else if !whole {
                        return Err(format!(
                            "Slice of axis {ax} (step {step}) of a runtime tensor of shape {xs:?}; bnc slices runtime tensors only along channels (axis 1 of [N, C] or NCHW, step 1)"
                        ));
                    }
                }
                if range == (0, xs[1]) {
                    return one(x);
                }
                let op = Op::SliceChannels {
                    start: range.0,
                    end: range.1,
                };
                one(self.emit(out, op, vec![x], None)?)
            }
            "Split" => {
                let x = dynamic(0)?;
                let xs = self.graph.shape(x).clone();
                let ax = tensor::axis(a.int("axis").unwrap_or(0), xs.len(), false)?;
                if ax != 1 || !(xs.len() == 2 || xs.len() == 4) {
                    return Err(format!(
                        "Split along axis {ax} of {xs:?}; bnc splits runtime tensors only along channels (axis 1 of [N, C] or NCHW)"
                    ));
                }
                let channels = xs[1];
                let parts = n.output.len();
                let given = if self.opset < 13 {
                    a.ints("split")
                } else {
                    constant(1)?.map(Const::to_i64)
                };
                let sizes: Vec<usize> = match given {
                    Some(v) => v
                        .iter()
                        .map(|&s| usize::try_from(s).map_err(|_| format!("negative split {s}")))
                        .collect::<R<_>>()?,
                    None => {
                        let count = match a.int("num_outputs") {
                            Some(k) if self.opset >= 18 => usize::try_from(k)
                                .ok()
                                .filter(|&k| k >= 1)
                                .ok_or("num_outputs must be positive")?,
                            _ => parts,
                        };
                        if count == 0 {
                            return Err("Split without outputs".into());
                        }
                        if self.opset >= 18 {
                            // Chunks of ceil(C / count), the last one smaller.
                            let chunk = channels.div_ceil(count);
                            (0..count)
                                .map(|k| chunk.min(channels.saturating_sub(k * chunk)))
                                .collect()
                        } else {
                            if !channels.is_multiple_of(count) {
                                return Err(format!(
                                    "{channels} channels do not split equally into {count} outputs"
                                ));
                            }
                            vec![channels / count; count]
                        }
                    }
                };
                if sizes.len() != parts {
                    return Err(format!("{} split sizes for {parts} outputs", sizes.len()));
                }
                if sizes.iter().sum::<usize>() != channels || sizes.contains(&0) {
                    return Err(format!(
                        "split sizes {sizes:?} do not divide {channels} channels into non-empty parts"
                    ));
                }
                let mut vals = Vec::with_capacity(parts);
                let mut start = 0;
                for (o, size) in n.output.iter().zip(sizes) {
                    let end = start + size;
                    let name = if o.is_empty() { out } else { o.as_str() };
                    let op = Op::SliceChannels { start, end };
                    vals.push(if size == channels {
                        Val::Dyn(x)
                    } else {
                        Val::Dyn(self.emit(name, op, vec![x], None)?)
                    });
                    start = end;
                }
                Ok(vals)
            }
            "Squeeze" | "Unsqueeze" => {
                let x = dynamic(0)?;
                let axes = match constant(1)? {
                    Some(c) => Some(c.to_i64()),
                    None => a.ints("axes"),
                };
                let xs = self.graph.shape(x).clone();
                let target = squeeze_shape(n.op_type(), &xs, axes.as_deref())?;
                self.reshape_like(out, x, target)
            }
            "Identity" | "Dropout" => Ok(vec![Val::Dyn(dynamic(0)?)]),
            "Resize" | "Upsample" => {
                let x = dynamic(0)?;
                let xs = self.graph.shape(x).clone();
                let op = self.resize(n, &a, &xs, &constant)?;
                one(self.emit(out, Op::Resize(op), vec![x], None)?)
            }
            "Softmax" => {
                let x = dynamic(0)?;
                let xs = self.graph.shape(x).clone();
                let default = if self.opset < 13 { 1 } else { -1 };
                let ax = tensor::axis(a.int("axis").unwrap_or(default), xs.len(), false)?;
                let channel = ax == 1
                    && (xs.len() == 2 || xs.len() == 4 && (self.opset >= 13 || xs[2] * xs[3] == 1));
                if !channel {
                    return Err(format!(
                        "softmax over axis {ax} of {xs:?} (opset {}); bnc's softmax is over the channel axis of [N, C] or NCHW",
                        self.opset
                    ));
                }
                one(self.emit(out, Op::Softmax, vec![x], None)?)
            }
            "Pow" => {
                let e = constant(1)?.ok_or("Pow without an exponent")?;
                let exponent = match e.scalar_f64() {
                    Some(v) if e.numel() == 1 => v,
                    _ => {
                        return Err(format!(
                            "Pow with exponent `{}` of shape {:?}; bnc needs a constant scalar exponent",
                            n.input[1], e.shape
                        ));
                    }
                };
                act(self, Activation::Pow { exponent })
            }
            // An operator the table maps one-to-one and that needs nothing from the ONNX
            // node but its input (Relu, Sigmoid, ...).
            other => match OpKind::from_onnx(other) {
                Some(kind) if is_plain_unary(kind) => {
                    let x = dynamic(0)?;
                    let op = Op::from_attrs(kind, |_| None);
                    one(self.emit(out, op, vec![x], None)?)
                }
                _ => Err(format!("`{other}` is not mapped")),
            },
        }
    }

    /// Resize (opset 10, 11, 13, 18) or Upsample (opset 7, 9) of the H and W of an NCHW
    /// tensor, with constant scales or sizes.
    fn resize<'c>(
        &self,
        n: &NodeProto,
        a: &Attrs,
        xs: &[usize],
        constant: &dyn Fn(usize) -> R<Option<&'c Const>>,
    ) -> R<bnc_ir::Resize> {
        if xs.len() != 4 {
            return Err(format!(
                "only 2-D resize (NCHW input) is supported; input {xs:?}"
            ));
        }
        let upsample = n.op_type() == "Upsample";
        // Upsample and Resize-10 are Resize with asymmetric coordinates and floor.
        let legacy = upsample || self.opset < 11;
        let mode = match a.string("mode").as_deref().unwrap_or("nearest") {
            "nearest" => "nearest",
            "linear" | "bilinear" => "bilinear",
            other => {
                return Err(format!(
                    "mode `{other}` is not supported (nearest and linear are)"
                ));
            }
        };
        let coordinates = if legacy {
            "asymmetric"
        } else {
            let c = a
                .string("coordinate_transformation_mode")
                .unwrap_or_else(|| "half_pixel".into());
            bnc_ir::op::RESIZE_COORDINATES
                .iter()
                .copied()
                .find(|w| *w == c)
                .ok_or_else(|| {
                    format!(
                        "coordinate_transformation_mode `{c}` is not supported (supported: {})",
                        bnc_ir::op::RESIZE_COORDINATES.join(", ")
                    )
                })?
        };
        let nearest_mode = if legacy {
            "floor"
        } else {
            let m = a
                .string("nearest_mode")
                .unwrap_or_else(|| "round_prefer_floor".into());
            bnc_ir::op::RESIZE_NEAREST_MODES
                .iter()
                .copied()
                .find(|w| *w == m)
                .ok_or_else(|| format!("nearest_mode `{m}` is not supported"))?
        };
        // The scales or sizes input, by opset.
        let (scales_at, sizes_at) = if upsample && self.opset < 9 {
            (None, None)
        } else if legacy {
            (Some(1), None)
        } else {
            (Some(2), Some(3))
        };
        let present = |i: Option<usize>| -> R<Option<&'c Const>> {
            match i {
                Some(i) => Ok(constant(i)?.filter(|c| c.numel() > 0)),
                None => Ok(None),
            }
        };
        let scales: Option<Vec<f64>> = match present(scales_at)? {
            Some(c) => Some(c.to_f32().iter().map(|&v| f64::from(v)).collect()),
            None if upsample && self.opset < 9 => Some(
                a.get("scales")
                    .ok_or("Upsample without scales")?
                    .floats
                    .iter()
                    .map(|&v| f64::from(v))
                    .collect(),
            ),
            None => None,
        };
        let sizes = present(sizes_at)?.map(|c| c.to_i64());
        // opset 18: `axes` selects what scales/sizes cover.
        let axes: Vec<usize> = match a.ints("axes") {
            None => vec![0, 1, 2, 3],
            Some(v) => {
                let mut axes = v
                    .iter()
                    .map(|&ax| tensor::axis(ax, 4, false))
                    .collect::<R<Vec<_>>>()?;
                axes.sort_unstable();
                if axes != [2, 3] && axes != [0, 1, 2, 3] {
                    return Err(format!(
                        "axes {v:?}: bnc resizes H and W of NCHW only (axes [2, 3])"
                    ));
                }
                axes
            }
        };
        let full = |v: &[f64], what: &str| -> R<[f64; 4]> {
            if v.len() != axes.len() {
                return Err(format!(
                    "{what} has {} values for {} axes",
                    v.len(),
                    axes.len()
                ));
            }
            let mut out = [1.0, 1.0, xs[2] as f64, xs[3] as f64];
            if what == "scales" {
                out[2] = 1.0;
                out[3] = 1.0;
            } else {
                out[0] = xs[0] as f64;
                out[1] = xs[1] as f64;
            }
            for (k, &ax) in axes.iter().enumerate() {
                out[ax] = v[k];
            }
            Ok(out)
        };
        let mut op = bnc_ir::Resize {
            mode,
            size: [0, 0],
            scale: [0.0, 0.0],
            coordinates,
            nearest_mode,
        };
        match (scales, sizes) {
            (Some(_), Some(_)) => {
                return Err("both scales and sizes are given; ONNX allows one".into());
            }
            (Some(s), None) => {
                let s = full(&s, "scales")?;
                if s[0] != 1.0 || s[1] != 1.0 {
                    return Err(format!(
                        "scales {s:?} resize N or C; bnc resizes only H and W"
                    ));
                }
                if !s[2..].iter().all(|v| v.is_finite() && *v > 0.0) {
                    return Err(format!("scales {s:?} are not positive"));
                }
                op.scale = [s[2], s[3]];
            }
            (None, Some(z)) => {
                if z.iter().any(|&v| v < 1) {
                    return Err(format!("sizes {z:?} are not positive"));
                }
                let z: Vec<f64> = z.iter().map(|&v| v as f64).collect();
                let z = full(&z, "sizes")?;
                if z[0] != xs[0] as f64 || z[1] != xs[1] as f64 {
                    return Err(format!(
                        "sizes {z:?} resize N or C of {xs:?}; bnc resizes only H and W"
                    ));
                }
                let policy = a
                    .string("keep_aspect_ratio_policy")
                    .unwrap_or_else(|| "stretch".into());
                if policy != "stretch" {
                    return Err(format!(
                        "keep_aspect_ratio_policy `{policy}` is not supported (stretch only)"
                    ));
                }
                op.size = [z[2] as usize, z[3] as usize];
            }
            (None, None) => return Err("neither scales nor sizes is a constant".into()),
        }
        if a.int("antialias").unwrap_or(0) != 0 && mode == "bilinear" {
            let down = (0..2).any(|ax| op.out_len(ax, xs[2 + ax]).is_some_and(|o| o < xs[2 + ax]));
            if down {
                return Err("antialias when downsampling is not supported".into());
            }
        }
        Ok(op)
    }

    /// Gemm / MatMul: `x [N, K] · B (+ C)` as a dense layer with weight `[M, K]`.
    #[allow(clippy::too_many_arguments)]
    fn dense(
        &mut self,
        out: &str,
        name: &str,
        x: ValueId,
        b: &Const,
        trans_b: bool,
        alpha: f32,
        c: Option<(&Const, f32)>,
        b_name: Option<&str>,
    ) -> R<Vec<Val>> {
        let xs = self.graph.shape(x).clone();
        if xs.len() != 2 || b.shape.len() != 2 {
            return Err(format!(
                "only [N, K] x [K, M] products are supported; got {xs:?} and {:?}",
                b.shape
            ));
        }
        let (k, m) = if trans_b {
            (b.shape[1], b.shape[0])
        } else {
            (b.shape[0], b.shape[1])
        };
        if k != xs[1] {
            return Err(format!(
                "input {xs:?} does not fit B {:?} (transB = {})",
                b.shape,
                u8::from(trans_b)
            ));
        }
        let bv = b.to_f32();
        let mut w = vec![0f32; m * k];
        for o in 0..m {
            for i in 0..k {
                let v = if trans_b {
                    bv[o * k + i]
                } else {
                    bv[i * m + o]
                };
                w[o * k + i] = alpha * v;
            }
        }
        let mut tensors = vec![("weight", Tensor::new(vec![m, k], w))];
        if let Some((c, beta)) = c {
            let bias = per_channel(c, &[xs[0], m]).ok_or_else(|| {
                format!(
                    "C {:?} does not broadcast as a per-output bias of [{}, {m}]",
                    c.shape, xs[0]
                )
            })?;
            tensors.push((
                "bias",
                Tensor::new(vec![m], bias.iter().map(|v| beta * v).collect()),
            ));
        }
        let bias = tensors.len() == 2;
        let prefix = self.prefix(b_name, "weight", name);
        let op = Op::Dense {
            out_features: m,
            bias,
        };
        Ok(vec![Val::Dyn(self.emit(
            out,
            op,
            vec![x],
            Some((prefix, tensors)),
        )?)])
    }

    fn affine(
        &mut self,
        out: &str,
        name: &str,
        x: ValueId,
        scale: Vec<f32>,
        shift: Vec<f32>,
    ) -> R<ValueId> {
        let c = scale.len();
        let base = if name.is_empty() { out } else { name };
        let prefix = names::fresh(&names::identifier(base), &self.prefixes);
        self.prefixes.insert(prefix.clone());
        let tensors = vec![
            ("scale", Tensor::new(vec![c], scale)),
            ("shift", Tensor::new(vec![c], shift)),
        ];
        self.emit(out, Op::Affine, vec![x], Some((prefix, tensors)))
    }

    /// Add, Sub, Mul, Div with at least one runtime operand.
    fn arith(
        &mut self,
        n: &NodeProto,
        out: &str,
        name: &str,
        inputs: &[Option<Val>],
    ) -> R<Vec<Val>> {
        let op = n.op_type();
        let (l, r) = match (&inputs.first(), &inputs.get(1)) {
            (Some(Some(l)), Some(Some(r))) => (l.clone(), r.clone()),
            _ => return Err("needs two inputs".into()),
        };
        match (l, r) {
            (Val::Dyn(a), Val::Dyn(b)) => {
                let (sa, sb) = (self.graph.shape(a).clone(), self.graph.shape(b).clone());
                match op {
                    "Add" => {
                        if sa != sb {
                            return Err(format!(
                                "Add of {sa:?} and {sb:?}: bnc adds equal shapes only"
                            ));
                        }
                        Ok(vec![Val::Dyn(self.emit(out, Op::Add, vec![a, b], None)?)])
                    }
                    "Mul" => {
                        // x * sigmoid(x) = silu(x); x * hardsigmoid(x) = hardswish(x).
                        for (x, g) in [(a, b), (b, a)] {
                            if let Some(&i) = self.producer.get(&g) {
                                let node = &self.graph.nodes[i];
                                if node.inputs == [x] {
                                    let fused = match node.op {
                                        Op::Activation(Activation::Sigmoid) => {
                                            Some(Activation::Silu)
                                        }
                                        Op::Activation(Activation::HardSigmoid) => {
                                            Some(Activation::HardSwish)
                                        }
                                        _ => None,
                                    };
                                    if let Some(f) = fused {
                                        let y = self.emit(out, Op::Activation(f), vec![x], None)?;
                                        return Ok(vec![Val::Dyn(y)]);
                                    }
                                }
                            }
                        }
                        Ok(vec![Val::Dyn(
                            self.emit(out, Op::Mul, vec![a, b], None).map_err(|e| {
                                format!(
                                    "{e} (bnc multiplies equal shapes, or by an [N, C, 1, 1] gate)"
                                )
                            })?,
                        )])
                    }
                    _ => Err(format!(
                        "`{op}` of two runtime tensors is not supported (only with a constant)"
                    )),
                }
            }
            (Val::Dyn(x), Val::Const(c)) | (Val::Const(c), Val::Dyn(x)) => {
                let const_first = matches!(inputs[0], Some(Val::Const(_)));
                let xs = self.graph.shape(x).clone();
                let v = per_channel(&c, &xs).ok_or_else(|| {
                    format!(
                        "`{op}` of a runtime {xs:?} and a constant {:?}: bnc maps only scalar or per-channel constants",
                        c.shape
                    )
                })?;
                if xs.len() != 2 && xs.len() != 4 {
                    return Err(format!(
                        "`{op}` with a constant on shape {xs:?} (bnc's affine takes [N, C] or NCHW)"
                    ));
                }
                Ok(vec![Val::Dyn(self.const_arith(
                    n,
                    out,
                    name,
                    x,
                    v,
                    const_first,
                )?)])
            }
            (Val::Grouped { .. }, _) | (_, Val::Grouped { .. }) => {
                Err(grouped_misuse(&n.input.join("`, `")))
            }
            _ => Err("all inputs are constants".into()),
        }
    }

    /// Operators reading an NHWC view or a GELU step, and the operators whose only forms
    /// are those (LayerNormalization, Erf, Gelu): `None` for every other node, which the
    /// general mapping takes.
    fn map_nhwc_gelu(
        &mut self,
        n: &NodeProto,
        name: &str,
        out: &str,
        inputs: &[Option<Val>],
    ) -> Option<R<Vec<Val>>> {
        let special = inputs
            .iter()
            .any(|v| matches!(v, Some(Val::Nhwc(_) | Val::Gelu { .. })));
        if !special && !matches!(n.op_type(), "Erf" | "Gelu" | "LayerNormalization") {
            return None;
        }
        Some(self.map_special(n, name, out, inputs))
    }

    fn map_special(
        &mut self,
        n: &NodeProto,
        name: &str,
        out: &str,
        inputs: &[Option<Val>],
    ) -> R<Vec<Val>> {
        let a = Attrs(&n.attribute);
        let get = |i: usize| inputs.get(i).and_then(Option::as_ref);
        let misuse = |i: usize| -> String {
            match get(i) {
                Some(Val::Nhwc(_)) => nhwc_misuse(&n.input[i], n.op_type()),
                Some(Val::Gelu { .. }) => gelu_misuse(&n.input[i]),
                Some(Val::Grouped { .. }) => grouped_misuse(&n.input[i]),
                Some(Val::Const(_)) => format!(
                    "input {i} (`{}`) is a constant; bnc needs a runtime tensor there",
                    n.input[i]
                ),
                _ => format!("input {i} is missing"),
            }
        };
        // The runtime tensor read, and whether as its NHWC view.
        let view = |i: usize| -> R<(ValueId, bool)> {
            match get(i) {
                Some(Val::Dyn(x)) => Ok((*x, false)),
                Some(Val::Nhwc(x)) => Ok((*x, true)),
                _ => Err(misuse(i)),
            }
        };
        let wrap = |v: ValueId, nhwc: bool| if nhwc { Val::Nhwc(v) } else { Val::Dyn(v) };
        match n.op_type() {
            "Transpose" => {
                let perm = a.ints("perm");
                match get(0) {
                    Some(Val::Nhwc(x)) if perm.as_deref() == Some(&[0, 3, 1, 2][..]) => {
                        Ok(vec![Val::Dyn(*x)])
                    }
                    Some(Val::Nhwc(x)) => Err(format!(
                        "Transpose {perm:?} of the NHWC view {:?} of a tensor; bnc accepts only [0, 3, 1, 2] (back to NCHW) there",
                        nhwc_shape(self.graph.shape(*x))
                    )),
                    _ => Err(misuse(0)),
                }
            }
            "Identity" | "Dropout" => match get(0) {
                Some(v @ (Val::Nhwc(_) | Val::Dyn(_))) => Ok(vec![v.clone()]),
                _ => Err(misuse(0)),
            },
            "LayerNormalization" => {
                let (x, nhwc) = view(0)?;
                let xs = self.graph.shape(x).clone();
                let rank = xs.len();
                let ax = tensor::axis(a.int("axis").unwrap_or(-1), rank, false)?;
                if !(nhwc && ax == 3 || !nhwc && rank == 2 && ax == 1) {
                    let shown = if nhwc { nhwc_shape(&xs) } else { xs.clone() };
                    return Err(format!(
                        "LayerNormalization over axis {ax} of {shown:?}; bnc normalises over channels only: the last axis of the NHWC view (Transpose [0, 2, 3, 1]) of an NCHW tensor, or axis 1 of [N, C]"
                    ));
                }
                let c = xs[1];
                let vector = |i: usize, what: &str| -> R<Option<Vec<f32>>> {
                    match get(i) {
                        Some(Val::Const(t)) => {
                            if t.numel() != c || t.shape.iter().filter(|&&d| d != 1).count() > 1 {
                                return Err(format!(
                                    "LayerNormalization {what} {:?} for {c} channels",
                                    t.shape
                                ));
                            }
                            Ok(Some(t.to_f32()))
                        }
                        None => Ok(None),
                        Some(_) => Err(format!(
                            "LayerNormalization {what} is computed at run time; bnc needs a constant there"
                        )),
                    }
                };
                let weight = vector(1, "scale")?.ok_or("LayerNormalization without scale")?;
                let bias = vector(2, "bias")?.unwrap_or_else(|| vec![0.0; c]);
                let eps = f64::from(a.float("epsilon").unwrap_or(1e-5));
                let prefix = self.prefix(n.input.get(1).map(String::as_str), "weight", name);
                let tensors = vec![
                    ("weight", Tensor::new(vec![c], weight)),
                    ("bias", Tensor::new(vec![c], bias)),
                ];
                let y = self.emit(out, Op::LayerNorm { eps }, vec![x], Some((prefix, tensors)))?;
                Ok(vec![wrap(y, nhwc)])
            }
            "Gelu" => {
                let approximate = a.string("approximate").unwrap_or_else(|| "none".into());
                if approximate != "none" {
                    return Err(format!(
                        "Gelu with approximate = \"{approximate}\"; bnc's gelu is the exact (erf) form, approximate = \"none\""
                    ));
                }
                let (x, nhwc) = view(0)?;
                let y = self.emit(out, Op::Activation(Activation::Gelu), vec![x], None)?;
                Ok(vec![wrap(y, nhwc)])
            }
            "Erf" => {
                let (u, nhwc) = view(0)?;
                match self.scaled_input(u, std::f32::consts::FRAC_1_SQRT_2) {
                    Some(x) => Ok(vec![Val::Gelu {
                        x,
                        nhwc,
                        stage: GeluStage::Erf,
                    }]),
                    None => Err(
                        "Erf is imported only inside the exact GELU x·(1 + erf(x/√2))/2 (Div by √2 or Mul by 1/√2, Erf, Add 1, Mul by x and by 0.5)".into(),
                    ),
                }
            }
            "MatMul" => {
                let (x, nhwc) = view(0)?;
                if !nhwc {
                    return Err(misuse(1));
                }
                let b = match get(1) {
                    Some(Val::Const(b)) => b,
                    Some(_) => {
                        return Err(format!(
                            "MatMul of the NHWC view of a tensor by the runtime tensor `{}`; bnc needs a constant [C, K] matrix there",
                            n.input[1]
                        ));
                    }
                    None => return Err("MatMul without a right-hand side".into()),
                };
                let c = self.graph.shape(x)[1];
                if b.shape.len() != 2 || b.shape[0] != c {
                    return Err(format!(
                        "MatMul of the NHWC view {:?} by {:?}; bnc needs a [{c}, K] matrix",
                        nhwc_shape(self.graph.shape(x)),
                        b.shape
                    ));
                }
                let m = b.shape[1];
                let bv = b.to_f32();
                let mut w = vec![0f32; m * c];
                for o in 0..m {
                    for i in 0..c {
                        w[o * c + i] = bv[i * m + o];
                    }
                }
                let prefix = self.prefix(n.input.get(1).map(String::as_str), "weight", name);
                let op = Op::Conv2d(Conv2d {
                    out_channels: m,
                    kernel: [1, 1],
                    stride: [1, 1],
                    pad: [0; 4],
                    dilation: [1, 1],
                    groups: 1,
                    bias: false,
                    pad_fill: false,
                });
                let tensors = vec![("weight", Tensor::new(vec![m, c, 1, 1], w))];
                let y = self.emit(out, op, vec![x], Some((prefix, tensors)))?;
                Ok(vec![Val::Nhwc(y)])
            }
            "Add" | "Sub" | "Mul" | "Div" => self.arith_special(n, name, out, inputs),
            other => {
                // Plain activations on an NHWC view.
                if let (Some(Val::Nhwc(x)), Some(kind)) = (get(0), OpKind::from_onnx(other))
                    && is_plain_unary(kind)
                    && inputs.len() == 1
                {
                    let op = Op::from_attrs(kind, |_| None);
                    if matches!(op, Op::Activation(_)) {
                        let y = self.emit(out, op, vec![*x], None)?;
                        return Ok(vec![Val::Nhwc(y)]);
                    }
                }
                let i = (0..inputs.len())
                    .find(|&i| matches!(get(i), Some(Val::Nhwc(_) | Val::Gelu { .. })))
                    .unwrap_or(0);
                Err(misuse(i))
            }
        }
    }

    /// The input `x` of `u` when `u` is an affine computing `s·x` (every scale `s` to f32
    /// precision, every shift 0): the `x/√2` and `0.5·x` of a GELU.
    fn scaled_input(&self, u: ValueId, s: f32) -> Option<ValueId> {
        let &i = self.producer.get(&u)?;
        let node = &self.graph.nodes[i];
        if node.op != Op::Affine {
            return None;
        }
        let scale = self.graph.param(node, "scale")?;
        let shift = self.graph.param(node, "shift")?;
        let close = |v: f32| (v - s).abs() <= 4.0 * f32::EPSILON * s.abs();
        (scale.data.iter().all(|&v| close(v)) && shift.data.iter().all(|&v| v == 0.0))
            .then(|| node.inputs[0])
    }

    /// Add, Sub, Mul, Div reading an NHWC view or a GELU step.
    fn arith_special(
        &mut self,
        n: &NodeProto,
        name: &str,
        out: &str,
        inputs: &[Option<Val>],
    ) -> R<Vec<Val>> {
        let op = n.op_type();
        let (l, r) = match (inputs.first(), inputs.get(1)) {
            (Some(Some(l)), Some(Some(r))) => (l.clone(), r.clone()),
            _ => return Err("needs two inputs".into()),
        };
        let scalar = |v: &Val, want: f64| matches!(v, Val::Const(c) if c.numel() == 1 && c.scalar_f64() == Some(want));
        let wrap = |v: ValueId, nhwc: bool| if nhwc { Val::Nhwc(v) } else { Val::Dyn(v) };
        // Whether `v` is `x` itself, read in the same layout.
        let same = |v: &Val, x: ValueId, nhwc: bool| match v {
            Val::Dyn(y) => !nhwc && *y == x,
            Val::Nhwc(y) => nhwc && *y == x,
            _ => false,
        };
        let gelu = |this: &mut Self, x: ValueId, nhwc: bool| -> R<Vec<Val>> {
            let y = this.emit(out, Op::Activation(Activation::Gelu), vec![x], None)?;
            Ok(vec![wrap(y, nhwc)])
        };
        let step =
            |x: ValueId, nhwc: bool, stage: GeluStage| Ok(vec![Val::Gelu { x, nhwc, stage }]);
        for (g, other, first) in [(&l, &r, true), (&r, &l, false)] {
            let Val::Gelu { x, nhwc, stage } = *g else {
                continue;
            };
            let commutes = op == "Add" || op == "Mul";
            if !first && !commutes {
                break;
            }
            match (op, stage) {
                ("Add", GeluStage::Erf) if scalar(other, 1.0) => {
                    return step(x, nhwc, GeluStage::OnePlus);
                }
                ("Mul", GeluStage::OnePlus) => {
                    if same(other, x, nhwc) {
                        return step(x, nhwc, GeluStage::Times);
                    }
                    if scalar(other, 0.5) {
                        return step(x, nhwc, GeluStage::Half);
                    }
                    let half = match other {
                        Val::Dyn(h) if !nhwc => self.scaled_input(*h, 0.5),
                        Val::Nhwc(h) if nhwc => self.scaled_input(*h, 0.5),
                        _ => None,
                    };
                    if half == Some(x) {
                        return gelu(self, x, nhwc);
                    }
                }
                ("Mul", GeluStage::Times) if scalar(other, 0.5) => return gelu(self, x, nhwc),
                ("Div", GeluStage::Times) if scalar(other, 2.0) => return gelu(self, x, nhwc),
                ("Mul", GeluStage::Half) if same(other, x, nhwc) => return gelu(self, x, nhwc),
                _ => {}
            }
            return Err(format!(
                "`{op}` of {}: {}",
                if first { &n.input[0] } else { &n.input[1] },
                gelu_misuse(if first { &n.input[0] } else { &n.input[1] })
            ));
        }
        match (&l, &r) {
            (Val::Nhwc(x), Val::Const(c)) | (Val::Const(c), Val::Nhwc(x)) => {
                let const_first = matches!(l, Val::Const(_));
                let shape = nhwc_shape(self.graph.shape(*x));
                let v = per_last_axis(c, &shape).ok_or_else(|| {
                    format!(
                        "`{op}` of the NHWC view {shape:?} of a tensor and a constant {:?}: bnc maps only scalars or constants along the last axis there",
                        c.shape
                    )
                })?;
                let y = self.const_arith(n, out, name, *x, v, const_first)?;
                Ok(vec![Val::Nhwc(y)])
            }
            (Val::Nhwc(a), Val::Nhwc(b)) => {
                let vals = self.arith(n, out, name, &[Some(Val::Dyn(*a)), Some(Val::Dyn(*b))])?;
                vals.into_iter()
                    .map(|v| match v {
                        Val::Dyn(y) => Ok(Val::Nhwc(y)),
                        other => Ok(other),
                    })
                    .collect()
            }
            (Val::Nhwc(_), _) => Err(nhwc_misuse(&n.input[0], op)),
            _ => Err(nhwc_misuse(&n.input[1], op)),
        }
    }

    /// `x op v` for a per-channel constant `v` of the NCHW tensor `x`: an affine, or a bias
    /// joining the conv/dense that computes `x` when nothing else reads it.
    fn const_arith(
        &mut self,
        n: &NodeProto,
        out: &str,
        name: &str,
        x: ValueId,
        v: Vec<f32>,
        const_first: bool,
    ) -> R<ValueId> {
        let op = n.op_type();
        let ch = self.graph.shape(x)[1];
        let (scale, shift): (Vec<f32>, Vec<f32>) = match (op, const_first) {
            ("Add", _) => (vec![1.0; ch], v),
            ("Mul", _) => (v, vec![0.0; ch]),
            ("Sub", false) => (vec![1.0; ch], v.iter().map(|x| -x).collect()),
            ("Sub", true) => (vec![-1.0; ch], v),
            ("Div", false) => (v.iter().map(|x| 1.0 / x).collect(), vec![0.0; ch]),
            _ => {
                return Err(format!(
                    "Div of the constant `{}` by the runtime tensor `{}` is not supported: c / x is not a per-channel affine map (only x / c is)",
                    n.input[0], n.input[1]
                ));
            }
        };
        // A bias added right after a conv/dense without other readers joins its bias.
        if op != "Mul" && op != "Div" && scale.iter().all(|&s| s == 1.0) {
            let x_name = if const_first {
                &n.input[1]
            } else {
                &n.input[0]
            };
            if self.consumers.get(x_name).copied() == Some(1)
                && let Some(&i) = self.producer.get(&x)
            {
                let node = &mut self.graph.nodes[i];
                let target = match &mut node.op {
                    Op::Conv2d(conv) => Some(&mut conv.bias),
                    Op::ConvTranspose2d(conv) => Some(&mut conv.bias),
                    Op::Dense { bias, .. } => Some(bias),
                    _ => None,
                };
                if let (Some(has_bias), Some(prefix)) = (target, node.params.clone()) {
                    let key = format!("{prefix}.bias");
                    if *has_bias {
                        let t = self.graph.params.get_mut(&key).expect("bias exists");
                        for (b, s) in t.data.iter_mut().zip(&shift) {
                            *b += s;
                        }
                    } else {
                        *has_bias = true;
                        self.graph.params.insert(key, Tensor::new(vec![ch], shift));
                    }
                    return Ok(x);
                }
            }
        }
        self.affine(out, name, x, scale, shift)
    }

    /// A reshape of a runtime tensor: nothing when the shape stays, a flatten when it is
    /// `[N, rest]`, else unsupported.
    fn reshape_like(&mut self, out: &str, x: ValueId, target: Shape) -> R<Vec<Val>> {
        let xs = self.graph.shape(x).clone();
        if target == xs {
            return Ok(vec![Val::Dyn(x)]);
        }
        if target.len() == 2 && !xs.is_empty() && target[0] == xs[0] {
            return Ok(vec![Val::Dyn(self.emit(
                out,
                Op::Flatten,
                vec![x],
                None,
            )?)]);
        }
        Err(format!(
            "reshape of {xs:?} to {target:?} is not a flatten; bnc supports only reshapes to [N, rest]"
        ))
    }
}

/// The 5-D shape of a channel-shuffle intermediate of `x` (`[N, C, H, W]`).
fn grouped_shape(x: &[usize], groups: usize, transposed: bool) -> Vec<usize> {
    let (g, per) = (groups, x[1] / groups);
    let (a, b) = if transposed { (per, g) } else { (g, per) };
    vec![x[0], a, b, x[2], x[3]]
}

/// The error for an operator reading a channel-shuffle intermediate.
fn grouped_misuse(input: &str) -> String {
    format!(
        "`{input}` is the 5-D intermediate of a channel shuffle; bnc accepts only Reshape [N, g, C/g, H, W] → Transpose [0, 2, 1, 3, 4] → Reshape [N, C, H, W] on runtime tensors"
    )
}

/// The shape of the NHWC view of the NCHW shape `x`.
fn nhwc_shape(x: &[usize]) -> Vec<usize> {
    vec![x[0], x[2], x[3], x[1]]
}

/// The error for an operator reading an NHWC view in a way bnc does not map.
fn nhwc_misuse(input: &str, op: &str) -> String {
    format!(
        "`{input}` is the NHWC view (Transpose [0, 2, 3, 1]) of an NCHW tensor, and bnc does not map `{op}` on it; it accepts there only LayerNormalization over the last axis, MatMul by a constant [C, K] matrix, Add/Sub/Mul/Div by constants along the last axis, GELU and plain activations, and Transpose [0, 3, 1, 2] back to NCHW"
    )
}

/// The error for an operator reading a step of a GELU pattern.
fn gelu_misuse(input: &str) -> String {
    format!(
        "`{input}` is a step of the GELU pattern x·(1 + erf(x/√2))/2, which bnc imports only whole (Div by √2, Erf, Add 1, Mul by x, Mul by 0.5, in either operand order)"
    )
}

/// A constant that broadcasts over the NHWC `shape` and varies at most along its last axis,
/// as one value per channel.
fn per_last_axis(c: &Const, shape: &[usize]) -> Option<Vec<f32>> {
    if c.shape.len() > shape.len() {
        return None;
    }
    let channels = shape[shape.len() - 1];
    let (last, rest) = match c.shape.split_last() {
        Some((&last, rest)) => (last, rest),
        None => (1, &[][..]),
    };
    if rest.iter().any(|&d| d != 1) || (last != 1 && last != channels) {
        return None;
    }
    let v = c.to_f32();
    Some(if last == 1 { vec![v[0]; channels] } else { v })
}

/// Whether `kind` is imported without looking at the ONNX node's attributes: one input, no
/// attributes, no parameters.
fn is_plain_unary(kind: OpKind) -> bool {
    let info = kind.info();
    info.inputs == (1, 1) && info.attrs.is_empty() && info.params.is_empty()
}

/// A constant that broadcasts over `shape` and varies at most along axis 1, as one value per
/// channel.
fn per_channel(c: &Const, shape: &[usize]) -> Option<Vec<f32>> {
    if c.shape.len() > shape.len() || shape.len() < 2 {
        return None;
    }
    let off = shape.len() - c.shape.len();
    let channels = shape[1];
    let mut along = 1;
    for (i, &d) in c.shape.iter().enumerate() {
        let ax = i + off;
        if ax == 1 {
            if d != 1 && d != channels {
                return None;
            }
            along = d;
        } else if d != 1 {
            return None;
        }
    }
    let v = c.to_f32();
    Some(if along == 1 { vec![v[0]; channels] } else { v })
}

/// The shape after Squeeze / Unsqueeze.
fn squeeze_shape(op: &str, shape: &[usize], axes: Option<&[i64]>) -> R<Vec<usize>> {
    if op == "Squeeze" {
        let drop: Vec<usize> = match axes {
            Some(ax) => ax
                .iter()
                .map(|&a| tensor::axis(a, shape.len(), false))
                .collect::<R<_>>()?,
            None => (0..shape.len()).filter(|&i| shape[i] == 1).collect(),
        };
        if let Some(&i) = drop.iter().find(|&&i| shape[i] != 1) {
            return Err(format!("Squeeze of axis {i} of {shape:?}, which is not 1"));
        }
        Ok((0..shape.len())
            .filter(|i| !drop.contains(i))
            .map(|i| shape[i])
            .collect())
    } else {
        let ax = axes.ok_or("Unsqueeze without axes")?;
        let r = shape.len() + ax.len();
        let mut ins: Vec<usize> = ax
            .iter()
            .map(|&a| tensor::axis(a, r, false))
            .collect::<R<_>>()?;
        ins.sort_unstable();
        let mut out = Vec::with_capacity(r);
        let mut src = shape.iter();
        for i in 0..r {
            if ins.contains(&i) {
                out.push(1);
            } else {
                out.push(*src.next().ok_or("Unsqueeze axes repeat")?);
            }
        }
        Ok(out)
    }
}

/// The nodes in an order where each reads only values defined before it (ONNX requires
/// topological order; this also accepts files that do not keep it).
fn order(g: &GraphProto) -> R<Vec<&NodeProto>> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for o in &n.output {
            if !o.is_empty() {
                producer.insert(o.as_str(), i);
            }
        }
    }
    let mut state = vec![0u8; g.node.len()]; // 0 new, 1 in progress, 2 done
    let mut out = Vec::with_capacity(g.node.len());
    for start in 0..g.node.len() {
        let mut stack = vec![(start, 0usize)];
        while let Some(&mut (i, ref mut next)) = stack.last_mut() {
            if state[i] == 2 {
                stack.pop();
                continue;
            }
            state[i] = 1;
            let inputs = &g.node[i].input;
            if *next < inputs.len() {
                let dep = producer.get(inputs[*next].as_str()).copied();
                *next += 1;
                if let Some(d) = dep {
                    match state[d] {
                        0 => stack.push((d, 0)),
                        1 => {
                            return Err(format!(
                                "the graph has a cycle through node `{}`",
                                g.node[d].name()
                            ));
                        }
                        _ => {}
                    }
                }
            } else {
                state[i] = 2;
                out.push(&g.node[i]);
                stack.pop();
            }
        }
    }
    Ok(out)
}

/// `[top, left, bottom, right]` of an ONNX ConvTranspose: `pads` (auto_pad NOTSET or
/// VALID), or from `output_shape` or auto_pad SAME_UPPER / SAME_LOWER (output = input ·
/// stride), where the total padding is `stride·(in − 1) + output_padding + dilation·(k − 1) +
/// 1 − output`. The ONNX text and runtimes disagree on which side takes the odd unit of an
/// odd total, so an odd total is refused rather than guessed.
/// What Conv and ConvTranspose read alike: a 4-D input and weight, the kernel (the weight's
/// last two axes, checked against `kernel_shape`), strides, dilations and a positive group.
fn conv_geometry(a: &Attrs, what: &str, xs: &Shape, w: &Const) -> R<ConvGeometry> {
    if xs.len() != 4 || w.shape.len() != 4 {
        return Err(format!(
            "only 2-D {what} (4-D input and weight) are supported; input {:?}, weight {:?}",
            xs, w.shape
        ));
    }
    let kernel = [w.shape[2], w.shape[3]];
    if let Some(k) = a.ints("kernel_shape")
        && k != [kernel[0] as i64, kernel[1] as i64]
    {
        return Err(format!(
            "kernel_shape {k:?} disagrees with the weight shape {:?}",
            w.shape
        ));
    }
    let stride = a.pair("strides", 1)?;
    let dilation = a.pair("dilations", 1)?;
    let groups = usize::try_from(a.int("group").unwrap_or(1))
        .ok()
        .filter(|&g| g >= 1)
        .ok_or("group must be positive")?;
    Ok(ConvGeometry {
        kernel,
        stride,
        dilation,
        groups,
    })
}

/// The attributes [`conv_geometry`] reads.
struct ConvGeometry {
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
}

/// A conv-like layer's parameter tensors: the weight as it is, and the bias, which must
/// hold one value per output channel.
fn weight_and_bias(
    w: &Const,
    b: Option<&Const>,
    out_channels: usize,
) -> R<Vec<(&'static str, Tensor)>> {
    let mut tensors = vec![("weight", Tensor::new(w.shape.clone(), w.to_f32()))];
    if let Some(b) = b {
        if b.numel() != out_channels {
            return Err(format!(
                "bias has {} values for {out_channels} output channels",
                b.numel()
            ));
        }
        tensors.push(("bias", Tensor::new(vec![out_channels], b.to_f32())));
    }
    Ok(tensors)
}

fn conv_transpose_pads(
    a: &Attrs,
    input: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    output_padding: [usize; 2],
) -> R<[usize; 4]> {
    let auto = a.string("auto_pad").unwrap_or_else(|| "NOTSET".into());
    let output_shape = a.ints("output_shape");
    let target: [i64; 2] = match (auto.as_str(), &output_shape) {
        (_, Some(o)) if o.len() >= 2 => [o[o.len() - 2], o[o.len() - 1]],
        (_, Some(o)) => return Err(format!("output_shape {o:?} needs H and W")),
        ("NOTSET" | "", None) => {
            return match a.ints("pads") {
                None => Ok([0; 4]),
                Some(p) if p.len() == 4 && p.iter().all(|&x| x >= 0) => {
                    Ok([p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize])
                }
                Some(p) => Err(format!("pads {p:?} are not four non-negative numbers")),
            };
        }
        ("VALID", None) => return Ok([0; 4]),
        ("SAME_UPPER" | "SAME_LOWER", None) => {
            [(input[0] * stride[0]) as i64, (input[1] * stride[1]) as i64]
        }
        (other, None) => return Err(format!("auto_pad `{other}` is not supported")),
    };
    let mut pads = [0usize; 4];
    for i in 0..2 {
        let full =
            (stride[i] * (input[i] - 1) + output_padding[i] + dilation[i] * (kernel[i] - 1) + 1)
                as i64;
        let total = full - target[i];
        if total < 0 {
            return Err(format!(
                "output size {} is larger than the full transposed convolution ({full}); \
                 use output_padding",
                target[i]
            ));
        }
        if total % 2 != 0 {
            return Err(format!(
                "output size {} needs an odd total padding ({total}), which the ONNX \
                 specification and runtimes split differently; give explicit `pads`",
                target[i]
            ));
        }
        pads[i] = (total / 2) as usize;
        pads[i + 2] = (total / 2) as usize;
    }
    Ok(pads)
}

/// Attribute lookup on a node.
struct Attrs<'a>(&'a [AttributeProto]);

impl Attrs<'_> {
    fn get(&self, name: &str) -> Option<&AttributeProto> {
        self.0.iter().find(|a| a.name() == name)
    }
    fn int(&self, name: &str) -> Option<i64> {
        self.get(name).map(|a| a.i())
    }
    fn float(&self, name: &str) -> Option<f32> {
        self.get(name).map(|a| a.f())
    }
    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }
    fn string(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|a| String::from_utf8_lossy(a.s()).into_owned())
    }
    fn tensor(&self, name: &str) -> Option<&TensorProto> {
        self.get(name).and_then(|a| a.t.as_ref())
    }

    /// A 2-element attribute (strides, dilations), `default` when absent.
    fn pair(&self, name: &str, default: usize) -> R<[usize; 2]> {
        match self.ints(name) {
            None => Ok([default; 2]),
            Some(v) if v.len() == 2 && v.iter().all(|&x| x >= 1) => {
                Ok([v[0] as usize, v[1] as usize])
            }
            Some(v) => Err(format!("{name} {v:?} is not two positive numbers")),
        }
    }

    /// `[top, left, bottom, right]` from `pads` / `auto_pad`.
    fn pads(
        &self,
        input: &[usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
    ) -> R<[usize; 4]> {
        let auto = self.string("auto_pad").unwrap_or_else(|| "NOTSET".into());
        match auto.as_str() {
            "NOTSET" | "" => match self.ints("pads") {
                None => Ok([0; 4]),
                Some(p) if p.len() == 4 && p.iter().all(|&x| x >= 0) => {
                    Ok([p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize])
                }
                Some(p) => Err(format!("pads {p:?} are not four non-negative numbers")),
            },
            "VALID" => Ok([0; 4]),
            "SAME_UPPER" | "SAME_LOWER" => {
                let mut begin = [0; 2];
                let mut end = [0; 2];
                for i in 0..2 {
                    let out = input[i].div_ceil(stride[i]);
                    let span = (kernel[i] - 1) * dilation[i] + 1;
                    let total = ((out - 1) * stride[i] + span).saturating_sub(input[i]);
                    let small = total / 2;
                    if auto == "SAME_UPPER" {
                        begin[i] = small;
                        end[i] = total - small;
                    } else {
                        end[i] = small;
                        begin[i] = total - small;
                    }
                }
                Ok([begin[0], begin[1], end[0], end[1]])
            }
            other => Err(format!("auto_pad `{other}` is not supported")),
        }
    }
}
