//! ShuffleNet's channel operators compiled against the interpreter at 1 and 2 threads
//! (`check_body`), on ShuffleNet shapes and in batch 2 (views with the source's batch stride).

mod common;
use common::check_body;

#[test]
fn channel_shuffle_shufflenet_shapes() {
    check_body("input x: f32[1, 116, 28, 28]\n y = channel_shuffle(x, groups = 2)\n output y");
    check_body("input x: f32[2, 48, 7, 5]\n y = channel_shuffle(x, groups = 3)\n output y");
    // With a fused epilogue.
    check_body(
        "input x: f32[1, 24, 5, 5]\n s = channel_shuffle(x, groups = 4)\n y = relu(s)\n output y",
    );
}

#[test]
fn slice_channels_are_views() {
    // A ShuffleNet unit: split, one half through convs, concat, shuffle.
    for n in [1, 2] {
        check_body(&format!(
            "input x: f32[{n}, 116, 28, 28]
             a = slice_channels(x, start = 0, end = 58)
             b = slice_channels(x, start = 58, end = 116)
             c1 = conv2d(b, out = 58, kernel = 1)
             r1 = relu(c1)
             d = conv2d(r1, out = 58, kernel = 3, pad = 1, groups = 58)
             c2 = conv2d(d, out = 58, kernel = 1)
             r2 = relu(c2)
             cat = concat(a, r2)
             y = channel_shuffle(cat, groups = 2)
             output y"
        ));
    }
    // Slices read by pools, elementwise ops and as outputs.
    check_body(
        "input x: f32[2, 10, 6, 6]
         a = slice_channels(x, start = 3, end = 7)
         p = maxpool(a, kernel = 2)
         e = relu(a)
         b = slice_channels(x, start = 0, end = 10)
         g = global_avgpool(b)
         output p, e, a, g",
    );
}
