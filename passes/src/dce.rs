//! Dead-code elimination: nodes nothing reads, values and parameters nothing refers to.

use bnc_ir::Graph;

use crate::manager::{Pass, PassContext};

pub struct DeadCode;

impl Pass for DeadCode {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn run(&self, graph: &mut Graph, _ctx: &mut PassContext) -> Result<(), String> {
        graph.remove_dead();
        Ok(())
    }
}
