//! ShuffleNet's channel patterns: Reshape → Transpose → Reshape as `channel_shuffle`, Split
//! and Slice along channels as `slice_channels`, in the forms torch.onnx.export writes for
//! torchvision's `channel_shuffle` and `x.chunk(2, dim=1)` (opsets 13 and 17), checked against
//! index arithmetic written out here; the `.nn` forms round-trip; everything else is an error
//! naming the node.

mod common;
use common::{onnx_import as import, onnx_import_err as import_err};

use std::path::Path;

use bnc_frontend::onnx::builder::{ModelBuilder, attr_int, attr_ints, attr_tensor, int_tensor};
use bnc_frontend::random_normal;
use bnc_ir::{Graph, Op, Tensor, interp};

fn ops(g: &Graph) -> Vec<&'static str> {
    g.nodes.iter().map(|n| n.op.name()).collect()
}

fn input(g: &Graph) -> Tensor {
    let v = g.value(g.inputs[0]);
    random_normal(5, &v.name, &v.shape)
}

/// A Constant node holding an int64 vector, as the exporter writes reshape targets.
fn constant(m: &mut ModelBuilder, name: &str, v: &[i64]) {
    m.node(
        "Constant",
        &[],
        &[name],
        vec![attr_tensor("value", int_tensor(name, &[v.len()], v))],
    );
}

/// torchvision's channel shuffle of `x` into `y`, as exported: Reshape to
/// `[N, g, C/g, H, W]`, Transpose `[0, 2, 1, 3, 4]`, Reshape to `[N, -1, H, W]`.
fn shuffle_nodes(m: &mut ModelBuilder, x: &str, y: &str, s: [i64; 4], g: i64) {
    let (a, t, b) = (format!("{y}_a"), format!("{y}_t"), format!("{y}_b"));
    let (sa, sb) = (format!("{y}_sa"), format!("{y}_sb"));
    constant(m, &sa, &[s[0], g, s[1] / g, s[2], s[3]]);
    m.node("Reshape", &[x, &sa], &[&a], vec![]);
    m.node(
        "Transpose",
        &[&a],
        &[&t],
        vec![attr_ints("perm", &[0, 2, 1, 3, 4])],
    );
    constant(m, &sb, &[s[0], -1, s[2], s[3]]);
    m.node("Reshape", &[&t, &sb], &[&b], vec![]);
    m.node("Identity", &[&b], &[y], vec![]);
}

/// The shuffle written as the 5-D reshape and transpose it is: `x` viewed as
/// `[N, g, C/g, S]`, axes 1 and 2 swapped, viewed as `[N, C, S]`.
fn shuffle_by_transpose(x: &Tensor, g: usize) -> Vec<f32> {
    let (n, c) = (x.shape[0], x.shape[1]);
    let s: usize = x.shape[2..].iter().product();
    let per = c / g;
    let mut y = vec![0.0; x.data.len()];
    for b in 0..n {
        for i in 0..g {
            for j in 0..per {
                for p in 0..s {
                    // x[b, i, j, p] lands at transposed [b, j, i, p].
                    let src = ((b * g + i) * per + j) * s + p;
                    let dst = ((b * per + j) * g + i) * s + p;
                    y[dst] = x.data[src];
                }
            }
        }
    }
    y
}

fn channels(x: &Tensor, range: std::ops::Range<usize>) -> Vec<f32> {
    let (n, c) = (x.shape[0], x.shape[1]);
    let s: usize = x.shape[2..].iter().product();
    let mut y = Vec::new();
    for b in 0..n {
        y.extend_from_slice(&x.data[(b * c + range.start) * s..(b * c + range.end) * s]);
    }
    y
}

#[test]
fn channel_shuffle_is_reshape_transpose_reshape() {
    for opset in [13, 17] {
        for (shape, g) in [([2, 6, 3, 4], 3), ([1, 116, 2, 3], 2), ([2, 8, 1, 1], 4)] {
            let mut m = ModelBuilder::new(opset);
            m.input("x", &shape);
            shuffle_nodes(&mut m, "x", "y", shape, g);
            m.output("y");
            let graph = import(&m);
            assert_eq!(ops(&graph), ["channel_shuffle"]);
            assert_eq!(graph.nodes[0].op, Op::ChannelShuffle { groups: g as usize });
            let x = input(&graph);
            let y = interp::run(&graph, std::slice::from_ref(&x)).unwrap();
            assert_eq!(y[0].shape, x.shape);
            assert_eq!(
                y[0].data,
                shuffle_by_transpose(&x, g as usize),
                "{shape:?} g {g}"
            );
        }
    }
}

/// A ShuffleNet unit without its convolutions, as exported: `x.chunk(2, dim=1)` is two
/// Slices whose bounds come from Shape → Gather → Div → Mul, then concat and shuffle.
#[test]
fn chunk_as_exported_slices() {
    for opset in [13, 17] {
        let mut m = ModelBuilder::new(opset);
        m.input("x", &[2, 10, 3, 3]);
        m.node("Shape", &["x"], &["shape"], vec![]);
        constant(&mut m, "one", &[1]);
        m.node(
            "Gather",
            &["shape", "one"],
            &["c"],
            vec![attr_int("axis", 0)],
        );
        constant(&mut m, "two", &[2]);
        m.node("Div", &["c", "two"], &["half"], vec![]);
        constant(&mut m, "zero", &[0]);
        m.node("Mul", &["half", "two"], &["all"], vec![]);
        m.node("Slice", &["x", "zero", "half", "one"], &["x1"], vec![]);
        m.node("Slice", &["x", "half", "all", "one"], &["x2"], vec![]);
        m.node("Relu", &["x2"], &["r2"], vec![]);
        m.node("Concat", &["x1", "r2"], &["cat"], vec![attr_int("axis", 1)]);
        shuffle_nodes(&mut m, "cat", "y", [2, 10, 3, 3], 2);
        m.output("y");
        let graph = import(&m);
        assert_eq!(
            ops(&graph),
            [
                "slice_channels",
                "slice_channels",
                "relu",
                "concat",
                "channel_shuffle"
            ]
        );
        let x = input(&graph);
        let y = interp::run(&graph, std::slice::from_ref(&x)).unwrap();
        let mut cat = Vec::new();
        let (a, b) = (channels(&x, 0..5), channels(&x, 5..10));
        for n in 0..2 {
            cat.extend_from_slice(&a[n * 45..(n + 1) * 45]);
            cat.extend(b[n * 45..(n + 1) * 45].iter().map(|v| v.max(0.0)));
        }
        let cat = Tensor::new(x.shape.clone(), cat);
        assert_eq!(y[0].data, shuffle_by_transpose(&cat, 2));
    }
}

#[test]
fn slice_bounds_clamp_and_whole_axes_pass() {
    let mut m = ModelBuilder::new(13);
    m.input("x", &[1, 6, 2, 2]);
    m.initializer_i64("starts", &[2], &[-4, 0]);
    m.initializer_i64("ends", &[2], &[i64::MAX, i64::MAX]);
    m.initializer_i64("axes", &[2], &[1, 2]);
    m.node("Slice", &["x", "starts", "ends", "axes"], &["y"], vec![]);
    m.output("y");
    let graph = import(&m);
    assert_eq!(graph.nodes[0].op, Op::SliceChannels { start: 2, end: 6 });
    let x = input(&graph);
    let y = interp::run(&graph, std::slice::from_ref(&x)).unwrap();
    assert_eq!(y[0].shape, [1, 4, 2, 2]);
    assert_eq!(y[0].data, channels(&x, 2..6));
}

#[test]
fn split_versions() {
    let check = |m: &ModelBuilder, outs: &[&str], want: &[std::ops::Range<usize>]| {
        let graph = import(m);
        let x = input(&graph);
        let y = interp::run(&graph, std::slice::from_ref(&x)).unwrap();
        assert_eq!(y.len(), outs.len());
        for (t, r) in y.iter().zip(want) {
            assert_eq!(t.data, channels(&x, r.clone()), "{r:?}");
        }
    };
    // Opset 11: sizes as an attribute.
    let mut m = ModelBuilder::new(11);
    m.input("x", &[2, 7, 2, 3]);
    m.node(
        "Split",
        &["x"],
        &["a", "b"],
        vec![attr_int("axis", 1), attr_ints("split", &[3, 4])],
    );
    m.output("a").output("b");
    check(&m, &["a", "b"], &[0..3, 3..7]);
    // Opset 13: sizes as an input; without them, equal parts.
    let mut m = ModelBuilder::new(13);
    m.input("x", &[2, 7, 2, 3]);
    m.initializer_i64("sizes", &[3], &[1, 4, 2]);
    m.node(
        "Split",
        &["x", "sizes"],
        &["a", "b", "c"],
        vec![attr_int("axis", -3)],
    );
    m.output("a").output("b").output("c");
    check(&m, &["a", "b", "c"], &[0..1, 1..5, 5..7]);
    let mut m = ModelBuilder::new(13);
    m.input("x", &[1, 116, 2, 2]);
    m.node("Split", &["x"], &["a", "b"], vec![attr_int("axis", 1)]);
    m.output("a").output("b");
    check(&m, &["a", "b"], &[0..58, 58..116]);
    // Opset 18: num_outputs, the last part smaller.
    let mut m = ModelBuilder::new(18);
    m.input("x", &[1, 7, 2, 2]);
    m.node(
        "Split",
        &["x"],
        &["a", "b"],
        vec![attr_int("axis", 1), attr_int("num_outputs", 2)],
    );
    m.output("a").output("b");
    check(&m, &["a", "b"], &[0..4, 4..7]);
    // 7 channels do not split equally in two without sizes before opset 18.
    let mut m = ModelBuilder::new(13);
    m.input("x", &[1, 7, 2, 2]);
    m.node("Split", &["x"], &["a", "b"], vec![attr_int("axis", 1)]);
    m.output("a").output("b");
    let e = import_err(&m);
    assert!(
        e.contains("node `a` (Split, opset 13)") && e.contains("equally"),
        "{e}"
    );
}

#[test]
fn other_reshapes_transposes_slices_and_splits_are_errors_naming_the_node() {
    let shuffle_with = |perm: &[i64], back: &[i64]| {
        let mut m = ModelBuilder::new(17);
        m.input("x", &[1, 6, 2, 2]);
        constant(&mut m, "s5", &[1, 2, 3, 2, 2]);
        m.node("Reshape", &["x", "s5"], &["a"], vec![]);
        m.node("Transpose", &["a"], &["t"], vec![attr_ints("perm", perm)]);
        constant(&mut m, "s4", back);
        m.node("Reshape", &["t", "s4"], &["y"], vec![]);
        m.output("y");
        import_err(&m)
    };
    let e = shuffle_with(&[0, 1, 2, 4, 3], &[1, 6, 2, 2]);
    assert!(
        e.contains("node `t` (Transpose, opset 17)") && e.contains("[0, 2, 1, 3, 4]"),
        "{e}"
    );
    let e = shuffle_with(&[0, 2, 1, 3, 4], &[1, 3, 2, 4]);
    assert!(
        e.contains("node `y` (Reshape, opset 17)") && e.contains("[1, 3, 2, 4]"),
        "{e}"
    );
    // A 5-D intermediate read by anything else.
    let mut m = ModelBuilder::new(17);
    m.input("x", &[1, 6, 2, 2]);
    constant(&mut m, "s5", &[1, 2, 3, 2, 2]);
    m.node("Reshape", &["x", "s5"], &["a"], vec![]);
    m.node("Relu", &["a"], &["y"], vec![]);
    m.output("y");
    let e = import_err(&m);
    assert!(
        e.contains("node `y` (Relu, opset 17)") && e.contains("channel shuffle"),
        "{e}"
    );
    // Not a grouping of channels.
    let mut m = ModelBuilder::new(17);
    m.input("x", &[1, 6, 2, 2]);
    constant(&mut m, "s5", &[1, 6, 2, 2, 1]);
    m.node("Reshape", &["x", "s5"], &["y"], vec![]);
    m.output("y");
    let e = import_err(&m);
    assert!(e.contains("node `y` (Reshape, opset 17)"), "{e}");
    // Slices and splits of other axes.
    let mut m = ModelBuilder::new(13);
    m.input("x", &[1, 6, 4, 4]);
    m.initializer_i64("s", &[1], &[1]);
    m.initializer_i64("e", &[1], &[3]);
    m.initializer_i64("ax", &[1], &[2]);
    m.node("Slice", &["x", "s", "e", "ax"], &["y"], vec![]);
    m.output("y");
    let e = import_err(&m);
    assert!(
        e.contains("node `y` (Slice, opset 13)") && e.contains("axis 2"),
        "{e}"
    );
    let mut m = ModelBuilder::new(13);
    m.input("x", &[1, 6, 4, 4]);
    m.node("Split", &["x"], &["a", "b"], vec![attr_int("axis", 3)]);
    m.output("a").output("b");
    let e = import_err(&m);
    assert!(
        e.contains("node `a` (Split, opset 13)") && e.contains("axis 3"),
        "{e}"
    );
}

#[test]
fn nn_forms_round_trip_and_check_shapes() {
    let src = "model s { weights random(seed = 1) input x: f32[2, 12, 3, 3]
      a = slice_channels(x, start = 0, end = 6)
      b = slice_channels(x, start = 6, end = 12)
      r = relu(b)
      c = concat(a, r)
      y = channel_shuffle(c, groups = 3)
      output y }";
    let g = bnc_frontend::load_str(src, "s.nn", Path::new(".")).unwrap();
    let printed = bnc_ir::printer::print(&g);
    assert!(
        printed.contains("channel_shuffle(c, groups = 3)"),
        "{printed}"
    );
    assert!(
        printed.contains("slice_channels(x, start = 6, end = 12)"),
        "{printed}"
    );
    let again = bnc_frontend::load_str(&printed, "s.nn", Path::new(".")).unwrap();
    assert_eq!(bnc_ir::printer::print(&again), printed);
    for (bad, want) in [
        ("channel_shuffle(x, groups = 5)", "divisible by groups"),
        (
            "slice_channels(x, start = 4, end = 13)",
            "start < end <= channels",
        ),
        (
            "slice_channels(x, start = 4, end = 4)",
            "start < end <= channels",
        ),
        ("channel_shuffle(x)", "groups"),
    ] {
        let src = format!(
            "model s {{ weights random(seed = 1) input x: f32[2, 12, 3, 3]\n  y = {bad}\n  output y }}"
        );
        let e = bnc_frontend::load_str(&src, "s.nn", Path::new(".")).unwrap_err();
        let text = e.render(false);
        assert!(
            text.contains(want) && text.contains("s.nn:2"),
            "{bad}: {text}"
        );
    }
}
