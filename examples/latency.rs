//! Compiled-code measurements (batch 1, release):
//!
//! ```sh
//! cargo run --release --example latency                    # latency table (1 and 2 threads)
//! cargo run --release --example latency -- fold            # folded vs unfolded vs separate BN
//! cargo run --release --example latency -- traffic         # bytes/s of memory-bound kernels
//! cargo run --release --example latency -- denormals       # flush-to-zero on vs off
//! cargo run --release --example latency -- latency resnet18,resnet50 --runs 30
//! ```
//!
//! * `latency`: for each model, the time from `.nn` text to machine code (parse + seeded
//!   weights, default fold pipeline, code generation) and the median and minimum of `--runs`
//!   (default 25) runs after 3 warm-up runs, at 1 and 2 threads, with GFLOP/s at the median.
//! * `fold`: one thread, the same code path (default [`bnc::codegen::Options`]) for three
//!   graphs: `folded` (`FoldMode::Egraph`, the default), `unfolded-fused` (`FoldMode::None`:
//!   every BN stays an affine map, which code generation fuses into the epilogue of the kernel
//!   producing its input) and `unfolded-separate` (`FoldMode::None` with
//!   `Options::fuse_affine = false`: each affine is its own elementwise kernel, which still
//!   takes the activation after it). Outputs of the three are compared.
//! * `traffic`: per-kernel times from `CompiledModel::profile` (minimum over `--runs`
//!   profiles) on the folded graph, one thread, grouped by kernel kind; bytes moved = the
//!   anchor's inputs + the epilogue's extra operands (residuals, gates, affine vectors) + the
//!   output + the weights, each counted once (a lower bound on real traffic: the depthwise
//!   and pool kernels' padded scratch copies are not counted).
//!
//! Every line starts with the load average at the time (`/proc/loadavg`), since the machine
//! may be shared.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bnc::codegen::{self, CompiledModel, Options};
use bnc::ir::{Graph, Op, ValueId};
use bnc::{FoldMode, Pipeline, transform};

const WARMUP: usize = 3;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut mode = "latency".to_string();
    let mut models: Option<Vec<String>> = None;
    let mut runs = 25usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().ok_or("--runs needs a value")?.parse()?,
            "latency" | "fold" | "traffic" | "denormals" => mode = a,
            _ => models = Some(a.split(',').map(String::from).collect()),
        }
    }
    let default: &[&str] = match mode.as_str() {
        "latency" => &[
            "resnet18",
            "resnet50",
            "mobilenet_v2",
            "efficientnet_b0",
            "densenet121",
            "preact_resnet18",
        ],
        "fold" => &["resnet18", "resnet50", "mobilenet_v2", "densenet121"],
        "denormals" => &["efficientnet_b0", "mobilenet_v2", "resnet18"],
        _ => &["mobilenet_v2", "densenet121"],
    };
    let models = models.unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect());
    println!("# mode {mode}, runs {runs}, load average {}", loadavg());
    for name in &models {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("examples/{name}.nn"));
        match mode.as_str() {
            "latency" => latency(name, &path, runs)?,
            "fold" => fold(name, &path, runs)?,
            "denormals" => denormals(name, &path, runs)?,
            _ => traffic(name, &path, runs)?,
        }
    }
    println!("# done, load average {}", loadavg());
    Ok(())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn ms(s: f64) -> f64 {
    s * 1e3
}

/// Deterministic input in [-2, 2).
fn input_for(m: &CompiledModel) -> Vec<Vec<f32>> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    m.input_shapes()
        .iter()
        .map(|s| {
            (0..s.iter().product::<usize>())
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
                })
                .collect()
        })
        .collect()
}

/// Median and minimum (seconds) of `runs` runs after `WARMUP` warm-up runs; also the outputs.
fn time_runs(m: &CompiledModel, runs: usize) -> (f64, f64, Vec<Vec<f32>>) {
    let ins = input_for(m);
    let inp: Vec<&[f32]> = ins.iter().map(|v| v.as_slice()).collect();
    let mut outs: Vec<Vec<f32>> = m
        .output_shapes()
        .iter()
        .map(|s| vec![0.0; s.iter().product()])
        .collect();
    let mut ws = m.new_workspace();
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs + WARMUP {
        let mut refs: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
        let t = Instant::now();
        m.run_with_workspace(&mut ws, &inp, &mut refs)
            .expect("buffers match the model");
        if i >= WARMUP {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[0], outs)
}

fn fold_graph(g: &Graph, mode: FoldMode) -> Result<Graph, bnc::Error> {
    Ok(transform(g, &Pipeline::default_for(mode), &mut |_, _| {})?.graph)
}

fn latency(name: &str, path: &Path, runs: usize) -> Result<(), Box<dyn std::error::Error>> {
    let t = Instant::now();
    let text = std::fs::read_to_string(path)?;
    let g = bnc::load_str(&text, &path.to_string_lossy(), path.parent().unwrap())?;
    let t_parse = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let folded = fold_graph(&g, FoldMode::default())?;
    let t_fold = t.elapsed().as_secs_f64();
    for threads in [1, 2] {
        let t = Instant::now();
        let m = codegen::compile(
            &folded,
            &Options {
                threads,
                ..Options::default()
            },
        )?;
        let t_cg = t.elapsed().as_secs_f64();
        let (med, min, _) = time_runs(&m, runs);
        println!(
            "{name:>16} threads={threads} median {:8.2} ms  min {:8.2} ms  {:6.1} GFLOP/s (median) {:6.1} (min)  \
             compile: parse+weights {:6.1} ms  fold {:6.1} ms  codegen {:6.1} ms  total {:6.1} ms  [load {}]",
            ms(med),
            ms(min),
            m.flops() as f64 / med / 1e9,
            m.flops() as f64 / min / 1e9,
            ms(t_parse),
            ms(t_fold),
            ms(t_cg),
            ms(t_parse + t_fold + t_cg),
            loadavg()
        );
    }
    Ok(())
}

/// The folded model, one thread, with and without flushing denormals (alternating, so load
/// changes hit both alike).
fn denormals(name: &str, path: &Path, runs: usize) -> Result<(), Box<dyn std::error::Error>> {
    let g = fold_graph(&bnc::load_file(path)?, FoldMode::Egraph)?;
    for flush_denormals in [true, false, true, false] {
        let m = codegen::compile(
            &g,
            &Options {
                flush_denormals,
                ..Options::default()
            },
        )?;
        let (med, min, _) = time_runs(&m, runs);
        println!(
            "{name:>16} flush_denormals {flush_denormals:>5}: median {:8.2} ms  min {:8.2} ms  [load {}]",
            ms(med),
            ms(min),
            loadavg()
        );
    }
    Ok(())
}

fn fold(name: &str, path: &Path, runs: usize) -> Result<(), Box<dyn std::error::Error>> {
    let g = bnc::load_file(path)?;
    let folded = fold_graph(&g, FoldMode::Egraph)?;
    let unfolded = fold_graph(&g, FoldMode::None)?;
    let variants = [
        ("folded", &folded, true),
        ("unfolded-fused", &unfolded, true),
        ("unfolded-separate", &unfolded, false),
    ];
    let mut reference: Option<Vec<Vec<f32>>> = None;
    for (label, graph, fuse_affine) in variants {
        let affines = graph
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::Affine | Op::BatchNorm { .. }))
            .count();
        let m = codegen::compile(
            graph,
            &Options {
                fuse_affine,
                ..Options::default()
            },
        )?;
        let (med, min, outs) = time_runs(&m, runs);
        let diff = match &reference {
            None => 0.0,
            Some(r) => r
                .iter()
                .flatten()
                .zip(outs.iter().flatten())
                .map(|(a, b)| (a - b).abs() / a.abs().max(1.0))
                .fold(0.0f32, f32::max),
        };
        reference.get_or_insert(outs);
        println!(
            "{name:>16} {label:>18}: median {:8.2} ms  min {:8.2} ms  kernels {:4}  affines {:4}  \
             GFLOP/s(median) {:6.1}  max rel diff vs folded {diff:.1e}  [load {}]",
            ms(med),
            ms(min),
            m.kernel_count(),
            affines,
            m.flops() as f64 / med / 1e9,
            loadavg()
        );
    }
    Ok(())
}

/// What one kernel reads and writes, reconstructed from the graph the way the code
/// generator fuses (an anchor plus a chain of single-reader elementwise nodes).
struct Traffic {
    kind: &'static str,
    bytes: u64,
    flops: u64,
}

fn traffic_of(g: &Graph, kernel: &str, by_name: &HashMap<String, usize>) -> Option<Traffic> {
    let numel = |v: ValueId| g.shape(v).iter().product::<usize>() as u64;
    let params = |n: &bnc::ir::Node| -> u64 {
        let Some(p) = n.params.as_deref() else {
            return 0;
        };
        let prefix = format!("{p}.");
        g.params
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, t)| t.data.len() as u64)
            .sum()
    };
    // `k{index}_{sanitized output name}`.
    let rest = kernel.strip_prefix('k')?;
    let vname = &rest[rest.find('_')? + 1..];
    let &ni = by_name.get(vname)?;
    let node = &g.nodes[ni];
    let shapes: Vec<&bnc::ir::Shape> = node.inputs.iter().map(|&v| g.shape(v)).collect();
    let mut flops = node.op.flops(&shapes, g.shape(node.output));
    let mut floats: u64 = node.inputs.iter().map(|&v| numel(v)).sum::<u64>() + params(node);
    let kind = match &node.op {
        Op::Conv2d(c) => {
            if c.groups > 1 && g.shape(node.inputs[0])[1] / c.groups == 1 {
                "depthwise conv"
            } else if c.kernel == [1, 1] {
                "1x1 conv (GEMM)"
            } else {
                "kxk conv (GEMM)"
            }
        }
        Op::Dense { .. } => "dense",
        Op::MaxPool(_) => "maxpool",
        Op::AvgPool(_) => "avgpool",
        Op::GlobalAvgPool => "global avgpool",
        Op::Softmax => "softmax",
        Op::Pad { .. } => "pad",
        _ => "elementwise",
    };
    // Readers, as the planner counts them.
    let mut readers: HashMap<usize, (usize, usize)> = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        for v in &n.inputs {
            let e = readers.entry(v.0).or_insert((0, i));
            e.0 += 1;
            e.1 = i;
        }
    }
    for o in &g.outputs {
        readers.entry(o.0).or_insert((0, usize::MAX)).0 += 1;
    }
    let mut cur = node.output;
    while let Some(&(1, j)) = readers.get(&cur.0) {
        if g.outputs.contains(&cur) || j == usize::MAX {
            break;
        }
        let nj = &g.nodes[j];
        let ew = matches!(
            nj.op,
            Op::Affine | Op::BatchNorm { .. } | Op::Activation(_) | Op::Add | Op::Mul
        );
        if !ew || g.shape(nj.output) != g.shape(cur) {
            break;
        }
        let other = nj.inputs.iter().copied().find(|&v| v != cur);
        if matches!(nj.op, Op::Add | Op::Mul) && other.is_none() {
            break;
        }
        floats += other.map_or(0, numel) + params(nj);
        let s: Vec<&bnc::ir::Shape> = nj.inputs.iter().map(|&v| g.shape(v)).collect();
        flops += nj.op.flops(&s, g.shape(nj.output));
        cur = nj.output;
    }
    floats += numel(cur);
    Some(Traffic {
        kind,
        bytes: 4 * floats,
        flops,
    })
}

fn traffic(name: &str, path: &Path, runs: usize) -> Result<(), Box<dyn std::error::Error>> {
    let g = fold_graph(&bnc::load_file(path)?, FoldMode::default())?;
    let m = codegen::compile(&g, &Options::default())?;
    let ins = input_for(&m);
    let inp: Vec<&[f32]> = ins.iter().map(|v| v.as_slice()).collect();
    let mut outs: Vec<Vec<f32>> = m
        .output_shapes()
        .iter()
        .map(|s| vec![0.0; s.iter().product()])
        .collect();
    let mut best: Vec<(String, f64)> = Vec::new();
    for i in 0..runs + WARMUP {
        let mut refs: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
        let t = m.profile(&inp, &mut refs)?;
        if i < WARMUP {
            continue;
        }
        if best.is_empty() {
            best = t;
        } else {
            for (b, n) in best.iter_mut().zip(t) {
                b.1 = b.1.min(n.1);
            }
        }
    }
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        by_name.insert(g.value(n.output).name.replace(['.', '-'], "_"), i);
    }
    // kind -> (kernels, bytes, flops, seconds, best GB/s of one kernel)
    let mut sums: BTreeMap<&str, (usize, u64, u64, f64, f64)> = BTreeMap::new();
    let total: f64 = best.iter().map(|b| b.1).sum();
    for (k, t) in &best {
        let tr = if k.starts_with("copy_") {
            // Concat inputs that could not be written in place; sizes are not visible from
            // the outside: counted as kernels and time only.
            Traffic {
                kind: "concat copy",
                bytes: 0,
                flops: 0,
            }
        } else {
            traffic_of(&g, k, &by_name).ok_or_else(|| format!("unknown kernel {k}"))?
        };
        let e = sums.entry(tr.kind).or_default();
        e.0 += 1;
        e.1 += tr.bytes;
        e.2 += tr.flops;
        e.3 += t;
        e.4 = e.4.max(tr.bytes as f64 / t / 1e9);
    }
    println!(
        "{name}: {} kernels, sum of per-kernel minima {:.2} ms [load {}]",
        best.len(),
        ms(total),
        loadavg()
    );
    println!(
        "| model | kind | kernels | time (ms) | share | MB moved | GB/s | best kernel GB/s | GFLOP/s |"
    );
    for (kind, (n, bytes, flops, t, bestbw)) in &sums {
        println!(
            "| {name} | {kind} | {n} | {:.3} | {:.1}% | {:.2} | {:.1} | {:.1} | {:.1} |",
            ms(*t),
            100.0 * t / total,
            *bytes as f64 / 1e6,
            *bytes as f64 / t / 1e9,
            bestbw,
            *flops as f64 / t / 1e9
        );
    }
    Ok(())
}
