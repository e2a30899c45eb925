//! The adjacency baseline: fold an affine into the conv or dense layer right before it when
//! that layer's output has no other reader. This is what PyTorch's fx fuser and ONNX Runtime
//! do; it is exact in every case (no pad fill, no inverse needed).

use bnc_ir::{Graph, Op};

use crate::affine::{ChannelMap, absorb, apply_absorbed};
use crate::manager::{Pass, PassContext};
use crate::report::Fate;

pub struct FoldAdjacent;

impl Pass for FoldAdjacent {
    fn name(&self) -> &'static str {
        "fold-adjacent"
    }

    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<(), String> {
        for index in 0..graph.nodes.len() {
            let node = &graph.nodes[index];
            if node.op != Op::Affine {
                continue;
            }
            let name = graph.value(node.output).name.clone();
            let input = node.inputs[0];
            let Some(producer) = graph.producer(input) else {
                ctx.report
                    .set_fate(&name, kept("its input is a graph input", None));
                continue;
            };
            let producer_node = &graph.nodes[producer.0];
            let producer_name = graph.value(producer_node.output).name.clone();
            if !matches!(producer_node.op, Op::Conv2d(_) | Op::Dense { .. }) {
                let reason = format!(
                    "its input comes from `{}`, not a conv or dense",
                    producer_node.op.name()
                );
                ctx.report
                    .set_fate(&name, kept(&reason, Some(producer_name)));
                continue;
            }
            let readers = graph.users()[input.0].len()
                + graph.outputs.iter().filter(|&&o| o == input).count();
            if readers != 1 || !graph.can_forward(node.output, input) {
                let reason = "the layer before it has other users";
                ctx.report
                    .set_fate(&name, kept(reason, Some(producer_name)));
                continue;
            }
            let map = ChannelMap::of_affine(graph, node);
            let absorbed = absorb(graph, producer_node, None, Some(&map))
                .expect("folding an output map is always exact");
            apply_absorbed(graph, producer.0, absorbed);
            let output = graph.nodes[index].output;
            graph.forward_value(output, input);
            ctx.report.set_fate(
                &name,
                Fate::FoldedBackward {
                    into: vec![producer_name],
                    compensated: Vec::new(),
                },
            );
        }
        graph.remove_dead();
        Ok(())
    }
}

fn kept(reason: &str, blocking: Option<String>) -> Fate {
    Fate::Kept {
        reason: reason.to_string(),
        blocking,
    }
}
