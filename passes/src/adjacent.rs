//! The adjacency baseline: fold an affine into the conv or dense layer right before it when
//! that layer's output has no other reader. This is what PyTorch's fx fuser and ONNX Runtime
//! do; it is exact in every case (no pad fill, no inverse needed).

use bnc_ir::{Graph, Op};

use crate::affine::{ChannelMap, absorb, apply_absorbed};
use crate::closure::{Index, bypass_indexed};
use crate::manager::{Pass, PassContext};
use crate::report::Fate;

pub struct FoldAdjacent;

impl Pass for FoldAdjacent {
    fn name(&self) -> &'static str {
        "fold-adjacent"
    }

    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<(), String> {
        let mut index = Index::new(graph);
        for node in 0..graph.nodes.len() {
            if graph.nodes[node].op != Op::Affine {
                continue;
            }
            let name = graph.value(graph.nodes[node].output).name.clone();
            let input = graph.nodes[node].inputs[0];
            let Some(producer) = index.producer(input) else {
                ctx.report
                    .set_fate(&name, kept("its input is a graph input", None));
                continue;
            };
            let producer_node = &graph.nodes[producer];
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
            let only_reader = index.users(input).len() == 1 && !index.is_output(input);
            if !only_reader || !graph.can_forward(graph.nodes[node].output, input) {
                let reason = "the layer before it has other users";
                ctx.report
                    .set_fate(&name, kept(reason, Some(producer_name)));
                continue;
            }
            let map = ChannelMap::of_affine(graph, &graph.nodes[node]);
            // Exact over the reals; declined only when a folded value leaves f32's range
            // (a scale of 1e30 on weights of 1e10, say, from an imported model).
            let absorbed = match absorb(graph, producer_node, None, Some(&map)) {
                Ok(absorbed) => absorbed,
                Err(why) => {
                    let reason = format!("folding it into `{producer_name}`: {why}");
                    ctx.report
                        .set_fate(&name, kept(&reason, Some(producer_name)));
                    continue;
                }
            };
            apply_absorbed(graph, producer, absorbed);
            bypass_indexed(graph, &mut index, node);
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
