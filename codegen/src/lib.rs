//! Cranelift code generation for bnc (docs/design.md §4).
//!
//! [`compile`] lowers a (canonicalized) [`Graph`] to fused kernels and JIT-compiles them;
//! [`emit_object`] writes them to an object file; [`plan_text`] shows the plan.
//!
//! 1. **Plan** (`plan/`, target-independent): fusion into an anchor plus an elementwise
//!    epilogue (`fuse.rs`); views, in-place concat and a liveness-packed workspace
//!    (`memory.rs`); each group's path from its shapes and the target's capabilities
//!    (`select.rs`, asking a `target::TargetCaps`, never an architecture's types); weight
//!    packing and cache blocking (`pack.rs`).
//! 2. **Lowering** (`lower/`): each kernel one Cranelift function specialised to its shapes,
//!    one file per kernel family; the inner loops call microkernels described by the
//!    target-neutral contract of `ukernel.rs` (or the portable f32x4 8x4 one).
//! 3. **ISA layer** (`isa/x64/`): the x86-64 levels ([`TargetCpu`]), Cranelift flags, the
//!    microkernels assembled with iced-x86 (AVX2+FMA 4x24, AVX-512 12x32 and the in-place
//!    conv, pooling and copy kernels), CPUID cache sizes, MXCSR.
//! 4. **Runtime** (`runtime/`): kernels run in order; each splits its work units into
//!    `threads` contiguous ranges on a small spin-then-park pool (`pool.rs`), the calling
//!    thread running the first. Every output element is computed by the same code in the
//!    same order whatever the split, so any thread count gives bit-identical results.
//!    Weights and workspaces sit on huge pages (`hugemem.rs`).

mod cache;
mod error;
mod isa;
mod lower;
mod options;
mod plan;
mod runtime;
mod target;
/// Test hooks for the assembled microkernels (not a stable API).
#[doc(hidden)]
pub mod testing;
mod ukernel;

use bnc_ir::Graph;

pub use cache::CacheSizes;
pub use error::CodegenError;
pub use isa::x64::TargetCpu;
use isa::x64::target_isa;
pub use lower::Texts;
pub use options::Options;
use runtime::jit::compile_inner;
pub use runtime::jit::{CompiledModel, Workspace};
pub use runtime::object::emit_object;
use runtime::{object_caches, plan_for};

/// Compiles `graph` to native code in memory.
pub fn compile(graph: &Graph, options: &Options) -> Result<CompiledModel, CodegenError> {
    compile_inner(graph, options, false)
}

/// The CLIF of every generated function (for `--emit=clif`).
pub fn clif_text(graph: &Graph, options: &Options) -> Result<String, CodegenError> {
    Ok(std::mem::take(
        &mut compile_inner(graph, options, true)?.texts.clif,
    ))
}

/// Register-allocated machine code of every function, as Cranelift prints it (for
/// `--emit=asm`).
pub fn asm_text(graph: &Graph, options: &Options) -> Result<String, CodegenError> {
    Ok(std::mem::take(
        &mut compile_inner(graph, options, true)?.texts.asm,
    ))
}

/// The kernel plan for `graph` as readable text (for `--emit=plan`): each kernel's path,
/// tiling, fused nodes and thread split, and where every value lives.
///
/// Planning runs nothing, so any target level can be planned on any machine. The cache
/// sizes are `options.cache_sizes`, else this machine's for `native` and
/// [`CacheSizes::DEFAULT`] for a named level (as for objects). `multi` prints the three
/// plans an object holds, one after another.
pub fn plan_text(graph: &Graph, options: &Options) -> Result<String, CodegenError> {
    // (level name, microkernel family): `multi` plans the variants its objects hold.
    let variants: Vec<(String, Option<ukernel::Vector>)> = match options.target_cpu {
        TargetCpu::Multi => isa::x64::multi_variants(options.wide_gemm)
            .into_iter()
            .map(|(lvl, wide)| (format!("x86-64-v{lvl}"), wide))
            .collect(),
        level => {
            let (_, wide) = target_isa(level, false, options.allow_fma)?;
            vec![(level.name().to_string(), wide)]
        }
    };
    let caches = object_caches(options);
    let mut text = String::new();
    for (i, (level, wide)) in variants.into_iter().enumerate() {
        let wide = wide.filter(|_| options.wide_gemm);
        let plan = plan_for(graph, options, options.threads, wide, caches)?;
        let gemm = match wide {
            Some(isa) => (isa.name(), isa.mr(), isa.nr()),
            None => ("f32x4", plan::MR, plan::NR),
        };
        if i > 0 {
            text.push('\n');
        }
        let target = plan::PlanTarget {
            level: &level,
            gemm,
            caches,
        };
        text.push_str(&plan::plan_text(&plan, &target));
    }
    Ok(text)
}
