//! What the planner may assume about a target: which kernel families exist and their
//! shapes, and the caches the blocking is planned for. The ISA layer (`isa/<arch>/`) builds
//! a [`TargetCaps`]; the planner reads it and never an architecture's own types.

use crate::cache::CacheSizes;
use crate::ukernel::Vector;

#[derive(Clone, Copy, Debug)]
pub(crate) struct TargetCaps {
    /// The assembled GEMM/conv microkernels' vector family; `None`: the portable Cranelift
    /// kernels only (tile `plan::MR` x `plan::NR`).
    pub wide: Option<Vector>,
    /// Longest output row (floats) of the in-place max-pooling row kernels; 0: none.
    pub pool_row_floats: usize,
    /// Longest phase-plane row (floats) of the padded-copy row kernels; 0: none.
    pub pad_row_floats: usize,
    pub caches: CacheSizes,
}

impl TargetCaps {
    /// The family whose lane masks let convs be read in place (direct, tap-masked and
    /// channel-vectorised kernels, in-place pooling), if there is one.
    pub fn in_place(&self) -> Option<Vector> {
        self.wide.filter(|v| v.masks)
    }
}
