//! ConvNeXt's operators (layer_norm over channels, the exact gelu) against the interpreter,
//! on ConvNeXt's real shapes, at 1 and 2 threads.

mod common;
use common::{check_body, check_with, model, options, run_compiled};

use bnc_ir::{Activation, Tensor};

/// layer_norm over the channels of ConvNeXt's first and last stages (positions a multiple
/// of 4, and 49 with a partial last group), of `[N, C]`, and of a batch of 2 with 15
/// positions; within 1e-5 of the f64 interpreter, and 2 threads bit-identical to 1.
#[test]
fn layer_norm_convnext_shapes() {
    for shape in [
        "1, 96, 56, 56",
        "1, 768, 7, 7",
        "2, 7, 3, 5",
        "2, 768",
        "1, 768, 1, 1",
    ] {
        let body = format!("input x: f32[{shape}]\n y = layer_norm(x, eps = 1e-6)\n output y");
        check_body(&body);
        let g = model(&body);
        for threads in [1, 2] {
            check_with(&g, threads, 1e-5);
        }
    }
}

/// An input far from zero mean: the two-pass variance keeps its accuracy where a one-pass
/// `E[x²] − E[x]²` would lose it to cancellation.
#[test]
fn layer_norm_offset_input() {
    let body = "input x: f32[1, 384, 14, 14]\n a = add(x, x)\n s = affine(a)\n y = layer_norm(s, eps = 1e-6)\n output y";
    check_body(body);
}

/// layer_norm with a fused epilogue after it (the affine and gelu are applied by its kernel).
#[test]
fn layer_norm_with_epilogue() {
    check_body(
        "input x: f32[1, 96, 14, 14]\n n = layer_norm(x)\n s = affine(n)\n y = gelu(s)\n output y",
    );
}

/// gelu as an elementwise kernel and fused into a conv's epilogue.
#[test]
fn gelu_elementwise_and_fused() {
    check_body("input x: f32[2, 3, 5, 7]\n y = gelu(x)\n output y");
    check_body(
        "input x: f32[1, 96, 28, 28]\n c = conv2d(x, out = 384, kernel = 1)\n y = gelu(c)\n output y",
    );
}

/// The compiled gelu (and through it erf and erfc in f32x4) against the f64 definition at
/// many points: tiny and large magnitudes, both signs, the branch points |x/√2| = 1, 2.5
/// and 10, and far into the tail where gelu(x) of a negative x underflows. The relative
/// error stays below 1e-6 (one rounding of x/√2 does not enter the tail, which squares x
/// itself; the erfc reference in the interpreter has no cancellation either).
#[test]
fn gelu_accuracy_everywhere() {
    let mut xs: Vec<f32> = Vec::new();
    for k in -4000..=4000 {
        xs.push(k as f32 * 0.005); // [-20, 20]
    }
    for e in -300..=40 {
        let m = 10f64.powf(e as f64 / 10.0) as f32; // 1e-30 .. 1e4
        xs.push(m);
        xs.push(-m);
    }
    let s2 = std::f32::consts::SQRT_2;
    for b in [1.0f32, 2.5, 10.0] {
        for d in -8..=8 {
            let x = b * s2 * (1.0 + d as f32 * f32::EPSILON);
            xs.push(x);
            xs.push(-x);
        }
    }
    xs.extend([
        0.0,
        -0.0,
        1e30,
        -1e30,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
    ]);
    let n = xs.len();
    let g = model(&format!(
        "input x: f32[1, 1, 1, {n}]\n y = gelu(x)\n output y"
    ));
    let m = bnc_codegen::compile(&g, &options(1)).unwrap();
    let got = run_compiled(&m, &[Tensor::new(vec![1, 1, 1, n], xs.clone())]);
    let mut worst = 0.0f64;
    let mut at = 0.0f32;
    for (&x, &y) in xs.iter().zip(&got[0].data) {
        let want = Activation::Gelu.apply(f64::from(x));
        // Compiled code flushes subnormals to zero, and erfc's intermediate `exp(−x²/2)·P`
        // reaches that range where |gelu| falls below about 1e-30 (x < −11.7): absolute
        // error only there.
        let err = (f64::from(y) - want).abs() / want.abs().max(1e-30);
        if err > worst {
            worst = err;
            at = x;
        }
    }
    eprintln!("gelu: worst relative error {worst:e} at x = {at}");
    assert!(worst < 1e-6, "gelu relative error {worst:e} at x = {at}");
}

/// A whole ConvNeXt block at the first stage's shape: depthwise 7x7, layer_norm, 1x1 to 4C,
/// gelu, 1x1 back, layer scale, residual.
#[test]
fn convnext_block() {
    check_body(
        "input x: f32[1, 96, 56, 56]
 dw = conv2d(x, out = 96, kernel = 7, pad = 3, groups = 96)
 ln = layer_norm(dw, eps = 1e-6)
 pw1 = conv2d(ln, out = 384, kernel = 1)
 act = gelu(pw1)
 pw2 = conv2d(act, out = 96, kernel = 1)
 ls = affine(pw2)
 y = add(ls, x)
 output y",
    );
}
