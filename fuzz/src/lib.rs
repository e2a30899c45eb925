//! Shared by the fuzz targets in `fuzz_targets/`: a per-process scratch folder, small model
//! limits, the fold-compile-run step every model that loads goes through, and the
//! structured generator of `fold_model` ([`model`]).

pub mod model;

use std::path::PathBuf;
use std::sync::Once;

use bnc::ir::{Graph, Tensor, interp};
use bnc::{CompileOptions, FoldMode, Model};

/// Models larger than this (parameters or tensors, in bytes) are refused at load, so that a
/// valid but huge model is an error here, not an out-of-memory report.
const MODEL_BYTES: &str = "16777216";

/// Models are run (compiled and interpreted) only up to this many tensor elements in all.
const RUN_ELEMENTS: usize = 1 << 16;

/// Once per process: the model size limit.
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // SAFETY: called once, before any thread of this process reads the environment.
        unsafe { std::env::set_var("BNC_MAX_MODEL_BYTES", MODEL_BYTES) };
    });
}

/// An empty folder of this process's own (fuzzing jobs run as separate processes).
pub fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bnc-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// Every fold mode's pipeline and compilation must succeed or give an error, never panic;
/// small models are also run, and must give outputs of the declared shapes.
pub fn fold_compile_run(graph: &Graph) {
    let small = graph
        .values
        .iter()
        .map(|v| v.shape.iter().product::<usize>())
        .sum::<usize>()
        <= RUN_ELEMENTS;
    for fold in [
        FoldMode::None,
        FoldMode::Adjacent,
        FoldMode::Paper,
        FoldMode::Egraph,
    ] {
        let options = CompileOptions {
            fold,
            ..CompileOptions::default()
        };
        let Ok(model) = Model::from_graph(graph, &options) else {
            continue;
        };
        if small {
            let inputs = inputs(graph, 1);
            if let Ok(outputs) = model.run_tensors(&inputs) {
                for (out, shape) in outputs.iter().zip(model.output_shapes()) {
                    assert_eq!(out.shape, shape);
                }
            }
        }
    }
}

/// Deterministic inputs in [-1, 1) for every graph input.
pub fn inputs(graph: &Graph, seed: u64) -> Vec<Tensor> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    graph
        .inputs
        .iter()
        .map(|&i| {
            let shape = graph.shape(i).clone();
            let n = shape.iter().product();
            Tensor::new(shape, (0..n).map(|_| next()).collect())
        })
        .collect()
}

/// The largest |y − ref| / max|ref| over the outputs, and whether `got` is non-finite where
/// the reference is finite.
pub fn error(want: &[Tensor], got: &[Tensor]) -> (f32, bool) {
    let mut worst = 0.0f32;
    let mut non_finite = false;
    for (w, g) in want.iter().zip(got) {
        let scale = w
            .data
            .iter()
            .filter(|v| v.is_finite())
            .fold(0.0f32, |m, v| m.max(v.abs()))
            .max(1e-30);
        for (a, b) in w.data.iter().zip(&g.data) {
            if !a.is_finite() {
                continue;
            }
            if !b.is_finite() {
                non_finite = true;
            } else {
                worst = worst.max((a - b).abs() / scale);
            }
        }
    }
    (worst, non_finite)
}

/// The reference outputs of the unfolded model (f64 accumulation), if it runs.
pub fn reference(graph: &Graph, inputs: &[Tensor]) -> Option<Vec<Tensor>> {
    interp::run(graph, inputs).ok()
}
