//! The local rewrites, saturated freely (docs/design.md §3, "Free rules"),
//! each guarded by its exactness condition checked on the actual numbers.
//!
//! A rule reads a snapshot of the e-graph and proposes equalities `class = expr`; the
//! saturation loop adds them all, then rebuilds. Maps are exact and interned, so a rewrite
//! and its inverse meet on the same e-node and the loop reaches a fixpoint.
//!
//! Conditions hold per channel (a sign, a non-zero scale). A rule whose condition holds on
//! some channels of a map moves that part ([`FoldGraph::qualifying`]) and leaves the rest
//! where it was. There is no free-standing "split a map" rule: splitting every map by every
//! condition, everywhere, and composing the parts with the other maps produced every
//! per-channel mixture of them (issue #11: 28,301 e-nodes, stopped by a time limit). Tied to
//! a move, a map splits only where that move can happen, once per move.

use bnc_ir::{MapRule, Op, Transparency};
use egg::Id;

use super::FoldGraph;
use super::exact::{ExactMap, MapId, Poly, Term};
use super::lang::FoldNode;

/// A term to add to the e-graph: existing classes combined with new nodes.
#[derive(Clone, Debug)]
pub enum Expr {
    Class(Id),
    Aff(MapId, Box<Expr>),
    Op(u32, Vec<Expr>),
    Layer {
        node: u32,
        pro: MapId,
        epi: MapId,
        x: Box<Expr>,
    },
    Pad {
        node: u32,
        fill: MapId,
        x: Box<Expr>,
    },
}

/// `class = expr`, found by `rule`.
#[derive(Clone, Debug)]
pub struct Equality {
    pub rule: &'static str,
    pub class: Id,
    pub expr: Expr,
}

/// Every rule's name, for firing counts.
pub const RULES: &[&str] = &[
    "fold-backward",
    "fold-forward",
    "compose",
    "pool-out",
    "pool-in",
    "concat-split",
    "concat-merge",
    "relu-scale-out",
    "relu-scale-in",
    "pad-in",
    "pad-out",
    "flatten-out",
    "flatten-in",
];

impl FoldGraph {
    /// `(qualifying, rest)`: the map on the channels whose scale meets `condition` (identity
    /// elsewhere) and on the others, so that `map = qualifying ∘ rest = rest ∘ qualifying`.
    /// `None` when no channel the map changes qualifies. `rest` is the identity when every
    /// channel does.
    fn qualifying(
        &mut self,
        map: MapId,
        condition: impl Fn(f64) -> bool,
    ) -> Option<(MapId, MapId)> {
        let mask: Vec<bool> = self
            .maps
            .value(map)
            .scale
            .iter()
            .map(|&s| condition(s))
            .collect();
        if mask.iter().all(|&m| m) {
            let identity = self.intern(ExactMap::identity(mask.len()));
            return Some((map, identity));
        }
        let (qualifying, rest) = self.maps.get(map).split(&mask);
        if qualifying.is_identity() {
            return None;
        }
        Some((self.intern(qualifying), self.intern(rest)))
    }

    /// `Aff(map, x)`, or `x` itself when the map is the identity (never build `aff(x, 1, 0)`).
    pub fn aff_expr(&self, map: MapId, x: Expr) -> Expr {
        if self.maps.get(map).is_identity() {
            x
        } else {
            Expr::Aff(map, Box::new(x))
        }
    }

    fn intern(&mut self, map: ExactMap) -> MapId {
        self.maps.intern(map)
    }

    /// All equalities the local rules find in the current e-graph.
    pub fn local_equalities(&mut self) -> Vec<Equality> {
        let mut found = Vec::new();
        let classes: Vec<(Id, Vec<FoldNode>)> = self
            .egraph
            .classes()
            .map(|c| (c.id, c.nodes.clone()))
            .collect();
        for (class, nodes) in &classes {
            for node in nodes {
                self.rules_at(*class, node, &mut found);
            }
        }
        found
    }

    fn nodes_of(&self, class: Id) -> Vec<FoldNode> {
        self.egraph[class].nodes.clone()
    }

    fn rules_at(&mut self, class: Id, node: &FoldNode, found: &mut Vec<Equality>) {
        let mut push = |rule, expr| found.push(Equality { rule, class, expr });
        match node {
            FoldNode::Aff { map, x } => {
                let (map, x) = (*map, x[0]);
                let channels = self.egraph[x].data[1];
                for inner in self.nodes_of(x) {
                    // aff(pad(z) with fill f) = pad(aff(z)) with fill s·f + t: always exact.
                    if let Some((pad, fill, z)) = self.pad_fill_of(&inner, channels) {
                        let m = self.maps.get(map).clone();
                        let new_fill: Vec<Poly> = fill
                            .iter()
                            .zip(m.scale.iter().zip(&m.shift))
                            .map(|(f, (s, t))| f.scale(s).add(t))
                            .collect();
                        let fill = self.fill_map(new_fill);
                        let inner = self.aff_expr(map, Expr::Class(z));
                        push(
                            "pad-in",
                            Expr::Pad {
                                node: pad,
                                fill,
                                x: Box::new(inner),
                            },
                        );
                        continue;
                    }
                    match inner {
                        // aff(layer) = layer with the map merged into its epilogue: always exact.
                        FoldNode::Layer {
                            node,
                            pro,
                            epi,
                            x: y,
                        } => {
                            let epi = self.intern(self.maps.get(epi).then(self.maps.get(map)));
                            push(
                                "fold-backward",
                                Expr::Layer {
                                    node,
                                    pro,
                                    epi,
                                    x: Box::new(Expr::Class(y[0])),
                                },
                            );
                        }
                        // aff(aff(y)) = aff(y) with the composed map.
                        FoldNode::Aff { map: first, x: y } => {
                            let composed =
                                self.intern(self.maps.get(first).then(self.maps.get(map)));
                            push("compose", self.aff_expr(composed, Expr::Class(y[0])));
                        }
                        // aff(concat(a, b, ..)) = concat(aff(a, m|a), aff(b, m|b), ..).
                        FoldNode::Op { node, ref args }
                            if self.egraph.analysis.ops[node as usize].kind().info().maps
                                == MapRule::Concatenates =>
                        {
                            let m = self.maps.get(map).clone();
                            let mut start = 0;
                            let mut parts = Vec::with_capacity(args.len());
                            for &a in args.iter() {
                                let channels = self.egraph[a].data[1];
                                let slice = self.intern(m.slice(start, channels));
                                parts.push(self.aff_expr(slice, Expr::Class(a)));
                                start += channels;
                            }
                            push("concat-split", Expr::Op(node, parts));
                        }
                        FoldNode::Op { node, ref args } if args.len() == 1 => {
                            let y = args[0];
                            let op = &self.egraph.analysis.ops[node as usize];
                            match op.transparency(&self.egraph[y].data) {
                                Transparency::Commutes => {
                                    push(
                                        "pool-in",
                                        Expr::Op(node, vec![self.aff_expr(map, Expr::Class(y))]),
                                    );
                                }
                                // The channels with s ≥ 0 move in, the rest stays outside.
                                Transparency::NonNegativeScale => {
                                    let Some((q, rest)) = self.qualifying(map, |s| s >= 0.0) else {
                                        continue;
                                    };
                                    let pool =
                                        Expr::Op(node, vec![self.aff_expr(q, Expr::Class(y))]);
                                    push("pool-in", self.aff_expr(rest, pool));
                                }
                                // aff(flatten(y)) = flatten(aff(y)) when the map is the same on
                                // every position of each channel (equal values: exact).
                                Transparency::Repeat { positions } => {
                                    let values = self.maps.value(map);
                                    let Some(m) = self.maps.get(map).compress(positions, values)
                                    else {
                                        continue;
                                    };
                                    let m = self.intern(m);
                                    push(
                                        "flatten-in",
                                        Expr::Op(node, vec![self.aff_expr(m, Expr::Class(y))]),
                                    );
                                }
                                // s·relu(y) + t = relu(s·y) + t for s ≥ 0: the scale goes back
                                // towards a producer (this is how a zero γ still folds). Per
                                // channel: the others' maps stay outside, with the shifts.
                                Transparency::ScaleOnly => {
                                    let Some((q, rest)) = self.qualifying(map, |s| s >= 0.0) else {
                                        continue;
                                    };
                                    let q = self.maps.get(q).clone();
                                    if q.is_shift_only() {
                                        continue;
                                    }
                                    let outside = q.shift_part().then(self.maps.get(rest));
                                    let (scale, outside) =
                                        (self.intern(q.scale_part()), self.intern(outside));
                                    let inner =
                                        Expr::Op(node, vec![self.aff_expr(scale, Expr::Class(y))]);
                                    push("relu-scale-in", self.aff_expr(outside, inner));
                                }
                                // Concat and pad have rules of their own; the rest block.
                                Transparency::Absorbs
                                | Transparency::NeedsFill
                                | Transparency::SumsInputs
                                | Transparency::Concatenates
                                | Transparency::Blocks(_)
                                | Transparency::AbsorbsOutput => {}
                                // aff(shuffle(y), m) = shuffle(aff(y, m')): input channel
                                // i = a·(C/g) + b is output channel b·g + a, so m'[i] = m[b·g + a].
                                Transparency::Permutes { groups } => {
                                    let c = self.egraph[y].data[1];
                                    let per = c / groups;
                                    let m = self
                                        .maps
                                        .get(map)
                                        .gather(c, |i| (i % per) * groups + i / per);
                                    let m = self.intern(m);
                                    push(
                                        "shuffle-in",
                                        Expr::Op(node, vec![self.aff_expr(m, Expr::Class(y))]),
                                    );
                                }
                                // aff(slice(y), m) = slice(aff(y, id ⧺ m ⧺ id)).
                                Transparency::Slices { start, end } => {
                                    let c = self.egraph[y].data[1];
                                    let m = self.maps.get(map).clone();
                                    let (before, after) =
                                        (ExactMap::identity(start), ExactMap::identity(c - end));
                                    let m = self.intern(ExactMap::concat(&[&before, &m, &after]));
                                    push(
                                        "slice-in",
                                        Expr::Op(node, vec![self.aff_expr(m, Expr::Class(y))]),
                                    );
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            FoldNode::Layer { node, pro, epi, x } => {
                let (layer, pro, epi, x) = (*node, *pro, *epi, x[0]);
                // A map on a layer_norm's input changes every channel's share of the mean
                // and variance: it never passes (its prologue stays the identity).
                if let Op::LayerNorm { .. } = self.egraph.analysis.ops[layer as usize] {
                    return;
                }
                let pads = match &self.egraph.analysis.ops[layer as usize] {
                    Op::Conv2d(c) => c.pad.iter().any(|&p| p > 0),
                    _ => false,
                };
                for inner in self.nodes_of(x) {
                    // layer(aff(y)) = layer with the map merged into its prologue; when the conv
                    // pads, exact only where the scale is non-zero (the fill becomes (f − t)/s):
                    // those channels move in, the others stay in front of the layer.
                    if let FoldNode::Aff { map, x: y } = inner {
                        // A transposed conv whose output positions receive different taps
                        // takes only the scales (s ≠ 0): `m(y) = s·(y + t/s)`, the shift
                        // `t/s` stays in front (docs/folding.md, `affine::absorb`).
                        if let Op::ConvTranspose2d(c) = &self.egraph.analysis.ops[layer as usize]
                            && !c.shift_is_uniform()
                        {
                            let Some((q, rest)) = self.qualifying(map, |s| s != 0.0) else {
                                continue;
                            };
                            let q = self.maps.get(q).clone();
                            if q.is_shift_only() {
                                continue;
                            }
                            let Some(shift) = q.shift_before_scale() else {
                                continue;
                            };
                            let outside = shift.then(self.maps.get(rest));
                            let merged = self.intern(q.scale_part().then(self.maps.get(pro)));
                            let outside = self.intern(outside);
                            push(
                                "fold-forward-scale",
                                Expr::Layer {
                                    node: layer,
                                    pro: merged,
                                    epi,
                                    x: Box::new(self.aff_expr(outside, Expr::Class(y[0]))),
                                },
                            );
                            continue;
                        }
                        let condition = |s: f64| !pads || s != 0.0;
                        let Some((q, rest)) = self.qualifying(map, condition) else {
                            continue;
                        };
                        let merged = self.intern(self.maps.get(q).then(self.maps.get(pro)));
                        if pads && merged_has_zero(self, merged) {
                            continue;
                        }
                        push(
                            "fold-forward",
                            Expr::Layer {
                                node: layer,
                                pro: merged,
                                epi,
                                x: Box::new(self.aff_expr(rest, Expr::Class(y[0]))),
                            },
                        );
                    }
                }
            }
            FoldNode::Op { node, args } => {
                let op = self.egraph.analysis.ops[*node as usize].clone();
                if op.kind().info().maps == MapRule::Concatenates {
                    self.concat_merge(*node, args, &mut push);
                    return;
                }
                if let Op::Pad {
                    value, fill: false, ..
                } = op
                {
                    let channels = self.egraph[args[0]].data[1];
                    let p = self.maps.numbers.shared_constant(value);
                    self.pad_out(*node, &vec![p; channels], args[0], &mut push);
                    return;
                }
                if args.len() != 1 {
                    return;
                }
                let y = args[0];
                let transparency = op.transparency(&self.egraph[y].data);
                for inner in self.nodes_of(y) {
                    let FoldNode::Aff { map, x: z } = inner else {
                        continue;
                    };
                    let z = Expr::Class(z[0]);
                    match transparency {
                        Transparency::Commutes => {
                            push("pool-out", self.aff_expr(map, Expr::Op(*node, vec![z])));
                        }
                        // The channels with s ≥ 0 move out, the rest stays inside.
                        Transparency::NonNegativeScale => {
                            let Some((q, rest)) = self.qualifying(map, |s| s >= 0.0) else {
                                continue;
                            };
                            let pool = Expr::Op(*node, vec![self.aff_expr(rest, z)]);
                            push("pool-out", self.aff_expr(q, pool));
                        }
                        // flatten(aff(z)) = aff(flatten(z)) with each channel's entry repeated
                        // for its positions: always exact.
                        Transparency::Repeat { positions } => {
                            let repeated = self.intern(self.maps.get(map).repeat(positions));
                            push(
                                "flatten-out",
                                self.aff_expr(repeated, Expr::Op(*node, vec![z])),
                            );
                        }
                        // relu(s·z + t) = s·relu(z + t/s) for s > 0: the scale moves on towards
                        // the next layer, the shift stays behind as a bias add. Per channel:
                        // the other channels' maps stay inside.
                        Transparency::ScaleOnly => {
                            let Some((q, rest)) = self.qualifying(map, |s| s > 0.0) else {
                                continue;
                            };
                            let q = self.maps.get(q).clone();
                            if q.is_shift_only() {
                                continue;
                            }
                            let Some(before) = q.shift_before_scale() else {
                                continue;
                            };
                            let inside = before.then(self.maps.get(rest));
                            let (scale, inside) =
                                (self.intern(q.scale_part()), self.intern(inside));
                            let inner = Expr::Op(*node, vec![self.aff_expr(inside, z)]);
                            push("relu-scale-out", self.aff_expr(scale, inner));
                        }
                        Transparency::Absorbs
                        | Transparency::NeedsFill
                        | Transparency::SumsInputs
                        | Transparency::Concatenates
                        | Transparency::Blocks(_)
                        | Transparency::AbsorbsOutput => {}
                        // shuffle(aff(z, m)) = aff(shuffle(z), m') with m'[o] = m[src(o)].
                        Transparency::Permutes { groups } => {
                            let c = self.egraph[y].data[1];
                            let m = self
                                .maps
                                .get(map)
                                .gather(c, |o| bnc_ir::shuffle_source(c, groups, o));
                            let m = self.intern(m);
                            push("shuffle-out", self.aff_expr(m, Expr::Op(*node, vec![z])));
                        }
                        // slice(aff(z, m)) = aff(slice(z), m sliced).
                        Transparency::Slices { start, end } => {
                            let m = self.intern(self.maps.get(map).slice(start, end - start));
                            push("slice-out", self.aff_expr(m, Expr::Op(*node, vec![z])));
                        }
                    }
                }
            }
            // pad(aff(z, s, t)) = aff(pad(z) with fill (p − t)/s, s, t): every s ≠ 0.
            FoldNode::Pad { node, fill, x } => {
                let fill = self.maps.get(*fill).shift.clone();
                self.pad_out(*node, &fill, x[0], &mut push);
            }
            FoldNode::Input { .. } => {}
        }
    }

    /// The fill a pad reads per channel: its own (`Pad`) or its scalar value.
    fn pad_fill_of(&mut self, node: &FoldNode, channels: usize) -> Option<(u32, Vec<Poly>, Id)> {
        match node {
            FoldNode::Pad { node, fill, x } => {
                Some((*node, self.maps.get(*fill).shift.clone(), x[0]))
            }
            FoldNode::Op { node, args } if args.len() == 1 => {
                match self.egraph.analysis.ops[*node as usize] {
                    Op::Pad {
                        value, fill: false, ..
                    } => {
                        let p = self.maps.numbers.shared_constant(value);
                        Some((*node, vec![p; channels], args[0]))
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// A fill vector as an interned map (scales 1, the fill in the shifts).
    fn fill_map(&mut self, fill: Vec<Poly>) -> MapId {
        let scale = vec![Term::one(); fill.len()];
        self.intern(ExactMap { scale, shift: fill })
    }

    /// pad(aff(z, s, t)) = aff(pad(z) with fill (f − t)/s, s, t), for each map on the pad's
    /// input, on its channels with a non-zero scale (the others stay inside the pad).
    fn pad_out(
        &mut self,
        node: u32,
        fill: &[Poly],
        y: Id,
        push: &mut impl FnMut(&'static str, Expr),
    ) {
        for inner in self.nodes_of(y) {
            let FoldNode::Aff { map, x: z } = inner else {
                continue;
            };
            let Some((map, rest)) = self.qualifying(map, |s| s != 0.0) else {
                continue;
            };
            let Some(inv) = self.maps.get(map).inverse() else {
                continue;
            };
            // (f − t)/s is the inverse map applied to the fill.
            let new_fill: Vec<Poly> = fill
                .iter()
                .zip(inv.scale.iter().zip(&inv.shift))
                .map(|(f, (si, ti))| f.scale(si).add(ti))
                .collect();
            let fill = self.fill_map(new_fill);
            let pad = Expr::Pad {
                node,
                fill,
                x: Box::new(self.aff_expr(rest, Expr::Class(z[0]))),
            };
            push("pad-out", self.aff_expr(map, pad));
        }
    }

    /// concat(aff(a, m₁), b, ..) = aff(concat(a, b, ..), m₁ ⊕ 1 ⊕ ..): the maps of the inputs
    /// that have one (their first) move out together.
    fn concat_merge(&mut self, node: u32, args: &[Id], push: &mut impl FnMut(&'static str, Expr)) {
        let mut maps = Vec::with_capacity(args.len());
        let mut inner = Vec::with_capacity(args.len());
        let mut any = false;
        for &a in args {
            let channels = self.egraph[a].data[1];
            let first_aff = self.egraph[a].nodes.iter().find_map(|n| match n {
                FoldNode::Aff { map, x } => Some((*map, x[0])),
                _ => None,
            });
            match first_aff {
                Some((map, x)) => {
                    any = true;
                    maps.push(self.maps.get(map).clone());
                    inner.push(Expr::Class(x));
                }
                None => {
                    maps.push(ExactMap::identity(channels));
                    inner.push(Expr::Class(a));
                }
            }
        }
        if any {
            let refs: Vec<&ExactMap> = maps.iter().collect();
            let merged = self.intern(ExactMap::concat(&refs));
            push("concat-merge", self.aff_expr(merged, Expr::Op(node, inner)));
        }
    }
}

/// Whether a merged prologue has a zero scale (a padded layer cannot take it).
fn merged_has_zero(fg: &FoldGraph, merged: MapId) -> bool {
    fg.maps.value(merged).scale.contains(&0.0)
}
