//! Cranelift code generation for bnc (docs/design.md §4).
//!
//! [`compile`] lowers a (canonicalized) [`Graph`] to fused kernels and JIT-compiles them:
//!
//! 1. **Fusion** (`plan.rs`): the graph is cut into groups, an anchor (conv, dense, pool,
//!    softmax, pad, or a standalone elementwise op) plus an epilogue of elementwise work
//!    (bias, affine/batchnorm, residual add, mul by a gate, activations) applied to the
//!    anchor's result before it is stored. A value enters an epilogue only if its single
//!    reader is that elementwise op.
//! 2. **Memory**: flatten/identity/dropout are views; concat inputs are written in place into
//!    their channel slice of the concat's buffer when they can be (DenseNet's growing concats
//!    become prefixes of one buffer); the remaining buffers are laid out in one workspace by
//!    liveness (greedy first fit, largest first). Weights are packed at compile time.
//! 3. **Kernels** (`emit.rs`): each group is one Cranelift function specialised to its
//!    shapes; convs run through microkernels: with AVX2+FMA or AVX-512 (see [`TargetCpu`])
//!    hand-assembled 4x24 / 12x32 kernels (`asm.rs`, emitted with iced-x86 and defined with
//!    `define_function_bytes`; edge tiles, K-blocking and the common epilogues are kernel
//!    variants), otherwise one 8x4 f32x4 Cranelift microkernel (`emit::emit_ukernel`, the
//!    fallback). On AVX-512 convs read their input in place (`KernelKind::DirectConv`): 1x1
//!    straight from the tensor; zero-padded stride-1 convs that keep the image size too,
//!    the window's taps as offsets on the input's rows and per-tap lane masks dropping the
//!    padding; others from a padded, stride-phase-split copy (assembled, `asm/pad.rs`)
//!    with the taps as constant offsets, outputs computed on the copy's row pitch and the
//!    garbage columns dropped by a row map in the kernel's stores; depthwise convs too, and
//!    3x3 convs on images up to 28x28 and 7x7 outputs with vectors along output channels
//!    (`asm/chanvec.rs`). Max pooling is assembled too (`asm/pool.rs`). Elsewhere convs
//!    run as GEMM on packed (im2col) panels and depthwise convs on a padded phase-split
//!    copy; everything else with f32x4 loops and scalar tails. Blocking follows the host's
//!    caches (`cache.rs`); weights and workspaces sit on huge pages (`hugemem.rs`).
//! 4. **Runtime**: kernels run in order; each splits its work units (for a conv: a pixel
//!    block x a range of m-tiles, i.e. a macro-tile) into `threads`
//!    contiguous ranges on a small spin-then-park pool (`pool.rs`), the calling thread
//!    running the first. Every output element is computed by the same code
//!    in the same order whatever the split, so any thread count gives bit-identical results.

mod cache;
mod error;
mod isa;
mod lower;
mod options;
mod plan;
mod runtime;
mod target;
mod ukernel;

use bnc_ir::Graph;

pub use cache::CacheSizes;
pub use error::CodegenError;
use error::backend;
pub use isa::x64::TargetCpu;
use isa::x64::target_isa;
/// Test hooks for the assembled microkernels (not a stable API).
#[doc(hidden)]
pub use isa::x64::testing;
pub use options::Options;
use runtime::jit::compile_inner;
pub use runtime::jit::{CompiledModel, Texts, Workspace};
pub use runtime::object::emit_object;
use ukernel::Vector;

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

/// The plan of `graph` for `options` on `threads` threads, with the microkernel family
/// `wide` (when `options.wide_gemm` allows it) and blocking for `caches`.
fn plan_for(
    graph: &Graph,
    options: &Options,
    threads: usize,
    wide: Option<Vector>,
    caches: CacheSizes,
) -> Result<plan::Plan, CodegenError> {
    let caps = isa::x64::caps(wide.filter(|_| options.wide_gemm), caches);
    let opts = plan::PlanOptions {
        threads,
        fuse_affine: options.fuse_affine,
        direct: options.direct_conv,
    };
    plan::plan(graph, &opts, &caps)
}

/// The caches an object (or a plan) is blocked for: `options.cache_sizes`, else this
/// machine's for `native` and [`CacheSizes::DEFAULT`] for a named level.
fn object_caches(options: &Options) -> CacheSizes {
    options
        .cache_sizes
        .unwrap_or(if options.target_cpu == TargetCpu::Native {
            CacheSizes::host()
        } else {
            CacheSizes::DEFAULT
        })
}

/// The kernel plan for `graph` as readable text (for `--emit=plan`): each kernel's path,
/// tiling, fused nodes and thread split, and where every value lives.
///
/// Planning runs nothing, so any target level can be planned on any machine. The cache
/// sizes are `options.cache_sizes`, else this machine's for `native` and
/// [`CacheSizes::DEFAULT`] for a named level (as for objects). `multi` prints the three
/// plans an object holds, one after another.
pub fn plan_text(graph: &Graph, options: &Options) -> Result<String, CodegenError> {
    let levels: &[TargetCpu] = match options.target_cpu {
        TargetCpu::Multi => &[
            TargetCpu::X86_64V2,
            TargetCpu::X86_64V3,
            TargetCpu::X86_64V4,
        ],
        ref level => std::slice::from_ref(level),
    };
    let caches = object_caches(options);
    let mut text = String::new();
    for (i, &level) in levels.iter().enumerate() {
        let (_, wide) = target_isa(level, false, options.allow_fma)?;
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
            level: level.name(),
            gemm,
            caches,
        };
        text.push_str(&plan::plan_text(&plan, &target));
    }
    Ok(text)
}
