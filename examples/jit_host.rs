//! A Rust host using bnc as a library: load a `.nn` model, fold its batch-norms, JIT-compile
//! it, and run it on one thread and on several.
//!
//! ```sh
//! cargo run --release --example jit_host -- examples/resnet18.nn
//! cargo run --release --example jit_host                      # examples/tiny.nn
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bnc::{CompileOptions, Model};

/// Runs `model` a few times (after one warm-up run) and returns the median latency.
fn median_latency(model: &Model, input: &[f32], output: &mut [f32], runs: usize) -> Duration {
    model
        .run(&[input], &mut [output])
        .expect("buffers match the model");
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            model
                .run(&[input], &mut [output])
                .expect("buffers match the model");
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/tiny.nn"));

    // Load, fold with the default pipeline, compile for one thread.
    let start = Instant::now();
    let model = match Model::from_file(&path, &CompileOptions::default()) {
        Ok(model) => model,
        Err(bnc::Error::Frontend(e)) => {
            // The full diagnostic, with the offending source line.
            eprint!("{}", e.render(false));
            std::process::exit(1);
        }
        Err(e) => return Err(e.into()),
    };
    let total = start.elapsed();
    let report = model.report();
    println!(
        "{}: {} -> {}, {} of {} batch-norms folded away",
        model.name(),
        format_shapes(&model.input_shapes()),
        format_shapes(&model.output_shapes()),
        report.folded(),
        report.batchnorms.len()
    );
    println!(
        "compiled {} kernels in {:.1} ms (load + fold + codegen {:.1} ms), {:.1} MB of weights, {:.1} MB workspace",
        model.compiled().kernel_count(),
        ms(model.compile_time()),
        ms(total),
        model.compiled().weight_bytes() as f64 / 1e6,
        model.compiled().workspace_size() as f64 / 1e6,
    );

    // A seeded input, as `bnc run` makes it without --input.
    let name = &model.input_names()[0];
    let input = bnc::frontend::random_normal(0, name, &model.input_shapes()[0]);
    let mut output = vec![0f32; model.output_shapes()[0].iter().product()];
    let runs = 7;
    let one = median_latency(&model, &input.data, &mut output, runs);
    summarize(&model.output_names()[0], &output);
    let gflop = model.compiled().flops() as f64 / 1e9;
    println!(
        "threads 1: median of {runs} runs {:.3} ms ({:.1} GFLOP/s)",
        ms(one),
        gflop / one.as_secs_f64()
    );

    // The same model with each kernel split over every core: bit-identical outputs.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores > 1 {
        let parallel = Model::from_graph(
            &bnc::load_file(&path)?,
            &CompileOptions {
                threads: cores,
                ..CompileOptions::default()
            },
        )?;
        let mut out_n = vec![0f32; output.len()];
        let n = median_latency(&parallel, &input.data, &mut out_n, runs);
        assert!(
            out_n
                .iter()
                .zip(&output)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "thread count changed the result"
        );
        println!(
            "threads {cores}: median of {runs} runs {:.3} ms ({:.2}x), identical outputs",
            ms(n),
            one.as_secs_f64() / n.as_secs_f64()
        );
    }

    // A Model is Send + Sync: several host threads can share one, each call gets its own
    // workspace.
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let mut out = vec![0f32; output.len()];
                model.run(&[&input.data], &mut [&mut out]).unwrap();
                assert_eq!(out, output);
            });
        }
    });
    println!("2 host threads sharing the model: same outputs");
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn format_shapes(shapes: &[bnc::Shape]) -> String {
    let s: Vec<String> = shapes.iter().map(|s| format!("{s:?}")).collect();
    s.join(", ")
}

fn summarize(name: &str, y: &[f32]) {
    let (argmax, max) =
        y.iter().enumerate().fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &v)| if v > b.1 { (i, v) } else { b },
        );
    let min = y.iter().copied().fold(f32::INFINITY, f32::min);
    let head: Vec<String> = y.iter().take(5).map(|v| format!("{v:.5}")).collect();
    println!(
        "{name}: {} values, min {min:.5} max {max:.5}, argmax {argmax}, first [{}, ...]",
        y.len(),
        head.join(", ")
    );
}
