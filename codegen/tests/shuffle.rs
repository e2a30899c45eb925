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

/// `check_body`, and compiled with [`packed`] at 1 and 2 threads against the interpreter.
/// Returns the model.
fn check_packed_too(body: &str) -> bnc_ir::Graph {
    check_body(body);
    let g = common::model(body);
    let ins = common::inputs(&g, 2);
    let want = bnc_ir::interp::run(&g, &ins).unwrap();
    for threads in [1, 2] {
        let got = common::run_compiled(&bnc_codegen::compile(&g, &packed(threads)).unwrap(), &ins);
        for (w, o) in want.iter().zip(&got) {
            let err = w.max_abs_diff(o) / w.max_abs().max(1.0);
            assert!(
                err <= common::TOL,
                "packed, {threads} threads: relative error {err}"
            );
        }
    }
    g
}

/// Default options with `threads`, convs as packed GEMMs (on targets that read convs in
/// place, pointwise convs read their input themselves and never through a shuffle).
fn packed(threads: usize) -> bnc_codegen::Options {
    bnc_codegen::Options {
        direct_conv: false,
        ..common::options(threads)
    }
}

/// `check_packed_too`, and the packed plan has `gathers` copies read through a shuffle's permutation and `shuffles`
/// kernels of the shuffle named `shuffled`. Returns the 1-thread plan.
fn check_gathers(body: &str, gathers: usize, shuffles: usize) -> String {
    let g = check_packed_too(body);
    let mut plans = Vec::new();
    for threads in [1, 2] {
        let plan = bnc_codegen::plan_text(&g, &packed(threads)).unwrap();
        let count = |prefix: &str| {
            plan.lines()
                .filter(|l| l.starts_with("  #") && l.contains(prefix))
                .count()
        };
        assert_eq!(
            (count(" gather_"), count("_shuffled ")),
            (gathers, shuffles),
            "at {threads} threads:\n{plan}"
        );
        plans.push(plan);
    }
    plans.swap_remove(0)
}

/// A shuffle of a 1x1 conv of `x` (`[n, c, 9, 7]`), then a ShuffleNet unit on it: the
/// first `cut` channels copied into its concat, the others through `conv2d(.., conv)`
/// and a relu, and the concat shuffled.
fn unit_pair(n: usize, c: usize, groups: usize, cut: usize, conv: &str) -> String {
    format!(
        "input x: f32[{n}, {c}, 9, 7]
         c0 = conv2d(x, out = {c}, kernel = 1)
         shuffled = channel_shuffle(c0, groups = {groups})
         a = slice_channels(shuffled, start = 0, end = {cut})
         b = slice_channels(shuffled, start = {cut}, end = {c})
         c1 = conv2d(b, out = {rest}, {conv})
         r1 = relu(c1)
         cat = concat(a, r1)
         y = channel_shuffle(cat, groups = {groups})
         output y",
        rest = c - cut
    )
}

/// Two ShuffleNet units in a row: the second copies the first half of the first one's
/// shuffle into its concat, read from the shuffle's input through the permutation, and its
/// 3x3 conv reads the other half through the permutation too: no shuffle kernel. Odd group
/// sizes (groups 3 of 15 channels, halves that cut a group), batch 2. A half read by a pool
/// is computed by the shuffle, from channel 58 on.
#[test]
fn shuffle_slices_copied_through_the_permutation() {
    for (n, c, groups, cut) in [(1, 116, 2, 58), (2, 15, 3, 7)] {
        check_gathers(&unit_pair(n, c, groups, cut, "kernel = 3, pad = 1"), 1, 0);
    }
    let narrowed = "input x: f32[1, 116, 9, 7]
         shuffled = channel_shuffle(x, groups = 2)
         a = slice_channels(shuffled, start = 0, end = 58)
         b = slice_channels(shuffled, start = 58, end = 116)
         p = maxpool(b, kernel = 2, stride = 1, pad = [0, 0, 1, 1])
         cat = concat(a, p)
         output cat";
    let plan = check_gathers(narrowed, 1, 1);
    assert!(
        plan.contains("channel-shuffle groups 2 from channel 58"),
        "{plan}"
    );
}

/// Convs read a shuffle's channels through the permutation (`through-shuffle`) where they
/// run as packed GEMMs or depthwise kernels: ShuffleNet's units then have no shuffle kernel
/// at all. A grouped 1x1 conv on a slice that cuts the shuffle's groups (a table per conv
/// group), a depthwise 3x3 with a channel multiplier, 3x3 convs with a per-channel pad fill
/// (the fill follows the conv's own channels), batch 2, and a shuffle read whole by a conv
/// and by a pool (computed for the pool).
#[test]
fn convs_read_shuffles_through_the_permutation() {
    for (n, c, groups, cut, conv_groups) in [(1, 116, 2, 58, 1), (2, 15, 3, 7, 2)] {
        let conv = format!("kernel = 1, groups = {conv_groups}");
        let plan = check_gathers(&unit_pair(n, c, groups, cut, &conv), 1, 0);
        assert!(plan.contains(" through-shuffle"), "{plan}");
    }
    let plan = check_gathers(
        "input x: f32[2, 12, 6, 6]
         shuffled = channel_shuffle(x, groups = 3)
         a = slice_channels(shuffled, start = 2, end = 10)
         dw = conv2d(a, out = 16, kernel = 3, pad = 1, groups = 8, pad_fill = true)
         b = slice_channels(shuffled, start = 1, end = 12)
         c3 = conv2d(b, out = 4, kernel = 3, stride = 2, pad = 1, pad_fill = true)
         output dw, c3",
        0,
        0,
    );
    assert_eq!(plan.matches(" through-shuffle").count(), 2, "{plan}");
    let plan = check_gathers(
        "input x: f32[2, 12, 6, 6]
         shuffled = channel_shuffle(x, groups = 3)
         c = conv2d(shuffled, out = 5, kernel = 1)
         p = maxpool(shuffled, kernel = 2)
         output c, p",
        0,
        1,
    );
    assert!(plan.contains("1x1 12->5 6x6 through-shuffle"), "{plan}");
}

/// A shuffle read only by copies (a concat and an output slice) computes nothing itself;
/// one that is also an output, or read whole, is computed whole; a fused epilogue keeps
/// the copies reading its output.
#[test]
fn shuffle_read_only_by_copies_is_not_computed() {
    // `shuffled` is a 4-group shuffle of a 1x1 conv of `x` (12 channels, 5x6); each case
    // reads it on, with the gathers and shuffle kernels its plan must have.
    let model = |n: usize, rest: &str| {
        format!(
            "input x: f32[{n}, 12, 5, 6]
             c0 = conv2d(x, out = 12, kernel = 1)
             shuffled = channel_shuffle(c0, groups = 4)
             {rest}"
        )
    };
    for (n, rest, gathers, shuffles) in [
        (
            2,
            "a = slice_channels(shuffled, start = 2, end = 9)
             b = slice_channels(shuffled, start = 5, end = 12)
             cat = concat(a, x)
             output cat, b",
            2,
            0,
        ),
        (
            1,
            "a = slice_channels(shuffled, start = 2, end = 9)
             cat = concat(a, x)
             output cat, shuffled",
            1,
            1,
        ),
        (
            1,
            "r = relu(shuffled)
             a = slice_channels(r, start = 2, end = 9)
             cat = concat(a, x)
             output cat",
            0,
            1,
        ),
    ] {
        check_gathers(&model(n, rest), gathers, shuffles);
    }
    // Two kernels (a pool and an elementwise one) read two ranges: the shuffle computes the
    // span of both.
    let two = model(
        1,
        "a = slice_channels(shuffled, start = 7, end = 10)
         b = slice_channels(shuffled, start = 2, end = 5)
         p = maxpool(a, kernel = 2)
         q = relu(b)
         output p, q",
    );
    let plan = check_gathers(&two, 0, 1);
    let at = plan.find("from channel 2\n").expect("a narrowed shuffle");
    let views = plan[at..].lines().nth(1).unwrap();
    assert!(
        views.contains(" 1x12x30 out ") && views.contains(" 1x8x30"),
        "{plan}"
    );
}

/// Review cases where a dropped or narrowed shuffle would go wrong if any reader were
/// missed: a shuffle read through a conv, as an add's operand, flattened as an output and
/// copied; a shuffle of a shuffle with gathers, a grouped conv and outputs that view
/// both; a shuffle read by a fused upsample -> conv and by copies into two concats.
#[test]
fn shuffles_with_every_kind_of_reader() {
    for body in [
        "input x: f32[2, 12, 5, 6]
         c0 = conv2d(x, out = 12, kernel = 1)
         s = channel_shuffle(c0, groups = 3)
         a = slice_channels(s, start = 0, end = 6)
         b = slice_channels(s, start = 6, end = 12)
         c1 = conv2d(b, out = 12, kernel = 3, pad = 1)
         y = add(c1, s)
         f = flatten(s)
         cat = concat(a, c1)
         output y, f, cat",
        "input x: f32[2, 12, 5, 6]
         s1 = channel_shuffle(x, groups = 3)
         s2 = channel_shuffle(s1, groups = 2)
         a = slice_channels(s2, start = 0, end = 5)
         b = slice_channels(s2, start = 5, end = 12)
         c = conv2d(b, out = 7, kernel = 1)
         d = conv2d(s1, out = 4, kernel = 3, pad = 1, groups = 2)
         cat = concat(a, c, d)
         o2 = identity(b)
         o3 = slice_channels(s1, start = 0, end = 4)
         output cat, o2, o3",
        "input x: f32[1, 8, 6, 6]
         c0 = conv2d(x, out = 8, kernel = 1)
         s = channel_shuffle(c0, groups = 4)
         u = resize(s, scale = 2)
         cu = conv2d(u, out = 8, kernel = 3, pad = 1)
         a = slice_channels(s, start = 0, end = 4)
         b = slice_channels(s, start = 4, end = 8)
         cat = concat(b, a)
         cc = conv2d(cat, out = 4, kernel = 1)
         cat2 = concat(s, a)
         output cu, cc, cat2",
    ] {
        check_packed_too(body);
    }
}

/// A shuffle of a shuffle: the copy and the conv after the outer one read the inner one's
/// output through the outer permutation, so the inner one is computed and the outer one
/// is not.
#[test]
fn shuffle_of_a_shuffle() {
    for (reader, gathers) in [
        (
            "a = slice_channels(outer, start = 0, end = 5)\n cat = concat(a, x)\n output cat",
            1,
        ),
        ("c1 = conv2d(outer, out = 4, kernel = 1)\n output c1", 0),
    ] {
        let plan = check_gathers(
            &format!(
                "input x: f32[1, 12, 5, 6]
                 c0 = conv2d(x, out = 12, kernel = 1)
                 shuffled = channel_shuffle(c0, groups = 3)
                 outer = channel_shuffle(shuffled, groups = 2)
                 {reader}"
            ),
            gathers,
            1,
        );
        assert!(!plan.contains("_outer <-"), "{plan}");
    }
}
