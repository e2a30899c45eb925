//! Writes the seed corpus of the `onnx_bytes` fuzz target: small ONNX models covering the
//! operators and attribute forms the importer maps.
//!
//! `cargo run -p bnc-frontend --example onnx_seeds -- fuzz/seeds/onnx_bytes`

use std::path::PathBuf;

use bnc_frontend::onnx::builder::{
    ModelBuilder, attr_float, attr_int, attr_ints, attr_tensor, int_tensor,
};

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

/// Conv, BatchNormalization, activations, pools, Flatten and Gemm: a small CNN.
fn cnn() -> ModelBuilder {
    let mut m = ModelBuilder::new(17);
    m.input("x", &[1, 3, 8, 8]);
    m.initializer("w1", &[4, 3, 3, 3], &values(108, 1))
        .initializer("b1", &[4], &values(4, 2));
    for (k, p) in ["g", "beta", "mean"].iter().enumerate() {
        m.initializer(p, &[4], &values(4, 3 + k as u32));
    }
    m.initializer("var", &[4], &[1.0, 0.5, 2.0, 1e-3]);
    m.initializer("fc.w", &[5, 4], &values(20, 7))
        .initializer("fc.b", &[5], &values(5, 8));
    m.node(
        "Conv",
        &["x", "w1", "b1"],
        &["c1"],
        vec![
            attr_ints("pads", &[1, 1, 1, 1]),
            attr_ints("strides", &[1, 1]),
        ],
    );
    m.node(
        "BatchNormalization",
        &["c1", "g", "beta", "mean", "var"],
        &["bn"],
        vec![attr_float("epsilon", 1e-5)],
    );
    m.node("Relu", &["bn"], &["r"], vec![]);
    m.node(
        "MaxPool",
        &["r"],
        &["mp"],
        vec![
            attr_ints("kernel_shape", &[2, 2]),
            attr_ints("strides", &[2, 2]),
        ],
    );
    m.node(
        "AveragePool",
        &["mp"],
        &["ap"],
        vec![
            attr_ints("kernel_shape", &[3, 3]),
            attr_ints("pads", &[1, 1, 1, 1]),
            attr_int("count_include_pad", 0),
        ],
    );
    m.node("Add", &["ap", "mp"], &["a"], vec![]);
    m.node("GlobalAveragePool", &["a"], &["gp"], vec![]);
    m.node("Flatten", &["gp"], &["fl"], vec![attr_int("axis", 1)]);
    m.node(
        "Gemm",
        &["fl", "fc.w", "fc.b"],
        &["y"],
        vec![attr_int("transB", 1)],
    );
    m.output("y");
    m
}

/// Shape arithmetic: Shape, Constant, Concat, Reshape, Pad, Clip, Sigmoid, Mul.
fn shapes() -> ModelBuilder {
    let mut m = ModelBuilder::new(17);
    m.input("x", &[1, 4, 4, 4]);
    m.initializer_i64("pads", &[8], &[0, 0, 1, 1, 0, 0, 1, 1]);
    m.node(
        "Constant",
        &[],
        &["shape"],
        vec![attr_tensor("value", int_tensor("shape", &[2], &[1, -1]))],
    );
    m.node("Pad", &["x", "pads"], &["p"], vec![]);
    m.node(
        "Clip",
        &["p"],
        &["cl"],
        vec![attr_float("min", -1.0), attr_float("max", 1.0)],
    );
    m.node("Sigmoid", &["cl"], &["s"], vec![]);
    m.node("Mul", &["cl", "s"], &["m"], vec![]);
    m.node("Concat", &["m", "m"], &["cat"], vec![attr_int("axis", 1)]);
    m.node("Shape", &["cat"], &["sh"], vec![]);
    m.node("Reshape", &["cat", "sh"], &["same"], vec![]);
    m.node("Reshape", &["same", "shape"], &["y"], vec![]);
    m.output("y");
    m
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "seeds".into()));
    std::fs::create_dir_all(&dir).expect("seed folder");
    for (name, model) in [("cnn.onnx", cnn()), ("shapes.onnx", shapes())] {
        let path = dir.join(name);
        std::fs::write(&path, model.to_bytes()).expect("seed file");
        println!("wrote {}", path.display());
    }
}
