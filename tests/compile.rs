//! The library facade: every example model, folded by the default pipeline and compiled with
//! Cranelift, computes what the reference interpreter computes on the model as parsed.

mod common;

use std::path::Path;

use bnc::ir::{Tensor, interp};
use bnc::{CompileOptions, Error, Model};

/// Allowed difference between the compiled, folded model and the interpreter on the unfolded
/// model, relative to the largest output magnitude: max|y - y_ref| <= TOLERANCE * max|y_ref|.
///
/// The two differ only in rounding. The interpreter accumulates in f64; compiled kernels
/// accumulate in f32 (with FMA where the host has it) in a blocked order, and folding rounds
/// the products `s * w` of BN scales and conv weights to f32. Each layer adds a few f32 ulps
/// of relative error (≈ 6e-8 each) scaled by sqrt(fan-in) at worst, and the random
/// (un-normalising) BN statistics of the examples amplify activations through deep residual
/// stacks. The worst case measured over the examples is 7e-5 (efficientnet_b0, the same
/// with folding off, so it comes from f32 evaluation; most are below 1e-6: run with
/// --nocapture to see them). 1e-3 keeps a wide margin while still catching any real mistake
/// (a wrong weight, channel or padding value changes outputs by O(1) relative to max|y|).
const TOLERANCE: f32 = 1e-3;

/// The big models take most of the time: they share one test (one thread of the runner).
const SLOW: &[&str] = &["resnet50.nn", "vgg11_bn.nn", "densenet121.nn"];

fn seeded_inputs(g: &bnc::Graph) -> Vec<Tensor> {
    g.inputs
        .iter()
        .map(|&i| {
            let v = g.value(i);
            bnc::frontend::random_normal(7, &v.name, &v.shape)
        })
        .collect()
}

/// Compiles `path` through the facade and compares with the interpreter; returns the
/// relative error.
fn check_model(path: &Path) -> f32 {
    let parsed = common::load(path);
    let inputs = seeded_inputs(&parsed);
    let expected = interp::run(&parsed, &inputs).unwrap();
    let model = Model::from_graph(&parsed, &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(model.input_shapes().len(), parsed.inputs.len());
    let outputs = model.run_tensors(&inputs).unwrap();
    let mut worst = 0f32;
    for (y, y_ref) in outputs.iter().zip(&expected) {
        assert_eq!(y.shape, y_ref.shape);
        let scale = y_ref.max_abs().max(f32::MIN_POSITIVE);
        let rel = y.max_abs_diff(y_ref) / scale;
        assert!(
            rel <= TOLERANCE,
            "{}: compiled output differs from the interpreter by {rel:e} of max|y| (> {TOLERANCE:e})",
            path.display()
        );
        worst = worst.max(rel);
    }
    eprintln!(
        "{}: max rel. error {worst:.2e}, {} of {} BNs folded, {} kernels, compiled in {:.0} ms",
        path.file_name().unwrap().to_string_lossy(),
        model.report().folded(),
        model.report().batchnorms.len(),
        model.compiled().kernel_count(),
        model.compile_time().as_secs_f64() * 1e3
    );
    worst
}

#[test]
fn small_examples_match_the_interpreter() {
    let models: Vec<_> = common::example_models()
        .into_iter()
        .filter(|p| !SLOW.contains(&p.file_name().unwrap().to_str().unwrap()))
        .collect();
    assert!(models.len() >= 5, "examples missing: {models:?}");
    for path in models {
        check_model(&path);
    }
}

#[test]
fn big_examples_match_the_interpreter() {
    for name in SLOW {
        check_model(&common::example(name));
    }
}

#[test]
fn from_file_folds_and_reports() {
    let model = Model::from_file(common::example("resnet18.nn"), &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(model.input_shapes(), vec![vec![1, 3, 224, 224]]);
    assert_eq!(model.output_shapes(), vec![vec![1, 1000]]);
    assert_eq!(model.report().batchnorms.len(), 20);
    assert!(model.report().folded() > 0, "nothing folded");
    assert!(model.graph().nodes.len() < common::load(&common::example("resnet18.nn")).nodes.len());
    assert!(!model.pass_timings().is_empty());
}

#[test]
fn fold_none_keeps_every_batchnorm_and_still_matches() {
    let path = common::example("tiny.nn");
    let parsed = common::load(&path);
    let inputs = seeded_inputs(&parsed);
    let expected = interp::run(&parsed, &inputs).unwrap();
    let options = CompileOptions {
        fold: bnc::FoldMode::None,
        ..CompileOptions::default()
    };
    let model = Model::from_graph(&parsed, &options).unwrap();
    assert_eq!(model.report().folded(), 0);
    let y = model.run_tensors(&inputs).unwrap();
    assert!(y[0].max_abs_diff(&expected[0]) <= TOLERANCE * expected[0].max_abs());
}

#[test]
fn two_threads_give_bit_identical_outputs() {
    for name in ["tiny.nn", "mobilenet_v2.nn", "resnet18.nn"] {
        let parsed = common::load(&common::example(name));
        let inputs = seeded_inputs(&parsed);
        let run = |threads| {
            let model = Model::from_graph(
                &parsed,
                &CompileOptions {
                    threads,
                    ..CompileOptions::default()
                },
            )
            .unwrap();
            assert_eq!(model.threads(), threads);
            model.run_tensors(&inputs).unwrap()
        };
        let (one, two) = (run(1), run(2));
        for (a, b) in one.iter().zip(&two) {
            let same = a
                .data
                .iter()
                .zip(&b.data)
                .all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{name}: threads=2 differs from threads=1");
        }
    }
}

#[test]
fn a_model_is_shared_between_threads() {
    let parsed = common::load(&common::example("tiny.nn"));
    let inputs = seeded_inputs(&parsed);
    let model = Model::from_graph(&parsed, &CompileOptions::default()).unwrap();
    let expected = model.run_tensors(&inputs).unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| model.run_tensors(&inputs).unwrap()))
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), expected);
        }
    });
    // A caller-owned workspace gives the same result.
    let mut ws = model.new_workspace();
    let mut out = vec![0f32; model.output_shapes()[0].iter().product()];
    model
        .run_with_workspace(&mut ws, &[&inputs[0].data], &mut [&mut out])
        .unwrap();
    assert_eq!(out, expected[0].data);
}

#[test]
fn wrong_buffers_are_errors_not_panics() {
    let model = Model::from_file(common::example("tiny.nn"), &CompileOptions::default()).unwrap();
    let n_in: usize = model.input_shapes()[0].iter().product();
    let n_out: usize = model.output_shapes()[0].iter().product();
    let x = vec![0.25f32; n_in];
    let mut y = vec![0f32; n_out];

    let e = model.run(&[&x[..n_in - 1]], &mut [&mut y]).unwrap_err();
    assert!(matches!(e, Error::Length { what: "input", got, .. } if got == n_in - 1));
    let message = e.to_string();
    assert!(
        message.contains(&n_in.to_string()) && message.contains("[1, 3, 32, 32]"),
        "{message}"
    );

    let mut short = vec![0f32; n_out + 1];
    let e = model.run(&[&x], &mut [&mut short]).unwrap_err();
    assert!(matches!(e, Error::Length { what: "output", .. }), "{e}");

    let e = model.run(&[], &mut [&mut y]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Count {
                what: "input",
                expected: 1,
                got: 0,
                ..
            }
        ),
        "{e}"
    );
    let e = model.run(&[&x, &x], &mut [&mut y]).unwrap_err();
    assert!(matches!(e, Error::Count { got: 2, .. }), "{e}");
    let e = model.run(&[&x], &mut []).unwrap_err();
    assert!(matches!(e, Error::Count { what: "output", .. }), "{e}");

    let e = model
        .run_tensors(&[Tensor::zeros(vec![1, 3, 16, 16])])
        .unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");

    // And the right buffers work.
    model.run(&[&x], &mut [&mut y]).unwrap();
    assert!(y.iter().all(|v| v.is_finite()));
}

#[test]
fn loading_errors_are_reported_with_their_location() {
    let e = Model::from_file("no/such/model.nn", &CompileOptions::default()).unwrap_err();
    assert!(matches!(e, Error::Frontend(_)));
    assert!(e.to_string().contains("model.nn"), "{e}");

    let bad = "model bad {\n  weights random(seed = 1)\n  input x: f32[1, 3, 8, 8]\n  y = frobnicate(x)\n  output y\n}\n";
    let e = bnc::load_str(bad, "bad.nn", Path::new(".")).unwrap_err();
    let e = Error::from(e);
    assert!(e.to_string().starts_with("bad.nn:4:7:"), "{e}");
}

#[test]
fn a_bad_pass_list_is_an_error() {
    let g = common::load(&common::example("tiny.nn"));
    let e = bnc::transform(
        &g,
        &bnc::Pipeline::from_names(["canonicalize", "no-such-pass"]),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(matches!(e, Error::Pipeline(_)));
    assert!(e.to_string().contains("no-such-pass"), "{e}");
}

#[test]
fn symbol_prefixes_are_c_identifiers() {
    assert_eq!(bnc::c_identifier("resnet18"), "resnet18");
    assert_eq!(bnc::c_identifier("resnet-18.v2"), "resnet_18_v2");
    assert_eq!(bnc::c_identifier("3x3"), "_3x3");
    assert_eq!(bnc::c_identifier(""), "model");
    for name in ["resnet-18", "3x3", "", "a b"] {
        assert!(bnc::is_c_identifier(&bnc::c_identifier(name)));
    }
    assert!(!bnc::is_c_identifier("1a"));
}

/// An FPN-style neck: two lateral convs with BN and relu, the coarse level upsampled
/// (bilinear and nearest) and concatenated with the fine one, then a 3x3 conv; and a
/// segmentation head's final 8x bilinear upsampling. Folded by the default pipeline,
/// compiled, at 1 and 2 threads, against the interpreter on the model as written.
#[test]
fn fpn_neck_with_resize_matches_the_interpreter() {
    let src = r#"model neck {
      weights random(seed = 12)
      input c4: f32[1, 64, 14, 14]
      input c3: f32[1, 32, 28, 28]
      l4 = conv2d(c4, out = 32, kernel = 1)
      b4 = batchnorm(l4)
      r4 = relu(b4)
      up = resize(r4, mode = "bilinear", scale = 2, coordinates = "pytorch_half_pixel")
      l3 = conv2d(c3, out = 32, kernel = 1)
      b3 = batchnorm(l3)
      r3 = relu(b3)
      near = resize(r4, size = [28, 28])
      cat = concat(up, r3, near)
      p3 = conv2d(cat, out = 16, kernel = 3, pad = 1)
      bp = batchnorm(p3)
      logits = conv2d(bp, out = 5, kernel = 1)
      head = resize(logits, mode = "bilinear", size = [224, 224], coordinates = "half_pixel")
      output head
    }"#;
    let parsed = bnc::frontend::load_str(src, "neck.nn", Path::new(".")).unwrap();
    let inputs = seeded_inputs(&parsed);
    let expected = interp::run(&parsed, &inputs).unwrap();
    let mut outs = Vec::new();
    for threads in [1, 2] {
        let opts = CompileOptions {
            threads,
            ..CompileOptions::default()
        };
        let model = Model::from_graph(&parsed, &opts).unwrap();
        let y = model.run_tensors(&inputs).unwrap().remove(0);
        let rel = y.max_abs_diff(&expected[0]) / expected[0].max_abs();
        eprintln!(
            "neck, {threads} thread(s): max rel. error {rel:.2e}, {} of {} BNs folded",
            model.report().folded(),
            model.report().batchnorms.len()
        );
        assert!(rel <= TOLERANCE, "{threads} thread(s): {rel:e}");
        outs.push(y);
    }
    assert_eq!(outs[0].data, outs[1].data, "2 threads differ from 1");
}
