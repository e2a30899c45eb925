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
mod emit;
mod hugemem;
mod isa;
mod object;
mod plan;
mod pool;
mod target;
mod ukernel;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use bnc_ir::{Graph, Shape};
pub use cache::CacheSizes;
use cranelift_codegen::Context;
use cranelift_codegen::ir::UserFuncName;
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, default_libcall_names};

pub use isa::x64::TargetCpu;
use isa::x64::mxcsr::with_denormals_flushed;
use isa::x64::{asm, isa_has_fma, target_isa};
pub use object::emit_object;
use ukernel::Vector;

/// Why compilation or a run failed.
#[derive(Clone, Debug, PartialEq)]
pub enum CodegenError {
    /// The graph is malformed (fails verification, missing parameters).
    Invalid(String),
    /// The graph uses something this code generator does not handle.
    Unsupported(String),
    /// Cranelift rejected the generated code or the host.
    Backend(String),
    InputCount {
        expected: usize,
        got: usize,
    },
    InputLength {
        index: usize,
        expected: usize,
        got: usize,
    },
    OutputCount {
        expected: usize,
        got: usize,
    },
    OutputLength {
        index: usize,
        expected: usize,
        got: usize,
    },
    /// A workspace too small for this model.
    Workspace {
        expected: usize,
        got: usize,
    },
    /// The machine could not give the memory a run needs (`what`: "workspace", "outputs").
    OutOfMemory {
        bytes: usize,
        what: &'static str,
    },
}

impl fmt::Display for CodegenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodegenError::Invalid(m) => write!(f, "invalid graph: {m}"),
            CodegenError::Unsupported(m) => write!(f, "unsupported: {m}"),
            CodegenError::Backend(m) => write!(f, "code generation failed: {m}"),
            CodegenError::InputCount { expected, got } => {
                write!(f, "the model takes {expected} input(s), got {got}")
            }
            CodegenError::InputLength {
                index,
                expected,
                got,
            } => write!(f, "input {index} must have {expected} elements, got {got}"),
            CodegenError::OutputCount { expected, got } => {
                write!(f, "the model has {expected} output(s), got {got} buffer(s)")
            }
            CodegenError::OutputLength {
                index,
                expected,
                got,
            } => write!(f, "output {index} must have {expected} elements, got {got}"),
            CodegenError::Workspace { expected, got } => {
                write!(f, "workspace must hold {expected} floats, has {got}")
            }
            CodegenError::OutOfMemory { bytes, what } => {
                write!(
                    f,
                    "out of memory: cannot allocate {bytes} bytes for the {what}"
                )
            }
        }
    }
}

impl std::error::Error for CodegenError {}

fn backend(e: impl fmt::Display) -> CodegenError {
    CodegenError::Backend(e.to_string())
}

/// Compilation options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Threads each kernel's work is split over (1 = run on the calling thread).
    pub threads: usize,
    /// Use `fma` when the ISA has AVX and FMA (default true); false forces fmul + fadd
    /// and, since the assembled microkernels are FMA kernels, the f32x4 fallback GEMM.
    pub allow_fma: bool,
    /// Instruction-set level (default [`TargetCpu::Native`]: the compiling host). For
    /// objects meant to run elsewhere pick a level explicitly (`x86-64-v3` is the portable
    /// choice with wide kernels; see [`emit_object`]).
    pub target_cpu: TargetCpu,
    /// Use the assembled wide GEMM microkernels when `target_cpu` allows them (default
    /// true); false keeps the Cranelift f32x4 fallback with the same ISA flags (for
    /// before/after comparisons).
    pub wide_gemm: bool,
    /// Let AVX-512 convolutions read their input in place instead of packing it (default
    /// true; see `KernelKind::DirectConv`); false packs every conv (im2col), to compare and
    /// to keep that path tested on machines where the direct one applies.
    pub direct_conv: bool,
    /// Fuse affine/batchnorm nodes into the epilogue of the kernel producing their input
    /// (default true); false gives each its own elementwise kernel (an extra read and
    /// write of the tensor), to measure what the fusion saves.
    pub fuse_affine: bool,
    /// Treat denormal (subnormal) inputs and results as zero while the JIT kernels run
    /// (x86 MXCSR FTZ + DAZ on each thread running a kernel, restored after; default true).
    /// Values below ~1.2e-38 then read as 0: a change far below f32 precision for network
    /// outputs, against slowdowns of 10–50× where activations underflow (a squeeze-excitation
    /// gate after random weights). Object files leave the caller's mode alone.
    pub flush_denormals: bool,
    /// Cache sizes the blocking is planned for; `None`: this machine's (CPUID) for the JIT
    /// and `--target-cpu=native` objects, [`CacheSizes::DEFAULT`] for other objects.
    pub cache_sizes: Option<CacheSizes>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            threads: 1,
            allow_fma: true,
            target_cpu: TargetCpu::Native,
            wide_gemm: true,
            direct_conv: true,
            fuse_affine: true,
            flush_denormals: true,
            cache_sizes: None,
        }
    }
}

/// Scratch memory for one run: planned buffers plus per-thread scratch.
pub struct Workspace {
    data: hugemem::HugeBuf,
}

impl Workspace {
    /// A workspace of `floats` elements (see [`CompiledModel::new_workspace`]).
    pub fn with_len(floats: usize) -> Workspace {
        Workspace {
            data: hugemem::HugeBuf::zeroed(floats),
        }
    }
    /// [`Workspace::with_len`], with an error instead of an abort when the memory is not there.
    pub fn try_with_len(floats: usize) -> Result<Workspace, CodegenError> {
        let data = hugemem::HugeBuf::try_zeroed(floats).ok_or(CodegenError::OutOfMemory {
            bytes: floats.saturating_mul(4),
            what: "workspace",
        })?;
        Ok(Workspace { data })
    }
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// `fn(weights, ptrs, scratch, lo, hi)`, see `emit.rs`.
type KernelFn = unsafe extern "C" fn(*const f32, *const *mut f32, *mut f32, i64, i64);

struct CompiledKernel {
    name: String,
    /// Address of the finalized function in the JIT module.
    addr: usize,
    units: usize,
}

/// A model compiled to native code in memory.
pub struct CompiledModel {
    module: Mutex<Option<JITModule>>,
    kernels: Vec<CompiledKernel>,
    blob: Arc<hugemem::HugeBuf>,
    inputs: Vec<(String, Shape)>,
    outputs: Vec<(String, Shape)>,
    buffers: usize,
    scratch: usize,
    threads: usize,
    flush_denormals: bool,
    pool: Option<pool::Pool>,
    cache: Mutex<Vec<Workspace>>,
    flops: u64,
    texts: Texts,
}

/// CLIF and register-allocated text of every function, when asked for.
#[derive(Clone, Debug, Default)]
pub struct Texts {
    pub clif: String,
    pub asm: String,
}

impl Drop for CompiledModel {
    fn drop(&mut self) {
        if let Ok(mut m) = self.module.lock()
            && let Some(m) = m.take()
        {
            // SAFETY: `run` borrows `self`, so no kernel of this module is executing, and the
            // function addresses die with `self`.
            unsafe { m.free_memory() };
        }
    }
}

/// Declares and defines the microkernel and every kernel of `plan` in `module`.
pub(crate) fn define_kernels<M: Module>(
    module: &mut M,
    plan: &plan::Plan,
    fma: bool,
    prefix: &str,
    texts: Option<&mut Texts>,
) -> Result<Vec<FuncId>, CodegenError> {
    let cc: CallConv = module.isa().default_call_conv();
    let mut texts = texts;
    let mut fctx = FunctionBuilderContext::new();
    let mut ctx = module.make_context();
    let want_asm = texts.is_some();

    let finish = |module: &mut M,
                  ctx: &mut Context,
                  id: FuncId,
                  texts: &mut Option<&mut Texts>|
     -> Result<(), CodegenError> {
        if let Some(t) = texts.as_deref_mut() {
            t.clif.push_str(&ctx.func.display().to_string());
            t.clif.push('\n');
        }
        ctx.set_disasm(want_asm);
        module
            .define_function(id, ctx)
            .map_err(|e| backend(format!("{e:?}")))?;
        if let Some(t) = texts.as_deref_mut()
            && let Some(code) = ctx.compiled_code()
            && let Some(v) = &code.vcode
        {
            t.asm.push_str(&format!("; function {}\n", ctx.func.name));
            t.asm.push_str(v);
            t.asm.push('\n');
        }
        module.clear_context(ctx);
        Ok(())
    };

    // The fallback microkernel, if any kernel uses it.
    let needs_fallback = plan
        .kernels
        .iter()
        .any(|k| matches!(k.kind, plan::KernelKind::Gemm { wide: None, .. }));
    let uid = if needs_fallback {
        let usig = emit::ukernel_signature(cc);
        let uid = module
            .declare_function(&format!("{prefix}ukernel_8x4"), Linkage::Local, &usig)
            .map_err(backend)?;
        ctx.func.signature = usig;
        ctx.func.name = UserFuncName::user(0, uid.as_u32());
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            emit::emit_ukernel(&mut b, fma);
            b.finalize(module.isa().frontend_config());
        }
        finish(module, &mut ctx, uid, &mut texts)?;
        Some(uid)
    } else {
        None
    };

    // Assembled microkernels, defined on first use and shared by all kernels.
    let wsig = emit::wide_ukernel_signature(cc);
    let mut wide_ids: HashMap<ukernel::Spec, FuncId> = HashMap::new();
    let mut wide_err: Option<CodegenError> = None;
    let mut wide_bytes = 0usize;

    let ksig = emit::kernel_signature(cc);
    let mut ids = Vec::new();
    for k in &plan.kernels {
        let id = module
            .declare_function(&format!("{prefix}{}", k.name), Linkage::Local, &ksig)
            .map_err(backend)?;
        ctx.func.signature = ksig.clone();
        ctx.func.name = UserFuncName::user(0, id.as_u32());
        let uref = match (&k.kind, uid) {
            (plan::KernelKind::Gemm { wide: None, .. }, Some(uid)) => {
                Some(module.declare_func_in_func(uid, &mut ctx.func))
            }
            _ => None,
        };
        {
            let mut get = |spec: &ukernel::Spec, func: &mut cranelift_codegen::ir::Function| {
                let fid = match wide_ids.get(spec) {
                    Some(&f) => Ok(f),
                    None => define_wide(module, prefix, spec, &wsig, wide_ids.len()).map(|f| {
                        wide_ids.insert(spec.clone(), f.0);
                        wide_bytes += f.1;
                        f.0
                    }),
                };
                match fid {
                    Ok(f) => module.declare_func_in_func(f, func),
                    Err(e) => {
                        wide_err.get_or_insert(e);
                        // A placeholder; the error is returned before anything is finalized.
                        let sig = func.import_signature(wsig.clone());
                        let name = func.declare_imported_user_function(
                            cranelift_codegen::ir::UserExternalName {
                                namespace: 1,
                                index: 0,
                            },
                        );
                        func.import_function(cranelift_codegen::ir::ExtFuncData {
                            name: cranelift_codegen::ir::ExternalName::user(name),
                            signature: sig,
                            colocated: false,
                            patchable: false,
                        })
                    }
                }
            };
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            emit::emit_kernel(&mut b, k, fma, uref, &mut get);
            b.finalize(module.isa().frontend_config());
        }
        if let Some(e) = wide_err.take() {
            return Err(e);
        }
        finish(module, &mut ctx, id, &mut texts)?;
        ids.push(id);
    }
    if let Some(t) = texts {
        let mut specs: Vec<_> = wide_ids.keys().map(|s| s.name()).collect();
        specs.sort();
        t.asm.push_str(&format!(
            "; {} assembled microkernels ({wide_bytes} bytes of machine code, iced-x86): {}\n",
            specs.len(),
            specs.join(", ")
        ));
    }
    Ok(ids)
}

/// Assembles `spec` and defines it in `module` (64-byte aligned); returns its id and size.
fn define_wide<M: Module>(
    module: &mut M,
    prefix: &str,
    spec: &ukernel::Spec,
    sig: &cranelift_codegen::ir::Signature,
    n: usize,
) -> Result<(FuncId, usize), CodegenError> {
    assert_eq!(
        sig.call_conv,
        CallConv::SystemV,
        "assembled microkernels follow the System V ABI"
    );
    let bytes = asm::assemble(spec).map_err(CodegenError::Backend)?;
    let id = module
        .declare_function(&format!("{prefix}{}_{n}", spec.name()), Linkage::Local, sig)
        .map_err(backend)?;
    module
        .define_function_bytes(id, 64, &bytes, &[])
        .map_err(backend)?;
    Ok((id, bytes.len()))
}

fn compile_inner(
    graph: &Graph,
    options: &Options,
    want_text: bool,
) -> Result<CompiledModel, CodegenError> {
    let threads = options.threads.max(1);
    if !options.target_cpu.host_supports() {
        return Err(CodegenError::Unsupported(format!(
            "this machine cannot run {} code (the JIT runs on the host)",
            options.target_cpu
        )));
    }
    let (isa, wide) = target_isa(options.target_cpu, false, options.allow_fma)?;
    let fma = options.allow_fma && isa_has_fma(&*isa);
    let caches = options.cache_sizes.unwrap_or_else(CacheSizes::host);
    let plan = plan_for(graph, options, threads, wide, caches)?;
    let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
    let mut texts = Texts::default();
    let ids = define_kernels(
        &mut module,
        &plan,
        fma,
        "",
        if want_text { Some(&mut texts) } else { None },
    )?;
    module.finalize_definitions().map_err(backend)?;
    let kernels = plan
        .kernels
        .iter()
        .zip(&ids)
        .map(|(k, &id)| CompiledKernel {
            name: k.name.clone(),
            addr: module.get_finalized_function(id) as usize,
            units: k.units,
        })
        .collect();
    let pool = if threads > 1 {
        Some(pool::Pool::new(threads).map_err(backend)?)
    } else {
        None
    };
    Ok(CompiledModel {
        module: Mutex::new(Some(module)),
        kernels,
        blob: Arc::new(hugemem::HugeBuf::from_slice(&plan.blob)),
        inputs: plan.inputs.clone(),
        outputs: plan.outputs.clone(),
        buffers: plan.buffers,
        scratch: plan.scratch,
        threads,
        flush_denormals: options.flush_denormals,
        pool,
        cache: Mutex::new(Vec::new()),
        flops: plan.flops,
        texts,
    })
}

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

/// Raw pointer wrapper so kernel arguments can cross into the thread pool.
#[derive(Clone, Copy)]
struct SendPtr(usize);

impl CompiledModel {
    pub fn input_shapes(&self) -> Vec<Shape> {
        self.inputs.iter().map(|(_, s)| s.clone()).collect()
    }
    pub fn output_shapes(&self) -> Vec<Shape> {
        self.outputs.iter().map(|(_, s)| s.clone()).collect()
    }
    pub fn input_names(&self) -> Vec<String> {
        self.inputs.iter().map(|(n, _)| n.clone()).collect()
    }
    pub fn output_names(&self) -> Vec<String> {
        self.outputs.iter().map(|(n, _)| n.clone()).collect()
    }
    /// Bytes of workspace one run needs (planned buffers + per-thread scratch).
    pub fn workspace_size(&self) -> usize {
        self.workspace_floats() * 4
    }
    /// Bytes of the planned intermediate buffers alone (no scratch).
    pub fn buffer_bytes(&self) -> usize {
        self.buffers * 4
    }
    /// Floats of scratch each thread gets (packed GEMM panels, padded planes of depthwise
    /// and pooling kernels); 0 when no kernel needs any.
    pub fn scratch_floats(&self) -> usize {
        self.scratch
    }
    fn workspace_floats(&self) -> usize {
        self.buffers + self.scratch * self.threads
    }
    /// A workspace for [`CompiledModel::run_with_workspace`].
    pub fn new_workspace(&self) -> Workspace {
        Workspace::with_len(self.workspace_floats())
    }
    /// Floating-point operations of one run (2 per multiply-accumulate), for GFLOP/s.
    pub fn flops(&self) -> u64 {
        self.flops
    }
    /// Number of generated kernels (excluding the microkernel).
    pub fn kernel_count(&self) -> usize {
        self.kernels.len()
    }
    /// Kernel names with their number of work units, in execution order.
    pub fn kernel_names(&self) -> Vec<(String, usize)> {
        self.kernels
            .iter()
            .map(|k| (k.name.clone(), k.units))
            .collect()
    }
    /// Size of the packed weight blob in bytes.
    pub fn weight_bytes(&self) -> usize {
        self.blob.len() * 4
    }

    /// Runs the model. `inputs[i]` must have as many elements as input `i`, and likewise
    /// for outputs. Uses a cached workspace.
    pub fn run(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) -> Result<(), CodegenError> {
        self.with_cached_workspace(|ws| self.run_impl(ws, inputs, outputs, None))
    }

    /// Calls `f` with a workspace from the cache (or a new one), then caches it: pages of
    /// a fresh workspace are faulted in by the kernels that first touch them.
    fn with_cached_workspace<T>(
        &self,
        f: impl FnOnce(&mut Workspace) -> Result<T, CodegenError>,
    ) -> Result<T, CodegenError> {
        let ws = self.cache.lock().ok().and_then(|mut c| c.pop());
        let mut ws = match ws {
            Some(ws) => ws,
            None => Workspace::try_with_len(self.workspace_floats())?,
        };
        let r = f(&mut ws);
        if let Ok(mut c) = self.cache.lock() {
            c.push(ws);
        }
        r
    }

    /// Runs the model with a caller-owned workspace (one per concurrent caller).
    pub fn run_with_workspace(
        &self,
        ws: &mut Workspace,
        inputs: &[&[f32]],
        outputs: &mut [&mut [f32]],
    ) -> Result<(), CodegenError> {
        self.run_impl(ws, inputs, outputs, None)
    }

    /// Runs once (with a cached workspace, like `run`) and returns each kernel's name and
    /// wall time in seconds (for tuning).
    pub fn profile(
        &self,
        inputs: &[&[f32]],
        outputs: &mut [&mut [f32]],
    ) -> Result<Vec<(String, f64)>, CodegenError> {
        let mut times = Vec::new();
        self.with_cached_workspace(|ws| self.run_impl(ws, inputs, outputs, Some(&mut times)))?;
        Ok(times)
    }

    fn run_impl(
        &self,
        ws: &mut Workspace,
        inputs: &[&[f32]],
        outputs: &mut [&mut [f32]],
        mut times: Option<&mut Vec<(String, f64)>>,
    ) -> Result<(), CodegenError> {
        if inputs.len() != self.inputs.len() {
            return Err(CodegenError::InputCount {
                expected: self.inputs.len(),
                got: inputs.len(),
            });
        }
        if outputs.len() != self.outputs.len() {
            return Err(CodegenError::OutputCount {
                expected: self.outputs.len(),
                got: outputs.len(),
            });
        }
        for (i, (x, (_, s))) in inputs.iter().zip(&self.inputs).enumerate() {
            let n: usize = s.iter().product();
            if x.len() != n {
                return Err(CodegenError::InputLength {
                    index: i,
                    expected: n,
                    got: x.len(),
                });
            }
        }
        for (i, (y, (_, s))) in outputs.iter().zip(&self.outputs).enumerate() {
            let n: usize = s.iter().product();
            if y.len() != n {
                return Err(CodegenError::OutputLength {
                    index: i,
                    expected: n,
                    got: y.len(),
                });
            }
        }
        if ws.data.len() < self.workspace_floats() {
            return Err(CodegenError::Workspace {
                expected: self.workspace_floats(),
                got: ws.data.len(),
            });
        }
        let mut ptrs: Vec<*mut f32> = Vec::with_capacity(1 + inputs.len() + outputs.len());
        ptrs.push(ws.data.as_mut_ptr());
        for x in inputs {
            // Kernels never write through input pointers.
            ptrs.push(x.as_ptr() as *mut f32);
        }
        for y in outputs.iter_mut() {
            ptrs.push(y.as_mut_ptr());
        }
        let ptrs_p = SendPtr(ptrs.as_ptr() as usize);
        let blob_p = SendPtr(self.blob.as_ptr() as usize);
        let scratch_p = SendPtr(ws.data.as_mut_ptr() as usize + self.buffers * 4);
        let scratch_bytes = self.scratch * 4;
        for k in &self.kernels {
            let start = times.as_ref().map(|_| std::time::Instant::now());
            let call = |lo: usize, hi: usize, slot: usize| {
                // SAFETY: `addr` is a finalized function of `self.module` (alive while
                // `self` is) with the signature `KernelFn`. Its pointer arguments are the
                // weight blob, the storage table built above (workspace, inputs, outputs,
                // each checked to have the length the plan assumes) and this call's
                // scratch slot; the kernel only touches the elements of those buffers the
                // plan assigned to it, and calls with disjoint unit ranges write disjoint
                // elements, so concurrent calls do not race.
                with_denormals_flushed(self.flush_denormals, || unsafe {
                    let f: KernelFn = std::mem::transmute::<usize, KernelFn>(k.addr);
                    f(
                        blob_p.0 as *const f32,
                        ptrs_p.0 as *const *mut f32,
                        (scratch_p.0 + slot * scratch_bytes) as *mut f32,
                        lo as i64,
                        hi as i64,
                    );
                });
            };
            match &self.pool {
                Some(pool) if k.units > 1 => {
                    let t = self.threads.min(k.units);
                    let units = k.units;
                    pool.run(t, &|i| {
                        let (lo, hi) = pool::piece_units(i, t, units);
                        call(lo, hi, i)
                    });
                }
                _ => call(0, k.units, 0),
            }
            if let (Some(t), Some(s)) = (times.as_deref_mut(), start) {
                t.push((k.name.clone(), s.elapsed().as_secs_f64()));
            }
        }
        Ok(())
    }
}

/// Test hooks for the assembled microkernels (not a stable API).
#[doc(hidden)]
pub mod testing {
    use super::*;
    pub use crate::isa::x64::Isa;
    pub use crate::isa::x64::asm::assemble;
    pub use crate::ukernel::{
        ActOp, EpOp, PadRows, PoolRows, Remap, RowKernel, Spec, TapMasks, Vector,
    };

    /// Whether this machine can run `isa` kernels.
    pub fn host_has(isa: Isa) -> bool {
        match isa {
            Isa::Avx2 => TargetCpu::X86_64V3.host_supports(),
            Isa::Avx512 => TargetCpu::X86_64V4.host_supports(),
        }
    }

    /// `fn(w, x, c, k, ldc_bytes, ep)`, see the `asm` module.
    pub type MicroFn = unsafe extern "C" fn(*const f32, *const f32, *mut f32, u64, i64, *const u64);

    /// What the `multi` objects' CPU check (`asm::assemble_cpu_level`) answers on this
    /// machine: 4 (AVX-512 kernels), 3 (AVX2) or 2.
    pub fn cpu_level() -> Result<i32, CodegenError> {
        let (isa, _) = target_isa(TargetCpu::Native, false, true)?;
        let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
        let mut sig = module.make_signature();
        sig.returns.push(cranelift_codegen::ir::AbiParam::new(
            cranelift_codegen::ir::types::I32,
        ));
        let id = module
            .declare_function("cpu_level", Linkage::Local, &sig)
            .map_err(backend)?;
        let bytes = asm::assemble_cpu_level().map_err(CodegenError::Backend)?;
        module
            .define_function_bytes(id, 16, &bytes, &[])
            .map_err(backend)?;
        module.finalize_definitions().map_err(backend)?;
        let p = module.get_finalized_function(id);
        // SAFETY: the bytes are a complete System V function `int(void)` (cpuid, xgetbv and
        // integer moves only), finalized as executable code in `module`, alive for the call.
        let level = unsafe { std::mem::transmute::<*const u8, extern "C" fn() -> i32>(p)() };
        // SAFETY: no pointer into the module outlives this point.
        unsafe { module.free_memory() };
        Ok(level)
    }

    /// A set of assembled microkernels loaded into executable memory.
    pub struct Microkernels {
        module: Option<JITModule>,
        fns: Vec<MicroFn>,
    }

    impl Microkernels {
        pub fn new(specs: &[Spec]) -> Result<Microkernels, CodegenError> {
            let (isa, _) = target_isa(TargetCpu::Native, false, true)?;
            let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
            let sig = emit::wide_ukernel_signature(module.isa().default_call_conv());
            let mut ids = Vec::new();
            for (i, s) in specs.iter().enumerate() {
                ids.push(define_wide(&mut module, "t_", s, &sig, i)?.0);
            }
            module.finalize_definitions().map_err(backend)?;
            let fns = ids
                .iter()
                .map(|&id| {
                    let p = module.get_finalized_function(id);
                    // SAFETY: the bytes at `p` are an assembled microkernel with this ABI.
                    unsafe { std::mem::transmute::<*const u8, MicroFn>(p) }
                })
                .collect();
            Ok(Microkernels {
                module: Some(module),
                fns,
            })
        }
        /// Kernel `i` (the order of `specs`). Calling it is unsafe: the caller must uphold
        /// the contract of the `asm` module and only call kernels this CPU can run.
        pub fn get(&self, i: usize) -> MicroFn {
            self.fns[i]
        }
    }

    impl Drop for Microkernels {
        fn drop(&mut self) {
            if let Some(m) = self.module.take() {
                // SAFETY: the function pointers handed out must not outlive `self`
                // (documented on `get`), so nothing runs in this memory any more.
                unsafe { m.free_memory() };
            }
        }
    }
}

// SAFETY-free assertion that the public type is thread-safe.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CompiledModel>();
};
