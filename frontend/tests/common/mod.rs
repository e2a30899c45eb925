//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bnc_frontend::Error;
use safetensors::Dtype;
use safetensors::tensor::TensorView;

/// Loads `source` as `test.nn` with weights looked up in `dir`.
pub fn load_in(source: &str, dir: &Path) -> Result<bnc_ir::Graph, Error> {
    bnc_frontend::load_str(source, "test.nn", dir)
}

pub fn load(source: &str) -> Result<bnc_ir::Graph, Error> {
    load_in(source, Path::new("."))
}

/// The error `source` must produce.
pub fn error_in(source: &str, dir: &Path) -> Error {
    match load_in(source, dir) {
        Ok(_) => panic!("expected an error for:\n{source}"),
        Err(e) => e,
    }
}

pub fn error(source: &str) -> Error {
    error_in(source, Path::new("."))
}

/// Asserts the message, the `line:col` of the primary span, and that the rendered report
/// names the location and shows the offending source line.
pub fn assert_error(e: &Error, message: &str, line: usize, col: usize, source: &str) {
    assert_eq!(e.message(), message, "rendered:\n{}", e.render(false));
    let (file, l, c) = e.location().expect("error has a location");
    assert_eq!(file, "test.nn");
    assert_eq!((l, c), (line, col), "rendered:\n{}", e.render(false));
    let rendered = e.render(false);
    assert!(
        rendered.contains(&format!("test.nn:{line}:{col}")),
        "no location in:\n{rendered}"
    );
    let src_line = source.lines().nth(line - 1).unwrap_or("");
    let src_line = src_line.trim();
    assert!(
        rendered.contains(src_line),
        "source line {src_line:?} not shown in:\n{rendered}"
    );
    let head: String = message.chars().take(30).collect();
    assert!(rendered.contains(&head), "message not in:\n{rendered}");
}

/// A fresh empty directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bnc-frontend-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A tensor to write: dtype, shape and f32 values (converted to the dtype).
pub struct Entry {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

pub fn f32_entry(shape: &[usize], values: Vec<f32>) -> Entry {
    Entry {
        dtype: Dtype::F32,
        shape: shape.to_vec(),
        values,
    }
}

/// `0.01 * i` for every element, so each tensor is recognisable.
pub fn ramp(shape: &[usize]) -> Entry {
    let n: usize = shape.iter().product();
    f32_entry(shape, (0..n).map(|i| i as f32 * 0.01).collect())
}

fn encode(e: &Entry) -> Vec<u8> {
    match e.dtype {
        Dtype::F32 => e.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::F64 => e
            .values
            .iter()
            .flat_map(|&v| f64::from(v).to_le_bytes())
            .collect(),
        Dtype::F16 => e
            .values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        Dtype::BF16 => e
            .values
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
        Dtype::I64 => e
            .values
            .iter()
            .flat_map(|&v| (v as i64).to_le_bytes())
            .collect(),
        other => panic!("test helper does not encode {other:?}"),
    }
}

/// Writes a safetensors file.
pub fn write_safetensors(path: &Path, tensors: &[(&str, Entry)]) {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, e)| encode(e)).collect();
    let views: HashMap<String, TensorView<'_>> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, e), b)| {
            (
                name.to_string(),
                TensorView::new(e.dtype, e.shape.clone(), b).expect("valid view"),
            )
        })
        .collect();
    let data = safetensors::serialize(views, None).expect("serialize");
    std::fs::write(path, data).expect("write safetensors");
}

/// Imports the ONNX model `m` (as `test.onnx`, external data looked up in `.`).
pub fn onnx_import_result(
    m: &bnc_frontend::onnx::builder::ModelBuilder,
) -> Result<bnc_ir::Graph, Error> {
    bnc_frontend::onnx::load_bytes(
        &m.to_bytes(),
        "test.onnx",
        "test",
        Path::new("."),
        &bnc_frontend::onnx::OnnxOptions::default(),
    )
}

/// Imports `m`, panicking with the rendered diagnostic if it fails.
pub fn onnx_import(m: &bnc_frontend::onnx::builder::ModelBuilder) -> bnc_ir::Graph {
    onnx_import_result(m).unwrap_or_else(|e| panic!("import failed: {}", e.render(false)))
}

/// The message of the error importing `m` gives; panics if it imports.
pub fn onnx_import_err(m: &bnc_frontend::onnx::builder::ModelBuilder) -> String {
    match onnx_import_result(m) {
        Ok(g) => panic!(
            "expected an error, imported:\n{}",
            bnc_ir::printer::print(&g)
        ),
        Err(e) => e.message().to_string(),
    }
}
