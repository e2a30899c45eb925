//! Shared helpers: load `.nn` text, make deterministic inputs, compare compiled vs interpreter.
#![allow(dead_code)]

use std::path::Path;

use bnc_codegen::{CacheSizes, CompiledModel, Options, compile};
use bnc_ir::{Graph, Tensor, interp};

/// Per-kernel tolerance: max abs error <= TOL * max(1, max |reference|).
pub const TOL: f32 = 1e-4;
/// Whole-model tolerance (tens of layers of f32 accumulation against the f64 interpreter).
pub const MODEL_TOL: f32 = 1e-3;

/// Default options with `threads`, planned for [`CacheSizes::DEFAULT`] rather than this
/// machine's caches, so the blocking (reduction chunks, pixel blocks) a test exercises is
/// the same on every machine.
pub fn options(threads: usize) -> Options {
    Options {
        threads,
        cache_sizes: Some(CacheSizes::DEFAULT),
        ..Options::default()
    }
}

/// Parses a model body (items inside `model t { ... }`) with random weights.
pub fn model(body: &str) -> Graph {
    let src = format!("model t {{\n  weights random(seed = 3)\n{body}\n}}\n");
    bnc_frontend::load_str(&src, "t.nn", Path::new("."))
        .unwrap_or_else(|e| panic!("test model does not load: {e:?}\n{src}"))
}

/// Deterministic inputs in [-2, 2) (xorshift).
pub fn inputs(graph: &Graph, seed: u64) -> Vec<Tensor> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    graph
        .inputs
        .iter()
        .map(|&v| {
            let shape = graph.shape(v).clone();
            let n = shape.iter().product();
            let data = (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
                })
                .collect();
            Tensor::new(shape, data)
        })
        .collect()
}

pub fn run_compiled(m: &CompiledModel, inputs: &[Tensor]) -> Vec<Tensor> {
    let ins: Vec<&[f32]> = inputs.iter().map(|t| t.data.as_slice()).collect();
    let mut outs: Vec<Vec<f32>> = m
        .output_shapes()
        .iter()
        .map(|s| vec![f32::NAN; s.iter().product()])
        .collect();
    {
        let mut refs: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
        m.run(&ins, &mut refs).expect("run");
    }
    outs.into_iter()
        .zip(m.output_shapes())
        .map(|(d, s)| Tensor::new(s, d))
        .collect()
}

/// Compiles with `threads`, runs on seeded inputs, compares with the interpreter; returns
/// the worst relative error.
pub fn check_with(graph: &Graph, threads: usize, tol: f32) -> f32 {
    let ins = inputs(graph, 1);
    let want = interp::run(graph, &ins).expect("interpreter");
    let m = compile(graph, &options(threads)).unwrap_or_else(|e| panic!("compile failed: {e}"));
    let got = run_compiled(&m, &ins);
    let mut worst = 0.0f32;
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        let scale = w.max_abs().max(1.0);
        let err = w.max_abs_diff(g) / scale;
        assert!(
            err <= tol,
            "output {i}: relative error {err} > {tol} (max|ref| = {})",
            w.max_abs()
        );
        worst = worst.max(err);
    }
    worst
}

pub fn check(graph: &Graph) -> f32 {
    check_with(graph, 1, TOL)
}

/// Checks a model body with threads 1, and threads 2 bit-identical to threads 1.
pub fn check_body(body: &str) {
    let g = model(body);
    check(&g);
    let ins = inputs(&g, 5);
    let m1 = compile(&g, &options(1)).unwrap();
    let m2 = compile(&g, &options(2)).unwrap();
    let a = run_compiled(&m1, &ins);
    let b = run_compiled(&m2, &ins);
    for (x, y) in a.iter().zip(&b) {
        let same = x
            .data
            .iter()
            .zip(&y.data)
            .all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(same, "threads=2 differs from threads=1");
    }
}
