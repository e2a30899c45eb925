//! Per-channel maps through ShuffleNet's channel operators: a map commutes with a channel
//! permutation (its vectors permuted) and with a channel slice (its vectors sliced), so a BN
//! before a shuffle or a split folds into the convs after it, in every folding mode, and the
//! folded model computes what the unfolded one does.

mod common;

use bnc::passes::Fate;

use common::fold::*;

/// BN → channel_shuffle → conv, with a forward fold only (the BN reads a graph input).
const SHUFFLE_FORWARD: &str = "model m { weights random(seed = 3)
   input x: f32[1, 12, 6, 6]
   b = batchnorm(x)
   s = channel_shuffle(b, groups = 3)
   c = conv2d(s, out = 8, kernel = 1)
   output c }";

/// conv → BN → channel_shuffle → split → conv: the BN folds backward into the conv (its
/// output is only read through the shuffle), or forward into both readers of the slices.
const SHUFFLE_SPLIT: &str = "model m { weights random(seed = 4)
   input x: f32[2, 6, 5, 5]
   c0 = conv2d(x, out = 12, kernel = 3, pad = 1)
   b = batchnorm(c0)
   s = channel_shuffle(b, groups = 2)
   l = slice_channels(s, start = 0, end = 5)
   r = slice_channels(s, start = 5, end = 12)
   c1 = conv2d(l, out = 4, kernel = 1)
   c2 = conv2d(r, out = 4, kernel = 1)
   y = concat(c1, c2)
   output y }";

#[test]
fn bn_before_shuffle_folds_forward_into_the_conv() {
    let g = load(SHUFFLE_FORWARD);
    let (f, ctx) = paper(&g);
    assert!(
        matches!(fate(&ctx, "b"), Fate::FoldedForward { .. }),
        "{:?}",
        fate(&ctx, "b")
    );
    assert_eq!(affines(&f), 0, "BNs left by paper");
    assert_same_outputs(&g, &f);
    let (e, _) = egraph(&g);
    assert_eq!(affines(&e), 0, "BNs left by egraph");
    assert_same_outputs(&g, &e);
}

#[test]
fn bn_before_shuffle_and_split_folds() {
    let g = load(SHUFFLE_SPLIT);
    for (name, (f, _)) in [("paper", paper(&g)), ("egraph", egraph(&g))] {
        assert_eq!(affines(&f), 0, "BNs left by {name}");
        assert_same_outputs(&g, &f);
    }
}

/// A shuffle with its channels in a different order than the map's: the permuted map must
/// be the one that folds (a BN with distinct per-channel values checks the direction of the
/// permutation).
#[test]
fn permutation_direction_is_exact() {
    let mut g = load(SHUFFLE_FORWARD);
    for c in 0..12 {
        set_param(&mut g, "b.weight", c, 0.5 + c as f32 * 0.25);
        set_param(&mut g, "b.bias", c, c as f32 - 6.0);
    }
    let (f, _) = paper(&g);
    assert_eq!(affines(&f), 0);
    assert!(relative_error(&g, &f, 1) < 1e-5);
}
