//! The numerical condition in the e-graph: which e-nodes would not be exact in f32
//! ([`crate::conditioning`]). Extraction never chooses them (their cost is infinite), so where
//! an algebraically exact fold is ill-conditioned it picks a well-conditioned equivalent (fold
//! the other BN and rebuild this one) or keeps the BN.

use std::collections::{HashMap, HashSet};

use bnc_ir::{Graph, Op, Shape};
use egg::{Id, Language};

use super::FoldGraph;
use super::lang::FoldNode;
use crate::affine::ChannelMap;
use crate::conditioning::{self, IllConditioned, Spread};
use crate::report::{Fate, FoldReport};

/// An e-node extraction may not pick because it would not be exact in f32.
#[derive(Clone, Debug)]
pub struct Declined {
    pub node: FoldNode,
    pub why: IllConditioned,
}

/// Adds to the reason of every BN the e-graph kept the worst fold of it that was declined for
/// conditioning (a declined node whose maps mention one of the BN's atoms).
pub fn report_declined(fg: &FoldGraph, declined: &[Declined], report: &mut FoldReport) {
    for target in &fg.targets {
        let atoms: std::collections::HashSet<_> = fg.maps.get(target.map).atoms_all().collect();
        let mentions =
            |map: super::exact::MapId| fg.maps.get(map).atoms_all().any(|a| atoms.contains(&a));
        let worst = declined
            .iter()
            .filter(|d| match &d.node {
                FoldNode::Aff { map, .. } => mentions(*map),
                FoldNode::Pad { fill, .. } => mentions(*fill),
                FoldNode::Layer { pro, epi, .. } => mentions(*pro) || mentions(*epi),
                _ => false,
            })
            .map(|d| &d.why)
            .max_by(|a, b| (a.factor / a.budget).total_cmp(&(b.factor / b.budget)));
        let (Some(why), Some(Fate::Kept { reason, blocking })) =
            (worst, report.fate(&target.name).cloned())
        else {
            continue;
        };
        let reason = format!("{reason}; a fold was declined: {why}");
        report.set_fate(&target.name, Fate::Kept { reason, blocking });
    }
}

/// The estimated spread of every e-class's tensor.
pub struct ClassSpreads(HashMap<Id, Spread>);

impl ClassSpreads {
    /// Every class of `fg` (built from `graph`): a class holding a value of `graph` takes that
    /// value's estimate; any other the estimate of its first node whose inputs have one.
    pub fn new(fg: &FoldGraph, graph: &Graph) -> ClassSpreads {
        let mut spreads = HashMap::new();
        let values = conditioning::estimate(graph);
        for (v, spread) in values.into_iter().enumerate() {
            let class = fg.value_class[v];
            if class != Id::from(usize::MAX) {
                spreads.entry(fg.egraph.find(class)).or_insert(spread);
            }
        }
        loop {
            let mut learnt = false;
            for class in fg.egraph.classes() {
                if spreads.contains_key(&class.id) {
                    continue;
                }
                let found = class.nodes.iter().find_map(|node| {
                    let inputs: Option<Vec<&Spread>> = node
                        .children()
                        .iter()
                        .map(|c| spreads.get(&fg.egraph.find(*c)))
                        .collect();
                    Some(fg.spread_of(graph, node, &inputs?, &class.data))
                });
                if let Some(spread) = found {
                    spreads.insert(class.id, spread);
                    learnt = true;
                }
            }
            if !learnt {
                break;
            }
        }
        ClassSpreads(spreads)
    }

    /// The spread of `class` (unit scale if nothing is known, which cannot happen for a class
    /// reachable from the graph's inputs).
    pub fn get(&self, fg: &FoldGraph, class: Id) -> Spread {
        let class = fg.egraph.find(class);
        self.0
            .get(&class)
            .cloned()
            .unwrap_or_else(|| Spread::unit(fg.shape(class)[1]))
    }
}

impl FoldGraph {
    /// The e-nodes of the graph as given, with canonical children (built once per freeze).
    pub fn originals(&self) -> HashSet<FoldNode> {
        self.original
            .iter()
            .flatten()
            .map(|n| egg::Language::map_children(n.clone(), |c| self.egraph.find(c)))
            .collect()
    }

    /// The spread of `node`'s output, given its inputs'.
    fn spread_of(
        &self,
        graph: &Graph,
        node: &FoldNode,
        inputs: &[&Spread],
        out_shape: &Shape,
    ) -> Spread {
        let shapes: Vec<&Shape> = node.children().iter().map(|&c| self.shape(c)).collect();
        match node {
            FoldNode::Input { .. } => Spread::unit(out_shape[1]),
            FoldNode::Aff { map, .. } => inputs[0].mapped(self.maps.value(*map)),
            FoldNode::Op { node, .. } => {
                let node = &graph.nodes[*node as usize];
                conditioning::through_node(graph, node, inputs, &shapes, out_shape)
            }
            FoldNode::Pad { node, fill, .. } => {
                let Op::Pad { pads, .. } = graph.nodes[*node as usize].op else {
                    return inputs[0].clone();
                };
                let fill = &self.maps.value(*fill).shift;
                conditioning::through_pad(inputs[0], &pads, fill, shapes[0])
            }
            FoldNode::Layer { node, pro, epi, .. } => {
                let node = &graph.nodes[*node as usize];
                let x = inputs[0].mapped(self.maps.value(*pro));
                let y = match node.op {
                    // Normalised values: whatever its input, through its own weight and bias.
                    Op::LayerNorm { .. } => {
                        conditioning::through_node(graph, node, &[&x], &shapes, out_shape)
                    }
                    _ => conditioning::through_layer(graph, node, &x, shapes[0]),
                };
                y.mapped(self.maps.value(*epi))
            }
        }
    }

    /// Why `node` would not be exact in f32, if it would not: a layer whose prologue
    /// amplifies rounding beyond the budget or whose fill or weights overflow, a map that
    /// undoes another with the same trouble, a fill that overflows.
    ///
    /// `node` has canonical children, like the nodes of `originals` ([`Self::originals`]):
    /// the model as given is the reference, its own nodes are never declined.
    pub fn ill_conditioned(
        &self,
        graph: &Graph,
        node: &FoldNode,
        spreads: &ClassSpreads,
        originals: &HashSet<FoldNode>,
    ) -> Option<IllConditioned> {
        let overflow = Some(IllConditioned::overflow());
        if originals.contains(node) {
            return None;
        }
        match node {
            FoldNode::Input { .. } | FoldNode::Op { .. } => None,
            FoldNode::Pad { fill, .. } => {
                if conditioning::fits_f32(self.maps.value(*fill).shift.iter().copied()) {
                    None
                } else {
                    overflow
                }
            }
            FoldNode::Aff { map, x } => {
                let value = self.maps.value(*map);
                let input = spreads.get(self, x[0]);
                if !conditioning::fits_f32(value.scale.iter().chain(&value.shift).copied())
                    || !conditioning::spread_fits_f32(&input.mapped(value))
                    || !conditioning::factors_normal(value.scale.iter().copied())
                {
                    return overflow;
                }
                let exact = self.maps.get(*map);
                let divides = exact.scale.iter().any(|t| t.mono.divides())
                    || exact.shift.iter().any(|p| p.divides());
                if !divides {
                    return None;
                }
                let factor = conditioning::map_amplification(value, &input);
                conditioning::check(factor).err()
            }
            FoldNode::Layer {
                node, pro, epi, x, ..
            } => {
                let layer = &graph.nodes[*node as usize];
                let (before, after) = (self.maps.value(*pro), self.maps.value(*epi));
                let unchanged_input = self.maps.get(*pro).is_identity();
                if unchanged_input && self.maps.get(*epi).is_identity() {
                    return None;
                }
                if !weights_fit(graph, layer, before, after) {
                    return overflow;
                }
                // Never reached by the rules (`fold-forward-scale` leaves the shift outside,
                // closure plans refuse it): a shift a transposed conv cannot take as a bias.
                if let Op::ConvTranspose2d(c) = &layer.op
                    && !c.shift_is_uniform()
                    && before.shift.iter().any(|&t| t != 0.0)
                {
                    return overflow;
                }
                if unchanged_input {
                    return None;
                }
                let fill = layer_fill(graph, layer, before);
                if fill
                    .as_ref()
                    .is_some_and(|f| !conditioning::fits_f32(f.iter().copied()))
                {
                    return overflow;
                }
                let stored = spreads.get(self, x[0]);
                conditioning::check_layer(
                    graph,
                    layer,
                    before,
                    fill.as_deref(),
                    &stored,
                    self.shape(x[0]),
                )
                .err()
            }
        }
    }
}

/// The pad fill a conv gets when it absorbs `before` (as `affine::absorb` computes it), or
/// `None` when it does not pad.
fn layer_fill(graph: &Graph, layer: &bnc_ir::Node, before: &ChannelMap) -> Option<Vec<f64>> {
    let Op::Conv2d(c) = &layer.op else {
        return None;
    };
    if c.pad.iter().all(|&p| p == 0) {
        return None;
    }
    let old = graph.param(layer, "pad_fill");
    Some(
        (0..before.len())
            .map(|i| {
                let f = old.map_or(0.0, |t| t.data[i] as f64);
                if before.scale[i] == 0.0 {
                    0.0
                } else {
                    (f - before.shift[i]) / before.scale[i]
                }
            })
            .collect(),
    )
}

/// Whether the folded weights and bias stay finite in f32 (a bound from the largest factors,
/// so a layer is never copied just to ask).
fn weights_fit(
    graph: &Graph,
    layer: &bnc_ir::Node,
    before: &ChannelMap,
    after: &ChannelMap,
) -> bool {
    let largest = |v: &[f64]| v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let weight = graph.param(layer, "weight").map_or(0.0, |w| {
        w.data.iter().fold(0.0f64, |m, &x| m.max((x as f64).abs()))
    });
    let bias = graph.param(layer, "bias").map_or(0.0, |b| {
        b.data.iter().fold(0.0f64, |m, &x| m.max((x as f64).abs()))
    });
    let fan_in = graph
        .param(layer, "weight")
        .map_or(1, |w| w.shape[1..].iter().product::<usize>()) as f64;
    let (s_in, s_out) = (largest(&before.scale), largest(&after.scale));
    let w = s_out * weight * s_in;
    let b = s_out * (bias + fan_in * weight * largest(&before.shift)) + largest(&after.shift);
    // The smallest non-zero folded weight must stay normal (kernels flush subnormals).
    let smallest = |v: &mut dyn Iterator<Item = f64>| {
        v.map(f64::abs)
            .filter(|&x| x != 0.0)
            .fold(f64::INFINITY, f64::min)
    };
    let tiny = smallest(&mut before.scale.iter().copied())
        * smallest(&mut after.scale.iter().copied())
        * graph
            .param(layer, "weight")
            .map_or(1.0, |w| smallest(&mut w.data.iter().map(|&x| x as f64)));
    let prologue = before.scale.iter().any(|&s| s != 1.0);
    conditioning::fits_f32([w, b])
        && (!prologue || tiny.is_infinite() || conditioning::factors_normal([tiny]))
}
