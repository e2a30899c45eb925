//! The `.nn` frontend: lexer, parser, name resolution, attribute and shape checking,
//! lowering to [`bnc_ir::Graph`], and parameter loading. Every problem is reported as one
//! [`Error`] pointing into the source; no input makes it panic.
//!
//! The language is described in docs/language.md.

pub mod ast;
pub mod diag;
pub mod lexer;
pub mod lower;
pub mod onnx;
pub mod parser;
pub mod weights;

use std::path::Path;
use std::sync::Arc;

pub use diag::{Error, Label, Span};
pub use weights::{random_normal, random_tensor, try_random_normal, try_random_tensor};

/// Reads, parses and lowers a model file and loads its weights (a weights file is found
/// relative to the model file's directory).
///
/// A file ending in `.onnx` is imported as ONNX ([`onnx::load`] with default options).
pub fn load_file(path: &Path) -> Result<bnc_ir::Graph, Error> {
    if is_onnx(path) {
        return onnx::load(path, &onnx::OnnxOptions::default());
    }
    let file_name = path.display().to_string();
    let bytes =
        std::fs::read(path).map_err(|e| Error::new(format!("cannot read `{file_name}`: {e}")))?;
    let source = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            // The lossy copy is identical up to `at`, where U+FFFD (3 bytes) takes the place
            // of the bad sequence, so the error can show the line.
            let lossy = String::from_utf8_lossy(e.as_bytes()).into_owned();
            return Err(Error::at(
                at..at + '\u{FFFD}'.len_utf8(),
                "file is not valid UTF-8",
                "invalid byte sequence",
            )
            .with_source(&file_name, Arc::from(lossy)));
        }
    };
    let base_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    load_str(&source, &file_name, base_dir)
}

/// Whether `path` names an ONNX model (extension `.onnx`, any case).
pub fn is_onnx(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// Parses and lowers `source` (named `file_name` in messages) and loads its weights, a
/// weights file being looked up relative to `base_dir`.
pub fn load_str(source: &str, file_name: &str, base_dir: &Path) -> Result<bnc_ir::Graph, Error> {
    let result = parser::parse_model(source)
        .and_then(|model| lower::lower(&model))
        .and_then(|mut lowered| {
            // Before any weight is read or generated: a model too large fails here, clearly.
            bnc_ir::limits::Limits::default()
                .check(&lowered.graph)
                .map_err(Error::new)?;
            weights::load(&mut lowered, base_dir)?;
            Ok(lowered.graph)
        });
    result.map_err(|e| e.with_source(file_name, Arc::from(source)))
}

/// Parses `source` into a syntax tree without checking names, attributes or shapes.
pub fn parse(source: &str, file_name: &str) -> Result<ast::Model, Error> {
    parser::parse_model(source).map_err(|e| e.with_source(file_name, Arc::from(source)))
}

/// Parses and lowers `source` without loading weights (`graph.params` stays empty).
pub fn lower_str(source: &str, file_name: &str) -> Result<bnc_ir::Graph, Error> {
    parser::parse_model(source)
        .and_then(|model| lower::lower(&model))
        .map(|lowered| lowered.graph)
        .map_err(|e| e.with_source(file_name, Arc::from(source)))
}
