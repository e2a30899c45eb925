//! The JIT API: thread-count determinism, argument checks, workspaces, inspection.

mod common;
use std::path::Path;

use bnc_codegen::{CodegenError, Options, asm_text, clif_text, compile};
use common::{inputs, model, run_compiled};

fn example(name: &str) -> bnc_ir::Graph {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(format!("{name}.nn"));
    bnc_frontend::load_file(&path).unwrap()
}

fn opts(threads: usize) -> Options {
    Options {
        threads,
        ..Options::default()
    }
}

#[test]
fn two_threads_bit_identical_on_models() {
    for name in ["resnet18", "mobilenet_v2", "densenet121"] {
        let g = example(name);
        let ins = inputs(&g, 9);
        let a = run_compiled(&compile(&g, &opts(1)).unwrap(), &ins);
        for t in [2, 3] {
            let b = run_compiled(&compile(&g, &opts(t)).unwrap(), &ins);
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    x.data
                        .iter()
                        .zip(&y.data)
                        .all(|(p, q)| p.to_bits() == q.to_bits()),
                    "{name}: threads={t} differs from threads=1"
                );
            }
        }
    }
}

#[test]
fn bad_arguments_are_errors() {
    let g = model("input a: f32[1, 3, 4, 4]\n input b: f32[1, 3, 4, 4]\n y = add(a, b)\n output y");
    let m = compile(&g, &Options::default()).unwrap();
    assert_eq!(m.input_shapes(), vec![vec![1, 3, 4, 4], vec![1, 3, 4, 4]]);
    assert_eq!(m.output_shapes(), vec![vec![1, 3, 4, 4]]);
    let x = vec![0.0f32; 48];
    let mut y = vec![0.0f32; 48];
    let mut short = vec![0.0f32; 47];
    assert!(matches!(
        m.run(&[&x], &mut [&mut y]),
        Err(CodegenError::InputCount {
            expected: 2,
            got: 1
        })
    ));
    assert!(matches!(
        m.run(&[&x, &x[..47]], &mut [&mut y]),
        Err(CodegenError::InputLength { index: 1, .. })
    ));
    assert!(matches!(
        m.run(&[&x, &x], &mut []),
        Err(CodegenError::OutputCount {
            expected: 1,
            got: 0
        })
    ));
    assert!(matches!(
        m.run(&[&x, &x], &mut [&mut short]),
        Err(CodegenError::OutputLength { index: 0, .. })
    ));
    let mut tiny_ws = bnc_codegen::Workspace::with_len(0);
    let big = compile(&example("tiny"), &Options::default()).unwrap();
    assert!(big.workspace_size() > 0);
    let xi = vec![0.0f32; 3 * 32 * 32];
    let mut yo = vec![0.0f32; 10];
    assert!(matches!(
        big.run_with_workspace(&mut tiny_ws, &[&xi], &mut [&mut yo]),
        Err(CodegenError::Workspace { .. })
    ));
    assert!(m.run(&[&x, &x], &mut [&mut y]).is_ok());
}

#[test]
fn invalid_graph_is_an_error_not_a_panic() {
    let mut g = model("input x: f32[1, 3, 4, 4]\n y = conv2d(x, out = 2, kernel = 1)\n output y");
    g.params.clear();
    assert!(matches!(
        compile(&g, &Options::default()),
        Err(CodegenError::Invalid(_))
    ));
}

#[test]
fn empty_tensor_is_an_error() {
    let mut g = model("input x: f32[1, 3, 4, 4]\n y = relu(x)\n output y");
    for v in &mut g.values {
        v.shape[0] = 0;
    }
    assert!(compile(&g, &Options::default()).is_err());
}

#[test]
fn concurrent_runs_with_own_workspaces() {
    let g = example("tiny");
    let m = compile(&g, &opts(2)).unwrap();
    let ins = inputs(&g, 4);
    let want = run_compiled(&m, &ins);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                let mut ws = m.new_workspace();
                let mut out = vec![0.0f32; 10];
                for _ in 0..5 {
                    m.run_with_workspace(&mut ws, &[&ins[0].data], &mut [&mut out])
                        .unwrap();
                    assert_eq!(out, want[0].data);
                }
            });
        }
    });
}

#[test]
fn densenet_concats_are_in_place() {
    // With in-place concat the planned buffers stay far below the sum of all tensors.
    let g = example("densenet121");
    let m = compile(&g, &Options::default()).unwrap();
    let total: usize = g
        .values
        .iter()
        .map(|v| v.shape.iter().product::<usize>() * 4)
        .sum();
    assert!(
        m.buffer_bytes() * 4 < total,
        "buffers {} vs all values {total}",
        m.buffer_bytes()
    );
    // No separate copy kernels for the dense blocks' concats.
    let copies = m
        .kernel_names()
        .iter()
        .filter(|(n, _)| n.starts_with("copy"))
        .count();
    assert_eq!(copies, 0, "{:?}", m.kernel_names());
}

#[test]
fn conv_affine_relu_is_one_kernel() {
    let g = model(
        "input x: f32[1, 4, 6, 6]\n c = conv2d(x, out = 4, kernel = 3, pad = 1)\n b = batchnorm(c)\n a = add(b, x)\n r = relu(a)\n output r",
    );
    let m = compile(&g, &Options::default()).unwrap();
    // One kernel computes the conv and its whole epilogue (a direct conv is preceded by
    // the copy of its padded input, which computes nothing).
    let compute = m
        .kernel_names()
        .iter()
        .filter(|(n, _)| !n.ends_with("_pad"))
        .count();
    assert_eq!(compute, 1, "{:?}", m.kernel_names());
}

#[test]
fn inspection_texts() {
    let g = model("input x: f32[1, 3, 6, 6]\n y = conv2d(x, out = 5, kernel = 3)\n output y");
    let clif = clif_text(&g, &Options::default()).unwrap();
    assert!(clif.contains("function") && clif.contains("call"), "{clif}");
    let asm = asm_text(&g, &Options::default()).unwrap();
    assert!(!asm.is_empty());
}

#[test]
fn denormal_results_are_flushed_unless_asked_not_to() {
    // 1e-20 squared is 1e-40, a subnormal f32: flushed to 0 by default (FTZ/DAZ while the
    // kernels run), kept when `flush_denormals` is off. The caller's mode is restored.
    let g = model("input x: f32[1, 4, 2, 2]\n y = mul(x, x)\n output y");
    let x = bnc_ir::Tensor::new(vec![1, 4, 2, 2], vec![1e-20; 16]);
    let flushed = compile(&g, &Options::default()).unwrap();
    let y = run_compiled(&flushed, std::slice::from_ref(&x));
    assert!(y[0].data.iter().all(|&v| v == 0.0), "{:?}", y[0].data);
    let kept = compile(
        &g,
        &Options {
            flush_denormals: false,
            ..Options::default()
        },
    )
    .unwrap();
    let y = run_compiled(&kept, std::slice::from_ref(&x));
    assert!(
        y[0].data.iter().all(|&v| v > 0.0 && v < 1e-38),
        "{:?}",
        y[0].data
    );
    // The calling thread's mode is unchanged: subnormals still arise here.
    let here = std::hint::black_box(1e-20f32) * std::hint::black_box(1e-20f32);
    assert!(here > 0.0);
}
