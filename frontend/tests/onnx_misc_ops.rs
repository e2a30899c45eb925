//! ONNX import of GlobalMaxPool / ReduceMax, Sqrt / Pow, and Add / Sub / Mul / Div with a
//! scalar or per-channel constant on either side, against values computed by hand, and
//! their error cases (each names the node).

mod common;
use common::{onnx_import as import, onnx_import_err as import_err};

use bnc_frontend::onnx::builder::{ModelBuilder, attr_int, attr_ints};
use bnc_ir::{Activation, Graph, Op, Tensor, interp};

fn ops(g: &Graph) -> Vec<&'static str> {
    g.nodes.iter().map(|n| n.op.name()).collect()
}

fn single(opset: i64, shape: &[i64]) -> ModelBuilder {
    let mut m = ModelBuilder::new(opset);
    m.input("x", shape);
    m
}

/// `[1, 3, 2, 2]`: channel c holds `10·c + {-1, 4, 2, -3}`, channel 1 negated (its maximum
/// is the negation of its smallest value).
fn input_3x2x2() -> Tensor {
    let base = [-1.0f32, 4.0, 2.0, -3.0];
    let mut data = Vec::new();
    for c in 0..3 {
        for &b in &base {
            let v = b + 10.0 * c as f32;
            data.push(if c == 1 { -v } else { v });
        }
    }
    Tensor::new(vec![1, 3, 2, 2], data)
}

fn run(g: &Graph, x: &Tensor) -> Vec<Tensor> {
    interp::run(g, std::slice::from_ref(x)).expect("interpreter runs")
}

#[test]
fn global_maxpool_and_reduce_max() {
    // By hand: channel 0 {-1, 4, 2, -3} → 4; channel 1 {-9, -14, -12, -7} → -7;
    // channel 2 {19, 24, 22, 17} → 24.
    let want = [4.0f32, -7.0, 24.0];
    let x = input_3x2x2();

    let mut m = single(17, &[1, 3, 2, 2]);
    m.node("GlobalMaxPool", &["x"], &["y"], vec![]);
    m.output("y");
    let g = import(&m);
    assert_eq!(ops(&g), ["global_maxpool"]);
    let y = run(&g, &x).remove(0);
    assert_eq!(y.shape, [1, 3, 1, 1]);
    assert_eq!(y.data, want);

    // Opset 13: axes as an attribute (negative axes too), keepdims default 1.
    let mut m = single(13, &[1, 3, 2, 2]);
    m.node(
        "ReduceMax",
        &["x"],
        &["y"],
        vec![attr_ints("axes", &[-1, -2])],
    );
    m.output("y");
    let g = import(&m);
    assert_eq!(ops(&g), ["global_maxpool"]);
    assert_eq!(run(&g, &x)[0].data, want);

    // Opset 18: axes as an input; keepdims = 0 is the pool and a flatten to [N, C], as
    // ReduceMean with keepdims = 0.
    let mut m = single(18, &[1, 3, 2, 2]);
    m.initializer_i64("axes", &[2], &[2, 3]);
    m.node("ReduceMax", &["x", "axes"], &["k"], vec![]);
    m.node(
        "ReduceMax",
        &["x", "axes"],
        &["f"],
        vec![attr_int("keepdims", 0)],
    );
    m.output("k").output("f");
    let g = import(&m);
    assert_eq!(ops(&g), ["global_maxpool", "global_maxpool", "flatten"]);
    let out = run(&g, &x);
    assert_eq!(out[0].shape, [1, 3, 1, 1]);
    assert_eq!(out[1].shape, [1, 3]);
    assert_eq!(out[0].data, want);
    assert_eq!(out[1].data, want);
}

#[test]
fn reduce_max_over_other_axes_is_an_error() {
    let mut m = single(13, &[1, 3, 2, 2]);
    m.node("ReduceMax", &["x"], &["y"], vec![attr_ints("axes", &[1])]);
    m.output("y");
    let e = import_err(&m);
    assert!(e.contains("node `y` (ReduceMax"), "{e}");
    assert!(e.contains("bnc maps only the spatial max"), "{e}");
}

#[test]
fn sqrt_and_pow_with_a_constant_exponent() {
    let x = Tensor::new(vec![1, 2, 1, 2], vec![4.0, 0.25, 9.0, 2.0]);
    let mut m = single(17, &[1, 2, 1, 2]);
    m.initializer("two", &[], &[2.0])
        .initializer("half", &[1], &[0.5])
        .initializer("minus_one", &[1, 1, 1, 1], &[-1.0]);
    m.node("Sqrt", &["x"], &["s"], vec![]);
    m.node("Pow", &["x", "two"], &["p2"], vec![]);
    m.node("Pow", &["x", "half"], &["ph"], vec![]);
    m.node("Pow", &["x", "minus_one"], &["pm"], vec![]);
    m.output("s").output("p2").output("ph").output("pm");
    let g = import(&m);
    assert_eq!(ops(&g), ["sqrt", "pow", "pow", "pow"]);
    assert_eq!(
        g.nodes[1].op,
        Op::Activation(Activation::Pow { exponent: 2.0 })
    );
    let out = run(&g, &x);
    assert_eq!(out[0].data, [2.0, 0.5, 3.0, 2.0f32.sqrt()]);
    assert_eq!(out[1].data, [16.0, 0.0625, 81.0, 4.0]);
    assert_eq!(out[2].data, [2.0, 0.5, 3.0, 2.0f32.sqrt()]);
    assert_eq!(out[3].data, [0.25, 4.0, 1.0 / 9.0, 0.5]);
}

#[test]
fn pow_exponent_errors_name_the_node() {
    // A runtime exponent.
    let mut m = single(17, &[1, 2, 2, 2]);
    m.node("Pow", &["x", "x"], &["p"], vec![]);
    m.output("p");
    let e = import_err(&m);
    assert!(e.contains("node `p` (Pow"), "{e}");
    assert!(e.contains("is computed at run time"), "{e}");

    // A per-channel exponent.
    let mut m = single(17, &[1, 2, 2, 2]);
    m.initializer("e", &[2, 1, 1], &[2.0, 3.0]);
    m.node("Pow", &["x", "e"], &["p"], vec![]);
    m.output("p");
    let e = import_err(&m);
    assert!(e.contains("node `p` (Pow"), "{e}");
    assert!(e.contains("constant scalar exponent"), "{e}");

    // An exponent the compiled kernel does not compute.
    let mut m = single(17, &[1, 2, 2, 2]);
    m.initializer("e", &[], &[1.7]);
    m.node("Pow", &["x", "e"], &["p"], vec![]);
    m.output("p");
    let e = import_err(&m);
    assert!(e.contains("node `p` (Pow"), "{e}");
    assert!(e.contains("exponent 1.7"), "{e}");
}

/// x ∘ c and c ∘ x for the four operators, with c a scalar, `[C, 1, 1]` and `[1, C, 1, 1]`,
/// each a single `affine` whose output is checked against the formula by hand.
#[test]
fn sub_div_add_mul_with_per_channel_constants() {
    // Channel c of x holds {c + 1, -(c + 1)/2}.
    let x = Tensor::new(vec![1, 3, 1, 2], vec![1.0, -0.5, 2.0, -1.0, 3.0, -1.5]);
    let k = [2.0f32, -4.0, 0.5];
    type Formula = fn(f32, f32) -> f32;
    let cases: [(&str, bool, Formula); 7] = [
        ("Add", false, |x, c| x + c),
        ("Add", true, |x, c| c + x),
        ("Mul", false, |x, c| x * c),
        ("Mul", true, |x, c| c * x),
        ("Sub", false, |x, c| x - c),
        ("Sub", true, |x, c| c - x),
        ("Div", false, |x, c| x / c),
    ];
    let shapes: [&[usize]; 3] = [&[], &[3, 1, 1], &[1, 3, 1, 1]];
    for (op, const_first, f) in cases {
        for shape in shapes {
            let values: Vec<f32> = if shape.is_empty() {
                vec![k[0]]
            } else {
                k.to_vec()
            };
            let mut m = single(17, &[1, 3, 1, 2]);
            m.initializer("c", shape, &values);
            let ins = if const_first { ["c", "x"] } else { ["x", "c"] };
            m.node(op, &ins, &["y"], vec![]);
            m.output("y");
            let g = import(&m);
            assert_eq!(ops(&g), ["affine"], "{op} {shape:?}");
            let y = run(&g, &x).remove(0);
            for (i, (&xi, &yi)) in x.data.iter().zip(&y.data).enumerate() {
                let c = values[if shape.is_empty() { 0 } else { i / 2 }];
                let want = f(xi, c);
                assert!(
                    (want - yi).abs() <= 1e-6 * want.abs().max(1.0),
                    "{op} (const first: {const_first}) {shape:?} at {i}: {yi}, want {want}"
                );
            }
        }
    }
}

#[test]
fn constant_divided_by_a_runtime_tensor_is_an_error() {
    let mut m = single(17, &[1, 3, 2, 2]);
    m.initializer("c", &[1, 3, 1, 1], &[1.0, 2.0, 3.0]);
    m.node("Div", &["c", "x"], &["q"], vec![]);
    m.output("q");
    let e = import_err(&m);
    assert!(e.contains("node `q` (Div"), "{e}");
    assert!(e.contains("c / x is not a per-channel affine map"), "{e}");
}

/// A constant that varies along H (not per channel) is refused, naming the node.
#[test]
fn sub_with_a_spatial_constant_is_an_error() {
    let mut m = single(17, &[1, 3, 2, 2]);
    m.initializer("c", &[1, 1, 2, 1], &[1.0, 2.0]);
    m.node("Sub", &["x", "c"], &["d"], vec![]);
    m.output("d");
    let e = import_err(&m);
    assert!(e.contains("node `d` (Sub"), "{e}");
    assert!(e.contains("scalar or per-channel constants"), "{e}");
}
