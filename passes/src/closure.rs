//! The closure engine behind `fold-paper`: our generalisation of the roots/leaves closure of
//! Yvinec et al. (docs/design.md §3), with backward and forward folding as one engine.
//!
//! A *plan* removes a target `affine` node A (map M, input x, output y) by changing a set of
//! values: every changed value v is replaced by `v' = E_v(v)` for a per-channel map E_v.
//! - Backward: E_x = M, so A's readers can read x' directly.
//! - Forward: y' = x, that is E_y = M⁻¹; readers of y absorb M.
//!
//! Layers that can absorb a map (conv2d, dense, affine: "absorbers") make a change real: a
//! *root* produces a changed value and absorbs E_v in its epilogue; a *leaf* reads one and
//! absorbs E_v⁻¹ in its prologue. Transparent layers (add, concat, maxpool with non-negative
//! scales, avgpool without counted padding, global_avgpool, flatten of 1×1 maps) pass a change
//! through; anything else blocks it.
//!
//! [`plan`] works in two steps:
//! 1. *Closure* (a worklist over values, each value's knowledge growing monotonically per
//!    channel): which values change and with which scale, and where the start's shift goes.
//!    Scales are constraints (an add's inputs and output share them, a concat splits them);
//!    a shift is only carried from the start towards one root (an add hands it to its first
//!    input), and unset shifts end as 0.
//! 2. *Evaluation*: one pass over the nodes in topological order computes the map every value
//!    really carries after the plan (roots: what the closure chose; transparent layers: what
//!    their inputs give them), checks every commutation condition on those actual maps, checks
//!    that the start ends with exactly the required map, and computes the new parameters of
//!    every absorber touched. This step alone decides; the closure only proposes. A plan
//!    that evaluates is exact by construction (up to f32 rounding of the new parameters).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;

use bnc_ir::{Graph, Node, NodeId, Op, Transparency, ValueId, shuffle_source};

use crate::affine::{
    Absorption, ChannelMap, absorb_any, absorb_output, apply_absorption, is_absorber,
};
use crate::conditioning::{self, Spread};

/// Which way a plan folds its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Into the layers producing the target's input.
    Backward,
    /// Into the layers reading the target's output.
    Forward,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Backward => "backward",
            Direction::Forward => "forward",
        }
    }
}

/// Why a plan cannot be made: the node where it stopped, and what is wrong there.
#[derive(Clone, Debug, PartialEq)]
pub struct Blocked {
    /// Name of the node (its output value) or value where the plan stopped.
    pub node: String,
    /// What is wrong there, e.g. `relu` or `maxpool: channel 3 has scale -0.5`.
    pub what: String,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blocked at `{}` ({})", self.node, self.what)
    }
}

/// One absorbing layer a plan changes.
#[derive(Clone, Debug, PartialEq)]
pub struct Edit {
    /// Index of the node in `graph.nodes` (valid for the graph the plan was made on).
    pub node: usize,
    /// Its name (its output value's).
    pub name: String,
    /// Its new parameters.
    pub absorption: Absorption,
    /// It reads a changed value and undoes the change (a leaf).
    pub prologue: bool,
    /// It produces a changed value (a root).
    pub epilogue: bool,
}

/// A fold that evaluated: applying it with [`apply`] keeps the graph's outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub direction: Direction,
    /// Index of the folded `affine` node.
    pub target: usize,
    pub edits: Vec<Edit>,
    /// Every value the plan changes, in topological order, with where each channel's scale
    /// and shift come from: a channel of the start map (the target's map backward, its
    /// inverse forward), or `None` for scale 1 / shift 0. `None` when some map is not a plain
    /// copy of start channels (the plan is still exact, but has no traced form).
    pub trace: Option<Vec<(ValueId, Trace)>>,
    /// Every value the plan changes, with the map it then carries (`v' = E_v(v)`).
    pub changed: Vec<(ValueId, ChannelMap)>,
}

/// Per channel: the start channel its scale and its shift are copied from.
pub type Trace = Vec<(Option<usize>, Option<usize>)>;

impl Plan {
    /// Layers absorbing a map on their output (roots), by name.
    pub fn roots(&self) -> Vec<String> {
        self.edits
            .iter()
            .filter(|e| e.epilogue)
            .map(|e| e.name.clone())
            .collect()
    }

    /// Layers absorbing a map on their input (leaves), by name.
    pub fn leaves(&self) -> Vec<String> {
        self.edits
            .iter()
            .filter(|e| e.prologue)
            .map(|e| e.name.clone())
            .collect()
    }

    /// Whether some conv absorbing a map on its input now pads with a per-channel fill.
    pub fn pad_fill(&self) -> bool {
        self.edits
            .iter()
            .any(|e| e.prologue && e.absorption.has_pad_fill())
    }
}

/// Plans folding the `affine` node `target` in `direction`, without changing the graph.
pub fn plan(graph: &Graph, target: usize, direction: Direction) -> Result<Plan, Blocked> {
    plan_indexed(graph, &Index::new(graph), target, direction)
}

/// Who reads and who produces each value, kept up to date by [`apply_indexed`] so that a
/// pass folding many BNs does not rescan the graph for each (which made folding quadratic
/// in the model's size).
#[derive(Clone, Debug)]
pub struct Index {
    users: Vec<Vec<NodeId>>,
    producer: Vec<Option<usize>>,
    is_output: Vec<bool>,
    /// Nodes bypassed by an applied plan (removed at the end by `remove_dead`).
    dead: Vec<bool>,
    /// What each value carries, for the numerical condition ([`conditioning`]).
    spreads: Vec<Spread>,
}

impl Index {
    pub fn new(graph: &Graph) -> Index {
        let n = graph.values.len();
        let mut producer = vec![None; n];
        for (i, node) in graph.nodes.iter().enumerate() {
            producer[node.output.0] = Some(i);
        }
        let mut is_output = vec![false; n];
        for &o in &graph.outputs {
            is_output[o.0] = true;
        }
        let mut users = graph.users();
        for list in &mut users {
            list.dedup();
        }
        Index {
            users,
            producer,
            is_output,
            dead: vec![false; graph.nodes.len()],
            spreads: conditioning::estimate(graph),
        }
    }
}

/// [`plan`] with a prebuilt index of `graph`.
pub fn plan_indexed(
    graph: &Graph,
    index: &Index,
    target: usize,
    direction: Direction,
) -> Result<Plan, Blocked> {
    let node = &graph.nodes[target];
    assert_eq!(node.op, Op::Affine, "only affine nodes are folded");
    let map = ChannelMap::of_affine(graph, node);
    let mut engine = Engine::new(graph, index, target, direction, map);
    engine.close()?;
    engine.evaluate()
}

/// Applies a plan made by [`plan_indexed`] with this index, keeping the index valid. The
/// bypassed target stays in `graph.nodes` (dead); call `graph.remove_dead()` when done.
pub fn apply_indexed(graph: &mut Graph, index: &mut Index, plan: Plan) {
    for edit in plan.edits {
        apply_absorption(graph, edit.node, edit.absorption);
    }
    for (v, map) in &plan.changed {
        index.spreads[v.0] = index.spreads[v.0].mapped(map);
    }
    bypass_indexed(graph, index, plan.target);
}

/// Makes the readers of one-input node `node`'s output read its input instead (keeping
/// graph-output names) and marks the node dead, keeping the index valid.
pub fn bypass_indexed(graph: &mut Graph, index: &mut Index, node: usize) {
    let target = &graph.nodes[node];
    let (x, y) = (target.inputs[0], target.output);
    let target_id = NodeId(node);
    if index.is_output[y.0] {
        // Rare: renames values and rewires graph outputs.
        graph.forward_value(y, x);
        index.is_output[x.0] = true;
        index.is_output[y.0] = false;
    } else {
        for &reader in &index.users[y.0] {
            for input in &mut graph.nodes[reader.0].inputs {
                if *input == y {
                    *input = x;
                }
            }
        }
    }
    // The target no longer reads x; y's readers read x now.
    graph.nodes[node].inputs.clear();
    let moved = std::mem::take(&mut index.users[y.0]);
    let users = &mut index.users[x.0];
    users.retain(|&u| u != target_id);
    for u in moved {
        if !users.contains(&u) {
            users.push(u);
        }
    }
    index.dead[node] = true;
}

impl Index {
    /// The nodes reading value `v` (each once).
    pub fn users(&self, v: ValueId) -> &[NodeId] {
        &self.users[v.0]
    }

    /// The node computing `v`, or `None` for a graph input.
    pub fn producer(&self, v: ValueId) -> Option<usize> {
        self.producer[v.0]
    }

    pub fn is_output(&self, v: ValueId) -> bool {
        self.is_output[v.0]
    }

    /// The estimated spread of what value `v` carries.
    pub fn spread(&self, v: ValueId) -> &Spread {
        &self.spreads[v.0]
    }
}

/// How a node treats a per-channel map flowing through it.
enum Kind {
    /// conv2d, dense, affine.
    Absorber,
    Add,
    Concat,
    /// Commutes with maps whose scales are all ≥ 0.
    MaxPool,
    /// Commutes with any per-channel map, which it passes on unchanged.
    SameMap,
    /// A channel shuffle: maps pass with their channels permuted the same way.
    Permute {
        groups: usize,
    },
    /// A channel slice: maps pass with their vectors sliced.
    Slice {
        start: usize,
        end: usize,
    },
    /// Does not commute; the text says what it is.
    Blocking(String),
    /// Absorbs a map on its output in its per-channel weight and bias, but no map on its
    /// input passes it (layer_norm): it can be a root, never a leaf.
    OutputAbsorber,
}

/// The closure's reading of the operator table ([`Op::transparency`]): it moves whole maps
/// (scale and shift) and does not repeat them over flattened positions.
fn kind(graph: &Graph, node: &Node) -> Kind {
    let op = &node.op;
    match op.transparency(graph.shape(node.inputs[0])) {
        Transparency::Absorbs => Kind::Absorber,
        Transparency::SumsInputs => Kind::Add,
        Transparency::Concatenates => Kind::Concat,
        Transparency::NonNegativeScale => Kind::MaxPool,
        Transparency::Commutes => Kind::SameMap,
        Transparency::Permutes { groups } => Kind::Permute { groups },
        Transparency::Slices { start, end } => Kind::Slice { start, end },
        Transparency::Repeat { .. } => Kind::Blocking(format!("{} of a spatial map", op.name())),
        Transparency::Blocks(what) => Kind::Blocking(what.into()),
        Transparency::ScaleOnly | Transparency::NeedsFill => Kind::Blocking(op.name().into()),
        Transparency::AbsorbsOutput => Kind::OutputAbsorber,
    }
}

/// Why a map on the input of an [`Kind::OutputAbsorber`] cannot pass it.
fn output_absorber_blocks(op: &Op) -> String {
    format!(
        "{}: a map on its input does not pass (it normalises across channels)",
        op.name()
    )
}

/// What the closure knows about one value, per channel: its scale, and the shift it must
/// carry if the start's shift was routed through it.
#[derive(Clone)]
struct Req {
    scale: Vec<Option<f64>>,
    shift: Vec<Option<f64>>,
    /// The start channel each known scale and shift was copied from.
    scale_src: Vec<usize>,
    shift_src: Vec<usize>,
}

/// One known channel: (channel, scale, shift if routed here).
/// One known channel: (channel, scale, shift if routed here, the start channel both come
/// from). Every scale and shift the closure sets is a copy of one start channel's, which is
/// what lets the e-graph rebuild the same maps exactly.
type Entry = (usize, f64, Option<f64>, usize);

struct Engine<'g> {
    graph: &'g Graph,
    users: &'g [Vec<NodeId>],
    producer: &'g [Option<usize>],
    is_output: &'g [bool],
    dead: &'g [bool],
    spreads: &'g [Spread],
    target: usize,
    direction: Direction,
    x: ValueId,
    y: ValueId,
    map: ChannelMap,
    // Sparse: a plan touches few values, and allocating per value made each plan O(model).
    reqs: HashMap<usize, Req>,
    queued: HashSet<usize>,
    work: VecDeque<ValueId>,
    /// Whether every map can be traced to start channels (see [`Entry`]).
    traceable: bool,
}

impl<'g> Engine<'g> {
    fn new(
        graph: &'g Graph,
        index: &'g Index,
        target: usize,
        direction: Direction,
        map: ChannelMap,
    ) -> Self {
        let node = &graph.nodes[target];
        Engine {
            graph,
            users: &index.users,
            producer: &index.producer,
            is_output: &index.is_output,
            dead: &index.dead,
            spreads: &index.spreads,
            target,
            direction,
            x: node.inputs[0],
            y: node.output,
            map,
            reqs: HashMap::new(),
            queued: HashSet::new(),
            work: VecDeque::new(),
            traceable: true,
        }
    }

    fn name(&self, v: ValueId) -> String {
        self.graph.value(v).name.clone()
    }

    fn node_name(&self, index: usize) -> String {
        self.name(self.graph.nodes[index].output)
    }

    fn channels(&self, v: ValueId) -> usize {
        self.graph.shape(v)[1]
    }

    fn block(&self, node: usize, what: impl Into<String>) -> Blocked {
        Blocked {
            node: self.node_name(node),
            what: what.into(),
        }
    }

    fn entries(map: &ChannelMap, with_shift: bool) -> Vec<Entry> {
        (0..map.len())
            .map(|c| (c, map.scale[c], with_shift.then_some(map.shift[c]), c))
            .collect()
    }

    /// Adds knowledge about `v`; queues it when something new is learnt. A scale that
    /// disagrees with a known one fails; a shift only fills an unset one.
    fn request(&mut self, v: ValueId, entries: &[Entry]) -> Result<(), Blocked> {
        if entries.is_empty() {
            return Ok(());
        }
        let channels = self.channels(v);
        let req = self.reqs.entry(v.0).or_insert_with(|| Req {
            scale: vec![None; channels],
            shift: vec![None; channels],
            scale_src: vec![0; channels],
            shift_src: vec![0; channels],
        });
        let mut learnt = false;
        let mut traceable = true;
        for &(c, s, t, src) in entries {
            if req.scale[c].is_some() && req.scale_src[c] != src {
                // Equal values from different start channels: fine numerically, but the
                // exact form is ambiguous.
                traceable = false;
            }
            match req.scale[c] {
                Some(old) if old != s => {
                    return Err(Blocked {
                        node: self.graph.value(v).name.clone(),
                        what: format!("conflicting maps: channel {c} needs scale {old} and {s}"),
                    });
                }
                Some(_) => {}
                None => {
                    req.scale[c] = Some(s);
                    req.scale_src[c] = src;
                    learnt = true;
                }
            }
            if let (Some(t), None) = (t, req.shift[c]) {
                req.shift[c] = Some(t);
                req.shift_src[c] = src;
                traceable &= req.scale_src[c] == src;
                learnt = true;
            }
        }
        self.traceable &= traceable;
        if learnt && !self.queued.contains(&v.0) {
            self.queued.insert(v.0);
            self.work.push_back(v);
        }
        Ok(())
    }

    fn known(&self, v: ValueId) -> Vec<Entry> {
        let Some(req) = self.reqs.get(&v.0) else {
            return Vec::new();
        };
        req.scale
            .iter()
            .zip(&req.shift)
            .enumerate()
            .filter_map(|(c, (s, t))| s.map(|s| (c, s, *t, req.scale_src[c])))
            .collect()
    }

    /// Runs the closure from the start value.
    fn close(&mut self) -> Result<(), Blocked> {
        if !self.graph.can_forward(self.y, self.x) {
            return Err(Blocked {
                node: self.name(self.y),
                what: "the folded map is between a graph input and a graph output".into(),
            });
        }
        match self.direction {
            Direction::Backward => {
                let entries = Self::entries(&self.map, true);
                self.request(self.x, &entries)?;
            }
            Direction::Forward => match self.map.inverse() {
                Ok(inverse) => {
                    let entries = Self::entries(&inverse, true);
                    self.request(self.y, &entries)?;
                }
                Err(e) => {
                    // Without an inverse only absorbers may read y: they absorb M directly.
                    if self.is_output[self.y.0] {
                        return Err(Blocked {
                            node: self.name(self.y),
                            what: format!("graph output, and {e}"),
                        });
                    }
                    for &r in &self.users[self.y.0] {
                        let node = &self.graph.nodes[r.0];
                        if !is_absorber(&node.op) {
                            return Err(self.block(r.0, format!("{}: {e}", node.op.name())));
                        }
                    }
                }
            },
        }
        while let Some(v) = self.work.pop_front() {
            self.queued.remove(&v.0);
            self.visit(v)?;
        }
        Ok(())
    }

    fn visit(&mut self, v: ValueId) -> Result<(), Blocked> {
        let graph = self.graph;
        let known = self.known(v);
        let changes = known
            .iter()
            .any(|&(_, s, t, _)| s != 1.0 || t.is_some_and(|t| t != 0.0));
        if changes && self.is_output[v.0] {
            return Err(Blocked {
                node: self.name(v),
                what: "graph output".into(),
            });
        }
        let pinned = match self.direction {
            Direction::Backward => v == self.y,
            Direction::Forward => v == self.x,
        };
        if changes && pinned {
            return Err(self.block(self.target, "the folded map itself would have to change"));
        }
        let scale_only: Vec<Entry> = known
            .iter()
            .map(|&(c, s, _, src)| (c, s, None, src))
            .collect();

        // Producer side: make the change where v is computed.
        let is_start_of_forward = self.direction == Direction::Forward && v == self.y;
        if !is_start_of_forward {
            match self.producer[v.0] {
                None if changes => {
                    return Err(Blocked {
                        node: self.name(v),
                        what: "graph input".into(),
                    });
                }
                None => {}
                Some(p) => {
                    let node = &graph.nodes[p];
                    match kind(graph, node) {
                        Kind::Absorber | Kind::OutputAbsorber => {}
                        Kind::Add => {
                            for (k, &input) in node.inputs.iter().enumerate() {
                                self.request(input, if k == 0 { &known } else { &scale_only })?;
                            }
                        }
                        Kind::Concat => {
                            let mut offset = 0;
                            for &input in &node.inputs {
                                let n = self.channels(input);
                                let slice: Vec<Entry> = known
                                    .iter()
                                    .filter(|e| (offset..offset + n).contains(&e.0))
                                    .map(|&(c, s, t, src)| (c - offset, s, t, src))
                                    .collect();
                                self.request(input, &slice)?;
                                offset += n;
                            }
                        }
                        Kind::MaxPool => {
                            self.check_sign(p, v, &known)?;
                            self.request(node.inputs[0], &known)?;
                        }
                        Kind::SameMap => self.request(node.inputs[0], &known)?,
                        // Output channel o of a shuffle is input channel source(o).
                        Kind::Permute { groups } => {
                            let c = self.channels(v);
                            let moved: Vec<Entry> = known
                                .iter()
                                .map(|&(o, s, t, src)| (shuffle_source(c, groups, o), s, t, src))
                                .collect();
                            self.request(node.inputs[0], &moved)?;
                        }
                        // Output channel k of a slice is input channel start + k.
                        Kind::Slice { start, .. } => {
                            let moved: Vec<Entry> = known
                                .iter()
                                .map(|&(k, s, t, src)| (start + k, s, t, src))
                                .collect();
                            self.request(node.inputs[0], &moved)?;
                        }
                        Kind::Blocking(what) if changes => return Err(self.block(p, what)),
                        Kind::Blocking(_) => {}
                    }
                }
            }
        }

        // Reader side: every reader must undo the change or pass it on.
        let readers = self.users[v.0].clone();
        for r in readers {
            if r.0 == self.target {
                // Backward: the target goes away. Forward: v is x, pinned above.
                continue;
            }
            let node = &graph.nodes[r.0];
            match kind(graph, node) {
                Kind::Absorber => {
                    if !is_start_of_forward
                        && let Some(&(c, _, _, _)) = known.iter().find(|e| e.1 == 0.0)
                    {
                        return Err(self.block(
                            r.0,
                            format!(
                                "{}: channel {c} of `{}` has scale 0, which cannot be undone",
                                node.op.name(),
                                self.name(v)
                            ),
                        ));
                    }
                }
                Kind::Add => {
                    self.request(node.output, &scale_only)?;
                    for &input in &node.inputs {
                        if input != v {
                            self.request(input, &scale_only)?;
                        }
                    }
                }
                Kind::Concat => {
                    let mut offset = 0;
                    for &input in &node.inputs {
                        if input == v {
                            let moved: Vec<Entry> = scale_only
                                .iter()
                                .map(|&(c, s, t, src)| (c + offset, s, t, src))
                                .collect();
                            self.request(node.output, &moved)?;
                        }
                        offset += self.channels(input);
                    }
                }
                Kind::MaxPool => {
                    self.check_sign(r.0, v, &known)?;
                    self.request(node.output, &scale_only)?;
                }
                Kind::SameMap => self.request(node.output, &scale_only)?,
                // Input channel i = a·(C/g) + b of a shuffle becomes output channel b·g + a.
                Kind::Permute { groups } => {
                    let c = self.channels(v);
                    let per = c / groups;
                    let moved: Vec<Entry> = scale_only
                        .iter()
                        .map(|&(i, s, t, src)| ((i % per) * groups + i / per, s, t, src))
                        .collect();
                    self.request(node.output, &moved)?;
                }
                Kind::Slice { start, end } => {
                    let moved: Vec<Entry> = scale_only
                        .iter()
                        .filter(|e| (start..end).contains(&e.0))
                        .map(|&(c, s, t, src)| (c - start, s, t, src))
                        .collect();
                    self.request(node.output, &moved)?;
                }
                Kind::Blocking(what) if changes => return Err(self.block(r.0, what)),
                Kind::Blocking(_) => {}
                Kind::OutputAbsorber if changes => {
                    return Err(self.block(r.0, output_absorber_blocks(&node.op)));
                }
                Kind::OutputAbsorber => {}
            }
        }
        Ok(())
    }

    fn check_sign(&self, pool: usize, v: ValueId, known: &[Entry]) -> Result<(), Blocked> {
        match known.iter().find(|e| e.1 < 0.0) {
            Some(&(c, s, _, _)) => Err(self.block(
                pool,
                format!(
                    "maxpool: channel {c} of `{}` has negative scale {s}",
                    self.name(v)
                ),
            )),
            None => Ok(()),
        }
    }

    /// Where the channels of a root's chosen map come from.
    fn chosen_trace(&self, v: ValueId) -> Trace {
        let req = self.reqs.get(&v.0).expect("a root's output was requested");
        (0..req.scale.len())
            .map(|c| {
                (
                    req.scale[c].map(|_| req.scale_src[c]),
                    req.shift[c].map(|_| req.shift_src[c]),
                )
            })
            .collect()
    }

    /// The map a root gives its output: what the closure chose, identity where it chose
    /// nothing.
    fn chosen(&self, v: ValueId) -> Option<ChannelMap> {
        let req = self.reqs.get(&v.0)?;
        let map = ChannelMap {
            scale: req.scale.iter().map(|s| s.unwrap_or(1.0)).collect(),
            shift: req.shift.iter().map(|t| t.unwrap_or(0.0)).collect(),
        };
        (!map.is_identity()).then_some(map)
    }

    /// Computes the map every value carries after the plan, checks every layer against it,
    /// and computes the new parameters of the absorbers.
    fn evaluate(&self) -> Result<Plan, Blocked> {
        let graph = self.graph;
        let forward = self.direction == Direction::Forward;
        let inverse = self.map.inverse();
        // None: unchanged.
        let mut actual: HashMap<usize, ChannelMap> = HashMap::new();
        let mut trace: HashMap<usize, Trace> = HashMap::new();
        let mut traceable = self.traceable;
        let mut edits = Vec::new();
        // Only nodes next to a value the closure touched can change (nodes are in
        // topological order, so sorting their indices keeps it).
        let mut relevant: Vec<usize> = vec![self.target];
        for &v in self.reqs.keys() {
            {
                relevant.extend(self.producer[v]);
                relevant.extend(self.users[v].iter().map(|u| u.0));
            }
        }
        relevant.extend(self.users[self.y.0].iter().map(|u| u.0));
        relevant.sort_unstable();
        relevant.dedup();
        for i in relevant {
            if self.dead[i] {
                continue;
            }
            let node = &graph.nodes[i];
            let out = node.output;
            if i == self.target {
                match self.direction {
                    Direction::Backward => match actual.get(&self.x.0) {
                        Some(m) if *m == self.map => {}
                        Some(m) if m.scale == self.map.scale => {
                            return Err(Blocked {
                                node: self.name(self.x),
                                what: "shift reaches the start twice".into(),
                            });
                        }
                        _ => {
                            return Err(Blocked {
                                node: self.name(self.x),
                                what: "conflicting maps: the map arriving is not the folded one"
                                    .into(),
                            });
                        }
                    },
                    Direction::Forward => {
                        if actual.contains_key(&self.x.0) {
                            return Err(self.block(i, "its own input would change"));
                        }
                        if let Ok(inverse) = &inverse {
                            actual.insert(out.0, inverse.clone());
                        }
                        trace.insert(
                            out.0,
                            (0..self.map.len()).map(|c| (Some(c), Some(c))).collect(),
                        );
                    }
                }
                continue;
            }
            let reads_y = forward && node.inputs.contains(&self.y);
            let kind = kind(graph, node);
            if let Kind::OutputAbsorber = kind {
                // A map on its input never passes; one on its output joins its parameters.
                if reads_y || node.inputs.iter().any(|u| actual.contains_key(&u.0)) {
                    return Err(self.block(i, output_absorber_blocks(&node.op)));
                }
                if let Some(after) = self.chosen(out) {
                    let absorption = absorb_output(graph, node, &after)
                        .map_err(|e| self.block(i, format!("{}: {e}", node.op.name())))?;
                    edits.push(Edit {
                        node: i,
                        name: self.name(out),
                        absorption,
                        prologue: false,
                        epilogue: true,
                    });
                    trace.insert(out.0, self.chosen_trace(out));
                    actual.insert(out.0, after);
                }
                continue;
            }
            if let Kind::Absorber = kind {
                let u = node.inputs[0];
                let before = if reads_y {
                    Some(self.map.clone())
                } else {
                    match actual.get(&u.0) {
                        Some(m) => Some(m.inverse().map_err(|e| {
                            self.block(
                                i,
                                format!("{}: cannot undo `{}`: {e}", node.op.name(), self.name(u)),
                            )
                        })?),
                        None => None,
                    }
                };
                let after = self.chosen(out);
                if before.is_some() || after.is_some() {
                    let absorption = absorb_any(graph, node, before.as_ref(), after.as_ref())
                        .map_err(|e| self.block(i, format!("{}: {e}", node.op.name())))?;
                    if let Some(before) = &before {
                        let stored = if reads_y {
                            self.spreads[self.x.0].clone()
                        } else {
                            self.spreads[u.0].mapped(&actual[&u.0])
                        };
                        self.check_conditioning(i, before, &absorption, &stored)?;
                    }
                    edits.push(Edit {
                        node: i,
                        name: self.name(out),
                        absorption,
                        prologue: before.is_some(),
                        epilogue: after.is_some(),
                    });
                }
                if after.is_some() {
                    trace.insert(out.0, self.chosen_trace(out));
                }
                if let Some(after) = after {
                    actual.insert(out.0, after);
                }
                continue;
            }
            if let (true, Err(e)) = (reads_y, &inverse) {
                // y changes, but M has no inverse to describe how: only absorbers may read it.
                return Err(self.block(i, format!("{}: {e}", node.op.name())));
            }
            if !node.inputs.iter().any(|u| actual.contains_key(&u.0)) {
                continue;
            }
            let input = |u: ValueId| {
                actual
                    .get(&u.0)
                    .cloned()
                    .unwrap_or_else(|| ChannelMap::identity(self.channels(u)))
            };
            let input_trace = |u: ValueId| {
                trace
                    .get(&u.0)
                    .cloned()
                    .unwrap_or_else(|| vec![(None, None); self.channels(u)])
            };
            let result_trace: Trace = match kind {
                Kind::Add => {
                    let traces: Vec<Trace> = node.inputs.iter().map(|&u| input_trace(u)).collect();
                    (0..traces[0].len())
                        .map(|c| {
                            if traces.iter().any(|t| t[c].0 != traces[0][c].0) {
                                traceable = false;
                            }
                            let shifts: Vec<usize> = traces.iter().filter_map(|t| t[c].1).collect();
                            if shifts.len() > 1 {
                                traceable = false;
                            }
                            (traces[0][c].0, shifts.first().copied())
                        })
                        .collect()
                }
                Kind::Concat => node.inputs.iter().flat_map(|&u| input_trace(u)).collect(),
                Kind::Permute { groups } => {
                    let t = input_trace(node.inputs[0]);
                    (0..t.len())
                        .map(|o| t[shuffle_source(t.len(), groups, o)])
                        .collect()
                }
                Kind::Slice { start, end } => input_trace(node.inputs[0])[start..end].to_vec(),
                _ => input_trace(node.inputs[0]),
            };
            let result = match kind {
                Kind::Absorber | Kind::OutputAbsorber => unreachable!("handled above"),
                Kind::Add => {
                    let first = input(node.inputs[0]);
                    let mut shift = first.shift.clone();
                    for &u in &node.inputs[1..] {
                        let other = input(u);
                        if let Some(c) =
                            (0..first.len()).find(|&c| first.scale[c] != other.scale[c])
                        {
                            return Err(self.block(
                                i,
                                format!(
                                    "add: conflicting maps, channel {c} has scales {} and {}",
                                    first.scale[c], other.scale[c]
                                ),
                            ));
                        }
                        for (t, o) in shift.iter_mut().zip(&other.shift) {
                            *t += o;
                        }
                    }
                    ChannelMap {
                        scale: first.scale,
                        shift,
                    }
                }
                Kind::Concat => {
                    let mut map = ChannelMap {
                        scale: Vec::new(),
                        shift: Vec::new(),
                    };
                    for &u in &node.inputs {
                        let m = input(u);
                        map.scale.extend(m.scale);
                        map.shift.extend(m.shift);
                    }
                    map
                }
                Kind::MaxPool => {
                    let m = input(node.inputs[0]);
                    if let Some(c) = m.scale.iter().position(|&s| s < 0.0) {
                        return Err(self.block(
                            i,
                            format!("maxpool: channel {c} has negative scale {}", m.scale[c]),
                        ));
                    }
                    m
                }
                Kind::SameMap => input(node.inputs[0]),
                Kind::Permute { groups } => {
                    let m = input(node.inputs[0]);
                    let c = m.len();
                    let src = |o| shuffle_source(c, groups, o);
                    ChannelMap {
                        scale: (0..c).map(|o| m.scale[src(o)]).collect(),
                        shift: (0..c).map(|o| m.shift[src(o)]).collect(),
                    }
                }
                Kind::Slice { start, end } => input(node.inputs[0]).slice(start..end),
                Kind::Blocking(what) => return Err(self.block(i, what)),
            };
            if !result.is_identity() {
                trace.insert(out.0, result_trace);
            }
            if !result.is_identity() {
                actual.insert(out.0, result);
            }
        }
        for &o in &graph.outputs {
            if actual.contains_key(&o.0) {
                return Err(Blocked {
                    node: self.name(o),
                    what: "graph output".into(),
                });
            }
        }
        let trace = traceable.then(|| {
            let mut list: Vec<(ValueId, Trace)> =
                trace.into_iter().map(|(v, t)| (ValueId(v), t)).collect();
            list.sort_by_key(|(v, _)| *v);
            list
        });
        let mut changed: Vec<(ValueId, ChannelMap)> =
            actual.into_iter().map(|(v, m)| (ValueId(v), m)).collect();
        changed.sort_by_key(|(v, _)| *v);
        Ok(Plan {
            direction: self.direction,
            target: self.target,
            edits,
            trace,
            changed,
        })
    }

    /// Blocks a plan whose absorber `node`, reading a tensor of spread `stored` and absorbing
    /// `before` on its input, would not stay exact in f32 ([`conditioning`]).
    fn check_conditioning(
        &self,
        node: usize,
        before: &ChannelMap,
        absorption: &Absorption,
        stored: &Spread,
    ) -> Result<(), Blocked> {
        let graph = self.graph;
        let n = &graph.nodes[node];
        let checked = match absorption {
            Absorption::Layer(absorbed) => {
                let fill: Option<Vec<f64>> = absorbed
                    .pad_fill
                    .as_ref()
                    .map(|f| f.data.iter().map(|&v| v as f64).collect());
                let shape = graph.shape(n.inputs[0]);
                conditioning::check_layer(graph, n, before, fill.as_deref(), stored, shape)
            }
            // An affine reader: relative to what the affine itself amplifies on the tensor
            // it read before the plan.
            Absorption::Affine(_) => {
                let own = ChannelMap::of_affine(graph, n);
                conditioning::check(conditioning::affine_amplification(before, &own, stored))
            }
            // Never made: a layer_norm absorbs no map on its input.
            Absorption::Norm { .. } => Ok(()),
        };
        checked.map_err(|e| self.block(node, format!("{}: {e}", n.op.name())))
    }
}
