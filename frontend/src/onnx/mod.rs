//! ONNX import: reads an `.onnx` file (protobuf, parsed with prost from a vendored copy of
//! the ONNX schema) and builds the same [`bnc_ir::Graph`] a `.nn` file would give, with
//! `params` filled from the initializers and `weights` naming `<stem>.safetensors`, so that
//! printing the graph and saving its parameters gives a `.nn` model that loads again.
//!
//! The ONNX operators it maps, and on what conditions, are listed in `docs/onnx.md`
//! (`frontend/tests/onnx_operators_doc.rs` keeps that list equal to what the operator table
//! and [`EVALUATED_AT_IMPORT`] accept). Any other node is an error that names it, its operator
//! and the opset, and lists every node of the file that cannot be imported.

pub mod builder;
mod import;
pub mod names;
pub mod proto;
pub mod tensor;

use std::collections::BTreeMap;
use std::path::Path;

pub use prost;
use prost::Message;

use crate::Error;

/// ONNX operators evaluated at import time when their inputs are constants (or, for Shape, have
/// a static shape).
pub const EVALUATED_AT_IMPORT: &[&str] = &[
    "Constant",
    "Shape",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Cast",
    "Slice",
    "Reshape",
    "Flatten",
    "Identity",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Transpose",
    "ConstantOfShape",
];

/// Oldest and newest default-domain opset accepted.
pub const MIN_OPSET: i64 = 7;
pub const MAX_OPSET: i64 = 21;

/// How to import.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OnnxOptions {
    /// Fixed shapes for inputs, by ONNX input name: needed when the file leaves a
    /// dimension symbolic (a dynamic batch), allowed to override any input shape.
    pub input_shapes: BTreeMap<String, Vec<usize>>,
}

impl OnnxOptions {
    /// Adds `NAME=D,D,...` (what `--input-shape` takes).
    pub fn parse_input_shape(&mut self, spec: &str) -> Result<(), String> {
        let (name, dims) = spec
            .rsplit_once('=')
            .filter(|(n, _)| !n.is_empty())
            .ok_or_else(|| format!("`{spec}` is not NAME=D,D,... (e.g. input=1,3,224,224)"))?;
        let dims: Vec<usize> = dims
            .split(',')
            .map(|d| d.trim().parse::<usize>().ok().filter(|&d| d > 0))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                format!("`{dims}` is not a list of positive sizes (e.g. 1,3,224,224)")
            })?;
        self.input_shapes.insert(name.to_string(), dims);
        Ok(())
    }
}

/// Reads and imports an ONNX file (external data files are found beside it). The model is
/// named after the file stem and its weights line names `<stem>.safetensors`.
pub fn load(path: &Path, options: &OnnxOptions) -> Result<bnc_ir::Graph, Error> {
    let file_name = path.display().to_string();
    let bytes =
        std::fs::read(path).map_err(|e| Error::new(format!("cannot read `{file_name}`: {e}")))?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let base_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    load_bytes(&bytes, &file_name, &stem, base_dir, options)
}

/// Imports an ONNX model from memory. `file_name` appears in messages, `stem` names the
/// model and its weights file, and external data is looked up in `base_dir`.
pub fn load_bytes(
    bytes: &[u8],
    file_name: &str,
    stem: &str,
    base_dir: &Path,
    options: &OnnxOptions,
) -> Result<bnc_ir::Graph, Error> {
    let fail = |msg: String| Error::new(format!("{file_name}: {msg}"));
    let model = proto::ModelProto::decode(bytes).map_err(|e| {
        fail(format!(
            "not a valid ONNX file (truncated or corrupt protobuf: {e})"
        ))
    })?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| fail("not an ONNX model: it has no graph".into()))?;
    let opset = model
        .opset_import
        .iter()
        .filter(|o| matches!(o.domain(), "" | "ai.onnx"))
        .map(|o| o.version())
        .max()
        .ok_or_else(|| fail("the model imports no default-domain opset".into()))?;
    if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
        return Err(fail(format!(
            "opset {opset} is not supported (bnc imports opsets {MIN_OPSET}–{MAX_OPSET}; re-export with e.g. opset_version=17)"
        )));
    }
    let model_name = names::identifier(stem).replace('.', "_");
    let importer =
        import::Importer::new(model_name, format!("{stem}.safetensors"), opset, base_dir);
    let (graph, failures) = importer.run(graph, options).map_err(fail)?;
    if let Some(first) = failures.first() {
        let mut by_op: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for f in &failures {
            by_op.entry(&f.op_type).or_default().push(&f.node);
        }
        let list: Vec<String> = by_op
            .iter()
            .map(|(op, nodes)| {
                let shown: Vec<String> = nodes.iter().take(4).map(|n| format!("`{n}`")).collect();
                let more = if nodes.len() > 4 {
                    format!(", ... {} more", nodes.len() - 4)
                } else {
                    String::new()
                };
                format!("  {op} x{}: {}{more}", nodes.len(), shown.join(", "))
            })
            .collect();
        let ops: Vec<&str> = by_op.keys().copied().collect();
        return Err(Error::new(format!(
            "{file_name}: node `{}` ({}, opset {opset}) cannot be imported: {}\n{} node(s) cannot be imported; unsupported operators in this file: {}\n{}",
            first.node,
            first.op_type,
            first.reason,
            failures.len(),
            ops.join(", "),
            list.join("\n")
        ))
        .with_help(
            "bnc imports Conv, ConvTranspose, Gemm/MatMul, BatchNormalization, Relu, LeakyRelu, Clip, Sigmoid, HardSigmoid, HardSwish, Tanh, Add, Mul, Concat, MaxPool, AveragePool, GlobalAveragePool, Pad, Flatten, flattening Reshape, Identity, Dropout, Softmax, Resize and Upsample (nearest, linear), and constant shape computations",
        ));
    }
    graph.verify().map_err(|e| {
        fail(format!(
            "internal error: the imported graph is invalid: {e}"
        ))
    })?;
    bnc_ir::limits::Limits::default()
        .check(&graph)
        .map_err(fail)?;
    Ok(graph)
}
