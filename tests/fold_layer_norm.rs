//! Per-channel maps around `layer_norm` (ConvNeXt's LayerNorm2d): it normalises across the
//! channels at each position, so a map on its input does not pass it (it would change every
//! channel's contribution to the mean and variance), but a map on its output is
//! `s·(w·n + b) + t = (s·w)·n + (s·b + t)`: it joins the layer_norm's weight and bias.

mod common;

use bnc::passes::Fate;

use common::fold::*;

/// layer_norm → BN → relu: the BN can only fold backward, into the layer_norm.
const BN_AFTER: &str = "model m { weights random(seed = 3)
   input x: f32[1, 12, 5, 5]
   n = layer_norm(x, eps = 1e-6)
   b = batchnorm(n)
   r = relu(b)
   output r }";

/// BN → layer_norm → conv: with layer_norm taken for commuting, the BN would fold forward
/// into the conv.
const BN_BEFORE: &str = "model m { weights random(seed = 4)
   input x: f32[1, 12, 5, 5]
   b = batchnorm(x)
   n = layer_norm(b, eps = 1e-6)
   c = conv2d(n, out = 8, kernel = 1)
   output c }";

#[test]
fn bn_after_layer_norm_folds_into_its_weight_and_bias() {
    let g = load(BN_AFTER);
    for (name, (f, ctx)) in [("paper", paper(&g)), ("egraph", egraph(&g))] {
        assert!(
            matches!(fate(&ctx, "b"), Fate::FoldedBackward { .. }),
            "{name}: {:?}",
            fate(&ctx, "b")
        );
        assert_eq!(affines(&f), 0, "BNs left by {name}");
        assert!(relative_error(&g, &f, 1) < 1e-5, "{name}");
        assert!(relative_error(&g, &f, 2) < 1e-5, "{name}");
    }
}

#[test]
fn bn_before_layer_norm_is_not_folded() {
    let g = load(BN_BEFORE);
    for (name, (f, ctx)) in [("paper", paper(&g)), ("egraph", egraph(&g))] {
        assert!(
            matches!(fate(&ctx, "b"), Fate::Kept { .. }),
            "{name}: {:?}",
            fate(&ctx, "b")
        );
        assert_eq!(affines(&f), 1, "{name} folded the BN through layer_norm");
        assert!(relative_error(&g, &f, 1) < 1e-5, "{name}");
    }
}

/// What the test above guards against: moving the map past the layer_norm (as a
/// `Commutes` rule would) changes the output by far more than rounding.
#[test]
fn moving_a_map_past_layer_norm_is_wrong() {
    let g = load(BN_BEFORE);
    let (canon, _) = run_passes(&g, &["canonicalize"]);
    let swapped = swap_past(&canon, "b", "n");
    let err = relative_error(&g, &swapped, 1);
    assert!(
        err > 1e-2,
        "moving the BN past layer_norm changed the output by only {err}"
    );
}
