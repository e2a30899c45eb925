//! `fold-egraph`: exactness against the reference interpreter, and how many batch-norms it
//! removes compared with the baselines.

mod common;

use bnc::ir::{Graph, Op, Tensor, interp};
use bnc::passes::egraph::FoldEGraphPass;
use bnc::passes::{self, Pass, PassContext, PrintAfter};

/// Largest error allowed, relative to the largest output magnitude. A wrong fold at padded
/// borders is often only ~1e-3 off after global pooling, so this must stay tight.
const REL_TOLERANCE: f32 = 1e-5;

fn fold(graph: &Graph, passes: &[&str]) -> (Graph, PassContext) {
    let mut g = graph.clone();
    let mut ctx = PassContext::default();
    let pipeline = passes::resolve(passes).unwrap();
    passes::run_pipeline(
        &mut g,
        &pipeline,
        &mut ctx,
        &PrintAfter::Never,
        &mut |_, _| {},
    )
    .unwrap();
    (g, ctx)
}

fn fold_egraph(graph: &Graph) -> (Graph, PassContext) {
    let (mut g, mut ctx) = fold(graph, &["canonicalize"]);
    FoldEGraphPass::default().run(&mut g, &mut ctx).unwrap();
    g.verify().unwrap();
    (g, ctx)
}

fn affines_left(g: &Graph) -> usize {
    g.count_ops(|op| matches!(op, Op::Affine | Op::BatchNorm { .. }))
}

fn seeded(shape: &[usize]) -> Tensor {
    bnc::frontend::random_normal(3, "input", shape)
}

fn assert_same_function(a: &Graph, b: &Graph, what: &str) {
    let inputs: Vec<Tensor> = a.inputs.iter().map(|&i| seeded(a.shape(i))).collect();
    let ya = interp::run(a, &inputs).unwrap();
    let yb = interp::run(b, &inputs).unwrap();
    for (x, y) in ya.iter().zip(&yb) {
        let err = x.max_abs_diff(y);
        assert!(
            err <= REL_TOLERANCE * x.max_abs(),
            "{what}: differs by {err} (max |y| {})",
            x.max_abs()
        );
    }
}

#[test]
fn examples_fold_exactly() {
    for name in [
        "tiny.nn",
        "vgg_post_bn.nn",
        "preact_resnet18.nn",
        "resnet18.nn",
        "densenet121.nn",
        "mobilenet_v2.nn",
    ] {
        let g = common::load(&common::example(name));
        let (adj, _) = fold(&g, &["canonicalize", "fold-adjacent", "dce"]);
        let (eg, mut ctx) = fold_egraph(&g);
        ctx.report.measure(&g, &eg);
        let stats = ctx.report.saturation.clone().unwrap();
        eprintln!(
            "{name}: BNs {} adjacent leaves {} egraph leaves {} (shift-only {}) cost {} -> {} sat {:.0} ms extract {:.0} ms",
            g.count_ops(|op| matches!(op, Op::BatchNorm { .. })),
            affines_left(&adj),
            affines_left(&eg),
            ctx.report.shift_only_left,
            stats.cost_before,
            stats.cost_after,
            stats.saturation_ms,
            stats.extraction_ms,
        );
        assert_same_function(&g, &eg, name);
    }
}
