//! The in-process runtime: a model JIT-compiled into memory ([`CompiledModel`]), its
//! workspaces, and running its kernels in order over the thread pool.

use std::sync::{Arc, Mutex};

use bnc_ir::{Graph, Shape};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::default_libcall_names;

use super::plan_for;
use super::{hugemem, pool};
use crate::cache::CacheSizes;
use crate::error::{CodegenError, backend};
use crate::isa::x64::mxcsr::with_denormals_flushed;
use crate::isa::x64::{isa_has_fma, target_isa};
use crate::lower::{Texts, define_kernels};
use crate::options::Options;

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

/// `fn(weights, ptrs, scratch, lo, hi)`, see `lower/mod.rs`.
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
    pub(crate) texts: Texts,
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

pub(crate) fn compile_inner(
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
                        let (lo, hi) = crate::plan::piece_units(i, t, units);
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

// SAFETY-free assertion that the public type is thread-safe.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CompiledModel>();
};
