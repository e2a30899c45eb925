//! Ahead-of-time output: an ELF object with the kernels, the packed weights in read-only
//! data, and two exported C functions, plus a C header declaring them:
//!
//! ```c
//! size_t <p>_workspace_size(void);          /* bytes */
//! int    <p>_forward(const float *const *inputs, float *const *outputs, void *workspace);
//! ```
//!
//! The object path is single-threaded. It targets [`Options::target_cpu`](crate::Options):
//! `native` (the library default) gives the compiling host's features, the same code the
//! JIT would run; `x86-64-v2` gives SSE-only code with the Cranelift f32x4 GEMM;
//! `x86-64-v3` AVX2+FMA code with the assembled 256-bit microkernels; `x86-64-v4` adds the
//! AVX-512 microkernels. For an object that ships to other machines the recommended
//! default (the CLI's) is `x86-64-v3`: every x86-64 CPU since 2013-2015 (Haswell, Zen 1)
//! runs it, and on this Zen 4 the AVX-512 kernels are no faster (512-bit FMAs issue at half
//! rate). Nothing in the object checks the CPU at load time, except with `multi`: the model
//! is compiled three times (x86-64-v2 Cranelift code throughout, with the fallback, AVX2 and
//! AVX-512 microkernels and each variant's packed weights, so the object is about three
//! times larger) and `<p>_forward` asks `cpuid`/`xgetbv` which one this CPU runs.

use cranelift_codegen::ir::types::{I32, I64};
use cranelift_codegen::ir::{
    AbiParam, InstBuilder, MemFlagsData, Signature, StackSlotData, StackSlotKind, UserFuncName,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, Linkage, Module, default_libcall_names};
use cranelift_object::{ObjectBuilder, ObjectModule};

use bnc_ir::Graph;

use super::{object_caches, plan_for};
use crate::error::{CodegenError, backend};
use crate::isa::x64::{TargetCpu, asm, isa_has_fma, target_isa};
use crate::lower::define_kernels;
use crate::options::Options;
use crate::plan;
use crate::ukernel::Vector;

fn valid_prefix(p: &str) -> bool {
    !p.is_empty()
        && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !p.starts_with(|c: char| c.is_ascii_digit())
}

/// Compiles `graph` to an ELF object (returned as bytes) and a C header. Symbols are
/// `<symbol_prefix>_forward` and `<symbol_prefix>_workspace_size`.
pub fn emit_object(
    graph: &Graph,
    options: &Options,
    symbol_prefix: &str,
) -> Result<(Vec<u8>, String), CodegenError> {
    if !valid_prefix(symbol_prefix) {
        return Err(CodegenError::Unsupported(format!(
            "`{symbol_prefix}` is not a C identifier"
        )));
    }
    let p = symbol_prefix;
    let multi = options.target_cpu == TargetCpu::Multi;
    let level = if multi {
        TargetCpu::X86_64V2
    } else {
        options.target_cpu
    };
    let (isa, wide) = target_isa(level, true, options.allow_fma)?;
    let fma = options.allow_fma && isa_has_fma(&*isa);
    let builder =
        ObjectBuilder::new(isa, p.to_string(), default_libcall_names()).map_err(backend)?;
    let mut module = ObjectModule::new(builder);
    let cc = module.isa().default_call_conv();
    let mut fctx = FunctionBuilderContext::new();
    let mut ctx = module.make_context();
    let mut sig = Signature::new(cc);
    for _ in 0..3 {
        sig.params.push(AbiParam::new(I64));
    }
    sig.returns.push(AbiParam::new(I32));
    let fwd_name = format!("{p}_forward");
    // Blocking for this machine only when the object is for it.
    let caches = object_caches(options);

    // Objects run on one thread.
    let plan_for = |wide: Option<Vector>| plan_for(graph, options, 1, wide, caches);
    let (plan, workspace) = if !multi {
        let plan = plan_for(wide)?;
        let fwd = module
            .declare_function(&fwd_name, Linkage::Export, &sig)
            .map_err(backend)?;
        define_forward(
            &mut module,
            &mut ctx,
            &mut fctx,
            &plan,
            fma,
            fwd,
            &format!("{p}__"),
        )?;
        let ws = plan.workspace_floats() * 4;
        (plan, ws)
    } else {
        // Every variant's Cranelift code is x86-64-v2 (no FMA); the assembled microkernels
        // carry the wide instructions.
        let mut variants = Vec::new();
        let levels = crate::isa::x64::multi_variants(options.wide_gemm);
        for (lvl, wide) in levels {
            let plan = plan_for(wide)?;
            let id = module
                .declare_function(&format!("{p}__forward_v{lvl}"), Linkage::Local, &sig)
                .map_err(backend)?;
            let pre = format!("{p}__v{lvl}_");
            define_forward(&mut module, &mut ctx, &mut fctx, &plan, false, id, &pre)?;
            variants.push((lvl, id, plan));
        }
        // cpu_level() -> int, then the dispatching forward.
        let mut lsig = Signature::new(cc);
        lsig.returns.push(AbiParam::new(I32));
        let level_id = module
            .declare_function(&format!("{p}__cpu_level"), Linkage::Local, &lsig)
            .map_err(backend)?;
        let bytes = asm::assemble_cpu_level().map_err(CodegenError::Backend)?;
        module
            .define_function_bytes(level_id, 16, &bytes, &[])
            .map_err(backend)?;
        let fwd = module
            .declare_function(&fwd_name, Linkage::Export, &sig)
            .map_err(backend)?;
        ctx.func.signature = sig.clone();
        ctx.func.name = UserFuncName::user(0, fwd.as_u32());
        {
            let lref = module.declare_func_in_func(level_id, &mut ctx.func);
            let refs: Vec<_> = variants
                .iter()
                .map(|(l, id, _)| (*l, module.declare_func_in_func(*id, &mut ctx.func)))
                .collect();
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            let args = b.block_params(entry).to_vec();
            let call = b.ins().call(lref, &[]);
            let have = b.inst_results(call)[0];
            // Widest variant first: run it when the CPU's level reaches it.
            for (lvl, fref) in refs.iter().rev() {
                let run = b.create_block();
                let next = b.create_block();
                let ok = b.ins().icmp_imm_s(
                    cranelift_codegen::ir::condcodes::IntCC::SignedGreaterThanOrEqual,
                    have,
                    *lvl as i64,
                );
                b.ins().brif(ok, run, &[], next, &[]);
                b.switch_to_block(run);
                let c = b.ins().call(*fref, &args);
                let r = b.inst_results(c)[0];
                b.ins().return_(&[r]);
                b.switch_to_block(next);
            }
            let bad = b.ins().iconst(I32, -1);
            b.ins().return_(&[bad]);
            b.seal_all_blocks();
            b.finalize(module.isa().frontend_config());
        }
        module
            .define_function(fwd, &mut ctx)
            .map_err(|e| backend(format!("{e:?}")))?;
        module.clear_context(&mut ctx);
        let ws = variants
            .iter()
            .map(|(_, _, pl)| pl.workspace_floats() * 4)
            .max()
            .unwrap_or(0);
        let plan = variants.swap_remove(0).2;
        (plan, ws)
    };

    // workspace_size() -> size_t
    let mut sig = Signature::new(cc);
    sig.returns.push(AbiParam::new(I64));
    let wsf = module
        .declare_function(&format!("{p}_workspace_size"), Linkage::Export, &sig)
        .map_err(backend)?;
    ctx.func.signature = sig;
    ctx.func.name = UserFuncName::user(0, wsf.as_u32());
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let entry = b.create_block();
        b.switch_to_block(entry);
        let v = b.ins().iconst(I64, workspace as i64);
        b.ins().return_(&[v]);
        b.seal_all_blocks();
        b.finalize(module.isa().frontend_config());
    }
    module
        .define_function(wsf, &mut ctx)
        .map_err(|e| backend(format!("{e:?}")))?;
    module.clear_context(&mut ctx);

    let product = module.finish();
    let obj = product.emit().map_err(backend)?;
    Ok((obj, header(&plan, workspace, p)))
}

/// Defines the kernels of `plan` (symbols prefixed `prefix`), its packed weights
/// (`<prefix>weights`) and `fwd(inputs, outputs, workspace) -> 0`, which runs them in order.
fn define_forward(
    module: &mut ObjectModule,
    ctx: &mut cranelift_codegen::Context,
    fctx: &mut FunctionBuilderContext,
    plan: &plan::Plan,
    fma: bool,
    fwd: cranelift_module::FuncId,
    prefix: &str,
) -> Result<(), CodegenError> {
    let ids = define_kernels(module, plan, fma, prefix, None)?;
    let data_id = module
        .declare_data(&format!("{prefix}weights"), Linkage::Local, false, false)
        .map_err(backend)?;
    let mut desc = DataDescription::new();
    let mut bytes = Vec::with_capacity(plan.blob.len() * 4 + 4);
    for v in &plan.blob {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    if bytes.is_empty() {
        bytes.extend_from_slice(&[0; 4]);
    }
    desc.define(bytes.into_boxed_slice());
    desc.set_align(64);
    module.define_data(data_id, &desc).map_err(backend)?;

    let cc = module.isa().default_call_conv();
    let mut sig = Signature::new(cc);
    for _ in 0..3 {
        sig.params.push(AbiParam::new(I64));
    }
    sig.returns.push(AbiParam::new(I32));
    ctx.func.signature = sig;
    ctx.func.name = UserFuncName::user(0, fwd.as_u32());
    {
        let gv = module.declare_data_in_func(data_id, &mut ctx.func);
        let refs: Vec<_> = ids
            .iter()
            .map(|&id| module.declare_func_in_func(id, &mut ctx.func))
            .collect();
        let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let p = b.block_params(entry).to_vec();
        let (inp, outp, ws) = (p[0], p[1], p[2]);
        let ni = plan.inputs.len();
        let no = plan.outputs.len();
        let slots = 1 + ni + no;
        let ss = b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            (slots * 8) as u32,
            3,
        ));
        let fl = MemFlagsData::new().with_notrap();
        b.ins().stack_store(I64, ws, ss, 0);
        for i in 0..ni {
            let v = b.ins().load(I64, fl, inp, (i * 8) as i32);
            b.ins().stack_store(I64, v, ss, ((1 + i) * 8) as i32);
        }
        for j in 0..no {
            let v = b.ins().load(I64, fl, outp, (j * 8) as i32);
            b.ins().stack_store(I64, v, ss, ((1 + ni + j) * 8) as i32);
        }
        let table = b.ins().stack_addr(I64, ss, 0);
        let wts = b.ins().symbol_value(I64, gv);
        let scratch = b.ins().iadd_imm_s(ws, (plan.buffers * 4) as i64);
        let zero = b.ins().iconst(I64, 0);
        for (k, fref) in plan.kernels.iter().zip(refs) {
            let hi = b.ins().iconst(I64, k.units as i64);
            b.ins().call(fref, &[wts, table, scratch, zero, hi]);
        }
        let ok = b.ins().iconst(I32, 0);
        b.ins().return_(&[ok]);
        b.seal_all_blocks();
        b.finalize(module.isa().frontend_config());
    }
    module
        .define_function(fwd, ctx)
        .map_err(|e| backend(format!("{e:?}")))?;
    module.clear_context(ctx);
    Ok(())
}

fn header(plan: &plan::Plan, workspace: usize, p: &str) -> String {
    let guard = format!("{}_H", p.to_ascii_uppercase());
    let mut h = String::new();
    h.push_str(&format!(
        "/* Generated by bnc. Model `{p}`: {} input(s), {} output(s), f32, NCHW. */\n",
        plan.inputs.len(),
        plan.outputs.len()
    ));
    h.push_str(&format!(
        "#ifndef {guard}\n#define {guard}\n\n#include <stddef.h>\n\n"
    ));
    h.push_str("#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n");
    for (i, (name, shape)) in plan.inputs.iter().enumerate() {
        let n: usize = shape.iter().product();
        h.push_str(&format!(
            "/* input {i} `{name}`: shape {shape:?} */\n#define {}_INPUT{i}_LEN {n}\n",
            p.to_ascii_uppercase()
        ));
    }
    for (i, (name, shape)) in plan.outputs.iter().enumerate() {
        let n: usize = shape.iter().product();
        h.push_str(&format!(
            "/* output {i} `{name}`: shape {shape:?} */\n#define {}_OUTPUT{i}_LEN {n}\n",
            p.to_ascii_uppercase()
        ));
    }
    h.push_str(&format!(
        "#define {}_NUM_INPUTS {}\n#define {}_NUM_OUTPUTS {}\n#define {}_WORKSPACE_SIZE {}\n\n",
        p.to_ascii_uppercase(),
        plan.inputs.len(),
        p.to_ascii_uppercase(),
        plan.outputs.len(),
        p.to_ascii_uppercase(),
        workspace
    ));
    h.push_str(&format!(
        "/* Bytes of scratch memory `{p}_forward` needs (any alignment; 64 is best). */\n\
         size_t {p}_workspace_size(void);\n\n\
         /* Runs the model: inputs[i] and outputs[i] point to the tensors above (row-major).\n\
          * Returns 0. Single-threaded; reentrant with distinct workspaces. */\n\
         int {p}_forward(const float *const *inputs, float *const *outputs, void *workspace);\n\n"
    ));
    h.push_str("#ifdef __cplusplus\n}\n#endif\n\n#endif\n");
    h
}
