//! Running compiled code: in process (`jit`), or linked into a C program (`object`), on a
//! thread pool (`pool`), with weights and workspaces on huge pages (`hugemem`).

pub(crate) mod hugemem;
pub(crate) mod jit;
pub(crate) mod object;
pub(crate) mod pool;

use bnc_ir::Graph;

use crate::cache::CacheSizes;
use crate::error::CodegenError;
use crate::isa::x64::TargetCpu;
use crate::options::Options;
use crate::plan;
use crate::ukernel::Vector;

/// The plan of `graph` for `options` on `threads` threads, with the microkernel family
/// `wide` (when `options.wide_gemm` allows it) and blocking for `caches`.
pub(crate) fn plan_for(
    graph: &Graph,
    options: &Options,
    threads: usize,
    wide: Option<Vector>,
    caches: CacheSizes,
) -> Result<plan::Plan, CodegenError> {
    let caps = crate::isa::x64::caps(wide.filter(|_| options.wide_gemm), caches);
    let opts = plan::PlanOptions {
        threads,
        fuse_affine: options.fuse_affine,
        direct: options.direct_conv,
    };
    plan::plan(graph, &opts, &caps)
}

/// The caches an object (or a plan) is blocked for: `options.cache_sizes`, else this
/// machine's for `native` and [`CacheSizes::DEFAULT`] for a named level.
pub(crate) fn object_caches(options: &Options) -> CacheSizes {
    options
        .cache_sizes
        .unwrap_or(if options.target_cpu == TargetCpu::Native {
            CacheSizes::host()
        } else {
            CacheSizes::DEFAULT
        })
}
