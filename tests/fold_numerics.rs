//! Folds that are exact over the reals but not in f32 (issue: "exact must mean exact in f32").
//! Each case is compiled in every fold mode and compared with the interpreter on the unfolded
//! model; a mode may not be worse than max(1e-5, 10 × the error of `--fold=none` compiled).
//! Each test fails when the numerical condition (passes/src/conditioning.rs) is dropped.

mod common;

use bnc::ir::{Graph, Tensor, interp};
use bnc::passes::FoldMode;
use bnc::{CompileOptions, Model};
use common::fold::{load, random_inputs, set_param};

const MODES: [FoldMode; 4] = [
    FoldMode::None,
    FoldMode::Adjacent,
    FoldMode::Paper,
    FoldMode::Egraph,
];

/// Largest |y − ref| / max|ref| over the outputs; infinite if y has a NaN or inf.
fn error(want: &[Tensor], got: &[Tensor]) -> f32 {
    want.iter()
        .zip(got)
        .map(|(w, g)| {
            if g.data.iter().any(|v| !v.is_finite()) {
                f32::INFINITY
            } else {
                w.max_abs_diff(g) / w.max_abs().max(1e-30)
            }
        })
        .fold(0.0, f32::max)
}

/// The compiled error of every mode, at 1 and 2 threads, on two inputs; panics if a mode is
/// worse than the bound. Returns the BNs each mode leaves (none, adjacent, paper, egraph).
fn check_every_mode(graph: &Graph) -> [usize; 4] {
    let mut left = [0; 4];
    for threads in [1, 2] {
        for seed in [1, 2] {
            let inputs = random_inputs(graph, seed);
            let reference = interp::run(graph, &inputs).unwrap();
            let mut none_error = 0.0;
            for (k, mode) in MODES.into_iter().enumerate() {
                let options = CompileOptions {
                    fold: mode,
                    threads,
                    ..CompileOptions::default()
                };
                let model =
                    Model::from_graph(graph, &options).unwrap_or_else(|e| panic!("{mode:?}: {e}"));
                let outputs = model.run_tensors(&inputs).unwrap();
                let err = error(&reference, &outputs);
                if mode == FoldMode::None {
                    none_error = err;
                }
                let bound = (10.0 * none_error).max(1e-5);
                assert!(
                    err <= bound,
                    "{mode:?}, {threads} thread(s), input {seed}: error {err:e} > {bound:e} \
                     (none: {none_error:e})\n{}",
                    model.report().to_text()
                );
                left[k] = model.report().batchnorms.len() - model.report().folded();
            }
        }
    }
    left
}

/// Conv `c` read by BN `b` and by conv `d`. Folding `b` into `c` compensates `d` with `W/s`:
/// with γ = 1e-5 (a pruned channel) and β = 5 the compensation cancels terms of size |W·t/s|.
const SHARED: &str = "model m {
  weights random(seed = 3)
  input x: f32[1, 4, 6, 6]
  c = conv2d(x, out = 4, kernel = 3, pad = 1)
  b = batchnorm(c)
  r = relu(b)
  d = conv2d(c, out = 4, kernel = 1)
  output r, d
}";

#[test]
fn a_tiny_gamma_is_not_compensated_by_its_inverse() {
    for gamma in [1e-5f32, 1e-6] {
        let mut g = load(SHARED);
        for ch in 0..3 {
            set_param(&mut g, "b.weight", ch, gamma);
            set_param(&mut g, "b.bias", ch, 5.0);
        }
        check_every_mode(&g);
    }
}

#[test]
fn of_two_bns_on_one_conv_the_well_conditioned_one_folds() {
    let mut g = load(
        "model m {
  weights random(seed = 4)
  input x: f32[1, 4, 6, 6]
  c = conv2d(x, out = 4, kernel = 3, pad = 1)
  b1 = batchnorm(c)
  b2 = batchnorm(c)
  r1 = relu(b1)
  r2 = relu(b2)
  output r1, r2
}",
    );
    for ch in 0..3 {
        set_param(&mut g, "b1.weight", ch, 1e-5);
        set_param(&mut g, "b1.bias", ch, 5.0);
    }
    let left = check_every_mode(&g);
    // One of the two still folds (b2 into c, b1 rebuilt as b1∘b2⁻¹, which is benign).
    assert_eq!(left[3], 1, "egraph leaves {} BNs", left[3]);
}

#[test]
fn a_subnormal_scale_never_makes_an_infinite_pad_fill() {
    let mut g = load(
        "model m {
  weights random(seed = 5)
  input x: f32[1, 2, 5, 5]
  b = batchnorm(x)
  d = conv2d(b, out = 3, kernel = 3, pad = 1)
  output d
}",
    );
    set_param(&mut g, "b.weight", 0, 1e-40);
    set_param(&mut g, "b.bias", 0, 2.0);
    check_every_mode(&g);
}

#[test]
fn a_near_constant_channel_is_not_folded_forward() {
    for mean in [100f32, 1000.0] {
        let mut g = load(
            "model m {
  weights random(seed = 6)
  input x: f32[1, 3, 6, 6]
  c = conv2d(x, out = 3, kernel = 1)
  b = batchnorm(c)
  d = conv2d(b, out = 3, kernel = 3, pad = 1)
  e = conv2d(c, out = 3, kernel = 1)
  output d, e
}",
        );
        for ch in 0..3 {
            set_param(&mut g, "b.running_var", ch, 1e-6);
            set_param(&mut g, "b.running_mean", ch, mean);
        }
        check_every_mode(&g);
    }
}

/// Fuzz seed 9, hand-made: a 1x1 conv with padding is 0 at its edges, however large its bulk.
/// Folding `b1` (t/s = 5000) into it and compensating `b2` reconstructs those zeros from
/// 5000 ± rounding, which the sigmoid then shows.
#[test]
fn compensation_is_judged_at_a_padded_conv_s_edges_too() {
    let mut g = load(
        "model m {
  weights random(seed = 7)
  input x: f32[1, 2, 5, 5]
  b0 = batchnorm(x)
  r0 = relu(b0)
  c = conv2d(r0, out = 2, kernel = 1, pad = 1, bias = false)
  b1 = batchnorm(c)
  b2 = batchnorm(c)
  y1 = relu(b1)
  y2 = sigmoid(b2)
  output y1, y2
}",
    );
    for ch in 0..2 {
        set_param(&mut g, "b0.weight", ch, 1.0);
        set_param(&mut g, "b0.running_var", ch, 1.0);
        set_param(&mut g, "b0.running_mean", ch, -1e5);
        set_param(&mut g, "b1.weight", ch, 1e-4);
        set_param(&mut g, "b1.bias", ch, 0.5);
        set_param(&mut g, "b1.running_mean", ch, 0.0);
        set_param(&mut g, "b2.running_mean", ch, 0.0);
    }
    check_every_mode(&g);
}

/// Fuzz seed 200, hand-made: a BN with |t| = 1e4 folded forward into a 1x1 conv padded by 2:
/// the border outputs, just the bias in the unfolded conv, become the cancellation of
/// `b + Σ W·t` and `Σ (W·s)·(−t/s)`.
#[test]
fn a_forward_fold_is_judged_at_the_conv_s_own_border() {
    let mut g = load(
        "model m {
  weights random(seed = 9)
  input x: f32[1, 3, 5, 5]
  b = batchnorm(x)
  c = conv2d(b, out = 3, kernel = 1, pad = 2)
  y = sigmoid(c)
  output y
}",
    );
    for ch in 0..3 {
        set_param(&mut g, "b.running_mean", ch, 1e4);
        set_param(&mut g, "b.running_var", ch, 1.0);
    }
    check_every_mode(&g);
}

/// Fuzz seed 2053, minimized: a BN with s ≈ −3e-38 moved past a pad gives the pad the fill
/// `(0.5 − t)/s` ≈ 1.7e38, finite in f32, but the pool that sums the padded map overflows
/// to inf. Folded values must leave f32 room for the sums that read them.
#[test]
fn a_pad_fill_leaves_room_for_the_pool_that_sums_it() {
    let mut g = load(
        "model m {
  weights random(seed = 10)
  input x: f32[2, 2, 2, 2]
  b = batchnorm(x)
  p = pad(b, pads = [0, 2, 0, 1], value = 0.5)
  g = global_avgpool(p)
  f = flatten(g)
  y = dense(f, out = 3)
  output y
}",
    );
    set_param(&mut g, "b.weight", 1, -1e-40);
    set_param(&mut g, "b.running_var", 1, 1e-8);
    set_param(&mut g, "b.bias", 1, 5.73);
    check_every_mode(&g);
}
