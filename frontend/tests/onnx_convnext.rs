//! ConvNeXt's ONNX forms (torch.onnx.export, opset 17): LayerNorm2d as Transpose
//! [0, 2, 3, 1] → LayerNormalization(axis −1) → Transpose [0, 3, 1, 2], the exact GELU as
//! Div/Erf/Add/Mul/Mul in the operand orders torch writes, and a whole block with its MatMuls
//! on the NHWC view; checked against NHWC arithmetic written out here. Everything else that
//! reads an NHWC view is an error naming the node.

mod common;
use common::{onnx_import as import, onnx_import_err as import_err};

use bnc_frontend::onnx::builder::{ModelBuilder, attr_float, attr_int, attr_ints, attr_string};
use bnc_frontend::random_normal;
use bnc_ir::{Activation, Graph, Tensor, interp};

fn ops(g: &Graph) -> Vec<&'static str> {
    g.nodes.iter().map(|n| n.op.name()).collect()
}

fn input(g: &Graph) -> Tensor {
    let v = g.value(g.inputs[0]);
    random_normal(5, &v.name, &v.shape)
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

fn scalar(m: &mut ModelBuilder, name: &str, v: f32) {
    m.initializer(name, &[], &[v]);
}

/// NCHW `[N, C, H, W]` data as NHWC rows of C values.
fn to_nhwc(x: &Tensor) -> Vec<Vec<f64>> {
    let (n, c, s) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3]);
    let mut rows = Vec::new();
    for b in 0..n {
        for p in 0..s {
            rows.push(
                (0..c)
                    .map(|ch| x.data[(b * c + ch) * s + p] as f64)
                    .collect(),
            );
        }
    }
    rows
}

/// NHWC rows back to NCHW data.
fn from_nhwc(rows: &[Vec<f64>], shape: &[usize]) -> Vec<f32> {
    let (c, s) = (shape[1], shape[2] * shape[3]);
    let mut y = vec![0.0; rows.len() * c];
    for (r, row) in rows.iter().enumerate() {
        let (b, p) = (r / s, r % s);
        for (ch, &v) in row.iter().enumerate() {
            y[(b * c + ch) * s + p] = v as f32;
        }
    }
    y
}

fn layer_norm_row(row: &[f64], w: &[f32], b: &[f32], eps: f64) -> Vec<f64> {
    let c = row.len() as f64;
    let mean = row.iter().sum::<f64>() / c;
    let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / c;
    row.iter()
        .enumerate()
        .map(|(i, v)| (v - mean) / (var + eps).sqrt() * w[i] as f64 + b[i] as f64)
        .collect()
}

fn close(got: &[f32], want: &[f32], tol: f32) {
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * scale, "element {i}: {g} vs {w}");
    }
}

/// LayerNorm2d as torchvision's ConvNeXt exports it: one `layer_norm` over channels.
#[test]
fn layer_norm_2d() {
    for shape in [[1usize, 6, 4, 5], [2, 16, 3, 3], [1, 8, 1, 1]] {
        let c = shape[1];
        let mut m = ModelBuilder::new(17);
        m.input("x", &shape.map(|d| d as i64));
        m.initializer("ln.weight", &[c], &values(c, 1));
        m.initializer("ln.bias", &[c], &values(c, 2));
        m.node(
            "Transpose",
            &["x"],
            &["t"],
            vec![attr_ints("perm", &[0, 2, 3, 1])],
        );
        m.node(
            "LayerNormalization",
            &["t", "ln.weight", "ln.bias"],
            &["n"],
            vec![attr_int("axis", -1), attr_float("epsilon", 1e-6)],
        );
        m.node(
            "Transpose",
            &["n"],
            &["y"],
            vec![attr_ints("perm", &[0, 3, 1, 2])],
        );
        m.output("y");
        let g = import(&m);
        assert_eq!(ops(&g), ["layer_norm"]);
        let x = input(&g);
        let got = interp::run(&g, std::slice::from_ref(&x)).unwrap();
        let (w, b) = (values(c, 1), values(c, 2));
        let rows: Vec<Vec<f64>> = to_nhwc(&x)
            .iter()
            .map(|r| layer_norm_row(r, &w, &b, 1e-6))
            .collect();
        close(&got[0].data, &from_nhwc(&rows, &shape), 1e-6);
    }
}

/// The forms of the exact GELU `x·(1 + erf(x/√2))/2` an exporter writes, on NCHW and on an
/// NHWC view: each is one `gelu`.
#[test]
fn gelu_patterns() {
    type Build = fn(&mut ModelBuilder, &str) -> String;
    let forms: [(&str, Build); 6] = [
        // torch (nn.GELU, opset 17): Div, Erf, Add(e, 1), Mul(x, a), Mul(m, 0.5).
        ("torch", |m, x| {
            m.node("Div", &[x, "sqrt2"], &["d"], vec![]);
            m.node("Erf", &["d"], &["e"], vec![]);
            m.node("Add", &["e", "one"], &["a"], vec![]);
            m.node("Mul", &[x, "a"], &["p"], vec![]);
            m.node("Mul", &["p", "half"], &["g"], vec![]);
            "g".into()
        }),
        // Every operand order swapped.
        ("swapped", |m, x| {
            m.node("Div", &[x, "sqrt2"], &["d"], vec![]);
            m.node("Erf", &["d"], &["e"], vec![]);
            m.node("Add", &["one", "e"], &["a"], vec![]);
            m.node("Mul", &["a", x], &["p"], vec![]);
            m.node("Mul", &["half", "p"], &["g"], vec![]);
            "g".into()
        }),
        // 0.5·x first, then times (1 + erf).
        ("half x first", |m, x| {
            m.node("Mul", &[x, "half"], &["h"], vec![]);
            m.node("Div", &[x, "sqrt2"], &["d"], vec![]);
            m.node("Erf", &["d"], &["e"], vec![]);
            m.node("Add", &["e", "one"], &["a"], vec![]);
            m.node("Mul", &["h", "a"], &["g"], vec![]);
            "g".into()
        }),
        // Mul by 1/√2 instead of Div by √2.
        ("mul rsqrt2", |m, x| {
            m.node("Mul", &[x, "rsqrt2"], &["d"], vec![]);
            m.node("Erf", &["d"], &["e"], vec![]);
            m.node("Add", &["e", "one"], &["a"], vec![]);
            m.node("Mul", &[x, "a"], &["p"], vec![]);
            m.node("Mul", &["p", "half"], &["g"], vec![]);
            "g".into()
        }),
        // (1 + erf)·0.5 first, then times x.
        ("half of 1+erf", |m, x| {
            m.node("Div", &[x, "sqrt2"], &["d"], vec![]);
            m.node("Erf", &["d"], &["e"], vec![]);
            m.node("Add", &["e", "one"], &["a"], vec![]);
            m.node("Mul", &["a", "half"], &["q"], vec![]);
            m.node("Mul", &["q", x], &["g"], vec![]);
            "g".into()
        }),
        // x·(1 + erf) divided by 2.
        ("div 2", |m, x| {
            m.node("Div", &[x, "sqrt2"], &["d"], vec![]);
            m.node("Erf", &["d"], &["e"], vec![]);
            m.node("Add", &["e", "one"], &["a"], vec![]);
            m.node("Mul", &[x, "a"], &["p"], vec![]);
            m.node("Div", &["p", "two"], &["g"], vec![]);
            "g".into()
        }),
    ];
    for (what, build) in forms {
        for nhwc in [false, true] {
            let mut m = ModelBuilder::new(17);
            m.input("x", &[1, 4, 3, 5]);
            scalar(&mut m, "sqrt2", std::f32::consts::SQRT_2);
            scalar(&mut m, "rsqrt2", std::f32::consts::FRAC_1_SQRT_2);
            scalar(&mut m, "one", 1.0);
            scalar(&mut m, "half", 0.5);
            scalar(&mut m, "two", 2.0);
            let x = if nhwc {
                m.node(
                    "Transpose",
                    &["x"],
                    &["t"],
                    vec![attr_ints("perm", &[0, 2, 3, 1])],
                );
                "t"
            } else {
                "x"
            };
            let g = build(&mut m, x);
            if nhwc {
                m.node(
                    "Transpose",
                    &[&g],
                    &["y"],
                    vec![attr_ints("perm", &[0, 3, 1, 2])],
                );
            } else {
                m.node("Identity", &[&g], &["y"], vec![]);
            }
            m.output("y");
            let graph = import(&m);
            assert_eq!(ops(&graph), ["gelu"], "{what} (nhwc {nhwc})");
            let xv = input(&graph);
            let got = interp::run(&graph, std::slice::from_ref(&xv)).unwrap();
            let want: Vec<f32> = xv
                .data
                .iter()
                .map(|&v| Activation::Gelu.apply(v as f64) as f32)
                .collect();
            assert_eq!(got[0].data, want, "{what} (nhwc {nhwc})");
        }
    }
}

/// ONNX's own Gelu (opset 20): approximate "none" is `gelu`, "tanh" an error.
#[test]
fn onnx_gelu_operator() {
    let mut m = ModelBuilder::new(20);
    m.input("x", &[1, 3, 2, 2]);
    m.node("Gelu", &["x"], &["y"], vec![]);
    m.output("y");
    assert_eq!(ops(&import(&m)), ["gelu"]);
    let mut m = ModelBuilder::new(20);
    m.input("x", &[1, 3, 2, 2]);
    m.node(
        "Gelu",
        &["x"],
        &["y"],
        vec![attr_string("approximate", "tanh")],
    );
    m.output("y");
    let e = import_err(&m);
    assert!(e.contains("approximate = \"tanh\""), "{e}");
}

/// A whole ConvNeXt block as exported: depthwise 7x7, Transpose, LayerNormalization, MatMul
/// by a transposed constant + bias, GELU, MatMul + bias, Transpose back, layer scale (Mul by
/// a [C, 1, 1] constant), residual Add. The MatMuls become 1x1 convs with the biases joined,
/// the layer scale an affine.
#[test]
fn convnext_block() {
    let (c, h, w) = (8usize, 9usize, 9usize);
    let k = 4 * c;
    let mut m = ModelBuilder::new(17);
    m.input("x", &[1, c as i64, h as i64, w as i64]);
    let dw_w = values(c * 49, 3);
    let dw_b = values(c, 4);
    let (ln_w, ln_b) = (values(c, 5), values(c, 6));
    let fc1 = values(k * c, 7); // torch Linear weight [K, C]
    let fc1_b = values(k, 8);
    let fc2 = values(c * k, 9); // [C, K]
    let fc2_b = values(c, 10);
    let scale = values(c, 11);
    m.initializer("dw.weight", &[c, 1, 7, 7], &dw_w);
    m.initializer("dw.bias", &[c], &dw_b);
    m.initializer("ln.weight", &[c], &ln_w);
    m.initializer("ln.bias", &[c], &ln_b);
    m.initializer("fc1.weight", &[k, c], &fc1);
    m.initializer("fc1.bias", &[k], &fc1_b);
    m.initializer("fc2.weight", &[c, k], &fc2);
    m.initializer("fc2.bias", &[c], &fc2_b);
    m.initializer("layer_scale", &[c, 1, 1], &scale);
    scalar(&mut m, "sqrt2", std::f32::consts::SQRT_2);
    scalar(&mut m, "one", 1.0);
    scalar(&mut m, "half", 0.5);
    m.node(
        "Conv",
        &["x", "dw.weight", "dw.bias"],
        &["dw"],
        vec![
            attr_int("group", c as i64),
            attr_ints("kernel_shape", &[7, 7]),
            attr_ints("pads", &[3, 3, 3, 3]),
        ],
    );
    m.node(
        "Transpose",
        &["dw"],
        &["t"],
        vec![attr_ints("perm", &[0, 2, 3, 1])],
    );
    m.node(
        "LayerNormalization",
        &["t", "ln.weight", "ln.bias"],
        &["n"],
        vec![attr_int("axis", -1), attr_float("epsilon", 1e-6)],
    );
    m.node(
        "Transpose",
        &["fc1.weight"],
        &["fc1t"],
        vec![attr_ints("perm", &[1, 0])],
    );
    m.node("MatMul", &["n", "fc1t"], &["mm1"], vec![]);
    m.node("Add", &["fc1.bias", "mm1"], &["h"], vec![]);
    m.node("Div", &["h", "sqrt2"], &["d"], vec![]);
    m.node("Erf", &["d"], &["e"], vec![]);
    m.node("Add", &["e", "one"], &["a"], vec![]);
    m.node("Mul", &["h", "a"], &["p"], vec![]);
    m.node("Mul", &["p", "half"], &["g"], vec![]);
    m.node(
        "Transpose",
        &["fc2.weight"],
        &["fc2t"],
        vec![attr_ints("perm", &[1, 0])],
    );
    m.node("MatMul", &["g", "fc2t"], &["mm2"], vec![]);
    m.node("Add", &["fc2.bias", "mm2"], &["o"], vec![]);
    m.node(
        "Transpose",
        &["o"],
        &["back"],
        vec![attr_ints("perm", &[0, 3, 1, 2])],
    );
    m.node("Mul", &["layer_scale", "back"], &["ls"], vec![]);
    m.node("Add", &["ls", "x"], &["y"], vec![]);
    m.output("y");
    let g = import(&m);
    assert_eq!(
        ops(&g),
        [
            "conv2d",
            "layer_norm",
            "conv2d",
            "gelu",
            "conv2d",
            "affine",
            "add"
        ]
    );
    let x = input(&g);
    let got = interp::run(&g, std::slice::from_ref(&x)).unwrap();

    // The block in NHWC, in f64.
    let mut dw = vec![0.0f32; c * h * w];
    for ch in 0..c {
        for y in 0..h {
            for xx in 0..w {
                let mut acc = dw_b[ch] as f64;
                for ky in 0..7 {
                    for kx in 0..7 {
                        let (iy, ix) = (y as isize + ky - 3, xx as isize + kx - 3);
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                            let v = x.data[(ch * h + iy as usize) * w + ix as usize] as f64;
                            acc += v * dw_w[ch * 49 + (ky * 7 + kx) as usize] as f64;
                        }
                    }
                }
                dw[(ch * h + y) * w + xx] = acc as f32;
            }
        }
    }
    let dw = Tensor::new(vec![1, c, h, w], dw);
    let rows: Vec<Vec<f64>> = to_nhwc(&dw)
        .iter()
        .map(|r| {
            let n = layer_norm_row(r, &ln_w, &ln_b, 1e-6);
            let hidden: Vec<f64> = (0..k)
                .map(|o| {
                    let v =
                        fc1_b[o] as f64 + (0..c).map(|i| n[i] * fc1[o * c + i] as f64).sum::<f64>();
                    Activation::Gelu.apply(v)
                })
                .collect();
            (0..c)
                .map(|o| {
                    fc2_b[o] as f64
                        + (0..k)
                            .map(|i| hidden[i] * fc2[o * k + i] as f64)
                            .sum::<f64>()
                })
                .collect()
        })
        .collect();
    let block = from_nhwc(&rows, &[1, c, h, w]);
    let s = h * w;
    let want: Vec<f32> = (0..c * s)
        .map(|i| (block[i] as f64 * scale[i / s] as f64 + x.data[i] as f64) as f32)
        .collect();
    close(&got[0].data, &want, 1e-5);
}

/// What the NHWC island does not accept, each an error naming the node.
#[test]
fn unsupported_forms_are_errors() {
    let base = |m: &mut ModelBuilder| {
        m.input("x", &[1, 4, 3, 3]);
        m.node(
            "Transpose",
            &["x"],
            &["t"],
            vec![attr_ints("perm", &[0, 2, 3, 1])],
        );
    };
    // A transpose that is never closed: the NHWC view is the graph output.
    let mut m = ModelBuilder::new(17);
    base(&mut m);
    m.node("Relu", &["t"], &["y"], vec![]);
    m.output("y");
    let e = import_err(&m);
    assert!(e.contains("NHWC view"), "{e}");
    // An NCHW operator reading the NHWC view.
    let mut m = ModelBuilder::new(17);
    base(&mut m);
    m.node("GlobalAveragePool", &["t"], &["p"], vec![]);
    m.node(
        "Transpose",
        &["p"],
        &["y"],
        vec![attr_ints("perm", &[0, 3, 1, 2])],
    );
    m.output("y");
    let e = import_err(&m);
    assert!(
        e.contains("GlobalAveragePool") && e.contains("NHWC view"),
        "{e}"
    );
    // Another transpose of the view.
    let mut m = ModelBuilder::new(17);
    base(&mut m);
    m.node(
        "Transpose",
        &["t"],
        &["y"],
        vec![attr_ints("perm", &[0, 1, 3, 2])],
    );
    m.output("y");
    let e = import_err(&m);
    assert!(e.contains("[0, 3, 1, 2]"), "{e}");
    // MatMul with a runtime right operand.
    let mut m = ModelBuilder::new(17);
    base(&mut m);
    m.input("b", &[4, 8]);
    m.node("MatMul", &["t", "b"], &["mm"], vec![]);
    m.node(
        "Transpose",
        &["mm"],
        &["y"],
        vec![attr_ints("perm", &[0, 3, 1, 2])],
    );
    m.output("y");
    let e = import_err(&m);
    assert!(
        e.contains("MatMul") && e.contains("runtime tensor `b`"),
        "{e}"
    );
    // LayerNormalization over another axis: of the view, and of NCHW.
    for (axis, transposed) in [(1, true), (2, true), (1, false), (-1, false)] {
        let mut m = ModelBuilder::new(17);
        m.initializer("w", &[4], &[1.0; 4]);
        let src = if transposed {
            base(&mut m);
            "t"
        } else {
            m.input("x", &[1, 4, 3, 3]);
            "x"
        };
        m.node(
            "LayerNormalization",
            &[src, "w"],
            &["n"],
            vec![attr_int("axis", axis)],
        );
        if transposed {
            m.node(
                "Transpose",
                &["n"],
                &["y"],
                vec![attr_ints("perm", &[0, 3, 1, 2])],
            );
        } else {
            m.node("Identity", &["n"], &["y"], vec![]);
        }
        m.output("y");
        let e = import_err(&m);
        assert!(
            e.contains("LayerNormalization over axis"),
            "axis {axis}: {e}"
        );
    }
    // Erf outside the GELU pattern, and a GELU pattern cut short.
    let mut m = ModelBuilder::new(17);
    m.input("x", &[1, 4, 3, 3]);
    m.node("Erf", &["x"], &["y"], vec![]);
    m.output("y");
    let e = import_err(&m);
    assert!(e.contains("Erf is imported only inside"), "{e}");
    let mut m = ModelBuilder::new(17);
    m.input("x", &[1, 4, 3, 3]);
    scalar(&mut m, "sqrt2", std::f32::consts::SQRT_2);
    m.node("Div", &["x", "sqrt2"], &["d"], vec![]);
    m.node("Erf", &["d"], &["e"], vec![]);
    m.node("Relu", &["e"], &["y"], vec![]);
    m.output("y");
    let e = import_err(&m);
    assert!(e.contains("GELU pattern"), "{e}");
}
