//! Every example model loads, has the architecture it claims, and runs in the reference
//! interpreter to finite outputs.

mod common;

use bnc::ir::{Op, Tensor, interp};

fn batchnorms(g: &bnc::Graph) -> usize {
    g.count_ops(|op| matches!(op, Op::BatchNorm { .. }))
}

fn parameter_count(g: &bnc::Graph) -> usize {
    // Learned parameters as torchvision counts them (BN running statistics excluded).
    g.params
        .iter()
        .filter(|(name, _)| !name.ends_with(".running_mean") && !name.ends_with(".running_var"))
        .map(|(_, t)| t.numel())
        .sum()
}

#[test]
fn examples_have_the_published_batchnorm_and_parameter_counts() {
    // (file, BN layers, learned parameters as torchvision reports them)
    let expected = [
        ("resnet18.nn", 20, Some(11_689_512)),
        ("resnet50.nn", 53, Some(25_557_032)),
        ("mobilenet_v2.nn", 52, Some(3_504_872)),
        ("efficientnet_b0.nn", 49, Some(5_288_548)),
        ("densenet121.nn", 121, Some(7_978_856)),
        ("vgg11_bn.nn", 8, Some(132_868_840)),
        ("preact_resnet18.nn", 17, None),
    ];
    for (file, bns, params) in expected {
        let g = common::load(&common::example(file));
        assert_eq!(batchnorms(&g), bns, "{file}: BN count");
        if let Some(params) = params {
            assert_eq!(parameter_count(&g), params, "{file}: parameter count");
        }
        assert_eq!(
            g.shape(g.outputs[0]),
            &vec![1, 1000],
            "{file}: logits shape"
        );
    }
}

fn seeded_input(shape: &[usize]) -> Tensor {
    let n = shape.iter().product::<usize>();
    Tensor::new(
        shape.to_vec(),
        (0..n)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
            .collect(),
    )
}

/// Runs the interpreter on every example: outputs are finite and not constant (a model whose
/// activations vanish or explode would hide folding errors later).
#[test]
fn every_example_runs_in_the_interpreter() {
    for path in common::example_models() {
        let g = common::load(&path);
        let inputs: Vec<Tensor> = g.inputs.iter().map(|&i| seeded_input(g.shape(i))).collect();
        let outputs =
            interp::run(&g, &inputs).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (t, &id) in outputs.iter().zip(&g.outputs) {
            assert_eq!(&t.shape, g.shape(id));
            assert!(
                t.data.iter().all(|v| v.is_finite()),
                "{}: non-finite output",
                path.display()
            );
            let spread = t.data.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v))
                - t.data.iter().fold(f32::INFINITY, |m, &v| m.min(v));
            assert!(
                spread > 1e-3,
                "{}: output is (nearly) constant",
                path.display()
            );
            // Random BN statistics do not normalise, so residual streams grow (resnet50 reaches
            // ~3e4); the bound only catches a model whose activations explode.
            assert!(
                t.max_abs() < 1e6,
                "{}: output blew up (max |y| = {})",
                path.display(),
                t.max_abs()
            );
        }
    }
}
