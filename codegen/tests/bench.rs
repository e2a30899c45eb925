//! Latency benchmark, ignored by default. Run in release:
//! `cargo test -p bnc-codegen --release -- --ignored --nocapture bench`

mod common;
use std::path::Path;
use std::time::Instant;

use bnc_codegen::{Options, compile};

fn bench_model(name: &str, threads: usize, runs: usize) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(format!("{name}.nn"));
    let g = bnc_frontend::load_file(&path).unwrap();
    let t = Instant::now();
    let m = compile(
        &g,
        &Options {
            threads,
            ..Options::default()
        },
    )
    .unwrap();
    let compile_time = t.elapsed();
    let ins = common::inputs(&g, 1);
    let inp: Vec<&[f32]> = ins.iter().map(|t| t.data.as_slice()).collect();
    let mut outs: Vec<Vec<f32>> = m
        .output_shapes()
        .iter()
        .map(|s| vec![0.0; s.iter().product()])
        .collect();
    let mut ws = m.new_workspace();
    let mut times = Vec::new();
    for i in 0..runs + 3 {
        let mut refs: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
        let t = Instant::now();
        m.run_with_workspace(&mut ws, &inp, &mut refs).unwrap();
        if i >= 3 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let med = times[times.len() / 2];
    println!(
        "{name:>14} threads={threads}: median {:8.2} ms  min {:8.2} ms  {:6.1} GFLOP/s  compile {:7.1} ms  ({} kernels, workspace {:.1} MiB)",
        med * 1e3,
        times[0] * 1e3,
        m.flops() as f64 / med / 1e9,
        compile_time.as_secs_f64() * 1e3,
        m.kernel_count(),
        m.workspace_size() as f64 / (1 << 20) as f64,
    );
}

#[test]
#[ignore]
fn bench() {
    for name in ["resnet18", "resnet50", "mobilenet_v2"] {
        for threads in [1, 2] {
            bench_model(name, threads, 20);
        }
    }
}

/// Per-kernel times of one model: `BNC_MODEL=resnet18 cargo test --release -- --ignored --nocapture profile`
#[test]
#[ignore]
fn profile() {
    let name = std::env::var("BNC_MODEL").unwrap_or_else(|_| "resnet18".into());
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(format!("{name}.nn"));
    let g = bnc_frontend::load_file(&path).unwrap();
    let m = compile(&g, &Options::default()).unwrap();
    let ins = common::inputs(&g, 1);
    let inp: Vec<&[f32]> = ins.iter().map(|t| t.data.as_slice()).collect();
    let mut outs: Vec<Vec<f32>> = m
        .output_shapes()
        .iter()
        .map(|s| vec![0.0; s.iter().product()])
        .collect();
    let mut best: Vec<(String, f64)> = Vec::new();
    for _ in 0..5 {
        let mut refs: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
        let t = m.profile(&inp, &mut refs).unwrap();
        if best.is_empty() {
            best = t;
        } else {
            for (b, n) in best.iter_mut().zip(t) {
                b.1 = b.1.min(n.1);
            }
        }
    }
    let total: f64 = best.iter().map(|b| b.1).sum();
    for (n, t) in &best {
        println!("{:8.3} ms  {:5.1}%  {n}", t * 1e3, 100.0 * t / total);
    }
    println!("total {:.2} ms", total * 1e3);
}
