//! ONNX through the command line and the facade: `bnc import` writes a `.nn` + safetensors
//! pair that runs like the ONNX file itself; every command takes `.onnx` directly; errors
//! exit with status 1 and say what is wrong.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bnc::frontend::onnx::builder::{Dim, ModelBuilder, attr_int, attr_ints};
use bnc::ir::Tensor;

fn bnc(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bnc"))
        .args(args)
        .args(["--color", "never"])
        .current_dir(dir)
        .output()
        .expect("bnc starts")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bnc-onnx-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Deterministic values in [-0.5, 0.5).
fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 1000) as f32 / 1000.0 - 0.5
        })
        .collect()
}

/// conv → BN → relu → conv (bias) → BN → global pool → flatten → Gemm, with PyTorch-style
/// names, and an optional dynamic batch.
fn cnn(batch: Dim) -> ModelBuilder {
    let mut m = ModelBuilder::new(17);
    m.input_dims(
        "input",
        &[batch, Dim::Fixed(3), Dim::Fixed(8), Dim::Fixed(8)],
    );
    m.initializer("conv1.weight", &[6, 3, 3, 3], &values(162, 1));
    m.initializer("conv2.weight", &[6, 6, 3, 3], &values(324, 2));
    m.initializer("conv2.bias", &[6], &values(6, 3));
    for (bn, seed) in [("bn1", 10), ("bn2", 20)] {
        m.initializer(
            &format!("{bn}.weight"),
            &[6],
            &values(6, seed).iter().map(|v| v + 1.0).collect::<Vec<_>>(),
        );
        m.initializer(&format!("{bn}.bias"), &[6], &values(6, seed + 1));
        m.initializer(&format!("{bn}.running_mean"), &[6], &values(6, seed + 2));
        m.initializer(
            &format!("{bn}.running_var"),
            &[6],
            &values(6, seed + 3)
                .iter()
                .map(|v| v + 1.0)
                .collect::<Vec<_>>(),
        );
    }
    m.initializer("fc.weight", &[4, 6], &values(24, 4));
    m.initializer("fc.bias", &[4], &values(4, 5));
    let bn = |p: &str| -> Vec<String> {
        ["weight", "bias", "running_mean", "running_var"]
            .iter()
            .map(|s| format!("{p}.{s}"))
            .collect()
    };
    m.node(
        "Conv",
        &["input", "conv1.weight"],
        &["/conv1/Conv_output_0"],
        vec![attr_ints("pads", &[1, 1, 1, 1])],
    );
    let b1 = bn("bn1");
    m.node(
        "BatchNormalization",
        &["/conv1/Conv_output_0", &b1[0], &b1[1], &b1[2], &b1[3]],
        &["/bn1/BatchNormalization_output_0"],
        vec![],
    );
    m.node(
        "Relu",
        &["/bn1/BatchNormalization_output_0"],
        &["/relu/Relu_output_0"],
        vec![],
    );
    m.node(
        "Conv",
        &["/relu/Relu_output_0", "conv2.weight", "conv2.bias"],
        &["/conv2/Conv_output_0"],
        vec![attr_ints("pads", &[1, 1, 1, 1])],
    );
    let b2 = bn("bn2");
    m.node(
        "BatchNormalization",
        &["/conv2/Conv_output_0", &b2[0], &b2[1], &b2[2], &b2[3]],
        &["/bn2/BatchNormalization_output_0"],
        vec![],
    );
    m.node(
        "GlobalAveragePool",
        &["/bn2/BatchNormalization_output_0"],
        &["/pool/GlobalAveragePool_output_0"],
        vec![],
    );
    m.node(
        "Flatten",
        &["/pool/GlobalAveragePool_output_0"],
        &["/Flatten_output_0"],
        vec![attr_int("axis", 1)],
    );
    m.node(
        "Gemm",
        &["/Flatten_output_0", "fc.weight", "fc.bias"],
        &["logits"],
        vec![attr_int("transB", 1)],
    );
    m.output("logits");
    m
}

fn write_onnx(dir: &Path, name: &str, m: &ModelBuilder) {
    std::fs::write(dir.join(name), m.to_bytes()).unwrap();
}

fn write_input(dir: &Path) {
    let x = Tensor::new(vec![1, 3, 8, 8], values(192, 99));
    bnc::npy::write(&dir.join("x.npy"), &x).unwrap();
}

fn read(dir: &Path, name: &str) -> Tensor {
    bnc::npy::read(&dir.join(name)).unwrap()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "bnc failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn import_writes_nn_and_weights_that_run_like_the_onnx_file() {
    let dir = scratch("import");
    write_onnx(&dir, "cnn.onnx", &cnn(Dim::Fixed(1)));
    write_input(&dir);
    let out = bnc(&dir, &["import", "cnn.onnx", "-o", "out/model.nn"]);
    ok(&out);
    assert!(
        text(&out.stderr).contains("2 batch-norm(s)"),
        "{}",
        text(&out.stderr)
    );
    let nn = std::fs::read_to_string(dir.join("out/model.nn")).unwrap();
    assert!(nn.contains("weights \"model.safetensors\""), "{nn}");
    assert!(nn.contains("params = \"conv1\""), "{nn}");
    assert!(nn.contains("conv1.conv = conv2d("), "{nn}");
    assert!(dir.join("out/model.safetensors").exists());

    // Interpreter on the .nn and on the .onnx: bit-identical.
    ok(&bnc(
        &dir,
        &[
            "run",
            "out/model.nn",
            "--interpret",
            "-i",
            "x.npy",
            "-o",
            "a.npy",
        ],
    ));
    ok(&bnc(
        &dir,
        &[
            "run",
            "cnn.onnx",
            "--interpret",
            "-i",
            "x.npy",
            "-o",
            "b.npy",
        ],
    ));
    let (a, b) = (read(&dir, "a.npy"), read(&dir, "b.npy"));
    assert_eq!(a, b);
    assert_eq!(a.shape, [1, 4]);
    // Compiled (BNs folded) agrees closely.
    let out = bnc(
        &dir,
        &[
            "run",
            "cnn.onnx",
            "-i",
            "x.npy",
            "-o",
            "c.npy",
            "--repeat",
            "3",
            "--threads",
            "2",
        ],
    );
    ok(&out);
    assert!(
        text(&out.stderr).contains("repeat: 3 runs, median"),
        "{}",
        text(&out.stderr)
    );
    let c = read(&dir, "c.npy");
    assert!(
        c.max_abs_diff(&a) <= 1e-4 * a.max_abs().max(1.0),
        "{:?} vs {:?}",
        c.data,
        a.data
    );

    // fold and the default compile command take ONNX too.
    let out = bnc(&dir, &["fold", "cnn.onnx", "--report=json"]);
    ok(&out);
    assert!(text(&out.stdout).contains("\"fate\": \"folded_backward\""));
    let out = bnc(&dir, &["cnn.onnx", "--emit=ir"]);
    ok(&out);
    assert!(text(&out.stdout).starts_with("model cnn {"));
}

#[test]
fn facade_loads_onnx() {
    let dir = scratch("facade");
    write_onnx(&dir, "cnn.onnx", &cnn(Dim::Fixed(1)));
    let model =
        bnc::Model::from_file(dir.join("cnn.onnx"), &bnc::CompileOptions::default()).unwrap();
    assert_eq!(model.input_names(), ["input"]);
    assert_eq!(model.output_shapes(), [vec![1, 4]]);
    assert_eq!(model.report().folded(), 2);
    let graph = bnc::load_file(&dir.join("cnn.onnx")).unwrap();
    let x = Tensor::new(vec![1, 3, 8, 8], values(192, 99));
    let want = bnc::ir::interp::run(&graph, std::slice::from_ref(&x)).unwrap();
    let got = model.run_tensors(&[x]).unwrap();
    assert!(got[0].max_abs_diff(&want[0]) <= 1e-4);
}

#[test]
fn dynamic_batch_needs_input_shape() {
    let dir = scratch("dynamic");
    write_onnx(&dir, "dyn.onnx", &cnn(Dim::Symbolic("batch_size".into())));
    let out = bnc(&dir, &["run", "dyn.onnx"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("dynamic dimension `batch_size`"), "{err}");
    assert!(
        err.contains("--input-shape") && err.contains("input=1,3,8,8"),
        "{err}"
    );
    let out = bnc(&dir, &["run", "dyn.onnx", "--input-shape", "input=2,3,8,8"]);
    ok(&out);
    assert!(
        text(&out.stdout).contains("logits: f32[2, 4]"),
        "{}",
        text(&out.stdout)
    );
    let out = bnc(
        &dir,
        &["import", "dyn.onnx", "--input-shape", "input=1,3,8,8"],
    );
    ok(&out);
    assert!(dir.join("dyn.nn").exists() && dir.join("dyn.safetensors").exists());
    // Only for ONNX models.
    let out = bnc(&dir, &["run", "dyn.nn", "--input-shape", "input=1,3,8,8"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("ONNX models only"));
}

#[test]
fn unsupported_operators_fail_with_the_full_list() {
    let dir = scratch("unsupported");
    let mut m = ModelBuilder::new(13);
    m.input("x", &[1, 4, 2, 2]);
    // Not [0, 2, 3, 1]: that is an NHWC view, imported when operators on the last axis
    // read it.
    m.node(
        "Transpose",
        &["x"],
        &["t"],
        vec![attr_ints("perm", &[0, 2, 1, 3])],
    );
    m.node("Erf", &["x"], &["e"], vec![]);
    m.node("Einsum", &["x"], &["s"], vec![]);
    m.output("t").output("e").output("s");
    write_onnx(&dir, "bad.onnx", &m);
    for args in [
        &["import", "bad.onnx"][..],
        &["run", "bad.onnx"],
        &["bad.onnx"],
    ] {
        let out = bnc(&dir, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains("node `t` (Transpose, opset 13)"), "{err}");
        assert!(err.contains("Einsum, Erf, Transpose"), "{err}");
    }
    assert!(!dir.join("bad.nn").exists());
    // A truncated file.
    let bytes = cnn(Dim::Fixed(1)).to_bytes();
    std::fs::write(dir.join("cut.onnx"), &bytes[..bytes.len() / 3]).unwrap();
    let out = bnc(&dir, &["import", "cut.onnx"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("truncated or corrupt"),
        "{}",
        text(&out.stderr)
    );
    // import takes only ONNX.
    let out = bnc(&dir, &["import", "model.nn"]);
    assert_eq!(out.status.code(), Some(1));
}
