//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod fold;
pub mod model_gen;

use std::path::{Path, PathBuf};

/// The repository root (where Cargo.toml of the `bnc` crate lives).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every example model, sorted by name.
pub fn example_models() -> Vec<PathBuf> {
    let mut models: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .expect("examples/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "nn"))
        .collect();
    models.sort();
    models
}

pub fn example(name: &str) -> PathBuf {
    root().join("examples").join(name)
}

/// Loads a model, panicking with the rendered diagnostic if it fails.
pub fn load(path: &Path) -> bnc::Graph {
    bnc::load_file(path).unwrap_or_else(|e| panic!("{}", e.render(false)))
}
