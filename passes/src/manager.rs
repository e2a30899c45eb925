//! The pass manager: named passes, pipelines, printing after passes, per-pass timing.

use std::fmt;
use std::time::{Duration, Instant};

use bnc_ir::Graph;

use crate::report::FoldReport;

/// Information passes leave for the user (the fold report) and for later passes.
#[derive(Default, Debug)]
pub struct PassContext {
    pub report: FoldReport,
}

/// A pass failed: the IR it produced is invalid (a bug in bnc), or it could not run.
#[derive(Debug, Clone, PartialEq)]
pub struct PassError {
    pub pass: String,
    pub message: String,
}

impl fmt::Display for PassError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pass `{}`: {}", self.pass, self.message)
    }
}

impl std::error::Error for PassError {}

/// A transformation of the Graph IR.
pub trait Pass {
    fn name(&self) -> &'static str;
    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<(), String>;
}

/// Which BN-folding algorithm the default pipeline uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FoldMode {
    /// Keep every BN (as a per-channel affine map).
    None,
    /// Fold a BN only into the conv/dense right before it when it is that layer's only user
    /// (what PyTorch's fuser and ONNX Runtime do).
    Adjacent,
    /// Fold backward or forward through the roots/leaves closure, with compensation.
    Paper,
    /// Equality saturation: local rewrites plus the closure plans, DAG-aware extraction.
    #[default]
    Egraph,
}

impl FoldMode {
    pub fn pass_name(self) -> Option<&'static str> {
        match self {
            FoldMode::None => None,
            FoldMode::Adjacent => Some("fold-adjacent"),
            FoldMode::Paper => Some("fold-paper"),
            FoldMode::Egraph => Some("fold-egraph"),
        }
    }

    /// The mode called `name` (`none`, `adjacent`, `paper`, `egraph`).
    pub fn from_name(name: &str) -> Option<FoldMode> {
        Some(match name {
            "none" => FoldMode::None,
            "adjacent" => FoldMode::Adjacent,
            "paper" => FoldMode::Paper,
            "egraph" => FoldMode::Egraph,
            _ => return None,
        })
    }
}

/// Every pass by name, with a one-line description.
pub const PASSES: &[(&str, &str)] = &[
    (
        "canonicalize",
        "batchnorm -> per-channel affine (s, t in f64); drop identity and dropout",
    ),
    (
        "fold-adjacent",
        "fold an affine into the conv/dense right before it when it is the only user",
    ),
    (
        "fold-paper",
        "fold each affine backward or forward through the roots/leaves closure, with compensation",
    ),
    (
        "fold-egraph",
        "fold by equality saturation (egg): local rewrites, closure plans, DAG-aware extraction",
    ),
    (
        "dce",
        "remove nodes nothing reads and parameters nothing uses",
    ),
];

/// Passes that work on canonical IR (batch-norms as `affine`, no identity or dropout): run in
/// a pipeline without `canonicalize` before them, they get it first.
const NEED_CANONICAL: &[&str] = &["fold-adjacent", "fold-paper", "fold-egraph"];

fn is_canonical(graph: &Graph) -> bool {
    use bnc_ir::Op;
    !graph
        .nodes
        .iter()
        .any(|n| matches!(n.op, Op::BatchNorm { .. } | Op::Identity | Op::Dropout))
}

/// The pass called `name`.
pub fn lookup(name: &str) -> Option<Box<dyn Pass>> {
    Some(match name {
        "canonicalize" => Box::new(crate::canonicalize::Canonicalize),
        "fold-adjacent" => Box::new(crate::adjacent::FoldAdjacent),
        "fold-paper" => Box::new(crate::paper::FoldPaper),
        "fold-egraph" => Box::new(crate::egraph::FoldEGraphPass::default()),
        "dce" => Box::new(crate::dce::DeadCode),
        _ => return None,
    })
}

/// The default pipeline for a fold mode.
pub fn default_pipeline(mode: FoldMode) -> Vec<&'static str> {
    let mut names = vec!["canonicalize"];
    names.extend(mode.pass_name());
    names.push("dce");
    names
}

/// When to show the IR while a pipeline runs.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum PrintAfter {
    #[default]
    Never,
    All,
    Passes(Vec<String>),
}

/// How long one pass took.
#[derive(Clone, Debug)]
pub struct PassTiming {
    pub pass: &'static str,
    pub time: Duration,
}

/// Checks a pass list: every name must be a known pass.
pub fn resolve(names: &[&str]) -> Result<Vec<Box<dyn Pass>>, String> {
    names
        .iter()
        .map(|&name| {
            lookup(name).ok_or_else(|| {
                let known: Vec<&str> = PASSES.iter().map(|(n, _)| *n).collect();
                format!("unknown pass `{name}` (known: {})", known.join(", "))
            })
        })
        .collect()
}

/// Runs `passes` in order on `graph`. After each pass the IR is verified in debug builds
/// (and always when `verify` is set), and `on_print` sees it when `print_after` asks.
pub fn run_pipeline(
    graph: &mut Graph,
    passes: &[Box<dyn Pass>],
    ctx: &mut PassContext,
    print_after: &PrintAfter,
    on_print: &mut dyn FnMut(&str, &Graph),
) -> Result<Vec<PassTiming>, PassError> {
    let mut timings = Vec::new();
    for pass in passes {
        let start = Instant::now();
        let fail = |message: String| PassError {
            pass: pass.name().to_string(),
            message,
        };
        if NEED_CANONICAL.contains(&pass.name()) && !is_canonical(graph) {
            crate::canonicalize::Canonicalize
                .run(graph, ctx)
                .map_err(fail)?;
        }
        pass.run(graph, ctx).map_err(fail)?;
        timings.push(PassTiming {
            pass: pass.name(),
            time: start.elapsed(),
        });
        if cfg!(debug_assertions) {
            graph
                .verify()
                .map_err(|e| fail(format!("produced invalid IR: {e}")))?;
        }
        let show = match print_after {
            PrintAfter::Never => false,
            PrintAfter::All => true,
            PrintAfter::Passes(names) => names.iter().any(|n| n == pass.name()),
        };
        if show {
            on_print(pass.name(), graph);
        }
    }
    Ok(timings)
}
