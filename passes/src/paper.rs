//! `fold-paper`: folds every batch-norm (an `affine` after canonicalization) backward or
//! forward through the roots/leaves closure of [`crate::closure`], with compensation in the
//! layers that must keep seeing the original signal. Each BN is decided on the current graph,
//! in topological order, backward first.

use bnc_ir::{Graph, Op};

use crate::closure::{self, Direction};
use crate::manager::{Pass, PassContext};
use crate::report::Fate;

pub struct FoldPaper;

impl Pass for FoldPaper {
    fn name(&self) -> &'static str {
        "fold-paper"
    }

    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<(), String> {
        // Node indices stay valid: bypassed targets are only marked dead until the end.
        let pending: Vec<(usize, String)> = graph
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.op == Op::Affine)
            .map(|(i, n)| (i, graph.value(n.output).name.clone()))
            .filter(|(_, name)| ctx.report.fate(name).is_some())
            .collect();
        let mut index = closure::Index::new(graph);
        for (node, bn) in pending {
            let fate = fold_one(graph, &mut index, node);
            ctx.report.set_fate(&bn, fate);
        }
        graph.remove_dead();
        Ok(())
    }
}

/// Folds the affine at `node` if a plan evaluates, and says what became of it.
fn fold_one(graph: &mut Graph, index: &mut closure::Index, node: usize) -> Fate {
    let (plan, fate) = match closure::plan_indexed(graph, index, node, Direction::Backward) {
        Ok(plan) => {
            let fate = Fate::FoldedBackward {
                into: plan.roots(),
                compensated: plan.leaves(),
            };
            (plan, fate)
        }
        Err(backward) => match closure::plan_indexed(graph, index, node, Direction::Forward) {
            Ok(plan) => {
                let into = plan.leaves();
                let compensated = plan
                    .roots()
                    .into_iter()
                    .filter(|r| !into.contains(r))
                    .collect();
                let fate = Fate::FoldedForward {
                    into,
                    pad_fill: plan.pad_fill(),
                    compensated,
                };
                (plan, fate)
            }
            Err(forward) => {
                return Fate::Kept {
                    reason: format!("backward: {backward}; forward: {forward}"),
                    blocking: Some(backward.node),
                };
            }
        },
    };
    closure::apply_indexed(graph, index, plan);
    fate
}
