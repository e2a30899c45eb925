//! The fold report: what happened to every batch-norm, and what folding saved.

use std::fmt::Write;

use bnc_ir::{Graph, Op, Shape};
use serde::Serialize;

/// What became of one batch-norm layer.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "fate", rename_all = "snake_case")]
pub enum Fate {
    /// Still a full per-channel affine map. `blocking` names the node that stopped the fold.
    Kept {
        reason: String,
        blocking: Option<String>,
    },
    /// Absorbed by the layers producing its input; `compensated` layers absorbed the inverse
    /// map so that they still see the original signal.
    FoldedBackward {
        into: Vec<String>,
        compensated: Vec<String>,
    },
    /// Absorbed by the layers reading its output; `pad_fill` when a padded conv now pads with
    /// a per-channel value instead of 0.
    FoldedForward {
        into: Vec<String>,
        pad_fill: bool,
        compensated: Vec<String>,
    },
    /// The scale moved into `scale_into`; the shift stays as a bias add (`shift_kept_as`).
    Partial {
        scale_into: Vec<String>,
        shift_kept_as: String,
    },
    /// Its channels went different ways: each part is a set of channels with their fate
    /// (never itself `Split` or `Dead`), parts in order of their first channel.
    Split { parts: Vec<ChannelFate> },
    /// Nothing reads it: removed as dead code.
    Dead,
}

/// The fate of some channels of one batch-norm.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChannelFate {
    pub channels: Vec<usize>,
    #[serde(flatten)]
    pub fate: Fate,
}

/// What a fate means for the headline count of batch-norms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing of it is left in the graph.
    Folded,
    /// Some of it is left: a shift, or some of its channels.
    PartlyFolded,
    /// All of it is left, as a map.
    Kept,
    /// Removed as dead code.
    Dead,
}

impl Fate {
    /// Whether nothing of the batch-norm is left in the graph because it was folded (every
    /// channel folded backward or forward).
    pub fn is_gone(&self) -> bool {
        self.outcome() == Outcome::Folded
    }

    pub fn outcome(&self) -> Outcome {
        match self {
            Fate::FoldedBackward { .. } | Fate::FoldedForward { .. } => Outcome::Folded,
            Fate::Partial { .. } => Outcome::PartlyFolded,
            Fate::Kept { .. } => Outcome::Kept,
            Fate::Dead => Outcome::Dead,
            Fate::Split { parts } => {
                let outcomes: Vec<Outcome> = parts.iter().map(|p| p.fate.outcome()).collect();
                if outcomes.iter().all(|&o| o == Outcome::Folded) {
                    Outcome::Folded
                } else if outcomes.iter().all(|&o| o == Outcome::Kept) {
                    Outcome::Kept
                } else {
                    Outcome::PartlyFolded
                }
            }
        }
    }

    /// The fate as a phrase for the text report.
    fn describe(&self) -> String {
        match self {
            // The reason names the blocking node; `blocking` carries it for tools (JSON).
            Fate::Kept { reason, .. } => format!("kept: {reason}"),
            Fate::FoldedBackward { into, compensated } => {
                format!(
                    "folded backward into {}{}",
                    names(into),
                    compensation(compensated)
                )
            }
            Fate::FoldedForward {
                into,
                pad_fill,
                compensated,
            } => format!(
                "folded forward into {}{}{}",
                names(into),
                if *pad_fill { " with pad fill" } else { "" },
                compensation(compensated)
            ),
            Fate::Partial {
                scale_into,
                shift_kept_as,
            } => format!(
                "scale folded into {}, shift kept as `{shift_kept_as}`",
                names(scale_into)
            ),
            Fate::Split { parts } => {
                let described: Vec<String> = parts
                    .iter()
                    .map(|p| format!("{} {}", channel_list(&p.channels), p.fate.describe()))
                    .collect();
                described.join(" | ")
            }
            Fate::Dead => "removed: nothing reads it (dead code)".to_string(),
        }
    }
}

/// `channel 3` or `channels 0-3,5,7-8`.
fn channel_list(channels: &[usize]) -> String {
    let mut ranges: Vec<String> = Vec::new();
    let mut k = 0;
    while k < channels.len() {
        let start = channels[k];
        let mut end = start;
        while k + 1 < channels.len() && channels[k + 1] == end + 1 {
            k += 1;
            end = channels[k];
        }
        ranges.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        k += 1;
    }
    let word = if channels.len() == 1 {
        "channel"
    } else {
        "channels"
    };
    format!("{word} {}", ranges.join(","))
}

/// One batch-norm and its fate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BatchNormRecord {
    pub name: String,
    pub channels: usize,
    #[serde(flatten)]
    pub fate: Fate,
}

/// Work and size of a graph, for before/after comparisons.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct GraphCost {
    pub flops: u64,
    pub param_bytes: u64,
    pub nodes: usize,
}

impl GraphCost {
    pub fn of(graph: &Graph) -> GraphCost {
        let flops = graph
            .nodes
            .iter()
            .map(|n| {
                let shapes: Vec<&Shape> = n.inputs.iter().map(|&i| graph.shape(i)).collect();
                n.op.flops(&shapes, graph.shape(n.output))
            })
            .sum();
        GraphCost {
            flops,
            param_bytes: graph.params.values().map(|t| 4 * t.numel() as u64).sum(),
            nodes: graph.nodes.len(),
        }
    }
}

/// Everything the fold passes did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FoldReport {
    pub batchnorms: Vec<BatchNormRecord>,
    pub before: GraphCost,
    pub after: GraphCost,
    /// Affine maps left in the graph that only shift (scale 1 everywhere).
    pub shift_only_left: usize,
    /// Affine maps left in the graph with a scale.
    pub full_affine_left: usize,
    /// E-graph statistics, when `fold-egraph` ran.
    pub saturation: Option<crate::egraph::SaturationStats>,
}

impl FoldReport {
    /// Notes a batch-norm as it is canonicalized; it is `Kept` until a fold says otherwise.
    pub fn record_batchnorm(&mut self, name: &str, channels: usize) {
        self.batchnorms.push(BatchNormRecord {
            name: name.to_string(),
            channels,
            fate: Fate::Kept {
                reason: "no fold pass ran".to_string(),
                blocking: None,
            },
        });
    }

    /// Sets the fate of the batch-norm called `name` (ignored for affines that were not
    /// batch-norms in the source).
    pub fn set_fate(&mut self, name: &str, fate: Fate) {
        if let Some(record) = self.batchnorms.iter_mut().find(|r| r.name == name) {
            record.fate = fate;
        }
    }

    pub fn fate(&self, name: &str) -> Option<&Fate> {
        self.batchnorms
            .iter()
            .find(|r| r.name == name)
            .map(|r| &r.fate)
    }

    /// Fills in the totals from the graph before and after the pipeline, and marks the
    /// batch-norms of `before` nothing reads (removed as dead code by whichever pass ran
    /// first) that no fold pass claimed.
    pub fn measure(&mut self, before: &Graph, after: &Graph) {
        self.record_dead(before);
        self.before = GraphCost::of(before);
        self.after = GraphCost::of(after);
        let (mut shift_only, mut full) = (0, 0);
        for node in &after.nodes {
            match node.op {
                Op::Affine => {
                    let unit = after
                        .param(node, "scale")
                        .is_some_and(|s| s.data.iter().all(|&v| v == 1.0));
                    if unit { shift_only += 1 } else { full += 1 }
                }
                Op::BatchNorm { .. } => full += 1,
                _ => {}
            }
        }
        self.shift_only_left = shift_only;
        self.full_affine_left = full;
    }

    /// Marks as dead code every batch-norm of `graph` whose result reaches no output and
    /// whose fate is still `Kept` (a fold pass never saw it: it was removed first).
    pub fn record_dead(&mut self, graph: &Graph) {
        for node in crate::dce::dead_nodes(graph) {
            let node = &graph.nodes[node];
            if !matches!(node.op, Op::BatchNorm { .. } | Op::Affine) {
                continue;
            }
            let name = &graph.value(node.output).name;
            if let Some(record) = self.batchnorms.iter_mut().find(|r| &r.name == name)
                && matches!(record.fate, Fate::Kept { .. })
            {
                record.fate = Fate::Dead;
            }
        }
    }

    /// Batch-norms folded away entirely.
    pub fn folded(&self) -> usize {
        self.count(Outcome::Folded)
    }

    /// Batch-norms with the given outcome.
    pub fn count(&self, outcome: Outcome) -> usize {
        self.batchnorms
            .iter()
            .filter(|r| r.fate.outcome() == outcome)
            .count()
    }

    /// The report as text for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        // BNs by outcome (the categories other than "folded away" only when present), then
        // the affine maps left in the graph, which are not BNs: a partly folded BN may leave
        // two maps, or none but a shift.
        let mut counts = format!("{} folded away", self.folded());
        for (outcome, what) in [
            (Outcome::PartlyFolded, "partly folded"),
            (Outcome::Kept, "kept"),
            (Outcome::Dead, "removed as dead code"),
        ] {
            let n = self.count(outcome);
            if n > 0 {
                let _ = write!(counts, ", {n} {what}");
            }
        }
        let _ = writeln!(
            out,
            "batch-norms: {} in the model: {counts}; maps left: {} shift-only, {} full affine",
            self.batchnorms.len(),
            self.shift_only_left,
            self.full_affine_left
        );
        for r in &self.batchnorms {
            let _ = writeln!(
                out,
                "  {:<40} [{:>4} ch] {}",
                r.name,
                r.channels,
                r.fate.describe()
            );
        }
        let pct = |a: u64, b: u64| {
            if a == 0 {
                0.0
            } else {
                100.0 * (b as f64 - a as f64) / a as f64
            }
        };
        let _ = writeln!(
            out,
            "work: {:.3} GFLOP -> {:.3} GFLOP ({:+.2}%); parameters: {:.2} MB -> {:.2} MB; nodes: {} -> {}",
            self.before.flops as f64 / 1e9,
            self.after.flops as f64 / 1e9,
            pct(self.before.flops, self.after.flops),
            self.before.param_bytes as f64 / 1e6,
            self.after.param_bytes as f64 / 1e6,
            self.before.nodes,
            self.after.nodes
        );
        out
    }

    /// The report as JSON for tools.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serializes")
    }
}

fn names(list: &[String]) -> String {
    let quoted: Vec<String> = list.iter().map(|n| format!("`{n}`")).collect();
    quoted.join(", ")
}

fn compensation(list: &[String]) -> String {
    if list.is_empty() {
        String::new()
    } else {
        format!("; compensated in {}", names(list))
    }
}
