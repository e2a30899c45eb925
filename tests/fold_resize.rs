//! Folding through `resize`: its table entry says a per-channel affine map commutes with it
//! (`MapRule::Commutes`: nearest copies values within a channel, bilinear weights of one
//! output sum to 1). A BN after a relu can fold neither backward (the relu blocks its shift)
//! nor forward unless it moves through the resize to the conv that reads it.

mod common;

use common::fold::*;

/// conv → relu → BN → resize → conv: the BN folds forward through the resize.
fn model(resize: &str) -> bnc::ir::Graph {
    load(&format!(
        "model m {{ weights random(seed = 31)
           input x: f32[1, 3, 8, 8]
           c = conv2d(x, out = 8, kernel = 3, pad = 1)
           r = relu(c)
           b = batchnorm(r)
           u = {resize}
           y = conv2d(u, out = 4, kernel = 1)
           output y }}"
    ))
}

const RESIZES: [&str; 3] = [
    "resize(b, scale = 2)",
    "resize(b, mode = \"bilinear\", scale = 2, coordinates = \"half_pixel\")",
    "resize(b, mode = \"bilinear\", size = [11, 5], coordinates = \"align_corners\")",
];

/// Pins `OpKind::Resize`'s `MapRule::Commutes` (ir/src/optable.rs): with the resize
/// blocking maps (`MapRule::Blocks`) the BN stays, one affine left, and these fail.
#[test]
fn batchnorm_before_resize_folds_into_the_next_conv() {
    for resize in RESIZES {
        let g = model(resize);
        for (mode, (f, ctx)) in [("egraph", egraph(&g)), ("paper", paper(&g))] {
            assert_eq!(
                affines(&f),
                0,
                "{mode}, {resize}: the BN must fold through the resize\n{}",
                ctx.report.to_text()
            );
            assert!(fate(&ctx, "b").is_gone(), "{mode}, {resize}");
            for seed in [1, 2] {
                let err = relative_error(&g, &f, seed);
                assert!(err <= REL_TOLERANCE, "{mode}, {resize}: error {err}");
            }
        }
    }
}

/// The adjacency rule (PyTorch/ORT) folds only a BN right after a conv: this one stays.
#[test]
fn adjacency_leaves_it() {
    let (f, _) = adjacent(&model(RESIZES[1]));
    assert_eq!(affines(&f), 1);
}
