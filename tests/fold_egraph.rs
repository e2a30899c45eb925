//! `fold-egraph`: BN folding by equality saturation. Every fold must be exact (reference
//! interpreter, tight tolerance), every rewrite's condition must hold (each condition test
//! has a control showing the naive move is wrong), extraction must not duplicate a shared
//! conv, and the e-graph must fold at least as many BNs as the closure baseline.

mod common;

use bnc::ir::{Graph, Op};
use bnc::passes::Fate;
use common::fold::*;

fn convs(g: &Graph) -> usize {
    g.count_ops(|op| matches!(op, Op::Conv2d(_)))
}

fn canonical(g: &Graph) -> Graph {
    run_passes(g, &["canonicalize"]).0
}

/// Folds with the e-graph and checks the result is the same function.
fn fold_checked(g: &Graph) -> (Graph, bnc::passes::PassContext) {
    let (f, ctx) = egraph(g);
    for seed in [1, 2] {
        let err = relative_error(g, &f, seed);
        assert!(
            err <= REL_TOLERANCE,
            "egraph fold differs by {err}\n{}",
            ctx.report.to_text()
        );
    }
    (f, ctx)
}

#[test]
fn a_conv_read_by_two_batchnorms_is_computed_once() {
    // Folding both BNs backward would need two copies of `c`; the optimum folds one and
    // compensates the other at its reader.
    let g = load(
        "model m { weights random(seed = 21)
           input x: f32[1, 3, 6, 6]
           c = conv2d(x, out = 8, kernel = 3, pad = 1)
           b1 = batchnorm(c)
           b2 = batchnorm(c)
           r1 = relu(b1)
           r2 = relu(b2)
           s = add(r1, r2)
           y = conv2d(s, out = 4, kernel = 1)
           output y }",
    );
    let (f, ctx) = fold_checked(&g);
    assert_eq!(convs(&f), 2, "the shared conv must not be duplicated");
    assert_eq!(
        affines(&f),
        1,
        "one BN folds, the other stays as a compensated map"
    );
    let folded = ["b1", "b2"]
        .iter()
        .filter(|b| ctx.report.fate(b).unwrap().is_gone())
        .count();
    assert_eq!(folded, 1, "{}", ctx.report.to_text());
}

#[test]
fn a_conv_read_by_a_batchnorm_and_a_conv_compensates_the_conv() {
    let g = load(
        "model m { weights random(seed = 22)
           input x: f32[1, 3, 6, 6]
           c = conv2d(x, out = 8, kernel = 3, pad = 1)
           b = batchnorm(c)
           r = relu(b)
           d = conv2d(c, out = 5, kernel = 3, pad = 1)
           y1 = conv2d(r, out = 4, kernel = 1)
           output y1, d }",
    );
    let (f, ctx) = fold_checked(&g);
    assert_eq!(convs(&f), 3, "no conv duplicated");
    assert_eq!(
        affines(&f),
        0,
        "the BN folds into `c`, `d` absorbs the inverse"
    );
    match ctx.report.fate("b").unwrap() {
        Fate::FoldedBackward { into, compensated } => {
            assert_eq!(into, &vec!["c".to_string()]);
            assert_eq!(compensated, &vec!["d".to_string()]);
        }
        other => panic!("unexpected fate {other:?}"),
    }
}

#[test]
fn a_post_activation_bn_folds_forward_with_pad_fill_exactly_at_the_borders() {
    let g = load(
        "model m { weights random(seed = 9)
           input x: f32[1, 3, 5, 5]
           c = conv2d(x, out = 6, kernel = 3, pad = 1)
           r = relu(c)
           b = batchnorm(r)
           d = conv2d(b, out = 4, kernel = 3, pad = 1)
           g = global_avgpool(d)
           output g }",
    );
    let (f, ctx) = fold_checked(&g);
    assert_eq!(affines(&f), 0);
    assert!(matches!(
        ctx.report.fate("b").unwrap(),
        Fate::FoldedForward { pad_fill: true, .. }
    ));
    // Control: the same fold with zero padding (the common mistake) is wrong at the borders,
    // and the tolerance sees it even after global pooling.
    let mut naive = f.clone();
    for node in &mut naive.nodes {
        if let Op::Conv2d(c) = &mut node.op {
            c.pad_fill = false;
        }
    }
    naive.remove_dead();
    assert!(relative_error(&g, &naive, 1) > 10.0 * REL_TOLERANCE);
}

#[test]
fn a_zero_gamma_before_a_padded_conv_still_folds_exactly() {
    // −t/s is not a pad fill when s = 0. The exact route: s·relu(z) = relu(s·z) for s ≥ 0
    // moves the scale back into `c`, and the shift alone (scale 1) folds forward with fill −t.
    let mut g = load(
        "model m { weights random(seed = 9)
           input x: f32[1, 3, 5, 5]
           c = conv2d(x, out = 6, kernel = 3, pad = 1)
           r = relu(c)
           b = batchnorm(r)
           d = conv2d(b, out = 4, kernel = 3, pad = 1)
           output d }",
    );
    set_param(&mut g, "b.weight", 2, 0.0);
    let (f, ctx) = fold_checked(&g);
    assert_eq!(affines(&f), 0, "{}", ctx.report.to_text());
    // Control: the naive forward fold (fill −t/s, with 0 where s = 0) is wrong.
    let wrong = naive_forward_fold_into("b", "d", &canonical(&g));
    assert!(
        relative_error(&g, &wrong, 1) > 10.0 * REL_TOLERANCE,
        "the control must be wrong"
    );
}

/// A BN between a relu and `op`, then a 1×1 conv; `op` is where the condition lives.
fn through(op: &str) -> String {
    format!(
        "model m {{ weights random(seed = 31)
           input x: f32[1, 3, 6, 6]
           c = conv2d(x, out = 6, kernel = 3, pad = 1)
           r = relu(c)
           b = batchnorm(r)
           p = {op}
           d = conv2d(p, out = 4, kernel = 1)
           output d }}"
    )
}

/// The e-graph result is exact, and moving the BN past `p` naively would not be.
fn assert_condition_respected(g: &Graph, input_scale: f32) {
    let (f, ctx) = egraph(g);
    for seed in [1, 2] {
        let err = relative_error_scaled(g, &f, seed, input_scale);
        assert!(
            err <= REL_TOLERANCE,
            "egraph differs by {err}\n{}",
            ctx.report.to_text()
        );
    }
    // On the source graph: canonicalize may rewrite `p` (a counting avgpool becomes a pad
    // and a pool).
    let naive = swap_past(g, "b", "p");
    let err = relative_error_scaled(g, &naive, 1, input_scale);
    assert!(
        err > 10.0 * REL_TOLERANCE,
        "control: the naive move should be wrong, error {err}"
    );
}

#[test]
fn a_negative_gamma_does_not_move_through_maxpool() {
    let mut g = load(&through("maxpool(b, kernel = 3, stride = 1, pad = 1)"));
    set_param(&mut g, "b.weight", 1, -0.9);
    assert_condition_respected(&g, 1.0);
}

#[test]
fn counted_zero_padding_in_avgpool_blocks_the_move() {
    let g = load(&through(
        "avgpool(b, kernel = 3, stride = 1, pad = 1, count_include_pad = true)",
    ));
    assert_condition_respected(&g, 1.0);
}

#[test]
fn relu6_and_silu_do_not_take_the_scale() {
    for op in ["relu6(b)", "silu(b)", "hardswish(b)"] {
        let g = load(&through(op));
        assert_condition_respected(&g, 8.0);
    }
}

#[test]
fn a_negative_gamma_does_not_move_through_relu() {
    let g0 = load(&through("relu(b)"));
    let mut g = g0.clone();
    set_param(&mut g, "b.weight", 0, -0.7);
    assert_condition_respected(&g, 1.0);
    // With all γ positive the scale does move on: only a shift may stay.
    let (f, _) = egraph(&g0);
    let full = f.nodes.iter().filter(|n| {
        n.op == Op::Affine && !f.param(n, "scale").unwrap().data.iter().all(|&s| s == 1.0)
    });
    assert_eq!(full.count(), 0);
}

/// (model, BNs the e-graph may leave at most, of which must be shift-only at least)
const TARGETS: &[(&str, usize)] = &[
    ("tiny.nn", 0),
    ("resnet18.nn", 0),
    ("resnet50.nn", 0),
    ("mobilenet_v2.nn", 0),
    ("efficientnet_b0.nn", 0),
    ("vgg11_bn.nn", 0),
    ("vgg_post_bn.nn", 0),
    ("densenet121.nn", 59),
    ("preact_resnet18.nn", 5),
];

#[test]
fn examples_meet_the_targets_and_never_fold_less_than_the_baselines() {
    for &(name, max_left) in TARGETS {
        let g = common::load(&common::example(name));
        let (a, _) = adjacent(&g);
        let (p, _) = paper(&g);
        let (e, mut ctx) = egraph(&g);
        ctx.report.measure(&g, &e);
        let (la, lp, le) = (affines(&a), affines(&p), affines(&e));
        let stats = ctx.report.saturation.as_ref().unwrap();
        eprintln!(
            "{name}: BNs left adjacent {la}, paper {lp}, egraph {le} ({} shift-only); \
             saturation: {} iterations, {} e-nodes, {}",
            ctx.report.shift_only_left, stats.iterations, stats.enodes, stats.stop
        );
        assert!(
            le <= lp && lp <= la,
            "{name}: egraph {le}, paper {lp}, adjacent {la}"
        );
        assert!(le <= max_left, "{name}: egraph leaves {le} > {max_left}");
        assert_eq!(stats.stop, "saturated", "{name}: {stats:?}");
        assert_eq!(
            convs(&e),
            convs(&g),
            "{name}: a conv was duplicated or lost"
        );
    }
}

#[test]
fn examples_compute_the_same_function_after_fold_egraph() {
    // The big ones are slow in the interpreter in a dev build; these cover every structure
    // (residual, pre-activation, dense blocks, depthwise, squeeze-excitation, post-BN).
    for name in [
        "tiny.nn",
        "vgg_post_bn.nn",
        "preact_resnet18.nn",
        "mobilenet_v2.nn",
        "efficientnet_b0.nn",
        "densenet121.nn",
    ] {
        let g = common::load(&common::example(name));
        let (e, _) = egraph(&g);
        let err = relative_error(&g, &e, 7);
        assert!(err <= REL_TOLERANCE, "{name}: differs by {err}");
    }
}

#[test]
fn random_dags_fold_exactly_and_at_least_as_much_as_the_closure() {
    let mut rng = Rng::new(77);
    let (mut total, mut fa, mut fp, mut fe) = (0, 0, 0, 0);
    for case in 0..100u64 {
        let (text, bns) = random_model(&mut rng, case + 500);
        let mut g = load(&text);
        randomize_gammas(&mut g, &bns, &mut rng);
        let (a, _) = adjacent(&g);
        let (p, _) = paper(&g);
        let (e, ectx) = egraph(&g);
        let err = relative_error(&g, &e, case);
        assert!(
            err <= REL_TOLERANCE,
            "case {case}: egraph differs by {err}\n{text}\n{}",
            ectx.report.to_text()
        );
        let (la, lp, le) = (affines(&a), affines(&p), affines(&e));
        assert!(
            le <= lp && lp <= la,
            "case {case}: left egraph {le}, paper {lp}, adjacent {la}\n{text}"
        );
        assert!(
            convs(&e) <= convs(&g),
            "case {case}: conv duplicated\n{text}"
        );
        let stop = &ectx.report.saturation.as_ref().unwrap().stop;
        assert_eq!(stop, "saturated", "case {case}\n{text}");
        total += bns.len();
        fa += bns.len() - la;
        fp += bns.len() - lp;
        fe += bns.len() - le;
    }
    eprintln!("random DAGs: {total} BNs; folded adjacent {fa}, paper {fp}, egraph {fe}");
}

#[test]
fn sign_conditions_are_checked_per_channel() {
    // One channel has a negative γ: the e-graph moves the channels that may pass the maxpool
    // on their own and leaves the one that may not. (Here
    // the split does not pay: the remaining one-channel map costs a full pass, so extraction
    // keeps the BN; what matters is that the split exists and every choice stays exact.)
    let mut g = load(&through("maxpool(b, kernel = 3, stride = 1, pad = 1)"));
    set_param(&mut g, "b.weight", 1, -0.9);
    let (_, ctx) = fold_checked(&g);
    let stats = ctx.report.saturation.as_ref().unwrap();
    assert!(
        stats.firings["pool-out"] > 0,
        "the qualifying part moved through the pool: {stats:?}"
    );
}

#[test]
fn a_bn_moves_through_an_explicit_pad_with_a_per_channel_fill() {
    // pad(aff(z, s, t), p) = aff(pad(z) with fill (p − t)/s, s, t) for s ≠ 0: the BN then
    // folds forward into the unpadded conv after the pad.
    let g = load(
        "model m { weights random(seed = 41)
           input x: f32[1, 3, 5, 5]
           c = conv2d(x, out = 6, kernel = 3, pad = 1)
           r = relu(c)
           b = batchnorm(r)
           p = pad(b, pads = [1, 2, 1, 0], value = 0.5)
           d = conv2d(p, out = 4, kernel = 3)
           output d }",
    );
    let (f, ctx) = fold_checked(&g);
    assert_eq!(affines(&f), 0, "{}", ctx.report.to_text());
    assert!(
        f.nodes
            .iter()
            .any(|n| matches!(n.op, Op::Pad { fill: true, .. }))
    );
    let stats = ctx.report.saturation.as_ref().unwrap();
    assert!(stats.firings["pad-out"] > 0);
    // Control: moving the BN past the pad without changing the fill is wrong at the border.
    let naive = swap_past(&canonical(&g), "b", "p");
    assert!(relative_error(&g, &naive, 1) > 10.0 * REL_TOLERANCE);
}

#[test]
fn a_zero_scale_does_not_move_out_through_a_pad() {
    // With s = 0 no fill (p − t)/s exists; the map may only move in the other direction
    // (aff(pad(z)) = pad(aff(z)) with fill s·p + t, always exact) or not at all.
    let mut g = load(
        "model m { weights random(seed = 42)
           input x: f32[1, 3, 5, 5]
           c = conv2d(x, out = 6, kernel = 3, pad = 1)
           t = tanh(c)
           b = batchnorm(t)
           p = pad(b, pads = 1)
           d = conv2d(p, out = 4, kernel = 3)
           output d }",
    );
    set_param(&mut g, "b.weight", 3, 0.0);
    let (f, ctx) = fold_checked(&g);
    let _ = (f, ctx);
}

/// concat → BN with (nearly) the identity map → pad → BN whose γ is positive, zero and
/// negative → leaky_relu (issue #11, item 6).
fn mixed_signs_behind_a_pad() -> Graph {
    let mut g = load(
        "model m { weights random(seed = 61)
           input x: f32[1, 3, 5, 5]
           t = tanh(x)
           k = concat(x, t)
           b1 = batchnorm(k)
           p = pad(b1, pads = 1)
           b2 = batchnorm(p)
           y = leaky_relu(b2, alpha = 0.1)
           output y }",
    );
    for c in 0..6 {
        set_param(&mut g, "b1.weight", c, 1.0);
        set_param(&mut g, "b1.bias", c, 0.0);
        set_param(&mut g, "b1.running_mean", c, 0.0);
        set_param(&mut g, "b1.running_var", c, 1.0);
    }
    for (c, gamma) in [(1, 0.0), (2, -0.7), (4, 0.0), (5, -1.3)] {
        set_param(&mut g, "b2.weight", c, gamma);
    }
    g
}

#[test]
fn saturation_reaches_a_fixpoint_on_mixed_sign_maps_behind_a_pad() {
    // Splitting a map by sign and composing the parts with every other map used to produce
    // every per-channel mixture of them: 28,301 e-nodes, stopped by the 5 s time limit.
    let g = mixed_signs_behind_a_pad();
    let (_, ctx) = fold_checked(&g);
    let stats = ctx.report.saturation.as_ref().unwrap();
    assert_eq!(stats.stop, "saturated", "{stats:?}");
    assert!(stats.iterations <= 10, "{stats:?}");
    assert!(stats.enodes <= 1_000, "{stats:?}");
}

/// A BN that cannot fold backward (behind a tanh) before the pool `op`, then a 1×1 conv.
fn behind_tanh(input: &str, op: &str) -> String {
    format!(
        "model m {{ weights random(seed = 32)
           input x: f32[{input}]
           c = conv2d(x, out = 4, kernel = 3, pad = 1)
           t = tanh(c)
           b = batchnorm(t)
           p = {op}
           d = conv2d(p, out = 3, kernel = 1)
           output d }}"
    )
}

fn pads(g: &Graph) -> usize {
    g.count_ops(|op| matches!(op, Op::Pad { .. }))
}

#[test]
fn a_bn_before_an_avgpool_counting_its_padding_folds() {
    // The pool is `pad` (value 0) + an unpadded pool: the BN moves out through the pad (whose
    // fill becomes −t/s) and the pool, and folds forward into `d`.
    let mut g = load(&behind_tanh(
        "1, 3, 6, 6",
        "avgpool(b, kernel = 3, stride = 1, pad = 1, count_include_pad = true)",
    ));
    set_param(&mut g, "b.weight", 1, -0.6);
    let (f, ctx) = fold_checked(&g);
    assert_eq!(affines(&f), 0, "{}", ctx.report.to_text());
}

#[test]
fn a_counting_avgpool_is_split_into_pad_and_pool_only_where_that_is_exact() {
    // Ceil mode with asymmetric pads: the last windows are cut by the padded edge, and the
    // divisor counts what is inside it, in both forms.
    let exact = load(&behind_tanh(
        "1, 3, 6, 5",
        "avgpool(b, kernel = 3, stride = 2, pad = [1, 0, 1, 1], ceil_mode = true, count_include_pad = true)",
    ));
    let split = canonical(&exact);
    assert_eq!(pads(&split), 1, "the pool reading a BN is split");
    assert_same_outputs(&exact, &split);
    let (f, ctx) = fold_checked(&exact);
    assert_eq!(affines(&f), 0, "{}", ctx.report.to_text());
    // Here ceil mode drops a last window that would start in the bottom/right padding; the
    // unpadded pool would keep it (another output shape), so the pool stays as it is.
    let kept = load(&behind_tanh(
        "1, 3, 5, 5",
        "avgpool(b, kernel = 2, stride = 2, pad = 1, ceil_mode = true, count_include_pad = true)",
    ));
    let canon = canonical(&kept);
    assert_eq!(pads(&canon), 0);
    assert_same_outputs(&kept, &canon);
    fold_checked(&kept);
}

#[test]
fn a_bn_before_flatten_of_a_spatial_map_folds_into_the_dense_layer() {
    // flatten(aff(z)) = aff(flatten(z)) with each channel's entry repeated H·W times; the
    // dense layer absorbs it into its columns.
    let mut g = load(
        "model m { weights random(seed = 71)
           input x: f32[1, 3, 4, 4]
           c = conv2d(x, out = 4, kernel = 3, pad = 1)
           t = tanh(c)
           b = batchnorm(t)
           f = flatten(b)
           y = dense(f, out = 5)
           output y }",
    );
    set_param(&mut g, "b.weight", 2, -0.8);
    let (f, ctx) = fold_checked(&g);
    assert_eq!(affines(&f), 0, "{}", ctx.report.to_text());
    match fate(&ctx, "b") {
        Fate::FoldedForward { into, .. } => assert_eq!(into, &vec!["y".to_string()]),
        other => panic!("unexpected fate {other:?}"),
    }
}

#[test]
fn a_map_moves_back_into_flatten_only_when_it_is_the_same_on_each_channels_positions() {
    // A BN over the 2·4·4 flattened features: it moves back through the flatten (and folds
    // into `c`) only when each channel's 16 features share one map.
    let model = "model m { weights random(seed = 72)
           input x: f32[1, 3, 4, 4]
           c = conv2d(x, out = 2, kernel = 3, pad = 1)
           f = flatten(c)
           b = batchnorm(f)
           y = tanh(b)
           output y }";
    let g = load(model);
    let (f, ctx) = fold_checked(&g);
    assert_eq!(affines(&f), 1, "per-feature map: {}", ctx.report.to_text());
    let mut uniform = g.clone();
    for suffix in ["weight", "bias", "running_mean", "running_var"] {
        for k in 0..32 {
            let first = uniform.params[&format!("b.{suffix}")].data[k / 16 * 16];
            set_param(&mut uniform, &format!("b.{suffix}"), k, first);
        }
    }
    let (f, ctx) = fold_checked(&uniform);
    assert_eq!(affines(&f), 0, "per-channel map: {}", ctx.report.to_text());
    let stats = ctx.report.saturation.as_ref().unwrap();
    assert!(stats.firings["flatten-in"] > 0, "{stats:?}");
}
