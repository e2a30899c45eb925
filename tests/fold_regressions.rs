//! Regressions of issue #11: pads with a per-channel fill in `fold-egraph` (item 4), graph
//! inputs and outputs keeping their names and order under every fold mode (item 5), and the
//! fold report counting batch-norms, splitting partial folds by channel and naming dead code
//! (item 7). Each test failed before its fix.

mod common;

use std::process::Command;

use bnc::ir::{Graph, Op, interp};
use bnc::passes::Fate;
use bnc::passes::report::Outcome;
use common::fold::*;

const MODES: [&str; 4] = ["none", "adjacent", "paper", "egraph"];

fn pipeline(mode: &str) -> Vec<&'static str> {
    match mode {
        "none" => vec!["canonicalize", "dce"],
        "adjacent" => vec!["canonicalize", "fold-adjacent", "dce"],
        "paper" => vec!["canonicalize", "fold-paper", "dce"],
        "egraph" => vec!["canonicalize", "fold-egraph", "dce"],
        _ => unreachable!(),
    }
}

fn names(g: &Graph, values: &[bnc::ir::ValueId]) -> Vec<String> {
    values.iter().map(|&v| g.value(v).name.clone()).collect()
}

/// Folds `g` in every mode; each result computes the same function and keeps the names and
/// order of the inputs and outputs.
fn assert_interface_kept(g: &Graph) {
    for mode in MODES {
        let (f, _) = run_passes(g, &pipeline(mode));
        assert_eq!(
            names(&f, &f.outputs),
            names(g, &g.outputs),
            "{mode}: outputs renamed\n{}",
            bnc::ir::printer::print(&f)
        );
        assert_eq!(
            names(&f, &f.inputs),
            names(g, &g.inputs),
            "{mode}: inputs renamed"
        );
        assert_same_outputs(g, &f);
    }
}

// ----- item 4: pads with a per-channel fill -----

#[test]
fn a_lone_pad_with_a_per_channel_fill_survives_fold_egraph() {
    let g = load(
        "model m { weights random(seed = 3)
           input x: f32[1, 3, 4, 4]
           p = pad(x, pads = [1, 2, 1, 0], value = 0, pad_fill = true, params = \"p\")
           output p }",
    );
    let (f, _) = egraph(&g);
    assert_same_outputs(&g, &f);
    let pad = f
        .nodes
        .iter()
        .find(|n| matches!(n.op, Op::Pad { .. }))
        .unwrap();
    assert_eq!(f.param(pad, "pad_fill"), g.param(&g.nodes[0], "pad_fill"));
}

#[test]
fn a_batchnorm_moves_through_a_pad_with_a_per_channel_fill() {
    // The fill is a map of the e-graph: the BN moves out through the pad (its fill becomes
    // (f − t)/s) and folds forward into the conv, or folds backward into `c`.
    let g = load(
        "model m { weights random(seed = 5)
           input x: f32[1, 3, 6, 6]
           c = conv2d(x, out = 4, kernel = 3, pad = 1)
           r = relu(c)
           b = batchnorm(r)
           p = pad(b, pads = [1, 1, 1, 1], value = 0, pad_fill = true, params = \"p\")
           y = conv2d(p, out = 3, kernel = 3)
           output y }",
    );
    let (f, ctx) = egraph(&g);
    assert_same_outputs(&g, &f);
    assert_eq!(affines(&f), 0, "{}", ctx.report.to_text());
    assert!(fate(&ctx, "b").is_gone());
}

#[test]
fn a_conv_that_pads_with_a_fill_keeps_its_fill() {
    let g = load(
        "model m { weights random(seed = 6)
           input x: f32[1, 3, 5, 5]
           c = conv2d(x, out = 4, kernel = 3, pad = 1, pad_fill = true)
           d = conv2d(x, out = 4, kernel = 3, pad = 1, pad_fill = true)
           b = batchnorm(d)
           s = add(c, b)
           output s }",
    );
    for mode in MODES {
        let (f, _) = run_passes(&g, &pipeline(mode));
        assert_same_outputs(&g, &f);
    }
}

fn bnc_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bnc"))
        .args(args)
        .args(["--color", "never"])
        .current_dir(common::root())
        .output()
        .expect("bnc starts")
}

#[test]
fn a_folded_model_with_pad_fills_folds_again_unchanged() {
    // fold-egraph writes a pad with a per-channel fill here; the printed model must parse and
    // fold again, to the same graph, computing the same function.
    let dir = std::env::temp_dir().join(format!("bnc-refold-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (once, twice) = (dir.join("once.nn"), dir.join("twice.nn"));
    let source = "tests/golden/egraph_pad.nn";
    let run = bnc_cli(&["fold", source, "-o", once.to_str().unwrap()]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let printed = std::fs::read_to_string(&once).unwrap();
    assert!(printed.contains("pad_fill = true"), "{printed}");
    let run = bnc_cli(&[
        "fold",
        once.to_str().unwrap(),
        "-o",
        twice.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let original = common::load(&common::root().join(source));
    let (a, b) = (common::load(&once), common::load(&twice));
    assert_same_outputs(&original, &a);
    assert_same_outputs(&original, &b);
    assert_eq!(
        a.nodes.len(),
        b.nodes.len(),
        "folding again changed the graph"
    );
    let x = random_inputs(&original, 1);
    assert_eq!(interp::run(&a, &x).unwrap(), interp::run(&b, &x).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

// ----- item 5: inputs and outputs keep their names -----

#[test]
fn an_output_keeps_its_name_when_a_map_moves_past_its_producer() {
    // `c` is an output, so `b` cannot fold into it; the map is cheaper after the stride-2
    // maxpool that computes output `m`, so `m` is now computed by a map on a new maxpool.
    let mut g = load(
        "model m { weights random(seed = 4)
           input x: f32[1, 4, 6, 6]
           c = conv2d(x, out = 4, kernel = 1)
           b = batchnorm(c)
           m = maxpool(b, kernel = 2, stride = 2)
           output m, c }",
    );
    for (channel, gamma) in [0.5, 1.5, 0.25, 2.0].into_iter().enumerate() {
        set_param(&mut g, "b.weight", channel, gamma);
    }
    assert_interface_kept(&g);
    let (f, _) = egraph(&g);
    assert!(
        f.nodes
            .iter()
            .any(|n| n.op == Op::Affine && f.value(n.output).name == "m"),
        "the map did not move past the maxpool:\n{}",
        bnc::ir::printer::print(&f)
    );
}

#[test]
fn outputs_that_are_inputs_or_other_outputs_stay_distinct_named_values() {
    // `d` is the input under another name, `y2` is `y1`, `x` is an input and an output.
    let g = load(
        "model m { weights random(seed = 7)
           input x: f32[1, 3, 4, 4]
           d = dropout(x)
           c = conv2d(x, out = 4, kernel = 1)
           b = batchnorm(c)
           y1 = identity(b)
           y2 = identity(y1)
           output y2, d, x, y1 }",
    );
    assert_interface_kept(&g);
    let (f, _) = egraph(&g);
    let outputs = &f.outputs;
    assert_eq!(outputs[2], f.inputs[0], "output `x` is the input itself");
    let distinct: std::collections::HashSet<_> = outputs.iter().collect();
    assert_eq!(distinct.len(), 4, "every output is its own value");
}

#[test]
fn a_batchnorm_that_is_the_identity_between_input_and_output_keeps_the_output_name() {
    // γ = sqrt(var + eps), β = mean: the BN is exactly the identity map and vanishes.
    let mut g = load(
        "model m { weights random(seed = 8)
           input x: f32[1, 2, 3, 3]
           b = batchnorm(x, eps = 0)
           output b }",
    );
    for c in 0..2 {
        let mean = g.params["b.running_mean"].data[c];
        set_param(&mut g, "b.running_var", c, 4.0);
        set_param(&mut g, "b.weight", c, 2.0);
        set_param(&mut g, "b.bias", c, mean);
    }
    assert_interface_kept(&g);
}

#[test]
fn random_models_keep_their_output_names_in_every_mode() {
    for seed in 0..40 {
        let mut rng = Rng::new(seed);
        let (text, bns) = random_model(&mut rng, seed);
        let mut g = load(&text);
        randomize_gammas(&mut g, &bns, &mut rng);
        for mode in MODES {
            let (f, _) = run_passes(&g, &pipeline(mode));
            assert_eq!(
                names(&f, &f.outputs),
                names(&g, &g.outputs),
                "seed {seed}, {mode}: outputs renamed\n{text}"
            );
        }
    }
}

// ----- item 7: the report -----

/// A BN over `concat(c, x)` before a padded conv: the channels from `c` fold backward into
/// it; those from the input `x` have γ = 0 (no pad fill reproduces their border, so they
/// cannot fold forward) and stay as a map.
fn partly_foldable() -> Graph {
    let mut g = load(
        "model m { weights random(seed = 4)
           input x: f32[1, 2, 5, 5]
           c = conv2d(x, out = 4, kernel = 1)
           k = concat(c, x)
           b = batchnorm(k)
           d = conv2d(b, out = 3, kernel = 3, pad = 1)
           output d }",
    );
    set_param(&mut g, "b.weight", 4, 0.0);
    set_param(&mut g, "b.weight", 5, 0.0);
    set_param(&mut g, "b.bias", 4, 0.5);
    set_param(&mut g, "b.bias", 5, -0.5);
    g
}

#[test]
fn a_partly_folded_batchnorm_says_where_each_channel_went() {
    let g = partly_foldable();
    let (f, mut ctx) = egraph(&g);
    assert_same_outputs(&g, &f);
    ctx.report.measure(&g, &f);
    let Fate::Split { parts } = fate(&ctx, "b") else {
        panic!("not split by channel:\n{}", ctx.report.to_text());
    };
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert_eq!(parts[0].channels, vec![0, 1, 2, 3]);
    assert!(matches!(&parts[0].fate, Fate::FoldedBackward { into, .. } if into == &["c"]));
    assert_eq!(parts[1].channels, vec![4, 5]);
    assert!(matches!(parts[1].fate, Fate::Kept { .. }));
    assert_eq!(fate(&ctx, "b").outcome(), Outcome::PartlyFolded);

    let text = ctx.report.to_text();
    assert!(
        text.contains("1 in the model: 0 folded away, 1 partly folded; maps left"),
        "{text}"
    );
    assert!(
        text.contains("channels 0-3 folded backward into `c` | channels 4-5 kept"),
        "{text}"
    );
    let json = ctx.report.to_json();
    assert!(json.contains("\"fate\": \"split\""), "{json}");
    assert!(json.contains("\"fate\": \"folded_backward\""), "{json}");
}

#[test]
fn a_batchnorm_nothing_reads_is_reported_as_dead_code() {
    let g = load(
        "model m { weights random(seed = 2)
           input x: f32[1, 3, 4, 4]
           c = conv2d(x, out = 4, kernel = 1)
           b = batchnorm(c)
           e = batchnorm(c)
           y = relu(e)
           output y }",
    );
    for mode in MODES {
        let (f, mut ctx) = run_passes(&g, &pipeline(mode));
        ctx.report.measure(&g, &f);
        assert_eq!(fate(&ctx, "b"), &Fate::Dead, "{mode}");
        assert_ne!(fate(&ctx, "e"), &Fate::Dead, "{mode}");
        let text = ctx.report.to_text();
        assert!(
            text.contains("removed: nothing reads it (dead code)"),
            "{mode}: {text}"
        );
        assert!(text.contains(", 1 removed as dead code"), "{mode}: {text}");
    }
}

#[test]
fn the_headline_counts_batchnorms_and_maps_separately() {
    let g = partly_foldable();
    let (f, mut ctx) = egraph(&g);
    ctx.report.measure(&g, &f);
    // One BN, left as maps over some of its channels: counted once, as partly folded.
    assert_eq!(ctx.report.batchnorms.len(), 1);
    assert_eq!(ctx.report.count(Outcome::PartlyFolded), 1);
    assert_eq!(ctx.report.count(Outcome::Kept), 0);
    assert_eq!(
        ctx.report.shift_only_left + ctx.report.full_affine_left,
        affines(&f)
    );
}

/// Found by the `onnx_bytes` fuzz target: a BN whose folded weights leave f32's range
/// (scale 3e42 here) made `fold-adjacent` panic ("folding an output map is always exact").
/// Every mode keeps such a BN and says why.
#[test]
fn a_fold_whose_weights_overflow_f32_keeps_the_batchnorm_in_every_mode() {
    let mut g = load(
        "model m {
  weights random(seed = 3)
  input x: f32[1, 2, 4, 4]
  c = conv2d(x, out = 2, kernel = 1)
  b = batchnorm(c)
  output b
}",
    );
    set_param(&mut g, "b.weight", 0, 3e38);
    set_param(&mut g, "b.running_var", 0, 1e-8);
    for mode in MODES {
        let (f, ctx) = run_passes(&g, &pipeline(mode));
        assert_eq!(
            f.count_ops(|op| matches!(op, Op::Affine)),
            1,
            "{mode}: {}",
            bnc::ir::printer::print(&f)
        );
        if mode != "none" {
            let fate = ctx.report.fate("b").cloned();
            assert!(
                matches!(&fate, Some(Fate::Kept { reason, .. }) if reason.contains("f32")),
                "{mode}: {fate:?}"
            );
        }
    }
}
