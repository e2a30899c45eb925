//! The Graph IR of bnc: a typed dataflow graph with static shapes (NCHW, f32).
//!
//! A [`Graph`] holds values (the graph's inputs and one output per node), nodes in
//! topological order, and the parameter tensors the nodes refer to by name. The textual form
//! printed by [`printer`] is the `.nn` language itself, so what is printed parses again.
//! [`interp`] is the reference interpreter every pass and kernel is checked against.

pub mod edit;
pub mod interp;
pub mod limits;
pub mod op;
mod opattrs;
pub mod optable;
pub mod printer;
pub mod tensor;

use std::collections::BTreeMap;
use std::fmt;

pub use op::{
    Activation, Conv2d, ConvTranspose2d, Op, ParamKind, ParamSpec, Pool2d, Resize, ResizeTap,
    shuffle_source,
};
pub use optable::{AttrValue, MapRule, OpInfo, OpKind, Transparency};
pub use tensor::Tensor;

/// A static tensor shape, outermost dimension first (NCHW for feature maps).
pub type Shape = Vec<usize>;

/// Index of a value (a tensor flowing along an edge) in [`Graph::values`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ValueId(pub usize);

/// Index of a node in [`Graph::nodes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub usize);

/// Where a model's parameters come from, as written in its `weights` line.
#[derive(Clone, Debug, PartialEq)]
pub enum WeightsSource {
    /// A safetensors file; the path is kept as written (relative to the model file).
    File(String),
    /// Deterministic pseudo-random parameters generated from a seed.
    Random { seed: u64 },
}

/// A named tensor with a static shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub name: String,
    pub shape: Shape,
}

/// One operation. It reads `inputs`, writes `output`, and finds its parameter tensors
/// under `params` (a prefix: `<params>.weight`, `<params>.bias`, ...).
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub output: ValueId,
    /// Parameter name prefix; `None` for operators without parameters.
    pub params: Option<String>,
}

/// A whole model. Nodes are in topological order: a node only reads graph inputs and the
/// outputs of earlier nodes.
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    pub name: String,
    pub weights: WeightsSource,
    pub values: Vec<Value>,
    pub inputs: Vec<ValueId>,
    pub nodes: Vec<Node>,
    pub outputs: Vec<ValueId>,
    /// Parameter tensors by full name (`c1.weight`), PyTorch `state_dict` style.
    pub params: BTreeMap<String, Tensor>,
}

/// A structural problem found by [`Graph::verify`].
#[derive(Clone, Debug, PartialEq)]
pub struct VerifyError(pub String);

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid graph: {}", self.0)
    }
}

impl std::error::Error for VerifyError {}

impl Graph {
    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id.0]
    }

    pub fn shape(&self, id: ValueId) -> &Shape {
        &self.values[id.0].shape
    }

    /// For each value, the nodes that read it (in node order; a node reading a value twice
    /// appears twice).
    pub fn users(&self) -> Vec<Vec<NodeId>> {
        let mut users = vec![Vec::new(); self.values.len()];
        for (i, node) in self.nodes.iter().enumerate() {
            for input in &node.inputs {
                users[input.0].push(NodeId(i));
            }
        }
        users
    }

    /// The parameter tensor `<prefix>.<suffix>` of a node.
    pub fn param(&self, node: &Node, suffix: &str) -> Option<&Tensor> {
        let prefix = node.params.as_deref()?;
        self.params.get(&format!("{prefix}.{suffix}"))
    }

    /// Checks the invariants every pass must keep: topological order, one producer per value,
    /// shapes consistent with each operator's shape rule, parameters present with the shapes
    /// the operator expects, and outputs defined.
    pub fn verify(&self) -> Result<(), VerifyError> {
        let err = |msg: String| Err(VerifyError(msg));
        let mut defined = vec![false; self.values.len()];
        for &input in &self.inputs {
            if input.0 >= self.values.len() {
                return err(format!("input {} out of range", input.0));
            }
            if defined[input.0] {
                return err(format!("value `{}` defined twice", self.value(input).name));
            }
            defined[input.0] = true;
        }
        for node in &self.nodes {
            let out = node.output;
            if out.0 >= self.values.len() {
                return err(format!("node output {} out of range", out.0));
            }
            let name = &self.value(out).name;
            for input in &node.inputs {
                if input.0 >= self.values.len() || !defined[input.0] {
                    return err(format!(
                        "`{name}` reads a value that is not defined before it"
                    ));
                }
            }
            if defined[out.0] {
                return err(format!("value `{name}` defined twice"));
            }
            defined[out.0] = true;
            let shapes: Vec<&Shape> = node.inputs.iter().map(|&i| self.shape(i)).collect();
            match node.op.infer_shape(&shapes) {
                Ok(shape) if &shape == self.shape(out) => {}
                Ok(shape) => {
                    return err(format!(
                        "`{name}` has shape {:?} but its operator gives {:?}",
                        self.shape(out),
                        shape
                    ));
                }
                Err(e) => return err(format!("`{name}`: {e}")),
            }
            let specs = node.op.param_specs(&shapes);
            if !specs.is_empty() && node.params.is_none() {
                return err(format!("`{name}` needs parameters but has no prefix"));
            }
            for spec in specs {
                match self.param(node, spec.suffix) {
                    Some(t) if t.shape == spec.shape => {}
                    Some(t) => {
                        return err(format!(
                            "parameter `{}.{}` has shape {:?}, expected {:?}",
                            node.params.as_deref().unwrap_or_default(),
                            spec.suffix,
                            t.shape,
                            spec.shape
                        ));
                    }
                    None => {
                        return err(format!(
                            "parameter `{}.{}` is missing",
                            node.params.as_deref().unwrap_or_default(),
                            spec.suffix
                        ));
                    }
                }
            }
        }
        for &output in &self.outputs {
            if output.0 >= self.values.len() || !defined[output.0] {
                return err("an output is never defined".to_string());
            }
        }
        Ok(())
    }

    /// Counts the nodes for which `pred` holds.
    pub fn count_ops(&self, pred: impl Fn(&Op) -> bool) -> usize {
        self.nodes.iter().filter(|n| pred(&n.op)).count()
    }
}
