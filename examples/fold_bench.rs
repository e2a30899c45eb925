//! Times the fold pipeline (canonicalize + saturation + extraction + weight update) on the
//! example models and on synthetic chains of conv-BN-add blocks of growing length, and fits
//! the scaling exponent. Run in release:
//!
//!     cargo run --release --example fold_bench
//!
//! Each number is the median of several runs in this process.

use std::time::{Duration, Instant};

use bnc::passes::FoldMode;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time_fold(graph: &bnc::Graph, mode: FoldMode, runs: usize) -> (Duration, usize) {
    let pipeline = bnc::Pipeline::default_for(mode);
    let mut times = Vec::new();
    let mut left = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let out = bnc::transform(graph, &pipeline, &mut |_, _| {}).expect("fold succeeds");
        times.push(start.elapsed());
        left = out.graph.count_ops(|op| matches!(op, bnc::ir::Op::Affine));
    }
    (median(times), left)
}

/// `blocks` residual blocks: r = relu(add(bn(conv3x3(r)), r)).
fn chain(blocks: usize) -> String {
    let mut text =
        String::from("model chain {\n  weights random(seed = 5)\n  input x: f32[1, 16, 8, 8]\n");
    let mut prev = "x".to_string();
    for i in 0..blocks {
        text += &format!(
            "  c{i} = conv2d({prev}, out = 16, kernel = 3, pad = 1, bias = false)\n  b{i} = batchnorm(c{i})\n  s{i} = add(b{i}, {prev})\n  r{i} = relu(s{i})\n"
        );
        prev = format!("r{i}");
    }
    text += &format!("  output {prev}\n}}\n");
    text
}

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    println!("| model | mode | fold time (median) | BNs left |");
    println!("|---|---|---|---|");
    for name in ["resnet50", "densenet121", "mobilenet_v2", "preact_resnet18"] {
        let graph = bnc::load_file(&root.join("examples").join(format!("{name}.nn")))
            .expect("example loads");
        for (mode, label) in [(FoldMode::Paper, "paper"), (FoldMode::Egraph, "egraph")] {
            let (t, left) = time_fold(&graph, mode, 5);
            println!(
                "| {name} | {label} | {:.1} ms | {left} |",
                t.as_secs_f64() * 1e3
            );
        }
    }
    println!();
    println!("| conv-BN-add blocks | adjacent | paper | egraph |");
    println!("|---|---|---|---|");
    let mut points = Vec::new();
    for blocks in [125, 250, 500, 1000] {
        let graph = bnc::load_str(&chain(blocks), "chain.nn", root).expect("chain loads");
        let (ta, _) = time_fold(&graph, FoldMode::Adjacent, 3);
        let (tp, _) = time_fold(&graph, FoldMode::Paper, 3);
        let (t, left) = time_fold(&graph, FoldMode::Egraph, 3);
        assert_eq!(left, 0, "every BN of the chain folds");
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| {blocks} | {:.1} ms | {:.1} ms | {:.1} ms |",
            ms(ta),
            ms(tp),
            ms(t)
        );
        points.push((blocks as f64, t.as_secs_f64()));
    }
    // Least-squares slope of log(time) against log(size).
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x.ln(), b + y.ln()));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
        (a + (x.ln() - mx) * (y.ln() - my), b + (x.ln() - mx).powi(2))
    });
    println!("\nscaling exponent (time ~ blocks^k): k = {:.2}", num / den);
}
