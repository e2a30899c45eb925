//! `fold-egraph`: BN folding by equality saturation (docs/design.md §3).
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
pub mod numerics;
pub mod rules;

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use bnc_ir::{Graph, Op, Shape};
use egg::Id;
use serde::Serialize;

use crate::affine::ChannelMap;
use crate::manager::{Pass, PassContext};
use exact::{ExactMap, MapId, Maps};
use lang::{FoldEGraph, FoldNode, Shapes};
use rules::{Equality, Expr, RULES};

/// Bounds on saturation, in e-graph terms only, so that the result never depends on the
/// machine's speed. The rules reach a fixpoint well within them: densenet201 saturates in 6
/// iterations at 17 e-nodes per source node; random models need up to 33 iterations and
/// 57,090 e-nodes (soak seed 650: 37 nodes, 1,543 per node). A limit hit is reported
/// in [`SaturationStats::stop`]; even then the result is exact: extraction only ever uses
/// equalities that were proven.
///
/// The budget is checked as each equality is added, not only between iterations: with a
/// wrong `slice-out` a 5-node model's e-graph grew from 1,036 to 14,278 e-nodes in one
/// iteration, and the next did not end. Large models get more (64 per source node).
#[derive(Clone, Debug)]
pub struct Limits {
    pub iterations: usize,
    /// E-nodes per node of the source graph.
    pub nodes_per_node: usize,
    /// The budget of a small model, and the most any model gets.
    pub min_nodes: usize,
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            iterations: 200,
            nodes_per_node: 64,
            min_nodes: 100_000,
            max_nodes: 200_000,
        }
    }
}

impl Limits {
    /// The e-node budget for a graph of `nodes` nodes.
    pub fn nodes_for(&self, nodes: usize) -> usize {
        nodes
            .saturating_mul(self.nodes_per_node)
            .clamp(self.min_nodes, self.max_nodes)
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
    /// The search over closure plans (docs/design.md §3, "Extraction").
    pub plans: extract::PlanSearch,
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
                // A layer_norm is a layer whose prologue stays the identity: a map on its
                // output joins its weight and bias, one on its input never passes it.
                Op::Conv2d(_)
                | Op::Dense { .. }
                | Op::ConvTranspose2d(_)
                | Op::LayerNorm { .. } => {
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
                // A pad with a per-channel fill carries the fill as a map (scales 1, the
                // fill in the shifts, one atom per channel), as the pad rules build them, so
                // that materialize writes its `pad_fill` tensor back.
                Op::Pad { fill: true, .. } => {
                    let fill_tensor = graph.param(node, "pad_fill").ok_or_else(|| {
                        format!("`{}` has no pad_fill", graph.value(node.output).name)
                    })?;
                    let shift = fill_tensor
                        .data
                        .iter()
                        .map(|&f| fg.maps.numbers.constant(f as f64))
                        .collect();
                    let scale = vec![exact::Term::one(); fill_tensor.data.len()];
                    FoldNode::Pad {
                        node: index as u32,
                        fill: fg.maps.intern(ExactMap { scale, shift }),
                        x: [args[0]],
                    }
                }
                // Canonicalize keeps an identity only where it separates a graph output from
                // an input or another output; it is its input's class, and materialize
                // writes the identity back for the output that needs its own name.
                Op::Identity | Op::Dropout => {
                    fg.value_class[node.output.0] = args[0];
                    continue;
                }
                Op::BatchNorm { .. } => {
                    return Err(format!(
                        "`{}` is a {}: run `canonicalize` before `fold-egraph`",
                        graph.value(node.output).name,
                        node.op.name()
                    ));
                }
                Op::Pad { fill: false, .. }
                | Op::Activation(_)
                | Op::Add
                | Op::Mul
                | Op::Concat
                | Op::MaxPool(_)
                | Op::AvgPool(_)
                | Op::GlobalAvgPool
                | Op::Flatten
                | Op::Softmax
                | Op::Resize(_)
                | Op::ChannelShuffle { .. }
                | Op::SliceChannels { .. }
                | Op::GlobalMaxPool => FoldNode::Op {
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
            Expr::Pad { node, fill, x } => {
                let x = self.add_expr(x);
                self.egraph.add(FoldNode::Pad {
                    node: *node,
                    fill: *fill,
                    x: [x],
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

    /// Adds the equalities while the e-graph has fewer than `budget` e-nodes, counting the
    /// firings per rule; returns how many merged two classes. (Only a new e-node can grow
    /// the e-graph, and its class then merges, so a pass stopped by the budget always
    /// merged something: `saturate` sees the limit, not a fixpoint.)
    pub fn apply(
        &mut self,
        equalities: &[Equality],
        budget: usize,
        firings: &mut BTreeMap<String, usize>,
    ) -> usize {
        let mut merged = 0;
        for eq in equalities {
            if self.egraph.total_size() >= budget {
                break;
            }
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
        let budget = limits.nodes_for(self.original.len());
        for rule in RULES {
            stats.firings.entry(rule.to_string()).or_default();
        }
        stats.stop = "saturated".to_string();
        loop {
            if stats.iterations >= limits.iterations {
                stats.stop = format!("iteration limit ({})", limits.iterations);
                break;
            }
            if self.egraph.total_size() >= budget {
                stats.stop = format!("node limit ({budget})");
                break;
            }
            stats.iterations += 1;
            let equalities = self.local_equalities();
            let mut firings = std::mem::take(&mut stats.firings);
            let merged = self.apply(&equalities, budget, &mut firings);
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
        // Every kernel has a fixed cost (launch, a pass over its output's cache lines), so
        // of two graphs doing the same arithmetic the one with fewer nodes wins.
        const PER_NODE: f64 = 2048.0;
        PER_NODE
            + match node {
                FoldNode::Input { .. } => -PER_NODE,
                FoldNode::Aff { map, .. } => {
                    let per_element = if self.maps.get(*map).is_shift_only() {
                        1.0
                    } else {
                        2.0
                    };
                    per_element * numel + numel
                }
                FoldNode::Layer { node: index, .. }
                | FoldNode::Op { node: index, .. }
                | FoldNode::Pad { node: index, .. } => {
                    let input_shapes: Vec<&Shape> = egg::Language::children(node)
                        .iter()
                        .map(|&c| self.shape(c))
                        .collect();
                    let op = &graph.nodes[*index as usize].op;
                    let writes = if matches!(op, Op::Flatten | Op::SliceChannels { .. }) {
                        0.0
                    } else {
                        numel
                    };
                    op.flops(&input_shapes, out_shape) as f64 + writes
                }
            }
    }
}

impl FoldGraph {
    /// A frozen copy for extraction, with each node's own cost, and the nodes declined
    /// because they would not be exact in f32 (their cost is infinite).
    pub fn freeze(&self, graph: &Graph) -> (extract::Frozen, Vec<numerics::Declined>) {
        let spreads = numerics::ClassSpreads::new(self, graph);
        let originals = self.originals();
        let mut declined = Vec::new();
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
                    .map(
                        |n| match self.ill_conditioned(graph, n, &spreads, &originals) {
                            // Never extracted: the fold would not be exact in f32.
                            Some(why) => {
                                declined.push(numerics::Declined {
                                    node: n.clone(),
                                    why,
                                });
                                f64::INFINITY
                            }
                            None => self.node_cost(graph, n, &class.data),
                        },
                    )
                    .collect(),
            );
            nodes.push(class_nodes);
        }
        let frozen =
            extract::Frozen::new(ids, nodes, costs, &self.outputs, |id| self.egraph.find(id));
        (frozen, declined)
    }

    /// A plan's forced nodes as `(class index, node index)` in the frozen e-graph; `None`
    /// if one is not there (it cannot be: every forced node was added).
    pub fn resolve_forced(
        &self,
        frozen: &extract::Frozen,
        forced: &[(Id, FoldNode)],
    ) -> Option<Vec<(usize, usize)>> {
        forced
            .iter()
            .map(|(class, node)| {
                let class = *frozen.index.get(&self.egraph.find(*class))?;
                let node = egg::Language::map_children(node.clone(), |c| self.egraph.find(c));
                let k = frozen.nodes[class].iter().position(|n| *n == node)?;
                Some((class, k))
            })
            .collect()
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
        // Seed: the closure baseline's folds, applied one at a time on the current graph
        // (exact plans). The e-graph then works on what is left, and its extraction starts
        // from that graph, so it never folds less than the baseline and never costs more.
        // The debug-build check compares against the graph as it came in; a release build
        // does not copy it (the weights of a large model are hundreds of MB).
        let original = cfg!(debug_assertions).then(|| graph.clone());
        crate::paper::FoldPaper.run(graph, ctx)?;
        graph.remove_dead();
        let bn_names: Vec<String> = ctx
            .report
            .batchnorms
            .iter()
            .filter(|r| !r.fate.is_gone())
            .map(|r| r.name.clone())
            .collect();
        let mut fg = FoldGraph::build(graph, &bn_names)?;
        let mut stats = SaturationStats::default();
        // The local rules saturate on the model; the closure plans are added after, with
        // every node they need (pushed-through producers, compensated readers), and are not
        // saturated further: the local rules applied to every plan's compensation maps
        // multiply (each plan times each concat slice times each layer) without adding
        // anything a plan does not already say.
        fg.saturate(&self.limits, &mut stats);
        let start = Instant::now();
        let plans = fg.add_plans(graph);
        stats.saturation_ms += start.elapsed().as_secs_f64() * 1e3;
        stats.enodes = fg.egraph.total_size();
        stats.eclasses = fg.egraph.number_of_classes();

        let start = Instant::now();
        let (frozen, declined) = fg.freeze(graph);
        let mut choice = fg.original_choice(&frozen);
        stats.cost_before = frozen.dag_cost(&choice);
        let mut cost = stats.cost_before;
        let resolved: Vec<extract::ResolvedPlan> = plans
            .iter()
            .filter_map(|p| {
                Some(extract::ResolvedPlan {
                    forced: fg.resolve_forced(&frozen, &p.forced)?,
                    flexible: p
                        .flexible
                        .iter()
                        .map(|&c| frozen.index[&fg.egraph.find(c)])
                        .collect(),
                })
            })
            .collect();
        // Single switches first (every local fold), then the plans on top, then single
        // switches again around whatever the plans changed.
        // Plans from the original graph first (a local move can lead away from a plan's
        // basin), then single switches, then plans and switches again on top.
        stats.plans = frozen.choose_plans(&resolved, &mut choice, &mut cost);
        stats.local_search_switches = frozen.local_search(&mut choice, &mut cost, 50);
        let again = frozen.choose_plans(&resolved, &mut choice, &mut cost);
        stats.plans.plans_applied += again.plans_applied;
        stats.plans.subsets_evaluated += again.subsets_evaluated;
        stats.plans.capped_regions = stats.plans.capped_regions.max(again.capped_regions);
        stats.local_search_switches += frozen.local_search(&mut choice, &mut cost, 50);
        stats.cost_after = cost;
        let (folded, names) = materialize::materialize(&fg, &frozen, &choice, graph)?;
        stats.extraction_ms = start.elapsed().as_secs_f64() * 1e3;
        for (name, fate) in fates(&fg, &frozen, &choice, &names, graph) {
            // A BN still there keeps the closure's reason (which node blocks it).
            let still_blocked = matches!(fate, crate::report::Fate::Kept { .. })
                && matches!(
                    ctx.report.fate(&name),
                    Some(crate::report::Fate::Kept { .. })
                );
            if !still_blocked {
                ctx.report.set_fate(&name, fate);
            }
        }
        numerics::report_declined(&fg, &declined, &mut ctx.report);
        ctx.report.saturation = Some(stats);
        if let Some(original) = &original {
            check_same_function(original, &folded)?;
        }
        *graph = folded;
        Ok(())
    }
}

/// Debug builds: the extracted graph must compute what the input graph computes (reference
/// interpreter, a fixed input). Skipped on big models (work or memory) to keep debug test
/// runs short and within memory; the tests check those explicitly.
fn check_same_function(before: &Graph, after: &Graph) -> Result<(), String> {
    if crate::report::GraphCost::of(before).flops > 2_000_000_000
        || bnc_ir::limits::value_bytes(before) > 1 << 28
    {
        return Ok(());
    }
    let inputs: Vec<bnc_ir::Tensor> = before
        .inputs
        .iter()
        .map(|&i| {
            let shape = before.shape(i).clone();
            let n = shape.iter().product::<usize>();
            let data = (0..n)
                .map(|k| ((k * 7919 % 2003) as f32 / 1001.5) - 1.0)
                .collect();
            bnc_ir::Tensor::new(shape, data)
        })
        .collect();
    let run = |g: &Graph| bnc_ir::interp::run(g, &inputs).map_err(|e| e.to_string());
    for (want, got) in run(before)?.iter().zip(&run(after)?) {
        let err = want.max_abs_diff(got);
        if err > 1e-4 * want.max_abs().max(1e-6) {
            return Err(format!(
                "internal error: the folded graph differs from the original by {err} (max |y| = {})",
                want.max_abs()
            ));
        }
    }
    Ok(())
}

/// Where each batch-norm's atoms ended up in the extracted graph, which says what became of
/// it, channel by channel (each channel has its own scale and shift atoms): its scale in a
/// layer's epilogue (folded backward) or prologue (forward), in a remaining map's scale
/// (kept), or only a shift left in a remaining map (scale folded, shift kept). Layers and maps
/// holding the inverse of its scale are the compensated readers. A batch-norm whose channels
/// went different ways gets a `Split` fate, one part per way.
pub fn fates(
    fg: &FoldGraph,
    frozen: &extract::Frozen,
    choice: &extract::Choice,
    names: &HashMap<usize, String>,
    canonical: &Graph,
) -> Vec<(String, crate::report::Fate)> {
    use crate::report::{ChannelFate, Fate};
    use exact::Presence;
    use std::collections::HashSet;

    /// Where one channel's atoms are, as indices into the table of names.
    #[derive(Clone, Default)]
    struct ChannelTrace {
        backward: Vec<usize>,
        forward: Vec<usize>,
        compensated: Vec<usize>,
        kept: Option<usize>,
        shift_kept: Option<usize>,
        pad_fill: bool,
    }
    fn push(list: &mut Vec<usize>, name: usize) {
        if !list.contains(&name) {
            list.push(name);
        }
    }
    // Names in the order they are first met in the extracted graph, so that a list merged
    // from several channels (sorted by index) keeps that order.
    let mut table: Vec<String> = Vec::new();
    let mut name_index: HashMap<String, usize> = HashMap::new();
    let mut intern = |name: String| -> usize {
        *name_index.entry(name.clone()).or_insert_with(|| {
            table.push(name);
            table.len() - 1
        })
    };

    // Which target and channel each atom belongs to, and each target's atom sets.
    let mut owner: HashMap<exact::Atom, (usize, usize)> = HashMap::new();
    let mut scales: Vec<HashSet<exact::Atom>> = Vec::new();
    let mut all: Vec<HashSet<exact::Atom>> = Vec::new();
    let mut traces: Vec<Vec<ChannelTrace>> = Vec::new();
    let mut has_atoms: Vec<Vec<bool>> = Vec::new();
    for (t, target) in fg.targets.iter().enumerate() {
        let map = fg.maps.get(target.map);
        scales.push(map.scale.iter().flat_map(|s| s.mono.atoms()).collect());
        all.push(map.atoms_all().collect());
        let mut atoms = vec![false; map.len()];
        for (c, has) in atoms.iter_mut().enumerate() {
            for a in map.slice(c, 1).atoms_all() {
                owner.insert(a, (t, c));
                *has = true;
            }
        }
        has_atoms.push(atoms);
        traces.push(vec![ChannelTrace::default(); map.len()]);
    }

    // The presence of each target channel in a map: per map channel, the target channels
    // whose atoms it holds.
    let presences = |map: &exact::ExactMap| -> Vec<(usize, usize, Presence)> {
        let mut found = Vec::new();
        if !map.atoms_all().any(|a| owner.contains_key(&a)) {
            return found;
        }
        for j in 0..map.len() {
            let channel = map.slice(j, 1);
            let mut hit: Vec<(usize, usize)> = channel
                .atoms_all()
                .filter_map(|a| owner.get(&a).copied())
                .collect();
            hit.sort_unstable();
            hit.dedup();
            for (t, c) in hit {
                found.push((t, c, channel.presence(&scales[t], &all[t])));
            }
        }
        found
    };

    let needed = frozen.needed(choice).unwrap_or_default();
    for &class in &needed {
        match &frozen.nodes[class][choice[class]] {
            FoldNode::Layer { node, pro, epi, .. } => {
                // Name the layer as in the source, not the value it now computes.
                let name = intern(
                    canonical
                        .value(canonical.nodes[*node as usize].output)
                        .name
                        .clone(),
                );
                for (t, c, presence) in presences(fg.maps.get(*epi)) {
                    let trace = &mut traces[t][c];
                    match presence {
                        Presence::Direct | Presence::ShiftOnly => push(&mut trace.backward, name),
                        Presence::Inverse => push(&mut trace.compensated, name),
                        Presence::Absent => {}
                    }
                }
                let pads = matches!(&canonical.nodes[*node as usize].op,
                    Op::Conv2d(c) if c.pad.iter().any(|&p| p > 0));
                for (t, c, presence) in presences(fg.maps.get(*pro)) {
                    let trace = &mut traces[t][c];
                    match presence {
                        Presence::Direct | Presence::ShiftOnly => {
                            push(&mut trace.forward, name);
                            trace.pad_fill |= pads;
                        }
                        Presence::Inverse => push(&mut trace.compensated, name),
                        Presence::Absent => {}
                    }
                }
            }
            FoldNode::Aff { map, .. } => {
                let found = presences(fg.maps.get(*map));
                if found.is_empty() {
                    continue;
                }
                let name = intern(names[&class].clone());
                for (t, c, presence) in found {
                    let trace = &mut traces[t][c];
                    match presence {
                        Presence::Direct => {
                            trace.kept.get_or_insert(name);
                        }
                        Presence::Inverse => push(&mut trace.compensated, name),
                        Presence::ShiftOnly => {
                            trace.shift_kept.get_or_insert(name);
                        }
                        Presence::Absent => {}
                    }
                }
            }
            _ => {}
        }
    }

    /// What a channel became; channels of one kind form one part of the fate.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Kind {
        Kept,
        ShiftKept,
        Forward,
        Backward,
    }
    let kind_of = |trace: &ChannelTrace| {
        if trace.kept.is_some() {
            Kind::Kept
        } else if trace.shift_kept.is_some() {
            Kind::ShiftKept
        } else if !trace.forward.is_empty() && trace.backward.is_empty() {
            Kind::Forward
        } else {
            Kind::Backward
        }
    };
    let named = |list: &[usize]| -> Vec<String> {
        let mut sorted = list.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        sorted.into_iter().map(|n| table[n].clone()).collect()
    };
    // One part's fate from the traces of its channels (lists merged, in graph order).
    let fate_of = |kind: Kind, channels: &[&ChannelTrace]| -> Fate {
        let merged = |lists: Vec<&Vec<usize>>| -> Vec<String> {
            named(&lists.into_iter().flatten().copied().collect::<Vec<usize>>())
        };
        let backward = merged(channels.iter().map(|c| &c.backward).collect());
        let forward = merged(channels.iter().map(|c| &c.forward).collect());
        let compensated = merged(channels.iter().map(|c| &c.compensated).collect());
        // The first map in graph order that holds them.
        let first = |at: Vec<Option<usize>>| -> String {
            table[at
                .into_iter()
                .flatten()
                .min()
                .expect("one per channel of this kind")]
            .clone()
        };
        match kind {
            Kind::Kept => Fate::Kept {
                reason: format!(
                    "no exact fold is cheaper; it remains as the map `{}`",
                    first(channels.iter().map(|c| c.kept).collect())
                ),
                blocking: None,
            },
            Kind::ShiftKept => Fate::Partial {
                scale_into: [backward, forward].concat(),
                shift_kept_as: first(channels.iter().map(|c| c.shift_kept).collect()),
            },
            Kind::Forward => Fate::FoldedForward {
                into: forward,
                pad_fill: channels.iter().any(|c| c.pad_fill),
                compensated,
            },
            Kind::Backward => Fate::FoldedBackward {
                into: [backward, forward].concat(),
                compensated,
            },
        }
    };

    let mut fates = Vec::new();
    for (t, target) in fg.targets.iter().enumerate() {
        // Parts in order of their first channel. Channels without atoms (scale 1, shift 0)
        // are the identity: they join the first folded part (or the first part).
        let mut parts: Vec<(Kind, Vec<usize>)> = Vec::new();
        for (c, trace) in traces[t].iter().enumerate() {
            if !has_atoms[t][c] {
                continue;
            }
            let kind = kind_of(trace);
            match parts.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, channels)) => channels.push(c),
                None => parts.push((kind, vec![c])),
            }
        }
        let identity: Vec<usize> = (0..traces[t].len()).filter(|&c| !has_atoms[t][c]).collect();
        if !identity.is_empty() {
            let folded = parts
                .iter()
                .position(|(k, _)| matches!(k, Kind::Forward | Kind::Backward));
            match folded.or((!parts.is_empty()).then_some(0)) {
                Some(p) => {
                    parts[p].1.extend(identity);
                    parts[p].1.sort_unstable();
                }
                None => parts.push((Kind::Backward, identity)),
            }
        }
        let mut part_fates: Vec<ChannelFate> = parts
            .iter()
            .map(|(kind, channels)| {
                let channel_traces: Vec<&ChannelTrace> =
                    channels.iter().map(|&c| &traces[t][c]).collect();
                ChannelFate {
                    channels: channels.clone(),
                    fate: fate_of(*kind, &channel_traces),
                }
            })
            .collect();
        let fate = if part_fates.len() == 1 {
            part_fates.pop().expect("one part").fate
        } else {
            Fate::Split { parts: part_fates }
        };
        fates.push((target.name.clone(), fate));
    }
    fates
}

/// A closure plan added to the e-graph: the nodes it makes every touched class use.
#[derive(Clone, Debug)]
pub struct PlanNodes {
    pub target: usize,
    pub direction: crate::closure::Direction,
    /// `(class, node)`: the class must select this node when the plan is applied.
    pub forced: Vec<(Id, FoldNode)>,
    /// Classes of the changed values its roots produce: when the plan is applied they take
    /// their cheapest node given what is computed (a root may absorb other maps too).
    pub flexible: Vec<Id>,
}

impl FoldGraph {
    /// Adds, for every target and direction where the closure engine finds an exact fold,
    /// the equalities of that fold: each changed value `v` gets the class `aff(v, E_v)`,
    /// equal to its producer rebuilt on changed inputs (distribution over `add`, concat
    /// slices, pools), and each absorbing reader gets its compensated form `L ∘ E_v⁻¹` (at the
    /// consumer: no inverse map enters a shared tensor's class). Nothing else distributes
    /// maps over `add`, so the e-graph stays the size of the model.
    pub fn add_plans(&mut self, graph: &Graph) -> Vec<PlanNodes> {
        use crate::closure::{Direction, Index, plan_indexed};
        let index = Index::new(graph);
        let mut plans = Vec::new();
        for t in 0..self.targets.len() {
            let target = self.targets[t].clone();
            for direction in [Direction::Backward, Direction::Forward] {
                let Ok(p) = plan_indexed(graph, &index, target.node, direction) else {
                    continue;
                };
                let Some(trace) = p.trace else { continue };
                let start = match direction {
                    Direction::Backward => self.maps.get(target.map).clone(),
                    Direction::Forward => {
                        if self.maps.value(target.map).scale.contains(&0.0) {
                            continue;
                        }
                        match self.maps.get(target.map).inverse() {
                            Some(inv) => inv,
                            None => continue,
                        }
                    }
                };
                let mut changed: HashMap<usize, MapId> = HashMap::new();
                for (v, channels) in &trace {
                    let map = ExactMap {
                        scale: channels
                            .iter()
                            .map(|(s, _)| s.map_or(exact::Term::one(), |c| start.scale[c].clone()))
                            .collect(),
                        shift: channels
                            .iter()
                            .map(|(_, t)| t.map_or(exact::Poly::zero(), |c| start.shift[c].clone()))
                            .collect(),
                    };
                    let id = self.maps.intern(map);
                    changed.insert(v.0, id);
                }
                let (forced, flexible) = self.plan_equalities(graph, &changed);
                plans.push(PlanNodes {
                    target: t,
                    direction,
                    forced,
                    flexible,
                });
            }
        }
        self.egraph.rebuild();
        plans
    }

    /// The class standing for value `v` after the plan: `aff(v, E_v)` or `v` itself.
    fn changed_class(&mut self, v: usize, changed: &HashMap<usize, MapId>) -> Id {
        let class = self.value_class[v];
        match changed.get(&v) {
            Some(&map) if !self.maps.get(map).is_identity() => {
                self.egraph.add(FoldNode::aff(map, class))
            }
            _ => class,
        }
    }

    fn plan_equalities(
        &mut self,
        graph: &Graph,
        changed: &HashMap<usize, MapId>,
    ) -> (Vec<(Id, FoldNode)>, Vec<Id>) {
        let mut forced = Vec::new();
        let mut flexible = Vec::new();
        for (index, node) in graph.nodes.iter().enumerate() {
            let out = node.output.0;
            let out_changed = changed.contains_key(&out);
            let in_changed = node.inputs.iter().any(|i| changed.contains_key(&i.0));
            if !out_changed && !in_changed {
                continue;
            }
            let inputs: Vec<Id> = node
                .inputs
                .iter()
                .map(|i| self.changed_class(i.0, changed))
                .collect();
            let undo = |fg: &mut FoldGraph, u: usize| -> Option<ExactMap> {
                changed.get(&u).map(|&m| {
                    fg.maps
                        .get(m)
                        .inverse()
                        .expect("plan maps are invertible where undone")
                })
            };
            let redo = |fg: &FoldGraph| changed.get(&out).map(|&m| fg.maps.get(m).clone());
            let rebuilt = match (&node.op, &self.original[index]) {
                (
                    Op::Conv2d(_)
                    | Op::Dense { .. }
                    | Op::ConvTranspose2d(_)
                    | Op::LayerNorm { .. },
                    Some(FoldNode::Layer {
                        node: n, pro, epi, ..
                    }),
                ) => {
                    let (n, mut pro, mut epi) = (*n, *pro, *epi);
                    if let Some(u) = undo(self, node.inputs[0].0) {
                        pro = self.maps.intern(u.then(self.maps.get(pro)));
                    }
                    if let Some(e) = redo(self) {
                        epi = self.maps.intern(self.maps.get(epi).then(&e));
                    }
                    Some(FoldNode::Layer {
                        node: n,
                        pro,
                        epi,
                        x: [inputs[0]],
                    })
                }
                (Op::Affine, _) => {
                    let own = ChannelMap::of_affine(graph, node);
                    let mut map = match &self.original[index] {
                        Some(FoldNode::Aff { map, .. }) => self.maps.get(*map).clone(),
                        _ => ExactMap::identity(own.len()),
                    };
                    if let Some(u) = undo(self, node.inputs[0].0) {
                        map = u.then(&map);
                    }
                    if let Some(e) = redo(self) {
                        map = map.then(&e);
                    }
                    if map.is_identity() {
                        // The folded map itself: its class is its (changed) input.
                        let target = if out_changed {
                            self.changed_class(out, changed)
                        } else {
                            self.value_class[out]
                        };
                        self.egraph.union(target, inputs[0]);
                        None
                    } else {
                        let map = self.maps.intern(map);
                        Some(FoldNode::aff(map, inputs[0]))
                    }
                }
                (
                    Op::Conv2d(_)
                    | Op::Dense { .. }
                    | Op::BatchNorm { .. }
                    | Op::Activation(_)
                    | Op::Add
                    | Op::Mul
                    | Op::Concat
                    | Op::MaxPool(_)
                    | Op::AvgPool(_)
                    | Op::GlobalAvgPool
                    | Op::Pad { .. }
                    | Op::Flatten
                    | Op::Identity
                    | Op::Dropout
                    | Op::Softmax
                    | Op::Resize(_)
                    | Op::ChannelShuffle { .. }
                    | Op::SliceChannels { .. }
                    | Op::GlobalMaxPool
                    | Op::ConvTranspose2d(_)
                    | Op::LayerNorm { .. },
                    _,
                ) => Some(FoldNode::Op {
                    node: index as u32,
                    args: inputs.into_boxed_slice(),
                }),
            };
            if let Some(rebuilt) = rebuilt {
                let class = if out_changed {
                    self.changed_class(out, changed)
                } else {
                    self.value_class[out]
                };
                let id = self.egraph.add(rebuilt.clone());
                self.egraph.union(class, id);
                let root_only =
                    !in_changed && matches!(rebuilt, FoldNode::Layer { .. } | FoldNode::Aff { .. });
                if root_only {
                    flexible.push(class);
                } else {
                    forced.push((class, rebuilt));
                }
            }
        }
        (forced, flexible)
    }
}
