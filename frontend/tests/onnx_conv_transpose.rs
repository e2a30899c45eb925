//! ONNX ConvTranspose import: every attribute PyTorch exports (U-Net 2x2 stride 2, 3x3
//! stride 2 pad 1 output_padding 1, DCGAN/FCN 4x4 stride 2 pad 1, grouped and depthwise,
//! dilation, asymmetric pads), `output_shape` and `auto_pad`, against the same network in
//! `.nn` and against values computed by PyTorch (`torch.nn.functional.conv_transpose2d`, in
//! f64); and the error cases.

mod common;
use common::onnx_import as import;

use std::path::Path;

use bnc_frontend::onnx::builder::{ModelBuilder, attr_int, attr_ints, attr_string};
use bnc_frontend::random_normal;
use bnc_ir::{Graph, Op, Tensor, interp};

fn import_result(m: &ModelBuilder) -> Result<Graph, String> {
    common::onnx_import_result(m).map_err(|e| e.message().to_string())
}

fn reference(src: &str) -> Graph {
    bnc_frontend::load_str(src, "ref.nn", Path::new("."))
        .unwrap_or_else(|e| panic!("reference does not load: {}", e.render(false)))
}

fn param(g: &Graph, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = &g.params[name];
    (t.shape.clone(), t.data.clone())
}

fn inputs_for(g: &Graph) -> Vec<Tensor> {
    g.inputs
        .iter()
        .map(|&id| random_normal(11, &g.value(id).name, &g.value(id).shape))
        .collect()
}

/// An ONNX model `x -> ConvTranspose -> y` with the reference's weight (and bias).
fn onnx_like(
    r: &Graph,
    x: &[i64],
    bias: bool,
    attrs: Vec<bnc_frontend::onnx::proto::AttributeProto>,
) -> ModelBuilder {
    let mut m = ModelBuilder::new(17);
    m.input("x", x);
    let (ws, w) = param(r, "y.weight");
    m.initializer("y.weight", &ws, &w);
    let mut ins = vec!["x", "y.weight"];
    if bias {
        let (bs, b) = param(r, "y.bias");
        m.initializer("y.bias", &bs, &b);
        ins.push("y.bias");
    }
    m.node("ConvTranspose", &ins, &["y"], attrs);
    m.output("y");
    m
}

/// Imports `m` and checks it computes what `src` computes (the interpreter on both).
fn same_as(m: &ModelBuilder, src: &str) -> Graph {
    let want = reference(src);
    let got = import(m);
    let inputs = inputs_for(&want);
    let a = interp::run(&want, &inputs).unwrap();
    let b = interp::run(&got, &inputs).unwrap();
    assert_eq!(a[0].shape, b[0].shape);
    let d = a[0].max_abs_diff(&b[0]);
    assert!(d <= 1e-5, "max abs diff {d}");
    got
}

fn model_src(x: &str, attrs: &str) -> String {
    format!(
        "model r {{ weights random(seed = 7) input x: f32{x}
           y = conv_transpose2d(x, {attrs})
           output y }}"
    )
}

#[test]
fn pytorch_exports() {
    // (input, .nn attributes, ONNX attributes)
    let cases: Vec<(&str, &[i64], &str, Vec<_>)> = vec![
        // U-Net decoder: ConvTranspose2d(64, 32, 2, stride=2).
        (
            "[1, 8, 5, 6]",
            &[1, 8, 5, 6],
            "out = 4, kernel = 2, stride = 2",
            vec![
                attr_ints("kernel_shape", &[2, 2]),
                attr_ints("strides", &[2, 2]),
            ],
        ),
        // ConvTranspose2d(k=3, stride=2, padding=1, output_padding=1).
        (
            "[1, 4, 5, 5]",
            &[1, 4, 5, 5],
            "out = 3, kernel = 3, stride = 2, pad = 1, output_padding = 1",
            vec![
                attr_ints("kernel_shape", &[3, 3]),
                attr_ints("strides", &[2, 2]),
                attr_ints("pads", &[1, 1, 1, 1]),
                attr_ints("output_padding", &[1, 1]),
            ],
        ),
        // DCGAN / FCN: 4x4 stride 2 pad 1.
        (
            "[2, 6, 4, 3]",
            &[2, 6, 4, 3],
            "out = 5, kernel = 4, stride = 2, pad = 1",
            vec![
                attr_ints("strides", &[2, 2]),
                attr_ints("pads", &[1, 1, 1, 1]),
            ],
        ),
        // Grouped and depthwise.
        (
            "[1, 6, 4, 4]",
            &[1, 6, 4, 4],
            "out = 9, kernel = 3, stride = 2, groups = 3",
            vec![attr_ints("strides", &[2, 2]), attr_int("group", 3)],
        ),
        (
            "[1, 4, 5, 5]",
            &[1, 4, 5, 5],
            "out = 4, kernel = 4, stride = 2, pad = 1, groups = 4",
            vec![
                attr_ints("strides", &[2, 2]),
                attr_ints("pads", &[1, 1, 1, 1]),
                attr_int("group", 4),
            ],
        ),
        // Dilation, asymmetric stride and pads.
        (
            "[1, 3, 6, 5]",
            &[1, 3, 6, 5],
            "out = 2, kernel = [3, 2], stride = [2, 3], pad = [1, 0, 2, 1], output_padding = [1, 2], dilation = [2, 1]",
            vec![
                attr_ints("strides", &[2, 3]),
                attr_ints("pads", &[1, 0, 2, 1]),
                attr_ints("output_padding", &[1, 2]),
                attr_ints("dilations", &[2, 1]),
            ],
        ),
    ];
    for (x, shape, attrs, onnx) in cases {
        let src = model_src(x, attrs);
        let m = onnx_like(&reference(&src), shape, true, onnx);
        let g = same_as(&m, &src);
        assert!(matches!(g.nodes[0].op, Op::ConvTranspose2d(_)), "{attrs}");
    }
    // Without a bias.
    let src = model_src(
        "[1, 2, 3, 3]",
        "out = 2, kernel = 2, stride = 2, bias = false",
    );
    let m = onnx_like(
        &reference(&src),
        &[1, 2, 3, 3],
        false,
        vec![attr_ints("strides", &[2, 2])],
    );
    same_as(&m, &src);
}

/// `output_shape` and `auto_pad` give the pads (even totals split evenly).
#[test]
fn output_shape_and_auto_pad() {
    // 4x4 stride 2 on 5x5: the full output is 12; output 10 means pads 1 on each side.
    let src = model_src("[1, 3, 5, 5]", "out = 2, kernel = 4, stride = 2, pad = 1");
    let r = reference(&src);
    let m = onnx_like(
        &r,
        &[1, 3, 5, 5],
        true,
        vec![
            attr_ints("strides", &[2, 2]),
            attr_ints("output_shape", &[10, 10]),
        ],
    );
    same_as(&m, &src);
    for mode in ["SAME_UPPER", "SAME_LOWER"] {
        let m = onnx_like(
            &r,
            &[1, 3, 5, 5],
            true,
            vec![attr_ints("strides", &[2, 2]), attr_string("auto_pad", mode)],
        );
        same_as(&m, &src);
    }
    let src = model_src("[1, 3, 5, 5]", "out = 2, kernel = 4, stride = 2");
    let m = onnx_like(
        &reference(&src),
        &[1, 3, 5, 5],
        true,
        vec![
            attr_ints("strides", &[2, 2]),
            attr_string("auto_pad", "VALID"),
        ],
    );
    same_as(&m, &src);
}

fn torch_case(
    attrs: Vec<bnc_frontend::onnx::proto::AttributeProto>,
    x: (&[i64], Vec<f32>),
    w: (&[usize], Vec<f32>),
    b: Option<Vec<f32>>,
) -> Tensor {
    let mut m = ModelBuilder::new(17);
    m.input("x", x.0);
    m.initializer("w", w.0, &w.1);
    let mut ins = vec!["x", "w"];
    if let Some(b) = &b {
        m.initializer("b", &[b.len()], b);
        ins.push("b");
    }
    m.node("ConvTranspose", &ins, &["y"], attrs);
    m.output("y");
    let g = import(&m);
    let shape: Vec<usize> = x.0.iter().map(|&d| d as usize).collect();
    interp::run(&g, &[Tensor::new(shape, x.1)])
        .unwrap()
        .remove(0)
}

/// Values from PyTorch (f64), small enough to read: exact in f32.
#[test]
fn matches_pytorch_values() {
    // conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1) with
    // x = arange(12).reshape(1,2,3,2)/4 - 1, w = (arange(54).reshape(2,3,3,3) % 7 - 3)/2,
    // b = [0.5, -1, 2].
    let x: Vec<f32> = (0..12).map(|i| i as f32 / 4.0 - 1.0).collect();
    let w: Vec<f32> = (0..54).map(|i| ((i % 7) as f32 - 3.0) / 2.0).collect();
    let y = torch_case(
        vec![
            attr_ints("strides", &[2, 2]),
            attr_ints("pads", &[1, 1, 1, 1]),
            attr_ints("output_padding", &[1, 1]),
        ],
        (&[1, 2, 3, 2], x),
        (&[2, 3, 3, 3], w),
        Some(vec![0.5, -1.0, 2.0]),
    );
    let want = [
        0.0, -0.625, 0.125, 0.125, 1.75, 1.875, 1.125, -1.0, 0.25, -0.125, 0.375, 0.875, 0.5,
        1.125, -0.125, -3.0, 0.5, 0.375, 0.625, 1.625, 2.75, 0.375, 2.75, -2.375, -2.0, 0.875,
        -1.375, 1.25, -1.5, -3.0, -2.0, -1.5, -0.75, 1.625, -0.125, 1.25, -2.5, -5.0, -3.0, -1.5,
        0.5, 2.375, 1.125, 1.25, -2.5, -4.625, -2.875, -1.875, 2.25, 4.25, 1.625, 1.625, 1.5, 1.0,
        2.0, 2.5, 1.0, 3.5, 0.375, 0.875, 2.5, 3.0, 3.0, 4.5, -0.25, 2.75, -0.875, 0.125, 2.0,
        1.875, 2.125, 3.125,
    ];
    assert_eq!(y.shape, [1, 3, 6, 4]);
    assert_eq!(y.data, want);

    // Grouped (2 groups, 4 -> 2 channels), 4x4 stride 2 pad 1, no bias:
    // x = arange(16).reshape(1,4,2,2) % 5 - 2, w = (arange(64).reshape(4,1,4,4) % 9 - 4)/4.
    let x: Vec<f32> = (0..16).map(|i| (i % 5) as f32 - 2.0).collect();
    let w: Vec<f32> = (0..64).map(|i| ((i % 9) as f32 - 4.0) / 4.0).collect();
    let y = torch_case(
        vec![
            attr_ints("strides", &[2, 2]),
            attr_ints("pads", &[1, 1, 1, 1]),
            attr_int("group", 2),
        ],
        (&[1, 4, 2, 2], x),
        (&[4, 1, 4, 4], w),
        None,
    );
    let want = [
        -1.0, 0.0, -0.75, -0.5, 2.5, 1.5, -1.5, -1.75, -0.75, 0.75, 0.0, 0.75, -0.75, 0.0, 0.0,
        -0.75, -0.75, -1.75, -0.75, -2.0, -0.75, -0.75, -0.5, -0.25, 2.5, 0.25, -4.0, 2.0, -1.0,
        0.0, -0.75, -0.5,
    ];
    assert_eq!(y.shape, [1, 2, 4, 4]);
    assert_eq!(y.data, want);
}

#[test]
fn errors_name_the_node() {
    let src = model_src("[1, 3, 5, 5]", "out = 2, kernel = 3, stride = 2");
    let r = reference(&src);
    let cases: Vec<(Vec<_>, &str)> = vec![
        // SAME on a 3x3 stride 2: total padding 1, split differently by the ONNX text and
        // runtimes.
        (
            vec![
                attr_ints("strides", &[2, 2]),
                attr_string("auto_pad", "SAME_UPPER"),
            ],
            "odd total padding",
        ),
        (
            vec![
                attr_ints("strides", &[2, 2]),
                attr_ints("output_shape", &[10, 12]),
            ],
            "odd total padding",
        ),
        (
            vec![
                attr_ints("strides", &[2, 2]),
                attr_ints("output_shape", &[13, 13]),
            ],
            "larger than the full",
        ),
        (
            vec![
                attr_ints("strides", &[2, 2]),
                attr_ints("output_padding", &[2, 2]),
            ],
            "output_padding",
        ),
        (vec![attr_ints("kernel_shape", &[2, 2])], "kernel_shape"),
    ];
    for (attrs, want) in cases {
        let m = onnx_like(&r, &[1, 3, 5, 5], true, attrs);
        let e = import_result(&m).expect_err(want);
        assert!(e.contains(want), "{want}: {e}");
        assert!(
            e.contains("node `y` (ConvTranspose"),
            "the node is named: {e}"
        );
    }
    // A weight for other input channels.
    let m = onnx_like(&r, &[1, 4, 5, 5], true, vec![]);
    let e = import_result(&m).expect_err("channels");
    assert!(e.contains("does not fit 4 input channels"), "{e}");
}
