//! ONNX import: every mapped operator against the same network written in `.nn` (same
//! weights, same inputs, both run by the reference interpreter) or against values computed
//! by hand, and every error case. The ONNX files are written here with the prost types.

use std::path::{Path, PathBuf};

use bnc_frontend::onnx::builder::{
    Dim, ModelBuilder, attr_float, attr_int, attr_ints, attr_string, attr_tensor, float_tensor,
    int_tensor,
};
use bnc_frontend::onnx::proto::StringStringEntryProto;
use bnc_frontend::onnx::proto::tensor_proto::DataLocation;
use bnc_frontend::onnx::{OnnxOptions, load_bytes};
use bnc_frontend::{Error, random_normal};
use bnc_ir::{Activation, Graph, Op, Tensor, interp};

fn import_with(m: &ModelBuilder, dir: &Path, options: &OnnxOptions) -> Result<Graph, Error> {
    load_bytes(&m.to_bytes(), "test.onnx", "test", dir, options)
}

fn import(m: &ModelBuilder) -> Graph {
    import_with(m, Path::new("."), &OnnxOptions::default())
        .unwrap_or_else(|e| panic!("import failed: {}", e.render(false)))
}

fn import_err(m: &ModelBuilder) -> String {
    match import_with(m, Path::new("."), &OnnxOptions::default()) {
        Ok(g) => panic!(
            "expected an error, imported:\n{}",
            bnc_ir::printer::print(&g)
        ),
        Err(e) => e.message().to_string(),
    }
}

/// A `.nn` model with seeded random weights.
fn reference(src: &str) -> Graph {
    bnc_frontend::load_str(src, "ref.nn", Path::new("."))
        .unwrap_or_else(|e| panic!("reference does not load: {}", e.render(false)))
}

/// A parameter of the reference model: `(shape, values)`.
fn param(g: &Graph, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = g
        .params
        .get(name)
        .unwrap_or_else(|| panic!("no param {name}"));
    (t.shape.clone(), t.data.clone())
}

fn inputs_for(g: &Graph) -> Vec<Tensor> {
    g.inputs
        .iter()
        .map(|&id| {
            let v = g.value(id);
            random_normal(11, &v.name, &v.shape)
        })
        .collect()
}

fn run(g: &Graph, inputs: &[Tensor]) -> Vec<Tensor> {
    interp::run(g, inputs).expect("interpreter runs")
}

fn assert_close(a: &[Tensor], b: &[Tensor], tol: f32) {
    assert_eq!(a.len(), b.len(), "output count");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.shape, y.shape, "output shapes");
        let d = x.max_abs_diff(y);
        assert!(d <= tol, "max abs diff {d} > {tol}");
    }
}

/// Imports `m` and checks it computes what the `.nn` model `src` computes.
fn same_as(m: &ModelBuilder, src: &str) -> Graph {
    let want = reference(src);
    let got = import(m);
    let inputs = inputs_for(&want);
    assert_close(&run(&got, &inputs), &run(&want, &inputs), 1e-5);
    got
}

fn ops(g: &Graph) -> Vec<&'static str> {
    g.nodes.iter().map(|n| n.op.name()).collect()
}

fn transpose(shape: &[usize], v: &[f32]) -> Vec<f32> {
    let (r, c) = (shape[0], shape[1]);
    let mut t = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            t[j * r + i] = v[i * c + j];
        }
    }
    t
}

/// One-input model `x` with the given ONNX nodes and output `y`.
fn single(opset: i64, shape: &[i64]) -> ModelBuilder {
    let mut m = ModelBuilder::new(opset);
    m.input("x", shape);
    m
}

// ----- operators --------------------------------------------------------------------------

#[test]
fn conv_with_all_attributes() {
    let src = "model r { weights random(seed = 3) input x: f32[1, 4, 9, 10]
      c = conv2d(x, out = 6, kernel = [3, 2], stride = [2, 1], pad = [1, 0, 2, 1], dilation = [1, 2], groups = 2)
      output c }";
    let r = reference(src);
    let (ws, w) = param(&r, "c.weight");
    let (bs, b) = param(&r, "c.bias");
    let mut m = single(17, &[1, 4, 9, 10]);
    m.initializer("c.weight", &ws, &w)
        .initializer("c.bias", &bs, &b);
    m.node(
        "Conv",
        &["x", "c.weight", "c.bias"],
        &["c"],
        vec![
            attr_ints("kernel_shape", &[3, 2]),
            attr_ints("strides", &[2, 1]),
            attr_ints("pads", &[1, 0, 2, 1]),
            attr_ints("dilations", &[1, 2]),
            attr_int("group", 2),
        ],
    );
    m.output("c");
    let g = same_as(&m, src);
    // Initializer names are kept as parameter names.
    assert!(g.params.contains_key("c.weight") && g.params.contains_key("c.bias"));
}

#[test]
fn conv_auto_pad() {
    // 7 wide, kernel 4, stride 2: 4 outputs, total padding 3.
    for (mode, pad) in [
        ("SAME_UPPER", "[1, 1, 2, 2]"),
        ("SAME_LOWER", "[2, 2, 1, 1]"),
        ("VALID", "0"),
        ("NOTSET", "0"),
    ] {
        let src = format!(
            "model r {{ weights random(seed = 4) input x: f32[1, 2, 7, 7]
              c = conv2d(x, out = 3, kernel = 4, stride = 2, pad = {pad}, bias = false)
              output c }}"
        );
        let r = reference(&src);
        let (ws, w) = param(&r, "c.weight");
        let mut m = single(13, &[1, 2, 7, 7]);
        m.initializer("c.weight", &ws, &w);
        m.node(
            "Conv",
            &["x", "c.weight"],
            &["c"],
            vec![attr_ints("strides", &[2, 2]), attr_string("auto_pad", mode)],
        );
        m.output("c");
        same_as(&m, &src);
    }
}

const DENSE: &str = "model r { weights random(seed = 5) input x: f32[2, 6]
  d = dense(x, out = 4)
  output d }";

#[test]
fn gemm_trans_b_alpha_beta() {
    let r = reference(DENSE);
    let (ws, w) = param(&r, "d.weight");
    let (_, b) = param(&r, "d.bias");
    // alpha = 0.5 with B doubled, beta = 2 with C halved.
    let w2: Vec<f32> = w.iter().map(|v| v * 2.0).collect();
    let b2: Vec<f32> = b.iter().map(|v| v / 2.0).collect();
    let mut m = single(17, &[2, 6]);
    m.initializer("d.weight", &ws, &w2)
        .initializer("d.bias", &[1, 4], &b2);
    m.node(
        "Gemm",
        &["x", "d.weight", "d.bias"],
        &["d"],
        vec![
            attr_int("transB", 1),
            attr_float("alpha", 0.5),
            attr_float("beta", 2.0),
        ],
    );
    m.output("d");
    let g = same_as(&m, DENSE);
    assert_eq!(ops(&g), ["dense"]);
}

#[test]
fn gemm_without_trans_b() {
    let r = reference(DENSE);
    let (ws, w) = param(&r, "d.weight");
    let (bs, b) = param(&r, "d.bias");
    let mut m = single(11, &[2, 6]);
    m.initializer("B", &[ws[1], ws[0]], &transpose(&ws, &w))
        .initializer("C", &bs, &b);
    m.node("Gemm", &["x", "B", "C"], &["d"], vec![]);
    m.output("d");
    same_as(&m, DENSE);
}

#[test]
fn matmul_add_becomes_one_dense() {
    let r = reference(DENSE);
    let (ws, w) = param(&r, "d.weight");
    let (bs, b) = param(&r, "d.bias");
    let mut m = single(17, &[2, 6]);
    m.initializer("W", &[ws[1], ws[0]], &transpose(&ws, &w))
        .initializer("b", &bs, &b);
    m.node("MatMul", &["x", "W"], &["mm"], vec![]);
    m.node("Add", &["mm", "b"], &["d"], vec![]);
    m.output("d");
    let g = same_as(&m, DENSE);
    assert_eq!(ops(&g), ["dense"]);
    assert_eq!(g.value(g.outputs[0]).name, "d");
}

#[test]
fn gemm_trans_a_is_an_error() {
    let mut m = single(17, &[6, 2]);
    m.initializer("B", &[6, 4], &[0.0; 24]);
    m.node("Gemm", &["x", "B"], &["d"], vec![attr_int("transA", 1)]);
    m.output("d");
    assert!(import_err(&m).contains("transA"));
}

#[test]
fn batchnorm_4d_and_2d() {
    for (shape, dims) in [
        ("[1, 4, 5, 5]", vec![1i64, 4, 5, 5]),
        ("[3, 4]", vec![3, 4]),
    ] {
        let src = format!(
            "model r {{ weights random(seed = 6) input x: f32{shape}
              bn1 = batchnorm(x, eps = 0.001)
              output bn1 }}"
        );
        let r = reference(&src);
        let mut m = single(15, &dims);
        for s in ["weight", "bias", "running_mean", "running_var"] {
            let (ps, p) = param(&r, &format!("bn1.{s}"));
            m.initializer(&format!("bn1.{s}"), &ps, &p);
        }
        m.node(
            "BatchNormalization",
            &[
                "x",
                "bn1.weight",
                "bn1.bias",
                "bn1.running_mean",
                "bn1.running_var",
            ],
            &["bn1"],
            vec![attr_float("epsilon", 0.001)],
        );
        m.output("bn1");
        let g = same_as(&m, &src);
        assert_eq!(ops(&g), ["batchnorm"]);
        assert!(g.params.contains_key("bn1.running_var"));
    }
}

fn activation_model(
    opset: i64,
    op: &str,
    extra: &[&str],
    attrs: Vec<bnc_frontend::onnx::proto::AttributeProto>,
) -> ModelBuilder {
    let mut m = single(opset, &[1, 3, 4, 4]);
    let mut inputs = vec!["x"];
    inputs.extend_from_slice(extra);
    m.node(op, &inputs, &["y"], attrs);
    m.output("y");
    m
}

fn act_src(body: &str) -> String {
    format!(
        "model r {{ weights random(seed = 1) input x: f32[1, 3, 4, 4]\n y = {body}\n output y }}"
    )
}

#[test]
fn activations() {
    let cases: Vec<(ModelBuilder, &str)> = vec![
        (activation_model(17, "Relu", &[], vec![]), "relu(x)"),
        (activation_model(17, "Sigmoid", &[], vec![]), "sigmoid(x)"),
        (activation_model(17, "Tanh", &[], vec![]), "tanh(x)"),
        (
            activation_model(17, "HardSwish", &[], vec![]),
            "hardswish(x)",
        ),
        (
            activation_model(17, "LeakyRelu", &[], vec![]),
            "leaky_relu(x, alpha = 0.009999999776482582)",
        ),
        (
            activation_model(17, "LeakyRelu", &[], vec![attr_float("alpha", 0.25)]),
            "leaky_relu(x, alpha = 0.25)",
        ),
        (
            activation_model(17, "HardSigmoid", &[], vec![attr_float("alpha", 1.0 / 6.0)]),
            "hardsigmoid(x)",
        ),
    ];
    for (m, body) in cases {
        let g = same_as(&m, &act_src(body));
        assert_eq!(g.nodes.len(), 1, "{body}");
    }
}

#[test]
fn clip_as_inputs_and_attributes() {
    // Opset 13: min/max are inputs.
    let mut m = single(13, &[1, 3, 4, 4]);
    m.initializer("lo", &[], &[-0.5])
        .initializer("hi", &[], &[0.75]);
    m.node("Clip", &["x", "lo", "hi"], &["y"], vec![]);
    m.output("y");
    same_as(&m, &act_src("clip(x, min = -0.5, max = 0.75)"));
    // Only a max.
    let mut m = single(13, &[1, 3, 4, 4]);
    m.initializer("hi", &[], &[0.75]);
    m.node("Clip", &["x", "", "hi"], &["y"], vec![]);
    m.output("y");
    same_as(&m, &act_src("clip(x, max = 0.75)"));
    // Opset 6-10: attributes; Clip(0, 6) is relu6.
    let m = activation_model(
        10,
        "Clip",
        &[],
        vec![attr_float("min", 0.0), attr_float("max", 6.0)],
    );
    let g = same_as(&m, &act_src("relu6(x)"));
    assert_eq!(g.nodes[0].op, Op::Activation(Activation::Relu6));
}

#[test]
fn hardsigmoid_with_other_alpha_beta() {
    // ONNX default alpha = 0.2, beta = 0.5: y = clamp(0.2 x + 0.5, 0, 1).
    let m = activation_model(17, "HardSigmoid", &[], vec![]);
    let g = import(&m);
    let x = random_normal(3, "x", &[1, 3, 4, 4]);
    let y = run(&g, std::slice::from_ref(&x));
    for (a, b) in x.data.iter().zip(&y[0].data) {
        let want = (0.2 * a + 0.5).clamp(0.0, 1.0);
        assert!((want - b).abs() < 1e-6, "{a}: {want} vs {b}");
    }
}

#[test]
fn silu_and_hardswish_patterns() {
    let mut m = single(17, &[1, 3, 4, 4]);
    m.node("Sigmoid", &["x"], &["s"], vec![]);
    m.node("Mul", &["x", "s"], &["y"], vec![]);
    m.output("y");
    let g = same_as(&m, &act_src("silu(x)"));
    assert_eq!(ops(&g), ["silu"]);

    let mut m = single(13, &[1, 3, 4, 4]);
    m.node(
        "HardSigmoid",
        &["x"],
        &["s"],
        vec![attr_float("alpha", 1.0 / 6.0)],
    );
    m.node("Mul", &["s", "x"], &["y"], vec![]);
    m.output("y");
    let g = same_as(&m, &act_src("hardswish(x)"));
    assert_eq!(ops(&g), ["hardswish"]);
}

#[test]
fn add_mul_concat() {
    let src = "model r { weights random(seed = 1) input x: f32[1, 3, 4, 4]
      input z: f32[1, 3, 4, 4]
      input gate: f32[1, 3, 1, 1]
      a = add(x, z)
      m = mul(a, gate)
      p = mul(a, x)
      c = concat(m, p, x)
      output c }";
    let mut m = ModelBuilder::new(17);
    m.input("x", &[1, 3, 4, 4])
        .input("z", &[1, 3, 4, 4])
        .input("gate", &[1, 3, 1, 1]);
    m.node("Add", &["x", "z"], &["a"], vec![]);
    m.node("Mul", &["a", "gate"], &["m"], vec![]);
    m.node("Mul", &["a", "x"], &["p"], vec![]);
    m.node(
        "Concat",
        &["m", "p", "x"],
        &["c"],
        vec![attr_int("axis", -3)],
    );
    m.output("c");
    same_as(&m, src);
}

#[test]
fn constants_become_affine_or_join_the_bias() {
    let src = "model r { weights random(seed = 2) input x: f32[1, 3, 5, 5]
      c = conv2d(x, out = 4, kernel = 3, bias = false)
      output c }";
    let r = reference(src);
    let (ws, w) = param(&r, "c.weight");
    let shift = [0.5f32, -1.0, 2.0, 0.25];
    let mut m = single(17, &[1, 3, 5, 5]);
    m.initializer("c.weight", &ws, &w)
        .initializer("s", &[1, 4, 1, 1], &shift);
    m.initializer("two", &[], &[2.0])
        .initializer("k", &[4, 1, 1], &[1.0, 2.0, 4.0, 8.0]);
    m.node("Conv", &["x", "c.weight"], &["conv"], vec![]);
    m.node("Add", &["conv", "s"], &["biased"], vec![]);
    m.node("Sub", &["biased", "two"], &["sub"], vec![]);
    m.node("Div", &["sub", "k"], &["div"], vec![]);
    m.node("Mul", &["two", "div"], &["y"], vec![]);
    m.node("Sub", &["two", "y"], &["z"], vec![]);
    m.output("z");
    let g = import(&m);
    // The Add and the Sub right after the conv join its bias.
    assert_eq!(ops(&g), ["conv2d", "affine", "affine", "affine"]);
    // By hand: z = 2 - 2 * ((conv + s - 2) / k).
    let x = random_normal(1, "x", &[1, 3, 5, 5]);
    let conv = run(&r, std::slice::from_ref(&x)).remove(0);
    let k = [1.0f32, 2.0, 4.0, 8.0];
    let got = run(&g, &[x]).remove(0);
    for (i, (c, z)) in conv.data.iter().zip(&got.data).enumerate() {
        let ch = i / 9;
        let want = 2.0 - 2.0 * ((c + shift[ch] - 2.0) / k[ch]);
        assert!((want - z).abs() < 1e-5, "{want} vs {z}");
    }
}

#[test]
fn pooling() {
    let src = "model r { weights random(seed = 1) input x: f32[1, 2, 9, 9]
      m = maxpool(x, kernel = 3, stride = 2, pad = 1, ceil_mode = true)
      a = avgpool(x, kernel = 3, stride = 2, pad = [1, 1, 0, 0], count_include_pad = false)
      b = avgpool(x, kernel = 2, stride = 2, ceil_mode = true, count_include_pad = true)
      g = global_avgpool(x)
      output m, a, b, g }";
    let mut m = single(17, &[1, 2, 9, 9]);
    m.node(
        "MaxPool",
        &["x"],
        &["m"],
        vec![
            attr_ints("kernel_shape", &[3, 3]),
            attr_ints("strides", &[2, 2]),
            attr_ints("pads", &[1, 1, 1, 1]),
            attr_int("ceil_mode", 1),
        ],
    );
    m.node(
        "AveragePool",
        &["x"],
        &["a"],
        vec![
            attr_ints("kernel_shape", &[3, 3]),
            attr_ints("strides", &[2, 2]),
            attr_ints("pads", &[1, 1, 0, 0]),
        ],
    );
    m.node(
        "AveragePool",
        &["x"],
        &["b"],
        vec![
            attr_ints("kernel_shape", &[2, 2]),
            attr_ints("strides", &[2, 2]),
            attr_int("ceil_mode", 1),
            attr_int("count_include_pad", 1),
        ],
    );
    m.node("GlobalAveragePool", &["x"], &["g"], vec![]);
    m.output("m").output("a").output("b").output("g");
    same_as(&m, src);
}

#[test]
fn reduce_mean_is_global_pool() {
    let src = "model r { weights random(seed = 1) input x: f32[1, 2, 5, 5]
      g = global_avgpool(x)
      f = flatten(g)
      output g, f }";
    let mut m = single(13, &[1, 2, 5, 5]);
    m.node(
        "ReduceMean",
        &["x"],
        &["g"],
        vec![attr_ints("axes", &[-1, -2])],
    );
    m.initializer_i64("axes", &[2], &[2, 3]);
    m.output("g");
    let mut m18 = single(18, &[1, 2, 5, 5]);
    m18.initializer_i64("axes", &[2], &[2, 3]);
    m18.node("ReduceMean", &["x", "axes"], &["g"], vec![]);
    m18.node(
        "ReduceMean",
        &["x", "axes"],
        &["f"],
        vec![attr_int("keepdims", 0)],
    );
    m18.output("g").output("f");
    same_as(&m18, src);
    let g = import(&m);
    assert_eq!(ops(&g), ["global_avgpool"]);
}

#[test]
fn pad_versions() {
    let src = "model r { weights random(seed = 1) input x: f32[1, 2, 4, 5]
      p = pad(x, pads = [1, 2, 0, 3], value = 0.5)
      output p }";
    // Opset 11: pads and value as inputs.
    let mut m = single(11, &[1, 2, 4, 5]);
    m.initializer_i64("pads", &[8], &[0, 0, 1, 2, 0, 0, 0, 3])
        .initializer("v", &[], &[0.5]);
    m.node(
        "Pad",
        &["x", "pads", "v"],
        &["p"],
        vec![attr_string("mode", "constant")],
    );
    m.output("p");
    same_as(&m, src);
    // Opset 18: only the H and W axes.
    let mut m = single(18, &[1, 2, 4, 5]);
    m.initializer_i64("pads", &[4], &[1, 2, 0, 3])
        .initializer("v", &[], &[0.5])
        .initializer_i64("axes", &[2], &[2, -1]);
    m.node("Pad", &["x", "pads", "v", "axes"], &["p"], vec![]);
    m.output("p");
    same_as(&m, src);
    // Opset 10: attributes.
    let m = {
        let mut m = single(10, &[1, 2, 4, 5]);
        m.node(
            "Pad",
            &["x"],
            &["p"],
            vec![
                attr_ints("pads", &[0, 0, 1, 2, 0, 0, 0, 3]),
                attr_float("value", 0.5),
            ],
        );
        m.output("p");
        m
    };
    same_as(&m, src);
    // Reflect mode and channel padding are errors.
    let mut m = single(11, &[1, 2, 4, 5]);
    m.initializer_i64("pads", &[8], &[0, 1, 0, 0, 0, 0, 0, 0]);
    m.node("Pad", &["x", "pads"], &["p"], vec![]);
    m.output("p");
    assert!(import_err(&m).contains("pads only H and W"));
    let mut m = single(11, &[1, 2, 4, 5]);
    m.initializer_i64("pads", &[8], &[0; 8]);
    m.node(
        "Pad",
        &["x", "pads"],
        &["p"],
        vec![attr_string("mode", "reflect")],
    );
    m.output("p");
    assert!(import_err(&m).contains("reflect"));
}

const FLAT: &str = "model r { weights random(seed = 1) input x: f32[1, 3, 2, 2]
  f = flatten(x)
  output f }";

#[test]
fn flatten_and_flattening_reshapes() {
    let mut m = single(17, &[1, 3, 2, 2]);
    m.node("Flatten", &["x"], &["f"], vec![]);
    m.output("f");
    assert_eq!(ops(&same_as(&m, FLAT)), ["flatten"]);
    for spec in [[1i64, -1], [1, 12], [0, -1]] {
        let mut m = single(17, &[1, 3, 2, 2]);
        m.initializer_i64("shape", &[2], &spec);
        m.node("Reshape", &["x", "shape"], &["f"], vec![]);
        m.output("f");
        assert_eq!(ops(&same_as(&m, FLAT)), ["flatten"], "{spec:?}");
    }
    // A reshape that is not a flatten is an error naming the shapes.
    let mut m = single(17, &[1, 3, 2, 2]);
    m.initializer_i64("shape", &[3], &[1, 6, 2]);
    m.node("Reshape", &["x", "shape"], &["f"], vec![]);
    m.output("f");
    let e = import_err(&m);
    assert!(e.contains("not a flatten") && e.contains("Reshape"), "{e}");
}

#[test]
fn shape_subgraph_is_folded() {
    // What exporters emit for x.view(x.size(0), -1): Shape, Gather, Unsqueeze, Concat with a
    // Constant, Cast, Slice, Squeeze, then Reshape.
    let mut m = single(13, &[1, 3, 2, 2]);
    m.node("Shape", &["x"], &["s"], vec![]);
    m.initializer_i64("zero", &[], &[0]);
    m.node("Gather", &["s", "zero"], &["n"], vec![attr_int("axis", 0)]);
    m.initializer_i64("ax0", &[1], &[0]);
    m.node("Unsqueeze", &["n", "ax0"], &["n1"], vec![]);
    m.node(
        "Constant",
        &[],
        &["minus1"],
        vec![attr_tensor("value", int_tensor("", &[1], &[-1]))],
    );
    m.node(
        "Concat",
        &["n1", "minus1"],
        &["spec0"],
        vec![attr_int("axis", 0)],
    );
    m.node("Cast", &["spec0"], &["spec1"], vec![attr_int("to", 7)]);
    m.initializer_i64("st", &[1], &[0])
        .initializer_i64("en", &[1], &[2]);
    m.node("Slice", &["spec1", "st", "en"], &["spec2"], vec![]);
    m.node("Unsqueeze", &["spec2", "ax0"], &["spec3"], vec![]);
    m.node("Squeeze", &["spec3", "ax0"], &["spec"], vec![]);
    m.node("Reshape", &["x", "spec"], &["f"], vec![]);
    m.output("f");
    assert_eq!(ops(&same_as(&m, FLAT)), ["flatten"]);
}

#[test]
fn squeeze_after_global_pool_is_a_flatten() {
    let src = "model r { weights random(seed = 1) input x: f32[1, 3, 4, 4]
      g = global_avgpool(x)
      f = flatten(g)
      output f }";
    let mut m = single(11, &[1, 3, 4, 4]);
    m.node("GlobalAveragePool", &["x"], &["g"], vec![]);
    m.node("Squeeze", &["g"], &["f"], vec![attr_ints("axes", &[2, 3])]);
    m.output("f");
    same_as(&m, src);
}

#[test]
fn identity_and_dropout_vanish() {
    let src = "model r { weights random(seed = 1) input x: f32[1, 3, 4, 4]
      y = relu(x)
      output y }";
    let mut m = single(12, &[1, 3, 4, 4]);
    m.node("Identity", &["x"], &["i"], vec![]);
    m.initializer("ratio", &[], &[0.5]);
    m.node("Dropout", &["i", "ratio"], &["d", "mask"], vec![]);
    m.node("Relu", &["d"], &["r"], vec![]);
    m.node("Identity", &["r"], &["y"], vec![]);
    m.output("y");
    let g = same_as(&m, src);
    assert_eq!(ops(&g), ["relu"]);
    assert_eq!(g.value(g.outputs[0]).name, "y");
    // A graph input passed straight through still gets a node.
    let mut m = single(12, &[1, 3, 4, 4]);
    m.node("Identity", &["x"], &["y"], vec![]);
    m.output("y");
    assert_eq!(ops(&import(&m)), ["identity"]);
}

#[test]
fn softmax_axes() {
    let src = "model r { weights random(seed = 1) input x: f32[2, 5]
      s = softmax(x)
      output s }";
    for (opset, axis) in [(13, None), (13, Some(1)), (13, Some(-1)), (11, None)] {
        let mut m = single(opset, &[2, 5]);
        let attrs = axis.map(|a| vec![attr_int("axis", a)]).unwrap_or_default();
        m.node("Softmax", &["x"], &["s"], attrs);
        m.output("s");
        same_as(&m, src);
    }
    let src4 = "model r { weights random(seed = 1) input x: f32[1, 3, 2, 2]
      s = softmax(x)
      output s }";
    let mut m = single(13, &[1, 3, 2, 2]);
    m.node("Softmax", &["x"], &["s"], vec![attr_int("axis", 1)]);
    m.output("s");
    same_as(&m, src4);
    let mut m = single(13, &[1, 3, 2, 2]);
    m.node("Softmax", &["x"], &["s"], vec![]);
    m.output("s");
    assert!(import_err(&m).contains("softmax over axis 3"));
}

/// A small CNN using most operators at once, imported and compared, then printed, saved
/// and loaded again as `.nn`.
fn small_cnn() -> (ModelBuilder, &'static str) {
    let src = "model r { weights random(seed = 9) input image: f32[1, 3, 16, 16]
      conv1 = conv2d(image, out = 8, kernel = 3, stride = 2, pad = 1, bias = false)
      bn1 = batchnorm(conv1)
      r1 = relu(bn1)
      mp = maxpool(r1, kernel = 2)
      conv2 = conv2d(mp, out = 8, kernel = 3, pad = 1, groups = 8)
      bn2 = batchnorm(conv2)
      s2 = silu(bn2)
      a = add(s2, mp)
      gp = global_avgpool(a)
      fl = flatten(gp)
      fc = dense(fl, out = 5)
      output fc }";
    let r = reference(src);
    let mut m = ModelBuilder::new(17);
    m.input("image", &[1, 3, 16, 16]);
    for (name, t) in &r.params {
        m.initializer(name, &t.shape, &t.data);
    }
    let bn = |m: &mut ModelBuilder, x: &str, p: &str| {
        let ins: Vec<String> = ["weight", "bias", "running_mean", "running_var"]
            .iter()
            .map(|s| format!("{p}.{s}"))
            .collect();
        let ins: Vec<&str> = std::iter::once(x)
            .chain(ins.iter().map(String::as_str))
            .collect();
        m.node("BatchNormalization", &ins, &[p], vec![]);
    };
    m.node(
        "Conv",
        &["image", "conv1.weight"],
        &["/conv1/Conv_output_0"],
        vec![
            attr_ints("strides", &[2, 2]),
            attr_ints("pads", &[1, 1, 1, 1]),
        ],
    );
    bn(&mut m, "/conv1/Conv_output_0", "bn1");
    m.node("Relu", &["bn1"], &["onnx::Relu_1"], vec![]);
    m.node(
        "MaxPool",
        &["onnx::Relu_1"],
        &["mp"],
        vec![
            attr_ints("kernel_shape", &[2, 2]),
            attr_ints("strides", &[2, 2]),
        ],
    );
    m.node(
        "Conv",
        &["mp", "conv2.weight", "conv2.bias"],
        &["conv2"],
        vec![attr_ints("pads", &[1, 1, 1, 1]), attr_int("group", 8)],
    );
    bn(&mut m, "conv2", "bn2");
    m.node("Sigmoid", &["bn2"], &["sig"], vec![]);
    m.node("Mul", &["bn2", "sig"], &["s2"], vec![]);
    m.node("Add", &["s2", "mp"], &["a"], vec![]);
    m.node("GlobalAveragePool", &["a"], &["gp"], vec![]);
    m.node("Flatten", &["gp"], &["fl"], vec![attr_int("axis", 1)]);
    m.node(
        "Gemm",
        &["fl", "fc.weight", "fc.bias"],
        &["logits"],
        vec![attr_int("transB", 1)],
    );
    m.output("logits");
    (m, src)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bnc-onnx-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

fn save_safetensors(g: &Graph, path: &Path) {
    use safetensors::tensor::TensorView;
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = g
        .params
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                t.shape.clone(),
            )
        })
        .collect();
    let views: Vec<(&str, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, d, s)| {
            (
                n.as_str(),
                TensorView::new(safetensors::Dtype::F32, s.clone(), d).expect("view"),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).expect("write safetensors");
}

#[test]
fn small_cnn_imports_and_round_trips_through_nn() {
    let (m, src) = small_cnn();
    let g = same_as(&m, src);
    assert_eq!(
        ops(&g),
        [
            "conv2d",
            "batchnorm",
            "relu",
            "maxpool",
            "conv2d",
            "batchnorm",
            "silu",
            "add",
            "global_avgpool",
            "flatten",
            "dense"
        ]
    );
    assert_eq!(g.name, "test");
    assert_eq!(
        g.weights,
        bnc_ir::WeightsSource::File("test.safetensors".into())
    );
    assert_eq!(g.value(g.outputs[0]).name, "logits");
    // Print + save + load the .nn: same graph, same outputs.
    let dir = temp_dir("roundtrip");
    std::fs::write(dir.join("test.nn"), bnc_ir::printer::print(&g)).expect("write .nn");
    save_safetensors(&g, &dir.join("test.safetensors"));
    let back = bnc_frontend::load_file(&dir.join("test.nn"))
        .unwrap_or_else(|e| panic!("{}", e.render(false)));
    assert_eq!(back, g);
    let inputs = inputs_for(&g);
    assert_eq!(run(&back, &inputs), run(&g, &inputs));
    // load_file dispatches on the extension.
    std::fs::write(dir.join("cnn.onnx"), m.to_bytes()).expect("write onnx");
    let direct = bnc_frontend::load_file(&dir.join("cnn.onnx")).expect("loads .onnx");
    assert_eq!(direct.name, "cnn");
    assert_eq!(run(&direct, &inputs), run(&g, &inputs));
}

#[test]
fn initializers_in_other_encodings() {
    // float_data, float16 raw and double_data all give the same weights.
    let w: Vec<f32> = (0..12).map(|i| i as f32 * 0.25 - 1.0).collect();
    let mut results = Vec::new();
    for enc in 0..3 {
        let mut m = single(17, &[1, 3]);
        let mut t = float_tensor("W", &[3, 4], &w);
        match enc {
            0 => {
                t.raw_data = None;
                t.float_data = w.clone();
            }
            1 => {
                t.data_type = Some(10);
                t.raw_data = Some(
                    w.iter()
                        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                        .collect(),
                );
            }
            _ => {
                t.raw_data = None;
                t.data_type = Some(11);
                t.double_data = w.iter().map(|&v| f64::from(v)).collect();
            }
        }
        m.graph().initializer.push(t);
        m.node("MatMul", &["x", "W"], &["y"], vec![]);
        m.output("y");
        let g = import(&m);
        results.push(run(&g, &[Tensor::new(vec![1, 3], vec![1.0, 2.0, 3.0])]));
    }
    assert_eq!(results[0], results[1]);
    assert_eq!(results[0], results[2]);
    // By hand: y[j] = sum_i x[i] W[i, j].
    let want: Vec<f32> = (0..4)
        .map(|j| (0..3).map(|i| (i + 1) as f32 * w[i * 4 + j]).sum())
        .collect();
    assert_eq!(results[0][0].data, want);
}

// ----- errors -----------------------------------------------------------------------------

#[test]
fn unsupported_operators_are_all_listed() {
    let mut m = single(17, &[1, 4, 4, 4]);
    m.node("Relu", &["x"], &["r"], vec![]);
    m.node(
        "Transpose",
        &["r"],
        &["t"],
        vec![attr_ints("perm", &[0, 2, 1, 3])],
    );
    m.node("Erf", &["t"], &["e"], vec![]);
    m.node("Erf", &["r"], &["e2"], vec![]);
    m.node("InstanceNormalization", &["r"], &["n"], vec![]);
    m.node("Add", &["e", "e2"], &["s"], vec![]);
    m.output("s").output("n");
    let e = import_err(&m);
    assert!(
        e.contains("node `t` (Transpose, opset 17) cannot be imported"),
        "{e}"
    );
    // `e` reads the failed Transpose: Erf is an operator bnc maps (inside the GELU
    // pattern), so only `e2`, an Erf outside it, is reported.
    assert!(e.contains("Erf x1: `e2`"), "{e}");
    assert!(e.contains("InstanceNormalization x1: `n`"), "{e}");
    assert!(
        e.contains("unsupported operators in this file: Erf, InstanceNormalization, Transpose"),
        "{e}"
    );
    assert!(e.starts_with("test.onnx: "), "{e}");
}

#[test]
fn custom_domain_is_named() {
    let mut m = single(17, &[1, 4]);
    m.node("FusedThing", &["x"], &["y"], vec![]);
    m.graph().node[0].domain = Some("com.example".into());
    m.output("y");
    let e = import_err(&m);
    assert!(e.contains("com.example:FusedThing"), "{e}");
}

fn dynamic_batch() -> ModelBuilder {
    let mut m = ModelBuilder::new(17);
    m.input_dims(
        "input",
        &[
            Dim::Symbolic("batch".into()),
            Dim::Fixed(3),
            Dim::Fixed(4),
            Dim::Fixed(4),
        ],
    );
    m.node("Relu", &["input"], &["y"], vec![]);
    m.output("y");
    m
}

#[test]
fn dynamic_input_needs_a_fixed_shape() {
    let e = import_err(&dynamic_batch());
    assert!(e.contains("dynamic dimension `batch` (axis 0)"), "{e}");
    assert!(e.contains("fixed batch size"), "{e}");
    assert!(e.contains("--input-shape input=1,3,4,4"), "{e}");
    let mut options = OnnxOptions::default();
    options.parse_input_shape("input=2,3,4,4").expect("parses");
    let g = import_with(&dynamic_batch(), Path::new("."), &options).expect("imports");
    assert_eq!(g.shape(g.inputs[0]), &vec![2, 3, 4, 4]);
    // Wrong rank, unknown name, bad syntax.
    let mut bad = OnnxOptions::default();
    bad.parse_input_shape("input=2,3").expect("parses");
    let e = import_with(&dynamic_batch(), Path::new("."), &bad).expect_err("error");
    assert!(e.message().contains("2 dimension(s)"), "{}", e.message());
    let mut bad = OnnxOptions::default();
    bad.parse_input_shape("nope=1").expect("parses");
    let e = import_with(&dynamic_batch(), Path::new("."), &bad).expect_err("error");
    assert!(e.message().contains("`nope`"), "{}", e.message());
    assert!(
        OnnxOptions::default()
            .parse_input_shape("input=1,x")
            .is_err()
    );
    assert!(OnnxOptions::default().parse_input_shape("1,2").is_err());
}

fn external_model() -> ModelBuilder {
    external_model_at("weights.bin", Some("16"))
}

fn external_model_at(location: &str, length: Option<&str>) -> ModelBuilder {
    let mut m = single(17, &[1, 2]);
    let mut t = float_tensor("W", &[2, 2], &[]);
    t.raw_data = None;
    t.data_location = Some(DataLocation::External as i32);
    let kv = |k: &str, v: &str| StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v.into()),
    };
    t.external_data = vec![kv("location", location), kv("offset", "4")];
    if let Some(length) = length {
        t.external_data.push(kv("length", length));
    }
    m.graph().initializer.push(t);
    m.node("MatMul", &["x", "W"], &["y"], vec![]);
    m.output("y");
    m
}

#[test]
fn external_data() {
    let dir = temp_dir("external");
    let e = import_with(&external_model(), &dir, &OnnxOptions::default())
        .expect_err("missing file is an error");
    assert!(
        e.message().contains("external data file `weights.bin`"),
        "{}",
        e.message()
    );
    assert!(e.message().contains("initializer `W`"), "{}", e.message());
    let mut bytes = vec![0u8; 4];
    for v in [1.0f32, 2.0, 3.0, 4.0] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(dir.join("weights.bin"), &bytes).expect("write");
    let g = import_with(&external_model(), &dir, &OnnxOptions::default()).expect("imports");
    let y = run(&g, &[Tensor::new(vec![1, 2], vec![1.0, 1.0])]);
    assert_eq!(y[0].data, [4.0, 6.0]);
    // Too short a file.
    std::fs::write(dir.join("weights.bin"), &bytes[..10]).expect("write");
    let e = import_with(&external_model(), &dir, &OnnxOptions::default()).expect_err("error");
    assert!(e.message().contains("weights.bin"), "{}", e.message());
}

/// External data may only come from regular files inside the model's folder, and only the
/// bytes the tensor needs are read (ONNX spec: `location` is relative to the model's folder).
#[test]
fn external_data_stays_inside_the_model_folder() {
    let dir = temp_dir("external-hostile");
    let mut bytes = vec![0u8; 4];
    for v in [1.0f32, 2.0, 3.0, 4.0] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(dir.join("weights.bin"), &bytes).expect("write");
    let outside = dir
        .parent()
        .unwrap()
        .join(format!("bnc-outside-{}.bin", std::process::id()));
    std::fs::write(&outside, &bytes).expect("write");
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    let escape = format!(
        "sub/../../{}",
        outside.file_name().unwrap().to_string_lossy()
    );
    let absolute = outside.display().to_string();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&outside, dir.join("link.bin")).expect("symlink");
    let refused = |location: &str, length: Option<&str>, why: &str| {
        let e = import_with(
            &external_model_at(location, length),
            &dir,
            &OnnxOptions::default(),
        )
        .expect_err(location);
        assert!(e.message().contains(why), "{location}: {}", e.message());
        assert!(e.message().contains("initializer `W`"), "{}", e.message());
    };
    let not_inside = "not a relative path inside the model's folder";
    refused(&escape, Some("16"), not_inside);
    refused("../etc/hostname", None, not_inside);
    refused(&absolute, Some("16"), not_inside);
    refused("/dev/zero", None, not_inside);
    refused("", None, not_inside);
    #[cfg(unix)]
    refused("link.bin", Some("16"), "leads out of the model's folder");
    refused("sub", None, "not a regular file");
    // A length other than what the tensor needs, or past the end of the file.
    refused("weights.bin", Some("1000000000"), "need 16");
    std::fs::write(dir.join("short.bin"), &bytes[..12]).expect("write");
    refused("short.bin", None, "which has only 12");
    // Without a length, exactly the tensor's bytes are read from the offset.
    let g = import_with(
        &external_model_at("./weights.bin", None),
        &dir,
        &OnnxOptions::default(),
    )
    .expect("imports");
    let y = run(&g, &[Tensor::new(vec![1, 2], vec![1.0, 1.0])]);
    assert_eq!(y[0].data, [4.0, 6.0]);
    let _ = std::fs::remove_file(outside);
}

#[test]
fn truncated_and_corrupt_files_are_errors() {
    let bytes = small_cnn().0.to_bytes();
    // Every prefix either fails cleanly or (rarely, at a field boundary) imports.
    let step = (bytes.len() / 400).max(1);
    let mut errors = 0;
    for len in (0..bytes.len()).step_by(step) {
        match load_bytes(
            &bytes[..len],
            "cut.onnx",
            "cut",
            Path::new("."),
            &OnnxOptions::default(),
        ) {
            Ok(_) => {}
            Err(e) => {
                assert!(e.message().starts_with("cut.onnx: "), "{}", e.message());
                errors += 1;
            }
        }
    }
    assert!(errors > 0);
    let e = load_bytes(
        &bytes[..bytes.len() / 2],
        "cut.onnx",
        "cut",
        Path::new("."),
        &OnnxOptions::default(),
    )
    .expect_err("half a file");
    assert!(
        e.message().contains("truncated or corrupt"),
        "{}",
        e.message()
    );
    // Garbage and flipped bytes never panic.
    let mut flipped = bytes.clone();
    for i in (0..flipped.len()).step_by(97) {
        flipped[i] ^= 0xa5;
        let _ = load_bytes(
            &flipped,
            "x.onnx",
            "x",
            Path::new("."),
            &OnnxOptions::default(),
        );
    }
    assert!(
        load_bytes(
            b"hello, world",
            "x.onnx",
            "x",
            Path::new("."),
            &OnnxOptions::default()
        )
        .is_err()
    );
    // A missing file names itself.
    let e = bnc_frontend::onnx::load(
        Path::new("/nonexistent/model.onnx"),
        &OnnxOptions::default(),
    )
    .expect_err("error");
    assert!(e.message().contains("/nonexistent/model.onnx"));
}

#[test]
fn opset_out_of_range() {
    let mut m = single(25, &[1, 2]);
    m.node("Relu", &["x"], &["y"], vec![]);
    m.output("y");
    let e = import_err(&m);
    assert!(e.contains("opset 25 is not supported"), "{e}");
}

#[test]
fn shape_errors_are_reported_not_panics() {
    // Conv weight that does not fit the input channels.
    let mut m = single(17, &[1, 3, 4, 4]);
    m.initializer("w", &[2, 4, 1, 1], &[0.0; 8]);
    m.node("Conv", &["x", "w"], &["y"], vec![]);
    m.output("y");
    assert!(import_err(&m).contains("does not fit 3 input channels"));
    // Raw data of the wrong length.
    let mut m = single(17, &[1, 2]);
    let mut t = float_tensor("W", &[2, 2], &[1.0, 2.0, 3.0]);
    t.name = Some("W".into());
    m.graph().initializer.push(t);
    m.node("MatMul", &["x", "W"], &["y"], vec![]);
    m.output("y");
    assert!(import_err(&m).contains("initializer `W` has 12 bytes"));
    // A node reading an undefined name.
    let mut m = single(17, &[1, 2]);
    m.node("Relu", &["nothing"], &["y"], vec![]);
    m.output("y");
    assert!(import_err(&m).contains("`nothing`"));
}

#[test]
fn failures_downstream_of_a_failure_are_listed_too() {
    // Not a channel shuffle (the Transpose swaps H and W of the 5-D view): the error names
    // the Transpose and says which permutation a 5-D channel view may take.
    let mut m = single(17, &[1, 4, 2, 2]);
    m.initializer_i64("s5", &[5], &[1, 2, 2, 2, 2]);
    m.initializer_i64("s4", &[4], &[1, 4, 2, 2]);
    m.node("Reshape", &["x", "s5"], &["r5"], vec![]);
    m.node(
        "Transpose",
        &["r5"],
        &["t"],
        vec![attr_ints("perm", &[0, 1, 2, 4, 3])],
    );
    m.node("Reshape", &["t", "s4"], &["r4"], vec![]);
    m.initializer_i64("st", &[1], &[0])
        .initializer_i64("en", &[1], &[2]);
    m.initializer_i64("ax", &[1], &[1]);
    m.node("Slice", &["r4", "st", "en", "ax"], &["y"], vec![]);
    m.output("y");
    let e = import_err(&m);
    assert!(e.contains("node `t` (Transpose, opset 17)"), "{e}");
    assert!(e.contains("bnc accepts only perm [0, 2, 1, 3, 4]"), "{e}");
    assert!(
        e.contains("unsupported operators in this file: Transpose"),
        "{e}"
    );
}

/// Found by fuzzing the importer and by reading it (issue #12): each must be a clear error,
/// never a panic, an abort on a huge allocation, or a size that wraps.
#[test]
fn hostile_shapes_and_attributes_are_errors() {
    use bnc_frontend::onnx::builder::attr_int;
    let refused = |m: &ModelBuilder, why: &str| {
        let e = import_with(m, Path::new("."), &OnnxOptions::default()).expect_err(why);
        assert!(e.message().contains(why), "{}", e.message());
    };
    // A Shape node with no inputs.
    let mut m = single(17, &[1, 2, 4, 4]);
    m.node("Shape", &[], &["s"], vec![]);
    m.node("Relu", &["x"], &["y"], vec![]);
    m.output("y");
    let _ = import_with(&m, Path::new("."), &OnnxOptions::default());
    // Pads of 2^40.
    let mut m = single(17, &[1, 2, 4, 4]);
    m.initializer_i64("p", &[8], &[0, 0, 1 << 40, 0, 0, 0, 1 << 40, 0]);
    m.node("Pad", &["x", "p"], &["y"], vec![]);
    m.output("y");
    refused(&m, "too large");
    // An input whose element count wraps to 0 in 64 bits.
    let mut m = single(17, &[1 << 40, 1 << 40, 4]);
    m.node("Relu", &["x"], &["y"], vec![]);
    m.output("y");
    refused(&m, "too large");
    // ConstantOfShape of 2^34 elements.
    let mut m = single(17, &[1, 2]);
    m.initializer_i64("shape", &[2], &[1 << 17, 1 << 17]);
    m.node("ConstantOfShape", &["shape"], &["c"], vec![]);
    m.node("Add", &["x", "c"], &["y"], vec![]);
    m.output("y");
    refused(&m, "too large");
    // Clip with a NaN bound: it would print `min = NaN`, which bnc cannot parse back.
    let mut m = single(17, &[1, 2]);
    m.initializer("lo", &[], &[f32::NAN]);
    m.node("Clip", &["x", "lo"], &["y"], vec![]);
    m.output("y");
    refused(&m, "NaN");
    // A conv whose group count overflows the channel product.
    let mut m = single(17, &[1, 2, 4, 4]);
    m.initializer("w", &[2, 2, 1, 1], &[0.5; 4]);
    m.node(
        "Conv",
        &["x", "w"],
        &["y"],
        vec![attr_int("group", i64::MAX)],
    );
    m.output("y");
    refused(&m, "group");
    // Slice with the largest step, on a constant: no overflow.
    let mut m = single(17, &[1, 4]);
    m.initializer("k", &[4], &[1.0, 2.0, 3.0, 4.0]);
    m.initializer_i64("st", &[1], &[0]);
    m.initializer_i64("en", &[1], &[4]);
    m.initializer_i64("ax", &[1], &[0]);
    m.initializer_i64("step", &[1], &[i64::MAX]);
    m.node("Slice", &["k", "st", "en", "ax", "step"], &["s"], vec![]);
    m.node("Shape", &["s"], &["n"], vec![]);
    m.node("Relu", &["x"], &["y"], vec![]);
    m.output("y");
    let _ = import_with(&m, Path::new("."), &OnnxOptions::default());
}

// ----- Resize / Upsample ------------------------------------------------------------------

/// A Resize of a 1x1x2x2 input `[[1, 2], [3, 4]]` with the given inputs (after `x`) and
/// attributes, imported and run by the interpreter.
fn resize_2x2(
    opset: i64,
    op: &str,
    inits: &[(&str, Vec<f32>)],
    sizes: Option<&[i64]>,
    attrs: Vec<bnc_frontend::onnx::proto::AttributeProto>,
) -> Result<(Graph, Vec<f32>), String> {
    let mut m = single(opset, &[1, 1, 2, 2]);
    let mut names = vec!["x".to_string()];
    for (name, v) in inits {
        if v.is_empty() {
            m.initializer(name, &[0], &[]);
        } else {
            m.initializer(name, &[v.len()], v);
        }
        names.push(name.to_string());
    }
    if let Some(s) = sizes {
        m.initializer_i64("sizes", &[s.len()], s);
        names.push("sizes".into());
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    m.node(op, &names, &["y"], attrs);
    m.output("y");
    let g = import_with(&m, Path::new("."), &OnnxOptions::default())
        .map_err(|e| e.message().to_string())?;
    let x = Tensor::new(vec![1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]);
    let y = run(&g, &[x]).remove(0);
    Ok((g, y.data))
}

fn close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "got {got:?}, want {want:?}");
    }
}

/// What torch.onnx.export writes for `F.interpolate(x, scale_factor=2, mode='nearest')`
/// (opset 11+): scales `[1, 1, 2, 2]`, asymmetric, floor. Values by hand.
#[test]
fn resize_nearest_scale_factor_2() {
    let attrs = || {
        vec![
            attr_string("coordinate_transformation_mode", "asymmetric"),
            attr_float("cubic_coeff_a", -0.75),
            attr_string("mode", "nearest"),
            attr_string("nearest_mode", "floor"),
        ]
    };
    let want = [
        1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 3.0, 3.0, 4.0, 4.0,
    ];
    for opset in [11, 13, 18] {
        let (g, y) = resize_2x2(
            opset,
            "Resize",
            &[("roi", vec![]), ("scales", vec![1.0, 1.0, 2.0, 2.0])],
            None,
            attrs(),
        )
        .unwrap();
        assert_eq!(ops(&g), ["resize"]);
        close(&y, &want);
        let text = bnc_ir::printer::print(&g);
        assert!(
            text.contains("resize(x, mode = \"nearest\", size = [0, 0], scale = [2.0, 2.0], coordinates = \"asymmetric\", nearest_mode = \"floor\")"),
            "{text}"
        );
    }
    // Opset 9 Upsample (scales input) and opset 7 (scales attribute), and Resize-10.
    let (_, y) = resize_2x2(
        9,
        "Upsample",
        &[("scales", vec![1.0, 1.0, 2.0, 2.0])],
        None,
        vec![],
    )
    .unwrap();
    close(&y, &want);
    let (_, y) = resize_2x2(
        10,
        "Resize",
        &[("scales", vec![1.0, 1.0, 2.0, 2.0])],
        None,
        vec![],
    )
    .unwrap();
    close(&y, &want);
    let mut m = single(7, &[1, 1, 2, 2]);
    let mut scales = attr_ints("scales", &[]);
    scales.floats = vec![1.0, 1.0, 2.0, 2.0];
    m.node("Upsample", &["x"], &["y"], vec![scales]);
    m.output("y");
    let g = import(&m);
    let x = Tensor::new(vec![1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]);
    close(&run(&g, &[x])[0].data, &want);
}

/// `F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)`: linear with
/// pytorch_half_pixel (the TorchScript exporter) or half_pixel (the dynamo exporter); the
/// values are PyTorch's for `[[1, 2], [3, 4]]`.
#[test]
fn resize_bilinear_align_corners_false() {
    let want = [
        1.0, 1.25, 1.75, 2.0, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3.0, 3.25, 3.75, 4.0,
    ];
    for coordinates in ["pytorch_half_pixel", "half_pixel"] {
        let (g, y) = resize_2x2(
            13,
            "Resize",
            &[("roi", vec![]), ("scales", vec![1.0, 1.0, 2.0, 2.0])],
            None,
            vec![
                attr_string("coordinate_transformation_mode", coordinates),
                attr_string("mode", "linear"),
                attr_string("nearest_mode", "floor"),
            ],
        )
        .unwrap();
        assert_eq!(g.shape(g.outputs[0]), &vec![1, 1, 4, 4]);
        close(&y, &want);
    }
}

/// `align_corners=True`: corners stay, the inside is evenly spaced (thirds for 2 -> 4).
#[test]
fn resize_bilinear_align_corners_true() {
    let (_, y) = resize_2x2(
        11,
        "Resize",
        &[("roi", vec![]), ("scales", vec![1.0, 1.0, 2.0, 2.0])],
        None,
        vec![
            attr_string("coordinate_transformation_mode", "align_corners"),
            attr_string("mode", "linear"),
        ],
    )
    .unwrap();
    let row = |a: f32| [a, a + 1.0 / 3.0, a + 2.0 / 3.0, a + 1.0];
    let want: Vec<f32> = [1.0, 1.0 + 2.0 / 3.0, 1.0 + 4.0 / 3.0, 3.0]
        .iter()
        .flat_map(|&a| row(a))
        .collect();
    close(&y, &want);
}

/// `nn.Upsample(size=(3, 5))` (nearest): sizes input, empty scales; the `.nn` model with
/// `size` computes the same, and the printed graph parses again to it.
#[test]
fn resize_upsample_size() {
    let (g, y) = resize_2x2(
        13,
        "Resize",
        &[("roi", vec![]), ("scales", vec![])],
        Some(&[1, 1, 3, 5]),
        vec![
            attr_string("coordinate_transformation_mode", "asymmetric"),
            attr_string("mode", "nearest"),
            attr_string("nearest_mode", "floor"),
        ],
    )
    .unwrap();
    assert_eq!(g.shape(g.outputs[0]), &vec![1, 1, 3, 5]);
    // Rows 0, 0, 1 (floor(oy·2/3)); columns 0, 0, 0, 1, 1 (floor(ox·2/5)).
    close(
        &y,
        &[
            1.0, 1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 4.0,
        ],
    );
    // The model has no parameters: read it back with random weights.
    let src: String = bnc_ir::printer::print(&g)
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("weights ") {
                "  weights random(seed = 1)\n".to_string()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let again = reference(&src);
    assert_eq!(bnc_ir::printer::print(&again), src);
    // opset 18 with axes [2, 3]: sizes for H and W only.
    let (g, _) = resize_2x2(
        18,
        "Resize",
        &[("roi", vec![]), ("scales", vec![])],
        Some(&[3, 5]),
        vec![attr_ints("axes", &[2, 3]), attr_string("mode", "nearest")],
    )
    .unwrap();
    assert_eq!(g.shape(g.outputs[0]), &vec![1, 1, 3, 5]);
}

/// What bnc does not resize says so, naming the node.
#[test]
fn resize_errors() {
    let s4 = || vec![("roi", vec![]), ("scales", vec![1.0, 1.0, 2.0, 2.0])];
    let err = |r: Result<(Graph, Vec<f32>), String>| r.expect_err("an error");
    let e = err(resize_2x2(
        13,
        "Resize",
        &s4(),
        None,
        vec![attr_string("mode", "cubic")],
    ));
    assert!(
        e.contains("mode `cubic` is not supported") && e.contains("Resize"),
        "{e}"
    );
    let e = err(resize_2x2(
        13,
        "Resize",
        &s4(),
        None,
        vec![attr_string(
            "coordinate_transformation_mode",
            "tf_crop_and_resize",
        )],
    ));
    assert!(e.contains("tf_crop_and_resize"), "{e}");
    let e = err(resize_2x2(
        13,
        "Resize",
        &[("roi", vec![]), ("scales", vec![1.0, 2.0, 2.0, 2.0])],
        None,
        vec![],
    ));
    assert!(e.contains("resize N or C"), "{e}");
    let e = err(resize_2x2(
        18,
        "Resize",
        &[("roi", vec![]), ("scales", vec![0.5, 0.5])],
        None,
        vec![
            attr_ints("axes", &[2, 3]),
            attr_string("mode", "linear"),
            attr_int("antialias", 1),
        ],
    ));
    assert!(e.contains("antialias"), "{e}");
    let e = err(resize_2x2(
        18,
        "Resize",
        &[("roi", vec![]), ("scales", vec![])],
        Some(&[1, 1, 3, 5]),
        vec![attr_string("keep_aspect_ratio_policy", "not_larger")],
    ));
    assert!(e.contains("keep_aspect_ratio_policy"), "{e}");
    let e = err(resize_2x2(
        18,
        "Resize",
        &s4(),
        None,
        vec![attr_ints("axes", &[1, 2])],
    ));
    assert!(e.contains("axes"), "{e}");
}
