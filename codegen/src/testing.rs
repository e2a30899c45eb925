//! Test hooks for the assembled microkernels (not a stable API): load kernels into
//! executable memory and call them directly.

use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module, default_libcall_names};

use crate::error::{CodegenError, backend};
use crate::isa::x64::{TargetCpu, asm, target_isa};
use crate::lower::define_wide;

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
        let sig = crate::lower::wide_ukernel_signature(module.isa().default_call_conv());
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
