//! Benchmarks, ignored by default. Run in release, on an otherwise idle machine:
//!
//! ```text
//! cargo test -p bnc-codegen --release --test bench -- --ignored --nocapture --test-threads 1
//! ```
//!
//! `bench_gemm`: GFLOP/s of one GEMM (a 1x1 conv: `C[M][N] = W[M][K] X[K][N]`, packing of
//! X included) on one core for each microkernel against `matrixmultiply::sgemm`.
//! `bench`: batch-1 latency (median of `BNC_RUNS`, default 20, runs) at 1 and 2 threads,
//! before (the Cranelift f32x4 fallback) and after (the assembled wide kernels).
//! `profile`: per-kernel times of one model (`BNC_MODEL=resnet50`).

mod common;
use std::path::Path;
use std::time::Instant;

use bnc_codegen::{CompiledModel, Options, TargetCpu, compile};

fn example(name: &str) -> bnc_ir::Graph {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(format!("{name}.nn"));
    bnc_frontend::load_file(&path).unwrap()
}

fn median_ms(m: &CompiledModel, g: &bnc_ir::Graph, runs: usize) -> (f64, f64) {
    let ins = common::inputs(g, 1);
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
    (times[times.len() / 2] * 1e3, times[0] * 1e3)
}

fn runs() -> usize {
    std::env::var("BNC_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

fn variants() -> Vec<(&'static str, Options)> {
    let mut v = vec![(
        "fallback",
        Options {
            wide_gemm: false,
            ..Options::default()
        },
    )];
    if TargetCpu::X86_64V3.host_supports() {
        v.push((
            "avx2",
            Options {
                target_cpu: TargetCpu::X86_64V3,
                ..Options::default()
            },
        ));
    }
    if TargetCpu::X86_64V4.host_supports() {
        v.push((
            "avx512",
            Options {
                target_cpu: TargetCpu::X86_64V4,
                ..Options::default()
            },
        ));
    }
    v
}

#[test]
#[ignore]
fn bench() {
    let models: Vec<String> = match std::env::var("BNC_MODELS") {
        Ok(s) => s.split(',').map(String::from).collect(),
        Err(_) => [
            "resnet18",
            "resnet50",
            "mobilenet_v2",
            "efficientnet_b0",
            "densenet121",
        ]
        .map(String::from)
        .to_vec(),
    };
    for name in &models {
        let g = example(name);
        for threads in [1, 2] {
            for (label, o) in variants() {
                let t = Instant::now();
                let m = compile(&g, &Options { threads, ..o }).unwrap();
                let ct = t.elapsed().as_secs_f64() * 1e3;
                let (med, min) = median_ms(&m, &g, runs());
                println!(
                    "{name:>16} threads={threads} {label:>8}: median {med:8.2} ms  min {min:8.2} ms  {:6.1} GFLOP/s  compile {ct:6.1} ms",
                    m.flops() as f64 / med / 1e6,
                );
            }
        }
    }
}

/// A GEMM as a model: input `[1, K, 1, N]`, a 1x1 conv to M channels without bias.
fn gemm_graph(m: usize, n: usize, k: usize) -> bnc_ir::Graph {
    common::model(&format!(
        "input x: f32[1, {k}, 1, {n}]\n y = conv2d(x, out = {m}, kernel = 1, bias = false)\n output y"
    ))
}

#[test]
#[ignore]
fn bench_gemm() {
    for s in [256usize, 1024] {
        let (m, n, k) = (s, s, s);
        let flop = 2.0 * (m * n * k) as f64;
        let reps = if s <= 256 { 200 } else { 10 };
        let g = gemm_graph(m, n, k);
        let ins = common::inputs(&g, 3);
        let w = &g.params.values().next().unwrap().data;
        let mut c = vec![0.0f32; m * n];
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            for _ in 0..reps {
                // SAFETY: the slices hold m*k, k*n and m*n floats with the given strides.
                unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        w.as_ptr(),
                        k as isize,
                        1,
                        ins[0].data.as_ptr(),
                        n as isize,
                        1,
                        0.0,
                        c.as_mut_ptr(),
                        n as isize,
                        1,
                    );
                }
            }
            best = best.min(t.elapsed().as_secs_f64() / reps as f64);
        }
        println!(
            "gemm {s}^3 {:>16}: {:7.1} GFLOP/s",
            "matrixmultiply",
            flop / best / 1e9
        );
        for (label, o) in variants() {
            let cm = compile(&g, &o).unwrap();
            let inp = [ins[0].data.as_slice()];
            let mut out = vec![0.0f32; m * n];
            let mut ws = cm.new_workspace();
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t = Instant::now();
                for _ in 0..reps {
                    cm.run_with_workspace(&mut ws, &inp, &mut [&mut out])
                        .unwrap();
                }
                best = best.min(t.elapsed().as_secs_f64() / reps as f64);
            }
            let err = out
                .iter()
                .zip(&c)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            println!(
                "gemm {s}^3 {label:>16}: {:7.1} GFLOP/s  (max |diff| vs matrixmultiply {err:.1e})",
                flop / best / 1e9
            );
        }
    }
}

/// Per-kernel times of one model: `BNC_MODEL=resnet18 cargo test --release --test bench -- --ignored --nocapture profile`
#[test]
#[ignore]
fn profile() {
    let name = std::env::var("BNC_MODEL").unwrap_or_else(|_| "resnet18".into());
    let g = example(&name);
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
