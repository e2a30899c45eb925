//! Cranelift code generation for bnc (design.md §4).
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
//!    shapes; convs run as GEMM on packed panels through one 8x4 f32x4 microkernel
//!    function (the replaceable boundary, see `emit::emit_ukernel`), depthwise convs on a
//!    padded phase-split copy, everything else with f32x4 loops and scalar tails.
//! 4. **Runtime**: kernels run in order; each splits its work units into `threads`
//!    contiguous ranges on a rayon pool. Every output element is computed by the same code
//!    in the same order whatever the split, so any thread count gives bit-identical results.

mod emit;
mod object;
mod plan;

use std::fmt;
use std::sync::{Arc, Mutex};

use bnc_ir::{Graph, Shape};
use cranelift_codegen::Context;
use cranelift_codegen::ir::UserFuncName;
use cranelift_codegen::isa::{CallConv, OwnedTargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, default_libcall_names};

pub use object::emit_object;

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
    /// Use `fma` when the host has AVX and FMA (default true); false forces fmul + fadd.
    pub allow_fma: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            threads: 1,
            allow_fma: true,
        }
    }
}

/// Scratch memory for one run: planned buffers plus per-thread scratch.
pub struct Workspace {
    data: Vec<f32>,
}

impl Workspace {
    /// A workspace of `floats` elements (see [`CompiledModel::new_workspace`]).
    pub fn with_len(floats: usize) -> Workspace {
        Workspace {
            data: vec![0.0; floats],
        }
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
    blob: Arc<Vec<f32>>,
    inputs: Vec<(String, Shape)>,
    outputs: Vec<(String, Shape)>,
    buffers: usize,
    scratch: usize,
    threads: usize,
    pool: Option<rayon::ThreadPool>,
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

/// The host ISA, with speed optimisation.
pub(crate) fn host_isa(pic: bool) -> Result<OwnedTargetIsa, CodegenError> {
    let mut flags = settings::builder();
    flags.set("opt_level", "speed").map_err(backend)?;
    flags
        .set("is_pic", if pic { "true" } else { "false" })
        .map_err(backend)?;
    let isa = cranelift_native::builder().map_err(backend)?;
    isa.finish(settings::Flags::new(flags)).map_err(backend)
}

/// Whether `fma` lowers to a real instruction on this ISA (has_avx and has_fma).
pub(crate) fn isa_has_fma(isa: &dyn cranelift_codegen::isa::TargetIsa) -> bool {
    let flags = isa.isa_flags();
    let on = |name: &str| {
        flags
            .iter()
            .any(|v| v.name == name && v.as_bool().unwrap_or(false))
    };
    on("has_avx") && on("has_fma")
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

    // The microkernel.
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

    let ksig = emit::kernel_signature(cc);
    let mut ids = Vec::new();
    for k in &plan.kernels {
        let id = module
            .declare_function(&format!("{prefix}{}", k.name), Linkage::Local, &ksig)
            .map_err(backend)?;
        ctx.func.signature = ksig.clone();
        ctx.func.name = UserFuncName::user(0, id.as_u32());
        let uref = if matches!(k.kind, plan::KernelKind::Gemm { .. }) {
            Some(module.declare_func_in_func(uid, &mut ctx.func))
        } else {
            None
        };
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            emit::emit_kernel(&mut b, k, fma, uref);
            b.finalize(module.isa().frontend_config());
        }
        finish(module, &mut ctx, id, &mut texts)?;
        ids.push(id);
    }
    Ok(ids)
}

fn compile_inner(
    graph: &Graph,
    options: &Options,
    want_text: bool,
) -> Result<CompiledModel, CodegenError> {
    let threads = options.threads.max(1);
    let plan = plan::plan(graph, threads)?;
    let isa = host_isa(false)?;
    let fma = options.allow_fma && isa_has_fma(&*isa);
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
        Some(
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .map_err(backend)?,
        )
    } else {
        None
    };
    Ok(CompiledModel {
        module: Mutex::new(Some(module)),
        kernels,
        blob: Arc::new(plan.blob.clone()),
        inputs: plan.inputs.clone(),
        outputs: plan.outputs.clone(),
        buffers: plan.buffers,
        scratch: plan.scratch,
        threads,
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
        let ws = self.cache.lock().ok().and_then(|mut c| c.pop());
        let mut ws = ws.unwrap_or_else(|| self.new_workspace());
        let r = self.run_with_workspace(&mut ws, inputs, outputs);
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

    /// Runs once and returns each kernel's name and wall time in seconds (for tuning).
    pub fn profile(
        &self,
        inputs: &[&[f32]],
        outputs: &mut [&mut [f32]],
    ) -> Result<Vec<(String, f64)>, CodegenError> {
        let mut ws = self.new_workspace();
        let mut times = Vec::new();
        self.run_impl(&mut ws, inputs, outputs, Some(&mut times))?;
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
                unsafe {
                    let f: KernelFn = std::mem::transmute::<usize, KernelFn>(k.addr);
                    f(
                        blob_p.0 as *const f32,
                        ptrs_p.0 as *const *mut f32,
                        (scratch_p.0 + slot * scratch_bytes) as *mut f32,
                        lo as i64,
                        hi as i64,
                    );
                }
            };
            match &self.pool {
                Some(pool) if k.units > 1 => {
                    let t = self.threads.min(k.units);
                    let units = k.units;
                    pool.scope(|s| {
                        for i in 0..t {
                            let call = &call;
                            s.spawn(move |_| call(i * units / t, (i + 1) * units / t, i));
                        }
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

// SAFETY-free assertion that the public type is thread-safe.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CompiledModel>();
};
