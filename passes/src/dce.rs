//! Dead-code elimination: nodes nothing reads, values and parameters nothing refers to.

use std::collections::HashSet;

use bnc_ir::{Graph, ValueId};

use crate::manager::{Pass, PassContext};

pub struct DeadCode;

impl Pass for DeadCode {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<(), String> {
        // A batch-norm that only dies here (no fold pass claimed it) is reported as removed.
        ctx.report.record_dead(graph);
        graph.remove_dead();
        Ok(())
    }
}

/// Indices of the nodes whose results reach no graph output (what `remove_dead` removes).
pub fn dead_nodes(graph: &Graph) -> Vec<usize> {
    let mut live: HashSet<ValueId> = graph.outputs.iter().copied().collect();
    let mut dead = Vec::new();
    for (i, node) in graph.nodes.iter().enumerate().rev() {
        if live.contains(&node.output) {
            live.extend(node.inputs.iter().copied());
        } else {
            dead.push(i);
        }
    }
    dead.reverse();
    dead
}
