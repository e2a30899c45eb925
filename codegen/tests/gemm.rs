//! The conv/GEMM path end to end, for every microkernel level this machine runs: awkward
//! M, N, K (not multiples of any tile, K = 1, tiny and large, K split into chunks, several
//! pixel blocks), each epilogue (fused in the kernel, and unfused ones after it), against
//! a plain reference GEMM and the interpreter; threads=2 bit-identical to threads=1.

mod common;
use bnc_codegen::{Options, TargetCpu, compile};
use common::{TOL, inputs, model, run_compiled};

/// Levels to test: the fallback, and each wide level the host runs.
fn levels() -> Vec<Options> {
    let mut v = vec![Options {
        wide_gemm: false,
        ..Options::default()
    }];
    for t in [
        TargetCpu::X86_64V2,
        TargetCpu::X86_64V3,
        TargetCpu::X86_64V4,
    ] {
        if t.host_supports() {
            v.push(Options {
                target_cpu: t,
                ..Options::default()
            });
            if t == TargetCpu::X86_64V4 {
                // The packed (im2col) path, which direct convs otherwise replace here.
                v.push(Options {
                    target_cpu: t,
                    direct_conv: false,
                    ..Options::default()
                });
            }
        } else {
            eprintln!("SKIPPED: this machine cannot run {t} code");
        }
    }
    v
}

const SHAPES: [(usize, usize, usize); 11] = [
    (1, 1, 1),
    (5, 7, 1),
    (13, 33, 17),
    (25, 100, 3),
    (12, 16, 4),
    (24, 32, 64),
    (64, 49, 700),
    (3, 1000, 9),
    (130, 17, 341),
    (7, 24, 683),
    (70, 300, 1500),
];

#[test]
fn gemm_against_plain_reference() {
    for &(m, n, k) in &SHAPES {
        let g = model(&format!(
            "input x: f32[1, {k}, 1, {n}]\n y = conv2d(x, out = {m}, kernel = 1)\n output y"
        ));
        let w = &g
            .params
            .iter()
            .find(|(n, _)| n.ends_with("weight"))
            .unwrap()
            .1
            .data;
        let b = &g
            .params
            .iter()
            .find(|(n, _)| n.ends_with("bias"))
            .unwrap()
            .1
            .data;
        let ins = inputs(&g, 7);
        let x = &ins[0].data;
        let mut want = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for kk in 0..k {
                    s += f64::from(w[i * k + kk]) * f64::from(x[kk * n + j]);
                }
                want[i * n + j] = s + f64::from(b[i]);
            }
        }
        let scale = want.iter().fold(1.0f64, |a, v| a.max(v.abs()));
        for o in levels() {
            for threads in [1, 2] {
                let cm = compile(
                    &g,
                    &Options {
                        threads,
                        ..o.clone()
                    },
                )
                .unwrap();
                let got = &run_compiled(&cm, &ins)[0].data;
                let err = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (f64::from(*a) - b).abs())
                    .fold(0.0f64, f64::max)
                    / scale;
                assert!(
                    err <= f64::from(TOL),
                    "M={m} N={n} K={k} {:?} threads={threads}: error {err}",
                    o.target_cpu
                );
            }
        }
    }
}

#[test]
fn gemm_epilogues_against_interpreter() {
    let epilogues = [
        // conv bias + relu: shift, max
        "y = relu(c)",
        // batchnorm + residual + relu6: shift, scale-shift, add, max, min
        "b = batchnorm(c)\n a = add(b, r)\n y = relu6(a)",
        "y = clip(c, min = -0.5, max = 1.25)",
        "y = clip(c, max = 0.3)",
        // exp-based and hard activations: in the assembled epilogue (AVX2, AVX-512), by
        // Cranelift code after the kernel on the portable path
        "y = silu(c)",
        "a = add(c, r)\n s = sigmoid(a)\n y = mul(s, r)",
        "b = batchnorm(c)\n y = tanh(b)",
        "y = hardswish(c)",
        "a = add(c, r)\n y = hardsigmoid(a)",
        // not fusable: applied by Cranelift code after the kernel
        "b = batchnorm(c)\n l = leaky_relu(b, alpha = 0.1)\n y = add(l, r)",
    ];
    let shapes = [(13, 33, 17), (5, 7, 1), (64, 49, 700), (30, 130, 40)];
    for (i, epi) in epilogues.iter().enumerate() {
        let (m, n, k) = shapes[i % shapes.len()];
        for kernel in [1, 3] {
            let (h, w) = (n / 5 + 1, 5);
            let body = format!(
                "input x: f32[1, {k}, {h}, {w}]\n input r: f32[1, {m}, {h}, {w}]\n \
                 c = conv2d(x, out = {m}, kernel = {kernel}, pad = {})\n {epi}\n output y",
                kernel / 2
            );
            let g = model(&body);
            let ins = inputs(&g, 11);
            let want = bnc_ir::interp::run(&g, &ins).unwrap();
            let mut first: Option<Vec<f32>> = None;
            for o in levels() {
                for threads in [1, 2] {
                    let cm = compile(
                        &g,
                        &Options {
                            threads,
                            ..o.clone()
                        },
                    )
                    .unwrap();
                    let got = run_compiled(&cm, &ins);
                    let err = want[0].max_abs_diff(&got[0]) / want[0].max_abs().max(1.0);
                    assert!(
                        err <= TOL,
                        "`{epi}` kernel {kernel} {:?} threads={threads}: error {err}",
                        o.target_cpu
                    );
                    if threads == 1 {
                        first = Some(got[0].data.clone());
                    } else {
                        let a = first.as_ref().unwrap();
                        assert!(
                            a.iter()
                                .zip(&got[0].data)
                                .all(|(p, q)| p.to_bits() == q.to_bits()),
                            "`{epi}` {:?}: threads=2 differs from threads=1",
                            o.target_cpu
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn jit_rejects_levels_the_host_lacks() {
    let g = model("input x: f32[1, 3, 4, 4]\n y = conv2d(x, out = 2, kernel = 1)\n output y");
    for t in TargetCpu::ALL {
        let r = compile(
            &g,
            &Options {
                target_cpu: t,
                ..Options::default()
            },
        );
        // `multi` objects run anywhere, but it is not a JIT level.
        let jit_ok = t.host_supports() && t != TargetCpu::Multi;
        assert_eq!(r.is_ok(), jit_ok, "{t}");
    }
    for t in TargetCpu::ALL {
        assert_eq!(t.name().parse::<TargetCpu>().unwrap(), t);
    }
    assert!("x86-64-v5".parse::<TargetCpu>().is_err());
}
