//! Every example model (with its batch-norms, which codegen folds into affine epilogues)
//! compiled and compared with the reference interpreter.

mod common;
use std::path::Path;

use bnc_codegen::{Options, TargetCpu, compile};
use common::{MODEL_TOL, check_with, inputs, run_compiled};

fn example(name: &str) -> bnc_ir::Graph {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(format!("{name}.nn"));
    bnc_frontend::load_file(&path).unwrap_or_else(|e| panic!("{name}: {e:?}"))
}

fn check_model(name: &str, threads: usize) {
    let g = example(name);
    let t = std::time::Instant::now();
    let err = check_with(&g, threads, MODEL_TOL);
    eprintln!(
        "{name}: worst relative error {err:.2e} ({:.1?})",
        t.elapsed()
    );
}

#[test]
fn small_models() {
    for name in ["tiny", "vgg_post_bn", "preact_resnet18", "resnet18"] {
        check_model(name, 1);
    }
}

#[test]
fn mobile_models() {
    for name in ["mobilenet_v2", "efficientnet_b0"] {
        check_model(name, 2);
    }
}

#[test]
fn big_models() {
    for name in ["resnet50", "vgg11_bn", "densenet121"] {
        check_model(name, 2);
    }
}

/// The x86-64-v2 fallback (pure Cranelift f32x4, no AVX/FMA) gives the same results as the
/// wide kernels the host picks, within the model tolerance.
#[test]
fn fallback_x86_64_v2_matches_wide() {
    for name in ["resnet18", "mobilenet_v2"] {
        let g = example(name);
        let ins = inputs(&g, 3);
        let wide = run_compiled(&compile(&g, &Options::default()).unwrap(), &ins);
        let v2 = Options {
            target_cpu: TargetCpu::X86_64V2,
            threads: 2,
            ..Options::default()
        };
        let fb = run_compiled(&compile(&g, &v2).unwrap(), &ins);
        for (a, b) in wide.iter().zip(&fb) {
            let err = a.max_abs_diff(b) / a.max_abs().max(1.0);
            assert!(err <= MODEL_TOL, "{name}: x86-64-v2 differs by {err}");
            eprintln!("{name}: wide vs x86-64-v2 relative difference {err:.2e}");
        }
    }
}

#[test]
fn every_example_is_covered() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let covered = [
        "tiny",
        "vgg_post_bn",
        "preact_resnet18",
        "resnet18",
        "mobilenet_v2",
        "efficientnet_b0",
        "resnet50",
        "vgg11_bn",
        "densenet121",
    ];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "nn") {
            let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
            assert!(
                covered.contains(&stem.as_str()),
                "example {stem} is not tested"
            );
        }
    }
}
