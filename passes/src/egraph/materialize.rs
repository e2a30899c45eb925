//! From an extracted choice back to Graph IR: layers with maps get their new weights (in f64,
//! through `affine::absorb`, the one place for weight arithmetic), remaining maps become
//! `affine` nodes, and values keep the names they had in the source wherever they survive.

use std::collections::{HashMap, HashSet};

use bnc_ir::{Graph, Node, Op, Shape, ValueId};

use super::FoldGraph;
use super::extract::{Choice, Frozen};
use super::lang::FoldNode;
use crate::affine::{Absorption, absorb, absorb_output};

/// Builds the graph `choice` selects from `frozen` (the e-graph of `canonical`). Also returns
/// the name each needed class got.
pub fn materialize(
    fg: &FoldGraph,
    frozen: &Frozen,
    choice: &Choice,
    canonical: &Graph,
) -> Result<(Graph, HashMap<usize, String>), String> {
    let order = frozen
        .needed(choice)
        .ok_or("the extracted choice has a cycle")?;
    let class_of = |id| frozen.index[&fg.egraph.find(id)];

    // The model's interface keeps its names: input and output names are reserved before
    // anything else is named, and the class of an output gets exactly its output's name
    // (the first output in that class that is not also an input). Other classes take the
    // first source value's name in them that is free, or a fresh one.
    let reserved: HashSet<&str> = canonical
        .inputs
        .iter()
        .chain(&canonical.outputs)
        .map(|&v| canonical.value(v).name.as_str())
        .collect();
    let mut output_class_names: HashMap<usize, String> = HashMap::new();
    for (&output, &id) in canonical.outputs.iter().zip(&fg.outputs) {
        if !canonical.inputs.contains(&output) {
            output_class_names
                .entry(class_of(id))
                .or_insert_with(|| canonical.value(output).name.clone());
        }
    }
    let mut names: HashMap<usize, String> = output_class_names.clone();
    for (v, value) in canonical.values.iter().enumerate() {
        let id = fg.value_class[v];
        let free =
            !reserved.contains(value.name.as_str()) || canonical.inputs.contains(&ValueId(v));
        if id != egg::Id::from(usize::MAX) && free {
            names
                .entry(class_of(id))
                .or_insert_with(|| value.name.clone());
        }
    }

    let mut graph = Graph {
        name: canonical.name.clone(),
        weights: canonical.weights.clone(),
        values: Vec::new(),
        inputs: Vec::new(),
        nodes: Vec::new(),
        outputs: Vec::new(),
        params: Default::default(),
    };
    let mut used_names: HashSet<String> = reserved.iter().map(|n| n.to_string()).collect();
    let mut value_of: HashMap<usize, ValueId> = HashMap::new();
    for &input in &canonical.inputs {
        let v = canonical.value(input);
        let id = graph.add_value(v.name.clone(), v.shape.clone());
        graph.inputs.push(id);
    }
    let fresh = |base: &str, used: &mut HashSet<String>| -> String {
        let mut name = base.to_string();
        let mut k = 1;
        while used.contains(&name) {
            name = format!("{base}.{k}");
            k += 1;
        }
        used.insert(name.clone());
        name
    };

    for &class in &order {
        let node = &frozen.nodes[class][choice[class]];
        if let FoldNode::Input { index } = node {
            value_of.insert(class, graph.inputs[*index as usize]);
            continue;
        }
        let inputs: Vec<ValueId> = frozen.children[class][choice[class]]
            .iter()
            .map(|c| value_of[c])
            .collect();
        let shape: Shape = fg.egraph[frozen.ids[class]].data.clone();
        let base_name = match (names.get(&class), node) {
            (Some(name), _) => name.clone(),
            (
                None,
                FoldNode::Op { node, .. }
                | FoldNode::Layer { node, .. }
                | FoldNode::Pad { node, .. },
            ) => canonical
                .value(canonical.nodes[*node as usize].output)
                .name
                .clone(),
            // A map the extraction introduced: named after what it reads.
            (None, FoldNode::Aff { .. }) => {
                let input = frozen.children[class][choice[class]][0];
                format!(
                    "{}.affine",
                    names.get(&input).cloned().unwrap_or_else(|| "map".into())
                )
            }
            (None, FoldNode::Input { .. }) => unreachable!("handled above"),
        };
        let name = match output_class_names.get(&class) {
            Some(output_name) => output_name.clone(),
            None => fresh(&base_name, &mut used_names),
        };
        let (op, params) = match node {
            FoldNode::Input { .. } => unreachable!("handled above"),
            FoldNode::Op { node, .. } => {
                let original = &canonical.nodes[*node as usize];
                let shapes: Vec<&Shape> = original
                    .inputs
                    .iter()
                    .map(|&i| canonical.shape(i))
                    .collect();
                if !original.op.param_specs(&shapes).is_empty() {
                    // Operators with parameters are `Layer`, `Aff` or `Pad` e-nodes.
                    return Err(format!(
                        "`{}` ({}) lost its parameters in the e-graph",
                        canonical.value(original.output).name,
                        original.op.name()
                    ));
                } else {
                    (original.op.clone(), None)
                }
            }
            FoldNode::Layer { node, pro, epi, .. } => {
                let original = &canonical.nodes[*node as usize];
                let (pro_map, epi_map) = (fg.maps.get(*pro), fg.maps.get(*epi));
                if pro_map.is_identity() && epi_map.is_identity() {
                    let prefix = original.params.clone().expect("layers have parameters");
                    let prefix = copy_params(canonical, original, &prefix, &mut graph);
                    (original.op.clone(), Some(prefix))
                } else {
                    let before = (!pro_map.is_identity()).then(|| fg.maps.value(*pro));
                    let after = (!epi_map.is_identity()).then(|| fg.maps.value(*epi));
                    let not_exact = |e| {
                        format!(
                            "folding into `{}` is not exact: {e}",
                            canonical.value(original.output).name
                        )
                    };
                    let absorbed = match (&original.op, before, after) {
                        // Only its epilogue changes: no rule moves a map into its prologue.
                        (Op::LayerNorm { .. }, None, Some(after)) => {
                            absorb_output(canonical, original, after)
                        }
                        (Op::LayerNorm { .. }, ..) => {
                            return Err(format!(
                                "a map on the input of layer_norm `{}` reached materialize",
                                canonical.value(original.output).name
                            ));
                        }
                        _ => absorb(canonical, original, before, after).map(Absorption::Layer),
                    };
                    let (op, tensors) = absorbed
                        .map_err(not_exact)?
                        .into_op_and_params(&original.op);
                    let base = original.params.clone().unwrap_or_else(|| name.clone());
                    (op, Some(graph.add_params(&base, tensors)))
                }
            }
            FoldNode::Aff { map, .. } => {
                let prefix = graph.add_params(&name, fg.maps.value(*map).to_params());
                (Op::Affine, Some(prefix))
            }
            FoldNode::Pad { node, fill, .. } => {
                let Op::Pad { pads, value, .. } = canonical.nodes[*node as usize].op else {
                    return Err("a pad node that is not a pad".into());
                };
                let values: Vec<f32> = fg
                    .maps
                    .value(*fill)
                    .shift
                    .iter()
                    .map(|&v| v as f32)
                    .collect();
                let tensor = bnc_ir::Tensor::new(vec![values.len()], values);
                let prefix = graph.add_params(&name, vec![("pad_fill", tensor)]);
                (
                    Op::Pad {
                        pads,
                        value,
                        fill: true,
                    },
                    Some(prefix),
                )
            }
        };
        let output = graph.add_value(name, shape);
        graph.nodes.push(Node {
            op,
            inputs,
            output,
            params,
        });
        value_of.insert(class, output);
    }
    // Each output is the value named like it. An output that is a graph input stays that
    // input; one whose class is computed under another name (the class of an input, or of an
    // earlier output) becomes a named `identity` of it, so that two outputs stay two values.
    let mut output_values: HashMap<ValueId, ValueId> = HashMap::new();
    for (&output, &id) in canonical.outputs.iter().zip(&fg.outputs) {
        if let Some(position) = canonical.inputs.iter().position(|&i| i == output) {
            graph.outputs.push(graph.inputs[position]);
            continue;
        }
        if let Some(&value) = output_values.get(&output) {
            graph.outputs.push(value);
            continue;
        }
        let computed = value_of[&class_of(id)];
        let name = &canonical.value(output).name;
        let value = if graph.value(computed).name == *name {
            computed
        } else {
            let copy = graph.add_value(name.clone(), graph.shape(computed).clone());
            graph.nodes.push(Node {
                op: Op::Identity,
                inputs: vec![computed],
                output: copy,
                params: None,
            });
            copy
        };
        output_values.insert(output, value);
        graph.outputs.push(value);
    }
    let class_names = value_of
        .iter()
        .map(|(&class, &v)| (class, graph.value(v).name.clone()))
        .collect();
    graph.remove_dead();
    graph.verify().map_err(|e| e.to_string())?;
    Ok((graph, class_names))
}

/// Copies an unchanged layer's tensors under its prefix (or a fresh one if taken).
fn copy_params(canonical: &Graph, node: &Node, prefix: &str, graph: &mut Graph) -> String {
    let shapes: Vec<&Shape> = node.inputs.iter().map(|&i| canonical.shape(i)).collect();
    let specs = node.op.param_specs(&shapes);
    let tensors = specs
        .iter()
        .map(|s| {
            let t = canonical.params[&format!("{prefix}.{}", s.suffix)].clone();
            (s.suffix, t)
        })
        .collect();
    graph.add_params(prefix, tensors)
}
