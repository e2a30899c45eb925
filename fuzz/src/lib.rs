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

/// Models are run (compiled and interpreted) only up to this many bytes of tensors in all.
const RUN_BYTES: u64 = 1 << 18;

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
    let small = bnc::ir::limits::value_bytes(graph) <= RUN_BYTES;
    for fold in FOLD_MODES {
        let Ok(model) = compile(graph, fold) else {
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

/// Every fold mode, `none` first (the yardstick of the others).
pub const FOLD_MODES: [FoldMode; 4] = [
    FoldMode::None,
    FoldMode::Adjacent,
    FoldMode::Paper,
    FoldMode::Egraph,
];

/// `graph` folded in mode `fold` and compiled (one thread).
pub fn compile(graph: &Graph, fold: FoldMode) -> Result<Model, bnc::Error> {
    let options = CompileOptions {
        fold,
        ..CompileOptions::default()
    };
    Model::from_graph(graph, &options)
}

/// Seeded standard-normal inputs for every graph input, as `bnc run` makes them.
pub fn inputs(graph: &Graph, seed: u64) -> Vec<Tensor> {
    graph
        .inputs
        .iter()
        .map(|&i| {
            let v = graph.value(i);
            bnc::frontend::random_normal(seed, &v.name, &v.shape)
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
