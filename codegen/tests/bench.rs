//! Benchmarks, ignored by default. Run in release, on an otherwise idle machine:
//!
//! ```text
//! cargo test -p bnc-codegen --release --test bench -- --ignored --nocapture --test-threads 1
//! ```
//!
//! `bench_gemm`: GFLOP/s of one GEMM (a 1x1 conv: `C[M][N] = W[M][K] X[K][N]`, packing of
//! X included) on one core for each microkernel against `matrixmultiply::sgemm`.
//! `bench`: batch-1 latency (median of `BNC_RUNS`, default 20, runs) at 1 and 2 threads,
//! before (the Cranelift f32x4 fallback) and after (the assembled wide kernels).
//! `profile`: per-kernel times of one model (`BNC_MODEL=resnet50`).
//! `fma_ceiling`: peak FMA throughput of one core from tight loops with no memory traffic
//! (Cranelift f32x4, and assembled ymm / zmm loops), and resnet50's GFLOP/s on the f32x4
//! fallback and the default (wide) path as a percentage of those ceilings.
//!
//! Folded vs unfolded, memory-bound kernels' bytes/s and the latency table are in
//! `examples/latency.rs` (they need the fold passes).

mod common;
use std::path::Path;
use std::time::Instant;

use bnc_codegen::{CompiledModel, Options, TargetCpu, compile};

fn example(name: &str) -> bnc_ir::Graph {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(format!("{name}.nn"));
    bnc_frontend::load_file(&path).unwrap()
}

fn median_ms(m: &CompiledModel, g: &bnc_ir::Graph, runs: usize) -> (f64, f64) {
    let ins = common::inputs(g, 1);
    let inp: Vec<&[f32]> = ins.iter().map(|t| t.data.as_slice()).collect();
    let mut outs: Vec<Vec<f32>> = m
        .output_shapes()
        .iter()
        .map(|s| vec![0.0; s.iter().product()])
        .collect();
    let mut ws = m.new_workspace();
    let mut times = Vec::new();
    for i in 0..runs + 3 {
        let mut refs: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
        let t = Instant::now();
        m.run_with_workspace(&mut ws, &inp, &mut refs).unwrap();
        if i >= 3 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (times[times.len() / 2] * 1e3, times[0] * 1e3)
}

fn runs() -> usize {
    std::env::var("BNC_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

fn variants() -> Vec<(&'static str, Options)> {
    let mut v = vec![(
        "fallback",
        Options {
            wide_gemm: false,
            ..Options::default()
        },
    )];
    if TargetCpu::X86_64V3.host_supports() {
        v.push((
            "avx2",
            Options {
                target_cpu: TargetCpu::X86_64V3,
                ..Options::default()
            },
        ));
    }
    if TargetCpu::X86_64V4.host_supports() {
        v.push((
            "avx512",
            Options {
                target_cpu: TargetCpu::X86_64V4,
                ..Options::default()
            },
        ));
    }
    v
}

#[test]
#[ignore]
fn bench() {
    let models: Vec<String> = match std::env::var("BNC_MODELS") {
        Ok(s) => s.split(',').map(String::from).collect(),
        Err(_) => [
            "resnet18",
            "resnet50",
            "mobilenet_v2",
            "efficientnet_b0",
            "densenet121",
        ]
        .map(String::from)
        .to_vec(),
    };
    for name in &models {
        let g = example(name);
        for threads in [1, 2] {
            for (label, o) in variants() {
                let t = Instant::now();
                let m = compile(&g, &Options { threads, ..o }).unwrap();
                let ct = t.elapsed().as_secs_f64() * 1e3;
                let (med, min) = median_ms(&m, &g, runs());
                println!(
                    "{name:>16} threads={threads} {label:>8}: median {med:8.2} ms  min {min:8.2} ms  {:6.1} GFLOP/s  compile {ct:6.1} ms",
                    m.flops() as f64 / med / 1e6,
                );
            }
        }
    }
}

/// A GEMM as a model: input `[1, K, 1, N]`, a 1x1 conv to M channels without bias.
fn gemm_graph(m: usize, n: usize, k: usize) -> bnc_ir::Graph {
    common::model(&format!(
        "input x: f32[1, {k}, 1, {n}]\n y = conv2d(x, out = {m}, kernel = 1, bias = false)\n output y"
    ))
}

#[test]
#[ignore]
fn bench_gemm() {
    for s in [256usize, 1024] {
        let (m, n, k) = (s, s, s);
        let flop = 2.0 * (m * n * k) as f64;
        let reps = if s <= 256 { 200 } else { 10 };
        let g = gemm_graph(m, n, k);
        let ins = common::inputs(&g, 3);
        let w = &g.params.values().next().unwrap().data;
        let mut c = vec![0.0f32; m * n];
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            for _ in 0..reps {
                // SAFETY: the slices hold m*k, k*n and m*n floats with the given strides.
                unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        w.as_ptr(),
                        k as isize,
                        1,
                        ins[0].data.as_ptr(),
                        n as isize,
                        1,
                        0.0,
                        c.as_mut_ptr(),
                        n as isize,
                        1,
                    );
                }
            }
            best = best.min(t.elapsed().as_secs_f64() / reps as f64);
        }
        println!(
            "gemm {s}^3 {:>16}: {:7.1} GFLOP/s",
            "matrixmultiply",
            flop / best / 1e9
        );
        for (label, o) in variants() {
            let cm = compile(&g, &o).unwrap();
            let inp = [ins[0].data.as_slice()];
            let mut out = vec![0.0f32; m * n];
            let mut ws = cm.new_workspace();
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t = Instant::now();
                for _ in 0..reps {
                    cm.run_with_workspace(&mut ws, &inp, &mut [&mut out])
                        .unwrap();
                }
                best = best.min(t.elapsed().as_secs_f64() / reps as f64);
            }
            let err = out
                .iter()
                .zip(&c)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            println!(
                "gemm {s}^3 {label:>16}: {:7.1} GFLOP/s  (max |diff| vs matrixmultiply {err:.1e})",
                flop / best / 1e9
            );
        }
    }
}

/// Per-kernel times of one model: `BNC_MODEL=resnet18 cargo test --release --test bench -- --ignored --nocapture profile`
/// (`BNC_THREADS=2` to split every kernel over 2 threads).
#[test]
#[ignore]
fn profile() {
    let name = std::env::var("BNC_MODEL").unwrap_or_else(|_| "resnet18".into());
    let threads = std::env::var("BNC_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let g = example(&name);
    let m = compile(
        &g,
        &Options {
            threads,
            ..Options::default()
        },
    )
    .unwrap();
    let ins = common::inputs(&g, 1);
    let inp: Vec<&[f32]> = ins.iter().map(|t| t.data.as_slice()).collect();
    let mut outs: Vec<Vec<f32>> = m
        .output_shapes()
        .iter()
        .map(|s| vec![0.0; s.iter().product()])
        .collect();
    let mut best: Vec<(String, f64)> = Vec::new();
    for _ in 0..5 {
        let mut refs: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
        let t = m.profile(&inp, &mut refs).unwrap();
        if best.is_empty() {
            best = t;
        } else {
            for (b, n) in best.iter_mut().zip(t) {
                b.1 = b.1.min(n.1);
            }
        }
    }
    let total: f64 = best.iter().map(|b| b.1).sum();
    for (n, t) in &best {
        println!("{:8.3} ms  {:5.1}%  {n}", t * 1e3, 100.0 * t / total);
    }
    println!("total {:.2} ms", total * 1e3);
}

// ---- FMA ceiling --------------------------------------------------------------------------

use cranelift_codegen::ir::types::{F32X4, I64};
use cranelift_codegen::ir::{AbiParam, BlockArg, InstBuilder, MemFlagsData, UserFuncName};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module, default_libcall_names};

/// `fn(iters: i64, p: *mut f32)`: the loop runs `iters` trips of `accs * unroll` FMAs.
type LoopFn = unsafe extern "C" fn(i64, *mut f32);

fn host_module() -> JITModule {
    let mut flags = settings::builder();
    flags.set("opt_level", "speed").unwrap();
    let isa = cranelift_native::builder()
        .unwrap()
        .finish(settings::Flags::new(flags))
        .unwrap();
    JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()))
}

fn loop_signature(module: &JITModule) -> cranelift_codegen::ir::Signature {
    let mut sig = module.make_signature();
    sig.params.push(AbiParam::new(I64));
    sig.params.push(AbiParam::new(I64));
    sig
}

/// A Cranelift loop of f32x4 `fma`s on `accs` independent accumulators, `unroll` times per
/// trip. `gemm_form`: `acc = fma(a, b, acc)` (what a GEMM does: Cranelift's `vfmadd213ps`
/// overwrites a multiplicand, so each FMA needs a register copy of `a`); otherwise
/// `acc = fma(acc, b, a)` (the accumulator is the overwritten multiplicand: no copy).
/// `a`, `b` and the initial accumulators are loaded from `p[0..4]`, `p[4..8]`, `p[8..12]`;
/// the sum of the accumulators is stored to `p[12..16]` so nothing is dead.
fn cranelift_loop(accs: usize, unroll: usize, gemm_form: bool) -> (JITModule, LoopFn, String) {
    let mut module = host_module();
    let sig = loop_signature(&module);
    let id = module
        .declare_function("fma_loop", Linkage::Local, &sig)
        .unwrap();
    let mut ctx = module.make_context();
    ctx.func.signature = sig;
    ctx.func.name = UserFuncName::user(0, id.as_u32());
    let mut fctx = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let flags = MemFlagsData::new().with_notrap();
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let (n, p) = (b.block_params(entry)[0], b.block_params(entry)[1]);
        let a = b.ins().load(F32X4, flags, p, 0);
        let bv = b.ins().load(F32X4, flags, p, 16);
        let init = b.ins().load(F32X4, flags, p, 32);
        let body = b.create_block();
        let exit = b.create_block();
        b.append_block_param(body, I64);
        for _ in 0..accs {
            b.append_block_param(body, F32X4);
            b.append_block_param(exit, F32X4);
        }
        let mut args: Vec<BlockArg> = vec![n.into()];
        args.extend((0..accs).map(|_| BlockArg::from(init)));
        b.ins().jump(body, &args);
        b.switch_to_block(body);
        let params = b.block_params(body).to_vec();
        let mut acc: Vec<_> = params[1..].to_vec();
        for _ in 0..unroll {
            for v in acc.iter_mut() {
                *v = if gemm_form {
                    b.ins().fma(a, bv, *v)
                } else {
                    b.ins().fma(*v, bv, a)
                };
            }
        }
        let left = b.ins().iadd_imm_s(params[0], -1);
        let mut back: Vec<BlockArg> = vec![left.into()];
        back.extend(acc.iter().map(|&v| BlockArg::from(v)));
        let out: Vec<BlockArg> = acc.iter().map(|&v| v.into()).collect();
        b.ins().brif(left, body, &back, exit, &out);
        b.switch_to_block(exit);
        let mut sum = b.block_params(exit)[0];
        for i in 1..accs {
            let v = b.block_params(exit)[i];
            sum = b.ins().fadd(sum, v);
        }
        b.ins().store(flags, sum, p, 48);
        b.ins().return_(&[]);
        b.seal_all_blocks();
        b.finalize(module.isa().frontend_config());
    }
    ctx.set_disasm(true);
    module.define_function(id, &mut ctx).unwrap();
    let vcode = ctx
        .compiled_code()
        .and_then(|c| c.vcode.clone())
        .unwrap_or_default();
    module.clear_context(&mut ctx);
    module.finalize_definitions().unwrap();
    let ptr = module.get_finalized_function(id);
    // SAFETY: the function just defined has the signature `LoopFn`.
    let f = unsafe { std::mem::transmute::<*const u8, LoopFn>(ptr) };
    (module, f, vcode)
}

/// The same loop assembled with iced-x86 on `accs` ymm (`zmm == false`) or zmm registers:
/// `vfmadd231ps acc, a, b` (the accumulator is the destination), `unroll` times per trip.
fn assembled_loop(accs: usize, unroll: usize, zmm: bool) -> (JITModule, LoopFn) {
    use iced_x86::code_asm::*;
    let ymms = [
        ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11, ymm12, ymm13,
        ymm14, ymm15,
    ];
    let zmms = [
        zmm0, zmm1, zmm2, zmm3, zmm4, zmm5, zmm6, zmm7, zmm8, zmm9, zmm10, zmm11, zmm12, zmm13,
        zmm14, zmm15,
    ];
    assert!(accs <= 14);
    let mut a = CodeAssembler::new(64).unwrap();
    if zmm {
        a.vbroadcastss(zmm14, dword_ptr(rsi)).unwrap();
        a.vbroadcastss(zmm15, dword_ptr(rsi + 16)).unwrap();
        for &r in &zmms[..accs] {
            a.vbroadcastss(r, dword_ptr(rsi + 32)).unwrap();
        }
    } else {
        a.vbroadcastss(ymm14, dword_ptr(rsi)).unwrap();
        a.vbroadcastss(ymm15, dword_ptr(rsi + 16)).unwrap();
        for &r in &ymms[..accs] {
            a.vbroadcastss(r, dword_ptr(rsi + 32)).unwrap();
        }
    }
    let mut top = a.create_label();
    a.set_label(&mut top).unwrap();
    for _ in 0..unroll {
        for i in 0..accs {
            if zmm {
                a.vfmadd231ps(zmms[i], zmm14, zmm15).unwrap();
            } else {
                a.vfmadd231ps(ymms[i], ymm14, ymm15).unwrap();
            }
        }
    }
    a.dec(rdi).unwrap();
    a.jnz(top).unwrap();
    // Keep the result live: store acc0 to p[12..].
    a.vmovups(xmmword_ptr(rsi + 48), xmm0).unwrap();
    a.vzeroupper().unwrap();
    a.ret().unwrap();
    let bytes = a.assemble(0).unwrap();
    let mut module = host_module();
    let sig = loop_signature(&module);
    let id = module
        .declare_function("fma_loop_asm", Linkage::Local, &sig)
        .unwrap();
    module.define_function_bytes(id, 64, &bytes, &[]).unwrap();
    module.finalize_definitions().unwrap();
    let ptr = module.get_finalized_function(id);
    // SAFETY: the bytes are a leaf System V function `(i64, *mut f32)` that only reads
    // p[0..12] and writes p[12..16].
    let f = unsafe { std::mem::transmute::<*const u8, LoopFn>(ptr) };
    (module, f)
}

/// Best GFLOP/s over `reps` timings of `iters` trips (`fmas_per_trip` FMAs of `lanes` lanes).
fn time_loop(f: LoopFn, iters: i64, fmas_per_trip: usize, lanes: usize, reps: usize) -> f64 {
    let mut p = [0.0f32; 16];
    p[..4].fill(1e-7);
    p[4..8].fill(0.999_999);
    p[8..12].fill(1.0);
    let flop = 2.0 * (iters as f64) * (fmas_per_trip * lanes) as f64;
    let mut best = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        // SAFETY: `p` holds the 16 floats the loop reads and writes.
        unsafe { f(iters, p.as_mut_ptr()) };
        best = best.min(t.elapsed().as_secs_f64());
    }
    assert!(p[12].is_finite());
    flop / best / 1e9
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[test]
#[ignore]
fn fma_ceiling() {
    let iters = 20_000_000;
    let reps = 7;
    println!("load average {}", loadavg());
    let mut ceil128 = 0.0f64;
    for (accs, unroll, gemm_form) in [
        (8, 2, false),
        (12, 2, false),
        (14, 2, false),
        (8, 2, true),
        (12, 2, true),
        (14, 2, true),
    ] {
        let (_m, f, vcode) = cranelift_loop(accs, unroll, gemm_form);
        let g = time_loop(f, iters, accs * unroll, 4, reps);
        let body: Vec<&str> = vcode.lines().collect();
        let fmas = body.iter().filter(|l| l.contains("vfmadd")).count();
        let moves = body
            .iter()
            .filter(|l| l.contains("movaps") || l.contains("movdqa"))
            .count();
        let spills = body
            .iter()
            .filter(|l| l.contains("rsp") || l.contains("rbp"))
            .count();
        println!(
            "cranelift f32x4 {:>24} accs={accs:2} x{unroll}: {g:6.1} GFLOP/s  ({fmas} vfmadd, {moves} register copies, {spills} stack refs in the function)",
            if gemm_form {
                "acc = fma(a, b, acc)"
            } else {
                "acc = fma(acc, b, a)"
            }
        );
        if std::env::var("BNC_SHOW_ASM").is_ok() {
            println!("{vcode}");
        }
        ceil128 = ceil128.max(g);
    }
    let mut ceil_wide = 0.0f64;
    for (zmm, ok) in [
        (false, TargetCpu::X86_64V3.host_supports()),
        (true, TargetCpu::X86_64V4.host_supports()),
    ] {
        if !ok {
            continue;
        }
        for accs in [8, 12, 14] {
            let (_m, f) = assembled_loop(accs, 2, zmm);
            let lanes = if zmm { 16 } else { 8 };
            let g = time_loop(f, iters / 2, accs * 2, lanes, reps);
            println!(
                "assembled {} vfmadd231ps accs={accs:2} x2: {g:6.1} GFLOP/s",
                if zmm { "zmm" } else { "ymm" }
            );
            ceil_wide = ceil_wide.max(g);
        }
    }
    println!("ceilings: 128-bit {ceil128:.1} GFLOP/s, wide {ceil_wide:.1} GFLOP/s");
    let g = example("resnet50");
    for (label, o, ceil) in [
        (
            "fallback (f32x4)",
            Options {
                wide_gemm: false,
                ..Options::default()
            },
            ceil128,
        ),
        ("default (wide)", Options::default(), ceil_wide),
    ] {
        let m = compile(&g, &o).unwrap();
        let (med, min) = median_ms(&m, &g, runs());
        let (gm, gx) = (m.flops() as f64 / med / 1e6, m.flops() as f64 / min / 1e6);
        println!(
            "resnet50 {label:>16}: median {med:7.2} ms ({gm:5.1} GFLOP/s = {:4.1}% of 128-bit, {:4.1}% of wide)  \
             min {min:7.2} ms ({gx:5.1} GFLOP/s = {:4.1}% / {:4.1}%)  [ceiling used: {ceil:.1}]",
            100.0 * gm / ceil128,
            100.0 * gm / ceil_wide,
            100.0 * gx / ceil128,
            100.0 * gx / ceil_wide,
        );
    }
    println!("load average {}", loadavg());
}

// ---- The fuse_affine option ---------------------------------------------------------------

/// `fuse_affine: false` gives each batchnorm its own kernel and the same results.
#[test]
fn unfused_affine_is_its_own_kernel() {
    let g = common::model(
        "input x: f32[1, 4, 6, 6]\n c = conv2d(x, out = 8, kernel = 3, pad = 1)\n b = batchnorm(c)\n \
         r = relu(b)\n d = conv2d(r, out = 8, kernel = 1)\n e = batchnorm(d)\n a = add(e, r)\n output a",
    );
    let ins = common::inputs(&g, 1);
    let want = bnc_ir::interp::run(&g, &ins).unwrap();
    let fused = compile(&g, &Options::default()).unwrap();
    let sep = compile(
        &g,
        &Options {
            fuse_affine: false,
            ..Options::default()
        },
    )
    .unwrap();
    // Two more kernels: the batchnorms (direct convs add the same padded-input copies to
    // both).
    let compute = |m: &bnc_codegen::CompiledModel| {
        m.kernel_names()
            .iter()
            .filter(|(n, _)| !n.ends_with("_pad"))
            .count()
    };
    assert_eq!(compute(&fused), 2, "{:?}", fused.kernel_names());
    assert_eq!(compute(&sep), 4, "{:?}", sep.kernel_names());
    for m in [&fused, &sep] {
        let got = common::run_compiled(m, &ins);
        let err = want[0].max_abs_diff(&got[0]) / want[0].max_abs().max(1.0);
        assert!(err <= common::TOL, "relative error {err}");
    }
}
