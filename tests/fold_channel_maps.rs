//! Exactness of the folds through `channel_shuffle` (`MapRule::Permutes`), `slice_channels`
//! (`MapRule::Slices`) and `resize` (`MapRule::Commutes`) with strongly non-uniform BN maps:
//! every channel has its own γ (some negative), β, mean and variance, so a map moved with
//! the wrong channel order, or sliced at the wrong offset, computes something else and the
//! comparison with the unfolded model fails. Each test says which mutation of the pass code
//! it was seen to catch (each mutation was made, the test run and seen to fail, and reverted).
//!
//! Every model is checked in both fold modes (`fold-paper`'s closure, `fold-egraph`'s
//! rules) with the interpreter, and compiled (1 and 2 threads) against the interpreter on
//! the unfolded model.
//!
//! In those models the e-graph extracts the closure's seed plan. The e-graph's own
//! `shuffle-in`/`shuffle-out`/`slice-in`/`slice-out` rules decide only where the closure
//! stops: at a relu, whose positive scales the e-graph moves (`relu-scale-in`/`-out`) and the
//! closure does not. The `*_through_relu` tests below are such models.

mod common;

use bnc::ir::Graph;
use bnc::passes::FoldMode;
use common::fold::*;

/// A folding pipeline (`paper` or `egraph`).
type Fold = fn(&Graph) -> (Graph, bnc::passes::PassContext);

/// Gives every channel of BN `bn` (of `channels` channels) its own γ, β, mean and variance;
/// γ is negative on every third channel.
fn non_uniform(g: &mut Graph, bn: &str, channels: usize) {
    for c in 0..channels {
        let k = c as f32;
        let gamma = (0.4 + 0.3 * k) * if c % 3 == 1 { -1.0 } else { 1.0 };
        set_param(g, &format!("{bn}.weight"), c, gamma);
        set_param(g, &format!("{bn}.bias"), c, 0.25 * k - 1.0);
        set_param(g, &format!("{bn}.running_mean"), c, 0.6 - 0.1 * k);
        set_param(g, &format!("{bn}.running_var"), c, 0.3 + 0.2 * k);
    }
}

/// Both modes fold every BN of `g` away (`left` affines may stay, e.g. a map with nowhere
/// to go), and the folded models compute what `g` does: interpreted and compiled.
fn check_folds(g: &Graph, left: usize) {
    let modes: [(&str, Fold); 2] = [("paper", paper), ("egraph", egraph)];
    for (mode, run) in modes {
        let (f, ctx) = run(g);
        assert_eq!(
            affines(&f),
            left,
            "{mode}: affines left\n{}\n{}",
            ctx.report.to_text(),
            bnc::ir::printer::print(&f)
        );
        for seed in [1, 2] {
            let err = relative_error(g, &f, seed);
            assert!(
                err <= REL_TOLERANCE,
                "{mode}: folded output differs by {err} (relative)\n{}",
                bnc::ir::printer::print(&f)
            );
        }
    }
    for mode in [FoldMode::Paper, FoldMode::Egraph] {
        for threads in [1, 2] {
            let err = compiled_error(g, mode, threads);
            assert!(err <= 1e-5, "{mode:?}, {threads} thread(s): error {err}");
        }
    }
}

/// BN → channel_shuffle → 1x1 conv: the BN reads a graph input, so it folds only forward,
/// through the shuffle, with its vectors permuted (output channel `o` carries input channel
/// `shuffle_source(o)`'s map).
///
/// Catches: the closure evaluating the map after the shuffle without permuting it
/// (passes/src/closure.rs, `Kind::Permute` in the map evaluation: `m.scale[o]` for
/// `m.scale[src(o)]`, same for the shift): `fold-paper`'s output is off by 1.25 (relative),
/// and the e-graph, seeded with that plan, fails its debug check.
#[test]
fn shuffle_forward_permutes_the_map() {
    let mut g = load(
        "model m { weights random(seed = 51)
           input x: f32[2, 12, 5, 5]
           b = batchnorm(x)
           s = channel_shuffle(b, groups = 3)
           y = conv2d(s, out = 7, kernel = 1)
           output y }",
    );
    non_uniform(&mut g, "b", 12);
    check_folds(&g, 0);
}

/// conv → channel_shuffle → BN → relu: the relu blocks the forward fold of the shift, so the
/// BN folds backward through the shuffle into the conv, with its vectors permuted the other
/// way (input channel `i = a·(C/g) + b` takes output channel `b·g + a`'s map).
///
/// Catches: the same closure mutation (map evaluation without the permutation): `fold-paper`
/// then finds conflicting maps and keeps the BN (the affines-left assertion fails).
#[test]
fn shuffle_backward_permutes_the_map() {
    let mut g = load(
        "model m { weights random(seed = 52)
           input x: f32[1, 4, 6, 6]
           c = conv2d(x, out = 12, kernel = 3, pad = 1)
           s = channel_shuffle(c, groups = 4)
           b = batchnorm(s)
           y = relu(b)
           output y }",
    );
    non_uniform(&mut g, "b", 12);
    check_folds(&g, 0);
}

/// BN → three slices (one in the middle) → three convs: the BN folds forward through each
/// slice with its vectors sliced at the slice's own offset.
///
/// Catches: the closure slicing from channel 0 (passes/src/closure.rs, map evaluation:
/// `slice(0..end - start)` for `slice(start..end)`): `fold-paper`'s output is off by 0.86
/// (relative).
#[test]
fn slice_forward_takes_the_right_range() {
    let mut g = load(
        "model m { weights random(seed = 53)
           input x: f32[1, 12, 5, 5]
           b = batchnorm(x)
           l = slice_channels(b, start = 0, end = 3)
           m = slice_channels(b, start = 3, end = 9)
           r = slice_channels(b, start = 9, end = 12)
           cl = conv2d(l, out = 4, kernel = 1)
           cm = conv2d(m, out = 4, kernel = 1)
           cr = conv2d(r, out = 4, kernel = 1)
           y = concat(cl, cm, cr)
           output y }",
    );
    non_uniform(&mut g, "b", 12);
    check_folds(&g, 0);
}

/// conv → slice 3..9 → BN → relu, and the conv's channels 9..12 read by another slice: the
/// BN folds backward into conv channels 3..9 only (`id ⧺ m ⧺ id`); channels 9..12 must keep
/// the conv's own weights.
///
/// Catches: the same closure mutation (slicing from channel 0): `fold-paper` finds
/// conflicting maps and keeps the BN (the affines-left assertion fails).
#[test]
fn slice_backward_takes_the_right_range() {
    let mut g = load(
        "model m { weights random(seed = 54)
           input x: f32[1, 3, 6, 6]
           c = conv2d(x, out = 12, kernel = 3, pad = 1)
           m = slice_channels(c, start = 3, end = 9)
           b = batchnorm(m)
           y = relu(b)
           r = slice_channels(c, start = 9, end = 12)
           z = relu(r)
           output y, z }",
    );
    non_uniform(&mut g, "b", 6);
    check_folds(&g, 0);
}

/// Every resize form commutes with a per-channel map (nearest copies values within a
/// channel; bilinear weights of one output sum to 1, clamped indices included), so there is
/// no resize that must block a map. What must still be right is what comes after it: here
/// the BN (negative γ on some channels) moves through a bilinear, align-corners resize to a
/// different size and folds forward into a *padded* conv, whose border positions read the
/// pad fill `−t/s` the fold gives it: position-dependent, unlike the resize.
///
/// Catches: the forward fold into a padded conv keeping the old fill instead of `−t/s`
/// (passes/src/affine.rs, `fill.push(old(i))`): the border outputs are off, `fold-paper`'s
/// by 0.46 (relative), and the e-graph fails its debug check. `tests/fold_resize.rs` pins the rule itself (Blocks).
#[test]
fn resize_then_padded_conv() {
    for resize in [
        "resize(b, mode = \"bilinear\", size = [11, 9], coordinates = \"align_corners\")",
        "resize(b, scale = 2, coordinates = \"half_pixel\", nearest_mode = \"round_prefer_ceil\")",
    ] {
        let mut g = load(&format!(
            "model m {{ weights random(seed = 55)
               input x: f32[1, 6, 5, 5]
               b = batchnorm(x)
               u = {resize}
               y = conv2d(u, out = 5, kernel = 3, pad = 1)
               output y }}"
        ));
        non_uniform(&mut g, "b", 6);
        check_folds(&g, 0);
    }
}

/// Gives every channel of BN `bn` its own positive γ, β, mean and variance: a relu passes
/// the whole scale, so the e-graph moves it and leaves a shift-only map.
fn positive_non_uniform(g: &mut Graph, bn: &str, channels: usize) {
    non_uniform(g, bn, channels);
    for c in 0..channels {
        set_param(g, &format!("{bn}.weight"), c, 0.4 + 0.3 * c as f32);
    }
}

/// The closure stops at the relu and keeps the BN; the e-graph moves its scale through the
/// relu and the channel operator into `conv` and keeps the shift (`Fate::Partial`). Both
/// compute what `g` does, interpreted and compiled.
fn check_scale_moves_into(g: &Graph, conv: &str) {
    let (f, ctx) = paper(g);
    assert!(
        matches!(fate(&ctx, "b"), bnc::passes::Fate::Kept { .. }),
        "paper: {:?}",
        fate(&ctx, "b")
    );
    assert!(relative_error(g, &f, 1) <= REL_TOLERANCE);
    let (e, ctx) = egraph(g);
    // The rules reach a fixpoint (a wrong `slice-in`/`slice-out` pair makes new maps forever).
    let stop = &ctx.report.saturation.as_ref().expect("egraph stats").stop;
    assert_eq!(stop, "saturated", "egraph");
    match fate(&ctx, "b") {
        bnc::passes::Fate::Partial { scale_into, .. } => {
            assert_eq!(scale_into, &[conv.to_string()], "egraph")
        }
        other => panic!("egraph: {other:?}\n{}", bnc::ir::printer::print(&e)),
    }
    assert_eq!(affines(&e), 1, "egraph: the shift stays");
    for seed in [1, 2] {
        let err = relative_error(g, &e, seed);
        assert!(
            err <= REL_TOLERANCE,
            "egraph: folded output differs by {err}"
        );
    }
    for threads in [1, 2] {
        let err = compiled_error(g, FoldMode::Egraph, threads);
        assert!(err <= 1e-5, "egraph, {threads} thread(s): error {err}");
    }
}

/// conv → channel_shuffle → relu → BN: the e-graph's `relu-scale-in` then `shuffle-in`
/// (input channel `i = a·(C/g) + b` takes output channel `b·g + a`'s scale) into the conv.
///
/// Catches: `shuffle-in` gathering the map unpermuted (passes/src/egraph/rules.rs,
/// `gather(c, |i| i)`): `fold-egraph`'s debug check fails (off by 1.20 where max |y| is
/// 5.66), here and in `shuffle_out_through_relu`.
#[test]
fn shuffle_in_through_relu() {
    let mut g = load(
        "model m { weights random(seed = 56)
           input x: f32[1, 4, 6, 6]
           c = conv2d(x, out = 12, kernel = 3, pad = 1)
           s = channel_shuffle(c, groups = 4)
           r = relu(s)
           b = batchnorm(r)
           output b }",
    );
    positive_non_uniform(&mut g, "b", 12);
    check_scale_moves_into(&g, "c");
}

/// BN → relu → channel_shuffle → 1x1 conv: `relu-scale-out` then `shuffle-out` (output
/// channel `o` carries input channel `shuffle_source(o)`'s scale) into the conv.
///
/// Catches: `shuffle-out` without the permutation (`gather(c, |o| o)`): the debug check fails
/// (off by 1.82 where max |y| is 5.23).
#[test]
fn shuffle_out_through_relu() {
    let mut g = load(
        "model m { weights random(seed = 57)
           input x: f32[1, 12, 6, 6]
           b = batchnorm(x)
           r = relu(b)
           s = channel_shuffle(r, groups = 4)
           c = conv2d(s, out = 5, kernel = 1)
           output c }",
    );
    positive_non_uniform(&mut g, "b", 12);
    check_scale_moves_into(&g, "c");
}

/// conv → slice 3..9 → relu → BN: `relu-scale-in` then `slice-in` (`id ⧺ m ⧺ id`) into conv
/// channels 3..9.
///
/// Catches: `slice-in` placing the map at channel 0 (`identity(0)` before it), and
/// `slice-out` slicing from channel 0: the debug check fails (off by 0.91 where max |y| is
/// 2.34), after about 4 minutes: either mutation makes the pair generate new maps without end,
/// until the e-node budget (`egraph::Limits`) stops saturation and asserts below fail.
#[test]
fn slice_in_through_relu() {
    let mut g = load(
        "model m { weights random(seed = 58)
           input x: f32[1, 3, 6, 6]
           c = conv2d(x, out = 12, kernel = 3, pad = 1)
           m = slice_channels(c, start = 3, end = 9)
           r = relu(m)
           b = batchnorm(r)
           output b }",
    );
    positive_non_uniform(&mut g, "b", 6);
    check_scale_moves_into(&g, "c");
}

/// BN → relu → slice 3..9 → 3x3 conv: `relu-scale-out` then `slice-out` (the map's channels
/// 3..9) into the conv.
///
/// Catches: `slice-out` slicing from channel 0, and `slice-in` placing the map at channel 0:
/// the debug check fails (off by 2.54 where max |y| is 5.22).
#[test]
fn slice_out_through_relu() {
    let mut g = load(
        "model m { weights random(seed = 59)
           input x: f32[1, 12, 6, 6]
           b = batchnorm(x)
           r = relu(b)
           m = slice_channels(r, start = 3, end = 9)
           c = conv2d(m, out = 5, kernel = 3)
           output c }",
    );
    positive_non_uniform(&mut g, "b", 12);
    check_scale_moves_into(&g, "c");
}
