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
        // (batch-norm name, name of the value its affine computes now)
        let mut pending: Vec<(String, String)> = graph
            .nodes
            .iter()
            .filter(|n| n.op == Op::Affine)
            .map(|n| graph.value(n.output).name.clone())
            .filter(|name| ctx.report.fate(name).is_some())
            .map(|name| (name.clone(), name))
            .collect();
        for k in 0..pending.len() {
            let (bn, current) = pending[k].clone();
            let Some(index) = graph
                .nodes
                .iter()
                .position(|n| n.op == Op::Affine && graph.value(n.output).name == current)
            else {
                continue;
            };
            let fate = fold_one(graph, index, &mut pending);
            ctx.report.set_fate(&bn, fate);
        }
        Ok(())
    }
}

/// Folds the affine at `index` if a plan evaluates, and says what became of it.
fn fold_one(graph: &mut Graph, index: usize, pending: &mut [(String, String)]) -> Fate {
    let (plan, fate) = match closure::plan(graph, index, Direction::Backward) {
        Ok(plan) => {
            let fate = Fate::FoldedBackward {
                into: plan.roots(),
                compensated: plan.leaves(),
            };
            (plan, fate)
        }
        Err(backward) => match closure::plan(graph, index, Direction::Forward) {
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
    // Bypassing a graph output renames the value that takes its place; keep track of it.
    let node = &graph.nodes[index];
    let (x, y) = (node.inputs[0], node.output);
    let renamed = graph
        .outputs
        .contains(&y)
        .then(|| (graph.value(x).name.clone(), graph.value(y).name.clone()));
    closure::apply(graph, plan);
    if let Some((old, new)) = renamed {
        for entry in pending.iter_mut().filter(|e| e.1 == old) {
            entry.1 = new.clone();
        }
    }
    fate
}
