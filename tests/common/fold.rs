//! Shared by the folding tests: loading small models, running pipelines, random inputs,
//! comparing functions, and a generator of random DAG models.

use bnc::ir::{Graph, Op, Tensor, interp};
use bnc::passes::affine::{Absorbed, ChannelMap, absorb, apply_absorbed};
use bnc::passes::{self, Fate, PassContext, PrintAfter};

/// Largest error allowed, relative to the largest output magnitude. A wrong fold at padded
/// borders is often only ~1e-3 off after global pooling, so this must stay tight.
pub const REL_TOLERANCE: f32 = 1e-5;

pub fn load(source: &str) -> Graph {
    bnc::load_str(source, "t.nn", &super::root()).unwrap_or_else(|e| panic!("{}", e.render(false)))
}

/// Runs the named passes on a copy of `graph`.
pub fn run_passes(graph: &Graph, names: &[&str]) -> (Graph, PassContext) {
    let mut g = graph.clone();
    let pipeline = passes::resolve(names).unwrap();
    let mut ctx = PassContext::default();
    passes::run_pipeline(
        &mut g,
        &pipeline,
        &mut ctx,
        &PrintAfter::Never,
        &mut |_, _| {},
    )
    .unwrap_or_else(|e| panic!("{e}"));
    g.verify().unwrap();
    (g, ctx)
}

pub fn paper(graph: &Graph) -> (Graph, PassContext) {
    run_passes(graph, &["canonicalize", "fold-paper", "dce"])
}

pub fn adjacent(graph: &Graph) -> (Graph, PassContext) {
    run_passes(graph, &["canonicalize", "fold-adjacent", "dce"])
}

/// A small deterministic generator (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

pub fn random_inputs(g: &Graph, seed: u64) -> Vec<Tensor> {
    let mut rng = Rng::new(seed);
    g.inputs
        .iter()
        .map(|&i| {
            let shape = g.shape(i).clone();
            let n = shape.iter().product();
            Tensor::new(shape, (0..n).map(|_| rng.unit()).collect())
        })
        .collect()
}

/// The largest error of `got` against `want`, relative to the largest |output| of `want`.
pub fn relative_error(want: &Graph, got: &Graph, seed: u64) -> f32 {
    let inputs = random_inputs(want, seed);
    let a = interp::run(want, &inputs).unwrap();
    let b = interp::run(got, &inputs).unwrap();
    a.iter()
        .zip(&b)
        .map(|(x, y)| x.max_abs_diff(y) / x.max_abs().max(1e-6))
        .fold(0.0, f32::max)
}

pub fn assert_same_outputs(want: &Graph, got: &Graph) {
    for seed in [1, 2] {
        let err = relative_error(want, got, seed);
        assert!(
            err <= REL_TOLERANCE,
            "folded output differs by {err} (relative), tolerance {REL_TOLERANCE}"
        );
    }
}

pub fn affines(g: &Graph) -> usize {
    g.count_ops(|op| matches!(op, Op::Affine | Op::BatchNorm { .. }))
}

pub fn convs(g: &Graph) -> usize {
    g.count_ops(|op| matches!(op, Op::Conv2d(_)))
}

pub fn fate<'a>(ctx: &'a PassContext, bn: &str) -> &'a Fate {
    ctx.report
        .fate(bn)
        .unwrap_or_else(|| panic!("no record for `{bn}`"))
}

pub fn set_param(g: &mut Graph, name: &str, channel: usize, value: f32) {
    g.params
        .get_mut(name)
        .unwrap_or_else(|| panic!("no `{name}`"))
        .data[channel] = value;
}

/// A random model of convs (some padded, some grouped), BNs, adds, concats, pools and relus
/// with shared values, as `.nn` text; and the names of its BNs.
pub fn random_model(rng: &mut Rng, seed: u64) -> (String, Vec<(String, usize)>) {
    let size = 4 + rng.below(3);
    let c0 = [2, 3, 4][rng.below(3)];
    let mut text = format!(
        "model r {{\n weights random(seed = {seed})\n input x: f32[1, {c0}, {size}, {size}]\n"
    );
    // (name, channels, spatial size)
    let mut values: Vec<(String, usize, usize)> = vec![("x".into(), c0, size)];
    let mut bns = Vec::new();
    let steps = 6 + rng.below(9);
    let pick = |rng: &mut Rng, values: &[(String, usize, usize)]| {
        // Prefer recent values; sometimes reuse an old one (sharing).
        let n = values.len();
        if rng.chance(0.7) {
            n - 1 - rng.below(n.min(3))
        } else {
            rng.below(n)
        }
    };
    for k in 0..steps {
        let name = format!("v{k}");
        let i = pick(rng, &values);
        let (src, ch, sz) = values[i].clone();
        let (line, out_ch, out_sz) = match rng.below(10) {
            0..=2 => {
                let out = [2, 4, 6][rng.below(3)];
                let groups = if ch % 2 == 0 && out % 2 == 0 && rng.chance(0.3) {
                    2
                } else {
                    1
                };
                let (kernel, pad) = if rng.chance(0.5) { (3, 1) } else { (1, 0) };
                let bias = rng.chance(0.5);
                (
                    format!(
                        "conv2d({src}, out = {out}, kernel = {kernel}, pad = {pad}, groups = {groups}, bias = {bias})"
                    ),
                    out,
                    sz,
                )
            }
            3..=4 => {
                bns.push((name.clone(), ch));
                (format!("batchnorm({src})"), ch, sz)
            }
            5 => (format!("relu({src})"), ch, sz),
            6 => {
                match values
                    .iter()
                    .enumerate()
                    .rev()
                    .find(|(j, v)| *j != i && v.1 == ch && v.2 == sz)
                    .map(|(j, _)| j)
                {
                    Some(j) => (format!("add({src}, {})", values[j].0), ch, sz),
                    None => (format!("add({src}, {src})"), ch, sz),
                }
            }
            7 => {
                let others: Vec<usize> = (0..values.len())
                    .filter(|&j| j != i && values[j].2 == sz)
                    .collect();
                if others.is_empty() {
                    (format!("relu({src})"), ch, sz)
                } else {
                    let j = others[rng.below(others.len())];
                    (
                        format!("concat({src}, {})", values[j].0),
                        ch + values[j].1,
                        sz,
                    )
                }
            }
            8 => {
                if sz >= 4 && rng.chance(0.3) {
                    (format!("maxpool({src}, kernel = 2)"), ch, sz / 2)
                } else {
                    (
                        format!("maxpool({src}, kernel = 3, stride = 1, pad = 1)"),
                        ch,
                        sz,
                    )
                }
            }
            _ => {
                let count = rng.chance(0.5);
                (
                    format!(
                        "avgpool({src}, kernel = 3, stride = 1, pad = 1, count_include_pad = {count})"
                    ),
                    ch,
                    sz,
                )
            }
        };
        text += &format!(" {name} = {line}\n");
        values.push((name, out_ch, out_sz));
        // Often a BN right after a conv.
        if line.starts_with("conv2d") && rng.chance(0.5) {
            let bn = format!("v{k}_bn");
            text += &format!(" {bn} = batchnorm(v{k})\n");
            bns.push((bn.clone(), out_ch));
            values.push((bn, out_ch, out_sz));
        }
    }
    // Every value nobody reads becomes an output: mostly through a 1×1 conv (a BN can fold
    // forward into it), sometimes through a relu or directly (a graph output blocks).
    let mut outputs = Vec::new();
    for (k, (v, _, _)) in values.iter().enumerate().skip(1) {
        let read = text.lines().any(|l| {
            l.contains(&format!("({v},"))
                || l.contains(&format!("({v})"))
                || l.contains(&format!(", {v})"))
        });
        if read {
            continue;
        }
        let roll = rng.below(10);
        if roll < 7 || k + 1 == values.len() && outputs.is_empty() {
            text += &format!(" y{k} = conv2d({v}, out = 3, kernel = 1)\n");
            outputs.push(format!("y{k}"));
        } else if roll < 9 {
            text += &format!(" y{k} = relu({v})\n");
            outputs.push(format!("y{k}"));
        } else {
            outputs.push(v.clone());
        }
    }
    text += &format!(" output {}\n}}\n", outputs.join(", "));
    (text, bns)
}

pub fn egraph(graph: &Graph) -> (Graph, PassContext) {
    run_passes(graph, &["canonicalize", "fold-egraph", "dce"])
}

/// The naive (wrong in general) move of the affine `a` past the one-input node `p` that
/// reads it: `p(a(u))` becomes `a(p(u))`, ignoring whatever condition makes that exact. Used
/// to show that a test would catch a fold made without its condition.
pub fn swap_past(canon: &Graph, a: &str, p: &str) -> Graph {
    let mut g = canon.clone();
    let find = |g: &Graph, name: &str| {
        g.nodes
            .iter()
            .position(|n| g.value(n.output).name == name)
            .unwrap()
    };
    let (ai, pi) = (find(&g, a), find(&g, p));
    assert!(ai < pi && g.nodes[pi].inputs == vec![g.nodes[ai].output]);
    let (a_out, p_out, u) = (
        g.nodes[ai].output,
        g.nodes[pi].output,
        g.nodes[ai].inputs[0],
    );
    // Readers of p now read a; p reads u; a reads p.
    g.replace_uses(p_out, a_out);
    g.nodes[pi].inputs = vec![u];
    g.nodes[ai].inputs = vec![p_out];
    // Shapes: a now has p's output shape.
    g.values[a_out.0].shape = g.values[p_out.0].shape.clone();
    let node_a = g.nodes.remove(ai);
    let pi = find(&g, p);
    g.nodes.insert(pi + 1, node_a);
    g.verify().unwrap();
    g
}

/// Errors of `got` against `want` on inputs scaled by `scale` (large inputs drive relu6 and
/// clip into saturation, where a wrong move shows).
pub fn relative_error_scaled(want: &Graph, got: &Graph, seed: u64, scale: f32) -> f32 {
    let inputs: Vec<Tensor> = random_inputs(want, seed)
        .into_iter()
        .map(|mut t| {
            t.data.iter_mut().for_each(|v| *v *= scale);
            t
        })
        .collect();
    let a = interp::run(want, &inputs).unwrap();
    let b = interp::run(got, &inputs).unwrap();
    a.iter()
        .zip(&b)
        .map(|(x, y)| x.max_abs_diff(y) / x.max_abs().max(1e-6))
        .fold(0.0, f32::max)
}

/// The forward fold of BN `bn` into conv `conv` with the zero-scale condition ignored: weights from `absorb` with
/// `d` seen as unpadded, and a hand-made fill `-t/s` (0 where s = 0).
pub fn naive_forward_fold_into(bn: &str, conv: &str, canon: &Graph) -> Graph {
    let mut g = canon.clone();
    let bi = g
        .nodes
        .iter()
        .position(|n| g.value(n.output).name == bn)
        .unwrap();
    let di = g
        .nodes
        .iter()
        .position(|n| g.value(n.output).name == conv)
        .unwrap();
    let map = ChannelMap::of_affine(&g, &g.nodes[bi]);
    let mut unpadded = g.nodes[di].clone();
    if let Op::Conv2d(c) = &mut unpadded.op {
        c.pad = [0; 4];
    }
    let weights = absorb(&g, &unpadded, Some(&map), None).unwrap();
    let fill: Vec<f32> = (0..map.len())
        .map(|i| {
            if map.scale[i] == 0.0 {
                0.0
            } else {
                (-map.shift[i] / map.scale[i]) as f32
            }
        })
        .collect();
    let n = fill.len();
    apply_absorbed(
        &mut g,
        di,
        Absorbed {
            pad_fill: Some(Tensor::new(vec![n], fill)),
            ..weights
        },
    );
    let (y, x) = (g.nodes[bi].output, g.nodes[bi].inputs[0]);
    g.forward_value(y, x);
    g.remove_dead();
    g.verify().unwrap();
    g
}

/// Gives some BN channels a negative (15 %) or zero (8 %) γ, the cases with conditions.
pub fn randomize_gammas(g: &mut Graph, bns: &[(String, usize)], rng: &mut Rng) {
    for (bn, ch) in bns {
        for c in 0..*ch {
            if rng.chance(0.15) {
                set_param(g, &format!("{bn}.weight"), c, -0.8);
            } else if rng.chance(0.08) {
                set_param(g, &format!("{bn}.weight"), c, 0.0);
            }
        }
    }
}

/// The model `g` compiled with folding `mode` on `threads` threads, against the interpreter
/// on `g` unfolded: the largest error relative to the largest output magnitude.
pub fn compiled_error(g: &Graph, mode: bnc::passes::FoldMode, threads: usize) -> f32 {
    let options = bnc::CompileOptions {
        fold: mode,
        threads,
        ..bnc::CompileOptions::default()
    };
    let model = bnc::Model::from_graph(g, &options).unwrap_or_else(|e| panic!("{mode:?}: {e}"));
    let inputs = random_inputs(g, 3);
    let want = interp::run(g, &inputs).unwrap();
    let got = model.run_tensors(&inputs).unwrap();
    want.iter()
        .zip(&got)
        .map(|(w, o)| w.max_abs_diff(o) / w.max_abs().max(1e-6))
        .fold(0.0, f32::max)
}
