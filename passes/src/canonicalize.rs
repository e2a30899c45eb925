//! Canonicalization: every batchnorm becomes a per-channel `affine` with `s = γ/√(σ²+ε)`
//! and `t = β − s·μ` computed in f64 from the layer's own ε; identity and dropout go away; an
//! avgpool that counts its zero padding and reads a BN becomes `pad` + unpadded avgpool.

use bnc_ir::{Graph, Node, Op, Pool2d};

use crate::affine::ChannelMap;
use crate::manager::{Pass, PassContext};

pub struct Canonicalize;

impl Pass for Canonicalize {
    fn name(&self) -> &'static str {
        "canonicalize"
    }

    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<(), String> {
        for index in 0..graph.nodes.len() {
            let node = &graph.nodes[index];
            let Op::BatchNorm { eps } = node.op else {
                continue;
            };
            let param = |suffix| &graph.param(node, suffix).expect("verified graph").data;
            let map = ChannelMap::from_batchnorm(
                param("weight"),
                param("bias"),
                param("running_mean"),
                param("running_var"),
                eps,
            );
            let name = graph.value(node.output).name.clone();
            ctx.report
                .record_batchnorm(&name, graph.shape(node.output)[1]);
            let base = node.params.clone().unwrap_or_else(|| name.clone());
            let prefix = if graph.params.contains_key(&format!("{base}.scale")) {
                graph.fresh_param_prefix(&base)
            } else {
                base
            };
            for (suffix, tensor) in map.to_params() {
                graph.params.insert(format!("{prefix}.{suffix}"), tensor);
            }
            let node = &mut graph.nodes[index];
            node.op = Op::Affine;
            node.params = Some(prefix);
        }
        for index in 0..graph.nodes.len() {
            let node = &graph.nodes[index];
            if matches!(node.op, Op::Identity | Op::Dropout)
                && graph.can_forward(node.output, node.inputs[0])
            {
                let (old, new) = (node.output, node.inputs[0]);
                graph.forward_value(old, new);
            }
        }
        split_counted_padding(graph);
        graph.remove_dead();
        Ok(())
    }
}

/// An avgpool counting its zero padding does not commute with a per-channel map (the padded
/// zeros are not mapped), but `pad` with a per-channel fill does, and the rest is a pool with
/// no padding. So where such a pool reads an affine (a BN), it becomes
/// `pad(value 0)` + avgpool without padding, which every fold mode can move a map through.
///
/// Exact (interpreter semantics): a window `[o·stride − pad_begin, +kernel)` of the original
/// is `[o·stride, +kernel)` of the padded tensor, and the counted divisor (the window clipped
/// to the padded extent) is the unpadded pool's count of real elements. Ceil mode may drop a
/// last window that starts in the end padding, which the unpadded pool would keep: the split
/// is only made when both give the same output shape.
fn split_counted_padding(graph: &mut Graph) {
    let mut index = 0;
    while index < graph.nodes.len() {
        let node = &graph.nodes[index];
        let split = match &node.op {
            Op::AvgPool(p) if p.count_include_pad && p.pad.iter().any(|&x| x > 0) => {
                let reads_affine = graph
                    .nodes
                    .iter()
                    .any(|n| n.output == node.inputs[0] && n.op == Op::Affine);
                reads_affine
                    .then(|| unpadded_pool(graph, node, p))
                    .flatten()
            }
            _ => None,
        };
        let Some((pad, pool)) = split else {
            index += 1;
            continue;
        };
        let input = graph.nodes[index].inputs[0];
        let name = graph.value(graph.nodes[index].output).name.clone();
        let padded_shape = pad.infer_shape(&[graph.shape(input)]).expect("checked");
        let padded = graph.add_value(graph.fresh_value_name(&format!("{name}.pad")), padded_shape);
        graph.nodes[index].op = pool;
        graph.nodes[index].inputs = vec![padded];
        graph.nodes.insert(
            index,
            Node {
                op: pad,
                inputs: vec![input],
                output: padded,
                params: None,
            },
        );
        index += 2;
    }
}

/// `(pad, pool)` computing what the counting avgpool `node` computes, if their shapes agree.
fn unpadded_pool(graph: &Graph, node: &Node, p: &Pool2d) -> Option<(Op, Op)> {
    let pad = Op::Pad {
        pads: p.pad,
        value: 0.0,
        fill: false,
    };
    let pool = Op::AvgPool(Pool2d {
        pad: [0; 4],
        count_include_pad: false,
        ..p.clone()
    });
    let padded = pad.infer_shape(&[graph.shape(node.inputs[0])]).ok()?;
    let out = pool.infer_shape(&[&padded]).ok()?;
    (out == *graph.shape(node.output)).then_some((pad, pool))
}
