//! Graph-level passes of bnc: canonicalization, BN folding (baselines and, later, the e-graph),
//! dead-code elimination, the pass manager and the fold report. See `docs/design.md` §3.

pub mod adjacent;
pub mod affine;
pub mod canonicalize;
pub mod closure;
pub mod conditioning;
pub mod dce;
pub mod egraph;
pub mod manager;
pub mod paper;
pub mod report;

pub use manager::{
    FoldMode, Pass, PassContext, PassError, PrintAfter, default_pipeline, resolve, run_pipeline,
};
pub use report::{Fate, FoldReport};
