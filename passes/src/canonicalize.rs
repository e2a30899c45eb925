//! Canonicalization: every batchnorm becomes a per-channel `affine` with `s = γ/√(σ²+ε)`
//! and `t = β − s·μ` computed in f64 from the layer's own ε; identity and dropout go away.

use bnc_ir::{Graph, Op};

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
        graph.remove_dead();
        Ok(())
    }
}
