//! `fold-egraph`: BN folding by equality saturation (design.md §3).
//!
//! 1. The canonical graph becomes an egg e-graph ([`lang`]): convs and dense layers carry an
//!    exact prologue and epilogue map, affines are maps over atoms ([`exact`]).
//! 2. The local rules ([`rules`]) saturate freely, each guarded by its exactness condition.
//! 3. Moves through `add` streams and compensation of other readers are added only where the
//!    closure engine ([`crate::closure`]) says a fold succeeds ([`plans`]), so the e-graph
//!    stays the size of the model.
//! 4. DAG-aware extraction ([`extract`]) picks the cheapest equivalent graph, never worse than
//!    the original; [`materialize`] computes the new weights in f64 and rebuilds the Graph IR.

pub mod exact;
pub mod extract;
pub mod lang;
pub mod materialize;
pub mod rules;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bnc_ir::{Graph, Op, Shape};
use egg::Id;
use serde::Serialize;

use crate::affine::ChannelMap;
use crate::manager::{Pass, PassContext};
use exact::{ExactMap, MapId, Maps};
use lang::{FoldEGraph, FoldNode, Shapes};
use rules::{Equality, Expr, RULES};

/// Bounds on saturation. When one is hit the result is still exact: extraction only ever
/// uses equalities that were proven.
#[derive(Clone, Debug)]
pub struct Limits {
    pub iterations: usize,
    pub nodes: usize,
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            iterations: 30,
            nodes: 200_000,
            time: Duration::from_secs(5),
        }
    }
}

/// What saturation and extraction did, for the report.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SaturationStats {
    pub iterations: usize,
    pub enodes: usize,
    pub eclasses: usize,
    /// `saturated`, or the limit that stopped it.
    pub stop: String,
    /// Per rule: how many of its equalities merged two classes.
    pub firings: BTreeMap<String, usize>,
    pub saturation_ms: f64,
    pub extraction_ms: f64,
    /// Cost (FLOPs + bytes moved, a proxy of runtime work) of the original graph and of the
    /// extracted one.
    pub cost_before: f64,
    pub cost_after: f64,
    pub local_search_switches: usize,
}

/// A batch-norm (now an affine) the pass tries to remove.
#[derive(Clone, Debug)]
pub struct Target {
    /// Index of the affine node in the canonical graph.
    pub node: usize,
    pub name: String,
    pub map: MapId,
}

/// The e-graph with the exact maps it refers to.
pub struct FoldGraph {
    pub egraph: FoldEGraph,
    pub maps: Maps,
    /// The e-class of each value of the canonical graph.
    pub value_class: Vec<Id>,
    /// The e-node built for each node of the canonical graph (`None` when it was the
    /// identity and vanished).
    pub original: Vec<Option<FoldNode>>,
    pub outputs: Vec<Id>,
    pub targets: Vec<Target>,
    identities: HashMap<usize, MapId>,
}

impl FoldGraph {
    /// The e-graph of a canonical graph (no `batchnorm`, no `identity`/`dropout`).
    pub fn build(graph: &Graph, bn_names: &[String]) -> Result<FoldGraph, String> {
        let analysis = Shapes {
            ops: graph.nodes.iter().map(|n| n.op.clone()).collect(),
            inputs: graph
                .inputs
                .iter()
                .map(|&i| graph.shape(i).clone())
                .collect(),
        };
        let mut fg = FoldGraph {
            egraph: FoldEGraph::new(analysis),
            maps: Maps::default(),
            value_class: vec![Id::from(usize::MAX); graph.values.len()],
            original: vec![None; graph.nodes.len()],
            outputs: Vec::new(),
            targets: Vec::new(),
            identities: HashMap::new(),
        };
        for (i, &input) in graph.inputs.iter().enumerate() {
            fg.value_class[input.0] = fg.egraph.add(FoldNode::Input { index: i as u32 });
        }
        for (index, node) in graph.nodes.iter().enumerate() {
            let args: Vec<Id> = node.inputs.iter().map(|&v| fg.value_class[v.0]).collect();
            let enode = match &node.op {
                Op::Conv2d(_) | Op::Dense { .. } => {
                    let cin = graph.shape(node.inputs[0])[1];
                    let cout = graph.shape(node.output)[1];
                    FoldNode::Layer {
                        node: index as u32,
                        pro: fg.identity(cin),
                        epi: fg.identity(cout),
                        x: [args[0]],
                    }
                }
                Op::Affine => {
                    let map = fg.maps.atoms(&ChannelMap::of_affine(graph, node));
                    let name = &graph.value(node.output).name;
                    if bn_names.contains(name) {
                        fg.targets.push(Target {
                            node: index,
                            name: name.clone(),
                            map,
                        });
                    }
                    if fg.maps.get(map).is_identity() {
                        fg.value_class[node.output.0] = args[0];
                        continue;
                    }
                    FoldNode::aff(map, args[0])
                }
                Op::BatchNorm { .. } | Op::Identity | Op::Dropout => {
                    return Err(format!(
                        "`{}` is a {}: run `canonicalize` before `fold-egraph`",
                        graph.value(node.output).name,
                        node.op.name()
                    ));
                }
                _ => FoldNode::Op {
                    node: index as u32,
                    args: args.into_boxed_slice(),
                },
            };
            fg.value_class[node.output.0] = fg.egraph.add(enode.clone());
            fg.original[index] = Some(enode);
        }
        fg.outputs = graph.outputs.iter().map(|&o| fg.value_class[o.0]).collect();
        fg.egraph.rebuild();
        Ok(fg)
    }

    pub fn identity(&mut self, channels: usize) -> MapId {
        if let Some(&id) = self.identities.get(&channels) {
            return id;
        }
        let id = self.maps.intern(ExactMap::identity(channels));
        self.identities.insert(channels, id);
        id
    }

    pub fn shape(&self, class: Id) -> &Shape {
        &self.egraph[class].data
    }

    /// Adds a term, returning its class.
    pub fn add_expr(&mut self, expr: &Expr) -> Id {
        match expr {
            Expr::Class(id) => *id,
            Expr::Aff(map, x) => {
                let x = self.add_expr(x);
                self.egraph.add(FoldNode::aff(*map, x))
            }
            Expr::Op(node, args) => {
                let args: Vec<Id> = args.iter().map(|a| self.add_expr(a)).collect();
                self.egraph.add(FoldNode::Op {
                    node: *node,
                    args: args.into_boxed_slice(),
                })
            }
            Expr::Layer { node, pro, epi, x } => {
                let x = self.add_expr(x);
                self.egraph.add(FoldNode::Layer {
                    node: *node,
                    pro: *pro,
                    epi: *epi,
                    x: [x],
                })
            }
        }
    }

    /// Adds the equalities; returns how many merged two classes, per rule.
    pub fn apply(
        &mut self,
        equalities: &[Equality],
        firings: &mut BTreeMap<String, usize>,
    ) -> usize {
        let mut merged = 0;
        for eq in equalities {
            let id = self.add_expr(&eq.expr);
            if self.egraph.union(eq.class, id) {
                merged += 1;
                *firings.entry(eq.rule.to_string()).or_default() += 1;
            }
        }
        self.egraph.rebuild();
        merged
    }

    /// Runs the local rules to a fixpoint or a limit.
    pub fn saturate(&mut self, limits: &Limits, stats: &mut SaturationStats) {
        let start = Instant::now();
        for rule in RULES {
            stats.firings.entry(rule.to_string()).or_default();
        }
        stats.stop = "saturated".to_string();
        loop {
            if stats.iterations >= limits.iterations {
                stats.stop = format!("iteration limit ({})", limits.iterations);
                break;
            }
            if self.egraph.total_size() >= limits.nodes {
                stats.stop = format!("node limit ({})", limits.nodes);
                break;
            }
            if start.elapsed() >= limits.time {
                stats.stop = format!("time limit ({:?})", limits.time);
                break;
            }
            stats.iterations += 1;
            let equalities = self.local_equalities();
            let mut firings = std::mem::take(&mut stats.firings);
            let merged = self.apply(&equalities, &mut firings);
            stats.firings = firings;
            if merged == 0 {
                break;
            }
        }
        stats.enodes = self.egraph.total_size();
        stats.eclasses = self.egraph.number_of_classes();
        stats.saturation_ms += start.elapsed().as_secs_f64() * 1e3;
    }

    /// Own cost of an e-node: FLOPs plus elements written (a proxy for runtime work). A
    /// shift-only map is cheaper than a full one; a layer costs the same whatever maps it
    /// absorbed (its weights are precomputed).
    pub fn node_cost(&self, graph: &Graph, node: &FoldNode, out_shape: &Shape) -> f64 {
        let numel = out_shape.iter().product::<usize>() as f64;
        match node {
            FoldNode::Input { .. } => 0.0,
            FoldNode::Aff { map, .. } => {
                let per_element = if self.maps.get(*map).is_shift_only() {
                    1.0
                } else {
                    2.0
                };
                per_element * numel + numel
            }
            FoldNode::Layer { node: index, .. } | FoldNode::Op { node: index, .. } => {
                let input_shapes: Vec<&Shape> = egg::Language::children(node)
                    .iter()
                    .map(|&c| self.shape(c))
                    .collect();
                let op = &graph.nodes[*index as usize].op;
                let writes = if *op == Op::Flatten { 0.0 } else { numel };
                op.flops(&input_shapes, out_shape) as f64 + writes
            }
        }
    }
}

impl FoldGraph {
    /// A frozen copy for extraction, with each node's own cost.
    pub fn freeze(&self, graph: &Graph) -> extract::Frozen {
        let mut ids = Vec::new();
        let mut nodes = Vec::new();
        let mut costs = Vec::new();
        for class in self.egraph.classes() {
            ids.push(class.id);
            let class_nodes: Vec<FoldNode> = class
                .nodes
                .iter()
                .map(|n| egg::Language::map_children(n.clone(), |c| self.egraph.find(c)))
                .collect();
            costs.push(
                class_nodes
                    .iter()
                    .map(|n| self.node_cost(graph, n, &class.data))
                    .collect(),
            );
            nodes.push(class_nodes);
        }
        extract::Frozen::new(ids, nodes, costs, &self.outputs, |id| self.egraph.find(id))
    }

    /// The choice that rebuilds the original graph (classes it does not cover take their
    /// tree-cheapest node).
    pub fn original_choice(&self, frozen: &extract::Frozen) -> extract::Choice {
        let mut choice = frozen.tree_best.clone();
        for node in self.original.iter().flatten().rev() {
            let canonical = egg::Language::map_children(node.clone(), |c| self.egraph.find(c));
            let Some(class) = self.egraph.lookup(canonical.clone()) else {
                continue;
            };
            let class = frozen.index[&self.egraph.find(class)];
            if let Some(k) = frozen.nodes[class].iter().position(|n| *n == canonical) {
                choice[class] = k;
            }
        }
        choice
    }
}

/// The `fold-egraph` pass.
#[derive(Default)]
pub struct FoldEGraphPass {
    pub limits: Limits,
}

impl Pass for FoldEGraphPass {
    fn name(&self) -> &'static str {
        "fold-egraph"
    }

    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<(), String> {
        let bn_names: Vec<String> = ctx
            .report
            .batchnorms
            .iter()
            .map(|r| r.name.clone())
            .collect();
        let mut fg = FoldGraph::build(graph, &bn_names)?;
        let mut stats = SaturationStats::default();
        fg.saturate(&self.limits, &mut stats);

        let start = Instant::now();
        let frozen = fg.freeze(graph);
        let mut choice = fg.original_choice(&frozen);
        stats.cost_before = frozen.dag_cost(&choice);
        let mut cost = stats.cost_before;
        let pinned = vec![false; frozen.len()];
        stats.local_search_switches = frozen.local_search(&mut choice, &mut cost, &pinned, 50);
        stats.cost_after = cost;
        let (folded, names) = materialize::materialize(&fg, &frozen, &choice, graph)?;
        stats.extraction_ms = start.elapsed().as_secs_f64() * 1e3;
        for (name, fate) in fates(&fg, &frozen, &choice, &names, graph) {
            ctx.report.set_fate(&name, fate);
        }
        ctx.report.saturation = Some(stats);
        *graph = folded;
        Ok(())
    }
}

/// Where each batch-norm's atoms ended up in the extracted graph, which says what became of
/// it: in a layer's epilogue (folded backward), prologue (forward), in a remaining map's scale
/// (kept) or only in a remaining shift (scale folded, shift kept). Layers holding an atom's
/// inverse are the compensated readers.
pub fn fates(
    fg: &FoldGraph,
    frozen: &extract::Frozen,
    choice: &extract::Choice,
    names: &HashMap<usize, String>,
    canonical: &Graph,
) -> Vec<(String, crate::report::Fate)> {
    use crate::report::Fate;
    use std::collections::HashSet;

    struct Seen {
        backward: Vec<String>,
        forward: Vec<String>,
        compensated: Vec<String>,
        kept_scale: Option<String>,
        kept_shift: Option<String>,
        pad_fill: bool,
    }
    let needed = frozen.needed(choice).unwrap_or_default();
    let mut fates = Vec::new();
    for target in &fg.targets {
        let own: HashSet<exact::Atom> =
            fg.maps.get(target.map).atoms().map(|(a, _, _)| a).collect();
        let mut seen = Seen {
            backward: Vec::new(),
            forward: Vec::new(),
            compensated: Vec::new(),
            kept_scale: None,
            kept_shift: None,
            pad_fill: false,
        };
        let push = |list: &mut Vec<String>, name: &String| {
            if !list.contains(name) {
                list.push(name.clone());
            }
        };
        for &class in &needed {
            let name = &names[&class];
            match &frozen.nodes[class][choice[class]] {
                FoldNode::Layer { node, pro, epi, .. } => {
                    for (_, sign, _) in fg
                        .maps
                        .get(*epi)
                        .atoms()
                        .filter(|(a, _, _)| own.contains(a))
                    {
                        push(
                            if sign > 0 {
                                &mut seen.backward
                            } else {
                                &mut seen.compensated
                            },
                            name,
                        );
                    }
                    for (_, sign, _) in fg
                        .maps
                        .get(*pro)
                        .atoms()
                        .filter(|(a, _, _)| own.contains(a))
                    {
                        if sign > 0 {
                            push(&mut seen.forward, name);
                            let pads = matches!(&canonical.nodes[*node as usize].op, Op::Conv2d(c) if c.pad.iter().any(|&p| p > 0));
                            seen.pad_fill |= pads;
                        } else {
                            push(&mut seen.compensated, name);
                        }
                    }
                }
                FoldNode::Aff { map, .. } => {
                    for (_, sign, in_scale) in fg
                        .maps
                        .get(*map)
                        .atoms()
                        .filter(|(a, _, _)| own.contains(a))
                    {
                        match (in_scale, sign > 0) {
                            (true, true) => {
                                seen.kept_scale.get_or_insert_with(|| name.clone());
                            }
                            (true, false) => push(&mut seen.compensated, name),
                            (false, _) => {
                                seen.kept_shift.get_or_insert_with(|| name.clone());
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        let fate = if let Some(at) = seen.kept_scale {
            Fate::Kept {
                reason: format!("no exact fold is cheaper; it remains as `{at}`"),
                blocking: None,
            }
        } else if let (Some(at), true) = (seen.kept_shift, seen.compensated.is_empty()) {
            let mut into = seen.backward.clone();
            into.extend(seen.forward.iter().cloned());
            Fate::Partial {
                scale_into: into,
                shift_kept_as: at,
            }
        } else if !seen.forward.is_empty() && seen.backward.is_empty() {
            Fate::FoldedForward {
                into: seen.forward,
                pad_fill: seen.pad_fill,
                compensated: seen.compensated,
            }
        } else {
            let mut into = seen.backward;
            into.extend(seen.forward);
            Fate::FoldedBackward {
                into,
                compensated: seen.compensated,
            }
        };
        fates.push((target.name.clone(), fate));
    }
    fates
}
