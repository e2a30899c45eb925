//! Defining a plan's kernels in a Cranelift module (JIT or object): each kernel's
//! function, the fallback microkernel, and the assembled microkernels it calls.

use std::collections::HashMap;

use cranelift_codegen::Context;
use cranelift_codegen::ir::UserFuncName;
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{FuncId, Linkage, Module};

use crate::error::{CodegenError, backend};
use crate::isa::x64::asm;
use crate::{plan, ukernel};

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
        let usig = super::ukernel_signature(cc);
        let uid = module
            .declare_function(&format!("{prefix}ukernel_8x4"), Linkage::Local, &usig)
            .map_err(backend)?;
        ctx.func.signature = usig;
        ctx.func.name = UserFuncName::user(0, uid.as_u32());
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            super::emit_ukernel(&mut b, fma);
            b.finalize(module.isa().frontend_config());
        }
        finish(module, &mut ctx, uid, &mut texts)?;
        Some(uid)
    } else {
        None
    };

    // Assembled microkernels, defined on first use and shared by all kernels.
    let wsig = super::wide_ukernel_signature(cc);
    let mut wide_ids: HashMap<ukernel::Spec, FuncId> = HashMap::new();
    let mut wide_err: Option<CodegenError> = None;
    let mut wide_bytes = 0usize;

    let ksig = super::kernel_signature(cc);
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
            super::emit_kernel(&mut b, k, fma, uref, &mut get);
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
pub(crate) fn define_wide<M: Module>(
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

/// CLIF and register-allocated text of every function, when asked for.
#[derive(Clone, Debug, Default)]
pub struct Texts {
    pub clif: String,
    pub asm: String,
}
