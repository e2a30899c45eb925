//! The `bnc` command line: help, emitting IR, running with `.npy` files, exit codes.

mod common;

use std::process::{Command, Output};

use bnc::ir::{Tensor, interp};

fn bnc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bnc"))
        .args(args)
        .args(["--color", "never"])
        .current_dir(common::root())
        .output()
        .expect("bnc starts")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("bnc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn help_explains_options_and_exit_codes() {
    let out = bnc(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for needle in ["--emit", "--timings", "Exit status", "run"] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
    let out = bnc(&["run", "--help"]);
    let help = text(&out.stdout);
    for needle in ["--input", "--output", "--interpret", "--seed"] {
        assert!(help.contains(needle), "run --help lacks {needle}:\n{help}");
    }
}

#[test]
fn emit_ir_prints_a_model_that_parses_again() {
    // An empty pass list prints the model as parsed.
    let out = bnc(&["examples/tiny.nn", "--emit=ir", "--passes="]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    let again = bnc::load_str(&printed, "stdout.nn", &common::root().join("examples"))
        .unwrap_or_else(|e| panic!("{}", e.render(false)));
    assert!(again == common::load(&common::example("tiny.nn")));
}

#[test]
fn emit_ir_to_a_file() {
    let path = scratch("tiny.ir.nn");
    let out = bnc(&[
        "examples/tiny.nn",
        "--emit=ir",
        "-o",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .starts_with("model ")
    );
}

#[test]
fn run_reads_and_writes_npy_and_matches_the_interpreter() {
    let graph = common::load(&common::example("tiny.nn"));
    let shape = graph.shape(graph.inputs[0]).clone();
    let n = shape.iter().product::<usize>();
    let x = Tensor::new(
        shape,
        (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect(),
    );
    let (x_path, y_path) = (scratch("x.npy"), scratch("y.npy"));
    bnc::npy::write(&x_path, &x).unwrap();
    let expected = interp::run(&graph, &[x]).unwrap().remove(0);
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "examples/tiny.nn",
            "--input",
            x_path.to_str().unwrap(),
        ];
        args.extend(["--output", y_path.to_str().unwrap()]);
        args.extend(extra);
        let out = bnc(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        bnc::npy::read(&y_path).unwrap()
    };
    // As parsed: bit-identical to the interpreter run in this process.
    assert_eq!(run(&["--passes="]), expected);
    // Folded (the default pipeline): equal up to float rounding.
    let folded = run(&[]);
    assert!(
        folded.max_abs_diff(&expected) <= 1e-5 * expected.max_abs(),
        "folded run differs"
    );
}

#[test]
fn run_without_inputs_uses_seeded_random_data_and_summarises() {
    let a = bnc(&["run", "examples/tiny.nn", "--seed", "5"]);
    let b = bnc(&["run", "examples/tiny.nn", "--seed", "5"]);
    let c = bnc(&["run", "examples/tiny.nn", "--seed", "6"]);
    assert!(a.status.success(), "{}", text(&a.stderr));
    assert_eq!(a.stdout, b.stdout);
    assert_ne!(a.stdout, c.stdout);
    assert!(text(&a.stdout).contains("argmax"), "{}", text(&a.stdout));
}

#[test]
fn a_bad_model_exits_1_with_a_located_diagnostic() {
    let path = scratch("bad.nn");
    std::fs::write(
        &path,
        "model bad {\n  weights random(seed = 1)\n  input x: f32[1, 3, 8, 8]\n  y = frobnicate(x)\n  output y\n}\n",
    )
    .unwrap();
    let out = bnc(&[path.to_str().unwrap(), "--emit=ir"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("bad.nn:4:7"), "{err}");
    assert!(err.contains("frobnicate"), "{err}");
}

#[test]
fn a_missing_model_file_exits_1() {
    let out = bnc(&["no/such/model.nn"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("model.nn"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_bad_command_line_exits_2() {
    assert_eq!(
        bnc(&["examples/tiny.nn", "--emit=bogus"]).status.code(),
        Some(2)
    );
    assert_eq!(bnc(&["--no-such-flag"]).status.code(), Some(2));
    assert_eq!(bnc(&[]).status.code(), Some(2));
}

#[test]
fn run_rejects_inputs_of_the_wrong_shape_or_name() {
    let x_path = scratch("wrong.npy");
    bnc::npy::write(&x_path, &Tensor::zeros(vec![1, 3, 4, 4])).unwrap();
    let out = bnc(&[
        "run",
        "examples/tiny.nn",
        "--input",
        x_path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("[1, 3, 4, 4]") && err.contains("[1, 3, 32, 32]"),
        "{err}"
    );

    let named = format!("nosuch={}", x_path.display());
    let out = bnc(&["run", "examples/tiny.nn", "--input", &named]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no input named `nosuch`"),
        "{}",
        text(&out.stderr)
    );

    let missing = bnc(&["run", "examples/tiny.nn", "--input", "/no/such/file.npy"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("/no/such/file.npy"));
}

#[test]
fn timings_are_reported_on_request() {
    let out = bnc(&["--timings", "examples/tiny.nn"]);
    assert!(out.status.success());
    assert!(
        text(&out.stderr).contains("timing: parse+check+weights"),
        "{}",
        text(&out.stderr)
    );
}
