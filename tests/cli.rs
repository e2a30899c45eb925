//! The `bnc` command line: help, emitting IR, object files (linked into a C program), CLIF
//! and assembly, running compiled and interpreted with `.npy` files, exit codes.

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

/// Compiled code accumulates in f32 (in a blocked order, with FMA where the host has it), the
/// interpreter in f64: outputs agree to max|y - y_ref| <= TOLERANCE * max|y_ref|. Measured:
/// about 1e-7 on tiny, up to 7e-5 on efficientnet_b0 (deep, with SiLU gates); the margin
/// is the same as in tests/compile.rs, which explains the choice.
const TOLERANCE: f32 = 1e-3;

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
    for needle in [
        "--emit",
        "--timings",
        "Exit status",
        "run",
        "--symbol-prefix",
        "obj",
        "header",
        "clif",
        "asm",
        "_forward",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
    let out = bnc(&["run", "--help"]);
    let help = text(&out.stdout);
    for needle in ["--input", "--output", "--interpret", "--seed", "--threads"] {
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
    // As parsed, interpreted: bit-identical to the interpreter run in this process.
    assert_eq!(run(&["--passes=", "--interpret"]), expected);
    // Folded (the default pipeline), interpreted: equal up to float rounding.
    let folded = run(&["--interpret"]);
    assert!(
        folded.max_abs_diff(&expected) <= 1e-5 * expected.max_abs(),
        "folded run differs"
    );
    // Compiled (the default engine), folded or not: equal up to f32 accumulation order.
    for extra in [&[][..], &["--passes="], &["--threads", "2"]] {
        let compiled = run(extra);
        assert!(
            compiled.max_abs_diff(&expected) <= TOLERANCE * expected.max_abs(),
            "compiled run {extra:?} differs by {}",
            compiled.max_abs_diff(&expected)
        );
    }
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

/// A deterministic input for `graph`'s first input, saved as `.npy`.
fn input_file(graph: &bnc::Graph, name: &str) -> (Tensor, std::path::PathBuf) {
    let v = graph.value(graph.inputs[0]);
    let x = bnc::frontend::random_normal(3, &v.name, &v.shape);
    let path = scratch(name);
    bnc::npy::write(&path, &x).unwrap();
    (x, path)
}

#[test]
fn run_compiled_agrees_with_interpret() {
    for model in ["tiny.nn", "efficientnet_b0.nn"] {
        let graph = common::load(&common::example(model));
        let (_, x_path) = input_file(&graph, &format!("agree-{model}.x.npy"));
        let run = |extra: &[&str], out: &str| {
            let y_path = scratch(&format!("agree-{model}.{out}.npy"));
            let mut args = vec!["run", "--input", x_path.to_str().unwrap()];
            args.extend(["--output", y_path.to_str().unwrap()]);
            let model_path = format!("examples/{model}");
            args.push(&model_path);
            args.extend(extra);
            let out = bnc(&args);
            assert!(out.status.success(), "{model}: {}", text(&out.stderr));
            bnc::npy::read(&y_path).unwrap()
        };
        let compiled = run(&[], "compiled");
        let interpreted = run(&["--interpret"], "interpreted");
        assert_eq!(compiled.shape, interpreted.shape);
        let diff = compiled.max_abs_diff(&interpreted);
        assert!(
            diff <= TOLERANCE * interpreted.max_abs(),
            "{model}: compiled and interpreted differ by {diff} (max |y| {})",
            interpreted.max_abs()
        );
        // Threads do not change a single bit.
        assert_eq!(run(&["--threads", "2"], "threads2"), compiled);
    }
}

#[test]
fn run_reports_compile_and_run_times() {
    let out = bnc(&["run", "examples/tiny.nn", "--timings"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("timing: compile") && err.contains("timing: run"),
        "{err}"
    );
    let out = bnc(&["run", "examples/tiny.nn", "--timings", "--interpret"]);
    let err = text(&out.stderr);
    assert!(
        err.contains("timing: interpret") && !err.contains("timing: compile"),
        "{err}"
    );
}

#[test]
fn bad_thread_counts_and_prefixes_are_command_line_errors() {
    for args in [
        &["run", "examples/tiny.nn", "--threads", "0"][..],
        &["run", "examples/tiny.nn", "--threads", "many"],
        &[
            "examples/tiny.nn",
            "--emit=header",
            "--symbol-prefix",
            "1net",
        ],
        &[
            "examples/tiny.nn",
            "--emit=header",
            "--symbol-prefix",
            "a-b",
        ],
        // An object file is binary: it needs -o.
        &["examples/tiny.nn", "--emit=obj"],
    ] {
        let out = bnc(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn emit_header_declares_forward_and_workspace_size() {
    let out = bnc(&["examples/tiny.nn", "--emit=header"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let h = text(&out.stdout);
    for needle in [
        "tiny_forward(",
        "tiny_workspace_size(",
        "TINY_INPUT0_LEN 3072",
        "TINY_OUTPUT0_LEN 10",
    ] {
        assert!(h.contains(needle), "header lacks {needle}:\n{h}");
    }
    // The prefix can be chosen, and -o x.h implies --emit=header.
    let path = scratch("named.h");
    let out = bnc(&[
        "examples/tiny.nn",
        "--symbol-prefix",
        "net",
        "-o",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let h = std::fs::read_to_string(&path).unwrap();
    assert!(
        h.contains("net_forward(") && h.contains("net_workspace_size(") && !h.contains("tiny_"),
        "{h}"
    );
}

#[test]
fn emit_plan_shows_each_kernels_path_for_the_level_and_threads_asked() {
    // The folded model: tiny's two BNs are gone, so each conv kernel computes conv + relu.
    let args = ["examples/tiny.nn", "--emit=plan", "--target-cpu=x86-64-v4"];
    let out = bnc(&[&args[..], &["--threads", "2"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    for needle in [
        "plan target x86-64-v4 gemm avx512 12x32 threads 2",
        "k0_c1 <- %c1, %r1",
        "direct tap-masked",
        "maxpool in-place",
        "%f view of %g at 0",
    ] {
        assert!(plan.contains(needle), "no `{needle}` in\n{plan}");
    }
    let v2 = text(&bnc(&["examples/tiny.nn", "--emit=plan", "--target-cpu=x86-64-v2"]).stdout);
    assert!(
        v2.contains("gemm f32x4 conv 3x3 3->16") && !v2.contains("direct"),
        "{v2}"
    );
    // -o x.plan implies the format.
    let path = scratch("t.plan");
    let out = bnc(&["examples/tiny.nn", "-o", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .contains("kernels\n")
    );
}

#[test]
fn emit_clif_and_asm_show_the_generated_functions() {
    let clif = bnc(&["examples/tiny.nn", "--emit=clif"]);
    assert!(clif.status.success(), "{}", text(&clif.stderr));
    let clif = text(&clif.stdout);
    assert!(
        clif.contains("function ") && clif.contains("block0") && clif.contains("return"),
        "{}",
        &clif[..clif.len().min(2000)]
    );
    let asm = bnc(&["examples/tiny.nn", "--emit=asm"]);
    assert!(asm.status.success(), "{}", text(&asm.stderr));
    let asm = text(&asm.stdout);
    assert!(
        asm.contains("function") && asm.contains("ret"),
        "{}",
        &asm[..asm.len().min(2000)]
    );
    // -o x.clif / x.s imply the format.
    for (file, needle) in [("t.clif", "block0"), ("t.s", "ret")] {
        let path = scratch(file);
        let out = bnc(&["examples/tiny.nn", "-o", path.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(std::fs::read_to_string(&path).unwrap().contains(needle));
    }
}

#[test]
fn emit_ir_stays_the_default_and_wins_over_the_extension() {
    let out = bnc(&["examples/tiny.nn"]);
    assert!(text(&out.stdout).starts_with("model tiny"));
    let path = scratch("ir-despite.o");
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
            .starts_with("model tiny")
    );
}

/// The C program of docs/design.md §4: reads the raw f32 input from argv[1], runs the model and
/// writes the raw f32 output to argv[2].
fn c_driver(prefix: &str) -> String {
    let upper = prefix.to_ascii_uppercase();
    format!(
        r#"#include <stdio.h>
#include <stdlib.h>
#include "{prefix}.h"

static float x[{upper}_INPUT0_LEN];
static float y[{upper}_OUTPUT0_LEN];

int main(int argc, char **argv) {{
    if (argc != 3) return 2;
    FILE *f = fopen(argv[1], "rb");
    if (!f || fread(x, sizeof(float), {upper}_INPUT0_LEN, f) != {upper}_INPUT0_LEN) return 3;
    fclose(f);
    if ({prefix}_workspace_size() != {upper}_WORKSPACE_SIZE) return 4;
    void *ws = malloc({prefix}_workspace_size());
    if (!ws) return 5;
    const float *inputs[1] = {{ x }};
    float *outputs[1] = {{ y }};
    if ({prefix}_forward(inputs, outputs, ws) != 0) return 6;
    free(ws);
    f = fopen(argv[2], "wb");
    if (!f || fwrite(y, sizeof(float), {upper}_OUTPUT0_LEN, f) != {upper}_OUTPUT0_LEN) return 7;
    fclose(f);
    return 0;
}}
"#
    )
}

#[test]
fn emit_obj_links_into_a_c_program_that_matches_the_interpreter() {
    if Command::new("cc").arg("--version").output().is_err() {
        eprintln!("SKIPPED emit_obj_links_into_a_c_program...: no `cc` on PATH");
        return;
    }
    for (model, prefix) in [
        ("tiny.nn", "tiny"),
        ("efficientnet_b0.nn", "efficientnet_b0"),
    ] {
        let dir = scratch(&format!("c-{prefix}"));
        std::fs::create_dir_all(&dir).unwrap();
        let obj = dir.join(format!("{prefix}.o"));
        // `-o x.o` implies --emit=obj; the header goes beside it; the prefix is the model name.
        let out = bnc(&[&format!("examples/{model}"), "-o", obj.to_str().unwrap()]);
        assert!(out.status.success(), "{model}: {}", text(&out.stderr));
        assert!(dir.join(format!("{prefix}.h")).exists());
        std::fs::write(dir.join("main.c"), c_driver(prefix)).unwrap();
        let cc = Command::new("cc")
            .args(["main.c", &format!("{prefix}.o"), "-o", "app"])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(cc.status.success(), "cc failed:\n{}", text(&cc.stderr));

        let graph = common::load(&common::example(model));
        let v = graph.value(graph.inputs[0]);
        let x = bnc::frontend::random_normal(11, &v.name, &v.shape);
        let bytes: Vec<u8> = x.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(dir.join("x.bin"), bytes).unwrap();
        let app = Command::new(dir.join("app"))
            .args(["x.bin", "y.bin"])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            app.status.success(),
            "{model}: the C program failed: {app:?}"
        );
        let y: Vec<f32> = std::fs::read(dir.join("y.bin"))
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let expected = interp::run(&graph, &[x]).unwrap().remove(0);
        let y = Tensor::new(expected.shape.clone(), y);
        let diff = y.max_abs_diff(&expected);
        assert!(
            diff <= TOLERANCE * expected.max_abs(),
            "{model}: the C program's output differs from the interpreter by {diff}"
        );
    }
}

#[test]
fn fold_writes_a_model_and_weights_that_load_and_compute_the_same() {
    // A model where folding compensates another reader and folds forward with pad fill.
    for model in [
        "tests/golden/paper_residual.nn",
        "tests/golden/egraph_forward_pad_fill.nn",
    ] {
        let dir =
            std::env::temp_dir().join(format!("bnc-fold-{}-{}", std::process::id(), model.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("folded.nn");
        let run = bnc(&["fold", model, "-o", out.to_str().unwrap()]);
        assert!(run.status.success(), "{}", text(&run.stderr));
        assert!(
            text(&run.stdout).contains("folded away"),
            "{}",
            text(&run.stdout)
        );
        let printed = std::fs::read_to_string(&out).unwrap();
        assert!(
            printed.contains("weights \"folded.safetensors\""),
            "{printed}"
        );
        assert!(dir.join("folded.safetensors").exists());

        let original = common::load(&common::root().join(model));
        let folded = common::load(&out);
        assert!(
            folded
                .count_ops(|op| matches!(op, bnc::ir::Op::BatchNorm { .. } | bnc::ir::Op::Affine))
                < original.count_ops(|op| matches!(op, bnc::ir::Op::BatchNorm { .. }))
        );
        let shape = original.shape(original.inputs[0]).clone();
        let x = bnc::frontend::random_normal(1, "x", &shape);
        let want = interp::run(&original, std::slice::from_ref(&x)).unwrap();
        let got = interp::run(&folded, &[x]).unwrap();
        for (w, g) in want.iter().zip(&got) {
            assert!(
                w.max_abs_diff(g) <= 1e-5 * w.max_abs(),
                "{model}: folded model differs"
            );
        }
    }
}

#[test]
fn target_cpu_selects_the_instruction_set() {
    let x_path = scratch("tc_x.npy");
    let graph = common::load(&common::example("tiny.nn"));
    let x = bnc::frontend::random_normal(3, "x", graph.shape(graph.inputs[0]));
    bnc::npy::write(&x_path, &x).unwrap();
    let want = interp::run(&graph, &[x]).unwrap().remove(0);
    for level in ["x86-64-v2", "native"] {
        let y_path = scratch(&format!("tc_{level}.npy"));
        let out = bnc(&[
            "run",
            "examples/tiny.nn",
            "--target-cpu",
            level,
            "-i",
            x_path.to_str().unwrap(),
            "-o",
            y_path.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{level}: {}", text(&out.stderr));
        let y = bnc::npy::read(&y_path).unwrap();
        assert!(
            y.max_abs_diff(&want) <= 1e-4 * want.max_abs(),
            "{level}: differs from the interpreter"
        );
    }
    let bad = bnc(&["run", "examples/tiny.nn", "--target-cpu", "pentium"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("x86-64-v3"),
        "{}",
        text(&bad.stderr)
    );
    // `multi` is for objects: `run` refuses it as a command-line error; an object builds.
    let jit = bnc(&["run", "examples/tiny.nn", "--target-cpu", "multi"]);
    assert_eq!(jit.status.code(), Some(2));
    assert!(
        text(&jit.stderr).contains("object"),
        "{}",
        text(&jit.stderr)
    );
    let o_path = scratch("tc_multi.o");
    let obj = bnc(&[
        "examples/tiny.nn",
        "--emit=obj",
        "--target-cpu=multi",
        "-o",
        o_path.to_str().unwrap(),
    ]);
    assert!(obj.status.success(), "{}", text(&obj.stderr));
    assert!(std::fs::metadata(&o_path).unwrap().len() > 0);
}

/// Issue #12's command-line contract: a closed pipe is not an error, command-line mistakes
/// exit 2, fold passes canonicalize what they need, and every file written is named.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_bnc"))
        .args(["examples/tiny.nn", "--emit=ir", "--color", "never"])
        .current_dir(common::root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bnc starts");
    // Close our end of the pipe before bnc writes: its write fails with EPIPE.
    drop(child.stdout.take());
    let status = child.wait().expect("bnc ends");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert!(status.code() == Some(0), "{status:?}: {err}");
}

#[test]
fn pipeline_and_target_mistakes_are_command_line_errors() {
    let out = bnc(&["examples/tiny.nn", "--passes=canonicalize,fold-egrap"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("fold-egrap"));
    let out = bnc(&["run", "examples/tiny.nn", "--target-cpu=multi"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("multi"));
}

#[test]
fn a_fold_pass_alone_canonicalizes_first() {
    let model = scratch("identity.nn");
    std::fs::write(
        &model,
        "model m {\n weights random(seed = 1)\n input x: f32[1, 2, 4, 4]\n c = conv2d(x, out = 2, kernel = 1)\n i = identity(c)\n b = batchnorm(i)\n output b\n}\n",
    )
    .unwrap();
    for pass in ["fold-egraph", "fold-paper", "fold-adjacent"] {
        let out = bnc(&[model.to_str().unwrap(), &format!("--passes={pass}")]);
        assert!(out.status.success(), "{pass}: {}", text(&out.stderr));
        assert!(
            !text(&out.stdout).contains("batchnorm"),
            "{pass}:\n{}",
            text(&out.stdout)
        );
    }
}

#[test]
fn written_files_are_named_and_follow_the_umask() {
    let dir = scratch("written");
    std::fs::create_dir_all(&dir).unwrap();
    let folded = dir.join("f.nn");
    let out = bnc(&["fold", "examples/tiny.nn", "-o", folded.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("wrote") && err.contains("f.safetensors"),
        "{err}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The test runs with the default umask (022 or stricter for group/other writes).
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode(&dir.join("f.safetensors")),
            mode(&folded),
            "weights and model get the same permissions"
        );
    }
    // An object's header replacing an existing file says so.
    let object = dir.join("app.o");
    std::fs::write(dir.join("app.h"), "/* mine */").unwrap();
    let out = bnc(&["examples/tiny.nn", "-o", object.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("app.o") && err.contains("app.h"), "{err}");
    assert!(err.contains("replacing"), "{err}");
}

#[test]
fn hostile_or_wrong_npy_inputs_are_clear_errors() {
    let npy = |name: &str, header: &str, data: &[u8]| {
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        let path = scratch(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let run_with = |path: &std::path::Path| {
        let start = std::time::Instant::now();
        let out = bnc(&["run", "examples/tiny.nn", "-i", path.to_str().unwrap()]);
        assert!(start.elapsed().as_secs() < 20, "took {:?}", start.elapsed());
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(
            err.contains(path.file_name().unwrap().to_str().unwrap()),
            "{err}"
        );
        err
    };
    // 14 nested braces took the header parser 32 s; refused before it runs.
    let nested = npy(
        "nested.npy",
        &format!("{}{}", "{".repeat(14), "}".repeat(14)),
        &[],
    );
    assert!(run_with(&nested).contains("nest too deep"));
    let not_npy = scratch("plain.npy");
    std::fs::write(&not_npy, "hello").unwrap();
    assert!(run_with(&not_npy).contains("not a .npy file"));
    // A shape far larger than the data is refused before anything is allocated.
    let huge = npy(
        "huge.npy",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }",
        &[0; 16],
    );
    assert!(run_with(&huge).contains("needs more data"));
    // Found by the npy_input fuzz target: a `)` before the shape's `(` panicked the check.
    let backwards = npy(
        "backwards.npy",
        "{'descr': '<f4', 'fortran_order': False, 'shape':  )  ('shape', (1, ), }",
        &[0; 16],
    );
    run_with(&backwards);
    // A well-formed file of the wrong shape names the file.
    let small = npy(
        "small.npy",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
        &[0; 8],
    );
    assert!(run_with(&small).contains("small.npy: input"));
}

/// The C example in examples/c/ builds against an object bnc writes, runs, and prints what
/// `bnc run` computes on the same input.
#[test]
fn the_c_example_matches_bnc_run() {
    if Command::new("cc").arg("--version").output().is_err() {
        eprintln!("SKIPPED the_c_example_matches_bnc_run: no `cc` on PATH");
        return;
    }
    let dir = scratch("c-example");
    std::fs::create_dir_all(&dir).unwrap();
    let obj = dir.join("model.o");
    let out = bnc(&[
        "examples/tiny.nn",
        "-o",
        obj.to_str().unwrap(),
        "--symbol-prefix",
        "model",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let app = dir.join("app");
    let cc = Command::new("cc")
        .arg("-I")
        .arg(&dir)
        .arg(common::root().join("examples/c/main.c"))
        .arg(&obj)
        .arg("-o")
        .arg(&app)
        .output()
        .unwrap();
    assert!(cc.status.success(), "cc failed:\n{}", text(&cc.stderr));

    let graph = common::load(&common::example("tiny.nn"));
    let v = graph.value(graph.inputs[0]);
    let x = bnc::frontend::random_normal(5, &v.name, &v.shape);
    let raw: Vec<u8> = x.data.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.join("x.f32"), raw).unwrap();
    bnc::npy::write(&dir.join("x.npy"), &x).unwrap();
    let ran = Command::new(&app).arg(dir.join("x.f32")).output().unwrap();
    assert!(ran.status.success(), "{}", text(&ran.stderr));
    let from_c: Vec<f32> = text(&ran.stdout)
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let y = dir.join("y.npy");
    let out = bnc(&[
        "run",
        "examples/tiny.nn",
        "-i",
        dir.join("x.npy").to_str().unwrap(),
        "-o",
        y.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let want = bnc::npy::read(&y).unwrap();
    assert_eq!(from_c.len(), want.data.len());
    let got = Tensor::new(want.shape.clone(), from_c);
    // The object targets x86-64-v3 and the JIT this host: only rounding may differ.
    assert!(
        got.max_abs_diff(&want) <= 1e-5 * want.max_abs(),
        "the C example differs from `bnc run` by {}",
        got.max_abs_diff(&want)
    );
}

/// With less memory than a model within the limits needs, the random weights, the random
/// inputs and the run's workspace are errors (exit 1), not aborts. `ulimit -v` (1 GiB of
/// address space) stands in for a small machine; the model limit is raised to let them by.
#[test]
fn running_out_of_memory_is_an_error_not_an_abort() {
    let models = [
        // 2 GiB of dense weights.
        (
            "oom_weights.nn",
            "input x: f32[1, 16384]\n  y = dense(x, out = 32768)",
            "weights `y.weight`",
        ),
        // A 2 GiB random input.
        (
            "oom_input.nn",
            "input x: f32[1, 1, 16384, 32768]\n  y = relu(x)",
            "input `x`",
        ),
        // A 1 GiB padded map inside: the workspace.
        (
            "oom_workspace.nn",
            "input x: f32[1, 1, 1, 1]\n  p = pad(x, pads = [0, 0, 16383, 16383], value = 1.0)\n  \
             r = relu(p)\n  y = global_avgpool(r)",
            "workspace",
        ),
    ];
    for (file, body, what) in models {
        let path = scratch(file);
        let source = format!("model m {{\n  weights random(seed = 1)\n  {body}\n  output y\n}}\n");
        std::fs::write(&path, source).unwrap();
        let out = Command::new("sh")
            .arg("-c")
            .arg("ulimit -v 1048576 && exec \"$0\" run \"$1\"")
            .arg(env!("CARGO_BIN_EXE_bnc"))
            .arg(&path)
            .env("BNC_MAX_MODEL_BYTES", "17179869184")
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{file}: {stderr}");
        assert!(
            stderr.contains("out of memory") && stderr.contains(what),
            "{file}: {stderr}"
        );
    }
}
