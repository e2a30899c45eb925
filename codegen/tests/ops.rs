//! Every operator against the reference interpreter, over awkward shapes.

mod common;
use common::check_body;

#[test]
fn conv_pointwise_odd_channels() {
    check_body("input x: f32[1, 5, 7, 9]\n y = conv2d(x, out = 17, kernel = 1)\n output y");
    check_body(
        "input x: f32[1, 3, 6, 6]\n y = conv2d(x, out = 3, kernel = 1, bias = false)\n output y",
    );
}

#[test]
fn conv_3x3_pad() {
    check_body(
        "input x: f32[1, 3, 10, 11]\n y = conv2d(x, out = 16, kernel = 3, pad = 1)\n output y",
    );
}

#[test]
fn conv_7x7_stride2() {
    check_body(
        "input x: f32[1, 3, 23, 21]\n y = conv2d(x, out = 5, kernel = 7, stride = 2, pad = 3)\n output y",
    );
}

#[test]
fn conv_dilation_asym_pad() {
    check_body(
        "input x: f32[1, 5, 12, 13]\n y = conv2d(x, out = 9, kernel = [3, 2], dilation = 2, pad = [1, 0, 2, 3])\n output y",
    );
}

#[test]
fn conv_stride_1x1() {
    check_body(
        "input x: f32[1, 8, 9, 9]\n y = conv2d(x, out = 12, kernel = 1, stride = 2)\n output y",
    );
}

#[test]
fn conv_pad_fill() {
    check_body(
        "input x: f32[1, 5, 8, 8]\n y = conv2d(x, out = 7, kernel = 3, pad = 1, pad_fill = true)\n output y",
    );
    check_body(
        "input x: f32[1, 6, 8, 7]\n y = conv2d(x, out = 6, kernel = 3, pad = [2, 1, 0, 1], groups = 6, pad_fill = true)\n output y",
    );
}

#[test]
fn conv_groups() {
    check_body(
        "input x: f32[1, 6, 9, 9]\n y = conv2d(x, out = 9, kernel = 3, pad = 1, groups = 3)\n output y",
    );
}

/// Also checks `body` with `direct_conv: false`: on AVX-512 machines depthwise and small
/// convs otherwise run as direct convs, and this keeps their own kernels tested.
fn check_packed_too(body: &str) {
    check_body(body);
    check_with_options(
        body,
        bnc_codegen::Options {
            direct_conv: false,
            ..common::options(1)
        },
        "direct_conv: false",
    );
}

/// `body` compiled with `opts` against the interpreter.
fn check_with_options(body: &str, opts: bnc_codegen::Options, what: &str) {
    let g = common::model(body);
    let ins = common::inputs(&g, 2);
    let want = bnc_ir::interp::run(&g, &ins).unwrap();
    let got = common::run_compiled(&bnc_codegen::compile(&g, &opts).unwrap(), &ins);
    for (w, g) in want.iter().zip(&got) {
        let err = w.max_abs_diff(g) / w.max_abs().max(1.0);
        assert!(err <= common::TOL, "{what}: relative error {err}");
    }
}

#[test]
fn conv_depthwise() {
    check_packed_too(
        "input x: f32[1, 17, 11, 10]\n y = conv2d(x, out = 17, kernel = 3, pad = 1, groups = 17)\n output y",
    );
    check_packed_too(
        "input x: f32[1, 5, 13, 14]\n y = conv2d(x, out = 5, kernel = 5, stride = 2, pad = 2, groups = 5, bias = false)\n output y",
    );
}

#[test]
fn conv_depthwise_multiplier_dilation() {
    check_packed_too(
        "input x: f32[1, 5, 12, 12]\n y = conv2d(x, out = 10, kernel = 3, pad = [1, 2, 0, 1], dilation = 2, groups = 5)\n output y",
    );
    check_packed_too(
        "input x: f32[1, 3, 15, 9]\n y = conv2d(x, out = 6, kernel = 3, stride = [2, 3], groups = 3)\n output y",
    );
}

#[test]
fn conv_batch2() {
    check_body(
        "input x: f32[2, 5, 8, 8]\n y = conv2d(x, out = 11, kernel = 3, stride = 2, pad = 1)\n output y",
    );
    check_body(
        "input x: f32[2, 4, 6, 6]\n y = conv2d(x, out = 8, kernel = 3, pad = 1, groups = 4)\n output y",
    );
}

#[test]
fn conv_large_k_many_blocks() {
    // K = 64*9 = 576 so the packed block holds fewer pixels than the image.
    check_body(
        "input x: f32[1, 64, 20, 20]\n y = conv2d(x, out = 20, kernel = 3, pad = 1)\n output y",
    );
}

#[test]
fn dense_odd() {
    check_body("input x: f32[1, 37]\n y = dense(x, out = 13)\n output y");
    check_body("input x: f32[3, 8]\n y = dense(x, out = 5, bias = false)\n output y");
    check_body("input x: f32[2, 3]\n y = dense(x, out = 1)\n output y");
}

#[test]
fn dense_as_channel_vectorised_conv() {
    // At least 16 inputs and outputs: on AVX-512 a dense layer runs as a 1x1 conv on a
    // 1x1 image (channel-vectorised, several reduction chunks, a partial channel tile),
    // with its bias, a residual add and an activation; also checked with the Cranelift
    // dense kernel (`direct_conv: false`).
    let body = "input x: f32[2, 700]\n input r: f32[2, 45]\n d = dense(x, out = 45)\n s = add(d, r)\n y = silu(s)\n output y";
    if bnc_codegen::testing::host_has(bnc_codegen::testing::Isa::Avx512) {
        // The channel-vectorised path keeps one tile's partial sums per thread.
        let m = bnc_codegen::compile(&common::model(body), &common::options(1)).unwrap();
        assert_eq!(
            m.scratch_floats(),
            12 * 32,
            "not the channel-vectorised path"
        );
    }
    check_packed_too(body);
    check_packed_too("input x: f32[1, 16]\n y = dense(x, out = 100, bias = false)\n output y");
}

#[test]
fn activations() {
    for act in [
        "relu(x)",
        "relu6(x)",
        "leaky_relu(x, alpha = 0.2)",
        "clip(x, min = -0.5, max = 1.25)",
        "clip(x, max = 0.3)",
        "sigmoid(x)",
        "silu(x)",
        "hardswish(x)",
        "hardsigmoid(x)",
        "tanh(x)",
    ] {
        check_body(&format!("input x: f32[2, 3, 5, 7]\n y = {act}\n output y"));
    }
}

#[test]
fn activation_large_inputs() {
    // Scaled-up inputs exercise the exp clamping in sigmoid/silu/tanh.
    for act in ["sigmoid", "silu", "tanh"] {
        check_body(&format!(
            "input x: f32[1, 4, 6, 6]\n c = conv2d(x, out = 4, kernel = 3, pad = 1)\n a = add(c, c)\n b = mul(a, a)\n y = {act}(b)\n output y"
        ));
    }
}

#[test]
fn add_mul() {
    check_body("input a: f32[1, 5, 3, 3]\n input b: f32[1, 5, 3, 3]\n y = add(a, b)\n output y");
    check_body("input a: f32[2, 5, 3, 3]\n input b: f32[2, 5, 3, 3]\n y = mul(a, b)\n output y");
    check_body("input a: f32[2, 5, 3, 3]\n input b: f32[2, 5, 1, 1]\n y = mul(a, b)\n output y");
    check_body("input a: f32[2, 5, 1, 1]\n input b: f32[2, 5, 4, 3]\n y = mul(a, b)\n output y");
}

#[test]
fn batchnorm_and_affine() {
    check_body("input x: f32[2, 5, 3, 3]\n y = batchnorm(x)\n output y");
    check_body("input x: f32[2, 7]\n y = batchnorm(x, eps = 0.001)\n output y");
}

#[test]
fn concat() {
    check_body("input a: f32[1, 3, 4, 4]\n input b: f32[1, 5, 4, 4]\n y = concat(a, b)\n output y");
    check_body(
        "input x: f32[2, 3, 6, 6]\n a = conv2d(x, out = 5, kernel = 3, pad = 1)\n b = conv2d(x, out = 3, kernel = 1)\n c = concat(a, x, b, a)\n y = relu(c)\n output y",
    );
    // DenseNet-style growing concats written in place.
    check_body(
        "input x: f32[2, 4, 5, 5]\n p = relu(x)\n a = conv2d(p, out = 3, kernel = 3, pad = 1)\n c1 = concat(p, a)\n r1 = relu(c1)\n b = conv2d(r1, out = 3, kernel = 1)\n c2 = concat(p, a, b)\n y = relu(c2)\n output y, c1",
    );
}

#[test]
fn max_pools_in_place_and_cranelift() {
    // On AVX-512 these run as assembled rows read in place (a resnet stem's pool, a
    // stride-1 pool, a window past the right edge, rows of more than 8 vectors); with
    // `wide_gemm: false`, and with an epilogue after the pool, as Cranelift kernels.
    let bodies = [
        "input x: f32[1, 4, 112, 112]\n y = maxpool(x, kernel = 3, stride = 2, pad = 1)\n output y",
        "input x: f32[2, 3, 9, 10]\n y = maxpool(x, kernel = 3, stride = 1, pad = 1)\n output y",
        "input x: f32[1, 3, 9, 11]\n y = maxpool(x, kernel = [2, 3], stride = [1, 2], pad = [0, 1, 1, 1], ceil_mode = true)\n output y",
        "input x: f32[1, 2, 5, 300]\n y = maxpool(x, kernel = 3, stride = 2, pad = 1)\n output y",
        "input x: f32[1, 3, 9, 10]\n p = maxpool(x, kernel = 3, stride = 2, pad = 1)\n y = relu(p)\n output y",
    ];
    for body in bodies {
        check_body(body);
        check_with_options(
            body,
            bnc_codegen::Options {
                wide_gemm: false,
                ..common::options(1)
            },
            "wide_gemm: false",
        );
    }
}

#[test]
fn pools() {
    check_body(
        "input x: f32[2, 3, 9, 10]\n y = maxpool(x, kernel = 3, stride = 2, pad = 1)\n output y",
    );
    check_body(
        "input x: f32[1, 3, 9, 10]\n y = maxpool(x, kernel = 3, stride = 2, ceil_mode = true)\n output y",
    );
    check_body("input x: f32[1, 3, 9, 10]\n y = maxpool(x, kernel = 2)\n output y");
    check_body(
        "input x: f32[1, 3, 9, 10]\n y = avgpool(x, kernel = 3, stride = 2, pad = 1)\n output y",
    );
    check_body(
        "input x: f32[1, 3, 9, 10]\n y = avgpool(x, kernel = 3, stride = 2, pad = 1, count_include_pad = false)\n output y",
    );
    check_body(
        "input x: f32[1, 3, 10, 10]\n y = avgpool(x, kernel = 3, stride = 2, pad = 1, ceil_mode = true)\n output y",
    );
    check_body(
        "input x: f32[1, 3, 10, 10]\n y = avgpool(x, kernel = 3, stride = 2, pad = [1, 0, 0, 1], ceil_mode = true, count_include_pad = false)\n output y",
    );
    check_body("input x: f32[2, 5, 7, 3]\n y = global_avgpool(x)\n output y");
    check_body(
        "input x: f32[1, 3, 9, 10]\n y = maxpool(x, kernel = 3, stride = 1, pad = 1)\n output y",
    );
    check_body(
        "input x: f32[1, 3, 9, 11]\n y = maxpool(x, kernel = [2, 3], stride = [1, 2], pad = [0, 1, 1, 1], ceil_mode = true)\n output y",
    );
    check_body(
        "input x: f32[2, 3, 8, 13]\n y = avgpool(x, kernel = [3, 2], stride = [2, 3], pad = [1, 1, 0, 0], count_include_pad = false)\n output y",
    );
}

#[test]
fn softmax_pad_flatten() {
    check_body("input x: f32[2, 10]\n y = softmax(x)\n output y");
    check_body("input x: f32[1, 6, 2, 3]\n y = softmax(x)\n output y");
    check_body(
        "input x: f32[2, 3, 4, 5]\n y = pad(x, pads = [1, 2, 0, 3], value = 0.5)\n output y",
    );
    // A per-channel fill (what a BN moved through a pad leaves), batch 2, 5 channels.
    check_body(
        "input x: f32[2, 5, 4, 3]\n y = pad(x, pads = [2, 1, 0, 3], value = 0.5, pad_fill = true)\n output y",
    );
    check_body("input x: f32[2, 3, 4, 5]\n f = flatten(x)\n y = dense(f, out = 7)\n output y, f");
    check_body(
        "input x: f32[2, 3, 4, 4]\n g = global_avgpool(x)\n f = flatten(g)\n y = softmax(f)\n output y",
    );
}

#[test]
fn fused_epilogue() {
    // conv + affine + add + relu in one kernel, and a gate mul.
    check_body(
        "input x: f32[1, 5, 8, 8]\n c = conv2d(x, out = 5, kernel = 3, pad = 1)\n b = batchnorm(c)\n a = add(b, x)\n y = relu(a)\n output y",
    );
    check_body(
        "input x: f32[2, 6, 7, 7]\n c = conv2d(x, out = 6, kernel = 1, bias = false)\n s = relu6(c)\n g = global_avgpool(s)\n h = conv2d(g, out = 6, kernel = 1)\n t = sigmoid(h)\n y = mul(s, t)\n output y",
    );
    check_body(
        "input x: f32[1, 9, 6, 6]\n d = conv2d(x, out = 9, kernel = 3, pad = 1, groups = 9)\n b = batchnorm(d)\n s = silu(b)\n m = maxpool(s, kernel = 2)\n r = relu(m)\n output r",
    );
}

#[test]
fn identity_and_output_aliases() {
    check_body("input x: f32[1, 3, 4, 4]\n i = identity(x)\n d = dropout(i)\n output d, x");
    check_body("input x: f32[1, 3, 4, 4]\n r = relu(x)\n output r, r");
}

// ---- Direct (in-place, AVX-512) convolutions ----------------------------------------------
//
// Convs on AVX-512 read their input in place: 1x1 and zero-padded stride-1 convs that keep
// the image size straight from the tensor (the latter with per-tap lane masks for the
// padding), others from a padded copy on a grid with garbage columns that the assembled
// kernels drop through a row map. Each case below checks the path was taken (a `_pad`
// kernel, or no packing scratch), then the result against the interpreter with 1 and 2
// threads.

/// Checks `body` like `check_body`, after asserting that a conv of it runs in place.
fn check_direct(body: &str, padded: bool) {
    use bnc_codegen::{
        Options, compile,
        testing::{Isa, host_has},
    };
    let g = common::model(body);
    if !host_has(Isa::Avx512) {
        eprintln!("SKIPPED direct-path check: no AVX-512 here (the body is still checked)");
    } else {
        let m = compile(&g, &common::options(1)).unwrap();
        let names: Vec<String> = m.kernel_names().into_iter().map(|(n, _)| n).collect();
        let has_pad = names.iter().any(|n| n.ends_with("_pad"));
        assert_eq!(has_pad, padded, "kernels: {names:?}");
        if !padded {
            // A 1x1 direct conv packs nothing (at most the partial sums of a small image's
            // channel-vectorised tiles): less scratch than the same model packed.
            let packed = Options {
                direct_conv: false,
                ..common::options(1)
            };
            let im2col = compile(&g, &packed).unwrap().scratch_floats();
            assert!(
                m.scratch_floats() < im2col,
                "scratch {} vs {im2col} packed",
                m.scratch_floats()
            );
        }
    }
    check_body(body);
}

#[test]
fn direct_3x3_rows_span_tiles() {
    // 18 columns: tiles cross rows, on the tap-masked input (pad 1) and on the grid of a
    // valid conv (pitch 18 for 16 columns); 17 output channels (an m edge).
    check_direct(
        "input x: f32[1, 5, 9, 18]\n y = conv2d(x, out = 17, kernel = 3, pad = 1)\n output y",
        false,
    );
    check_direct(
        "input x: f32[1, 5, 9, 18]\n y = conv2d(x, out = 17, kernel = 3)\n output y",
        true,
    );
}

#[test]
fn direct_tap_masks_need_zero_padding() {
    // The same size-keeping conv with a pad fill (a folded BN's shift): masked lanes
    // would read zero, so it takes the padded copy; a 5x5 with dilation keeps the size
    // and is masked (taps two rows and columns out).
    check_direct(
        "input x: f32[1, 6, 8, 20]\n y = conv2d(x, out = 13, kernel = 3, pad = 1, pad_fill = true)\n output y",
        true,
    );
    check_direct(
        "input x: f32[1, 6, 11, 23]\n y = conv2d(x, out = 13, kernel = 5, dilation = 2, pad = 4)\n output y",
        false,
    );
}

#[test]
fn direct_asym_pad_dilation_fill() {
    check_direct(
        "input x: f32[1, 6, 11, 19]\n y = conv2d(x, out = 13, kernel = 3, dilation = 2, pad = [2, 1, 0, 3], pad_fill = true)\n output y",
        true,
    );
}

#[test]
fn direct_groups_batch2() {
    check_direct(
        "input x: f32[2, 8, 7, 21]\n y = conv2d(x, out = 26, kernel = [3, 1], pad = [1, 0, 1, 0], groups = 2)\n output y",
        false,
    );
    check_direct(
        "input x: f32[2, 8, 7, 21]\n y = conv2d(x, out = 26, kernel = [3, 2], pad = [1, 0, 1, 0], groups = 2)\n output y",
        true,
    );
}

#[test]
fn direct_reduction_chunks_residual_relu() {
    // 80 channels x 9 taps = 720 > one reduction chunk: later chunks accumulate through
    // the row map, the last applies bias, the residual add and relu.
    check_direct(
        "input x: f32[1, 80, 6, 16]\n input r: f32[1, 24, 6, 16]\n c = conv2d(x, out = 24, kernel = 3, pad = 1)\n s = add(c, r)\n y = relu(s)\n output y",
        false,
    );
    // The same through a row map (pad 0 on a wider input: pitch 18 for 16 columns).
    check_direct(
        "input x: f32[1, 80, 8, 18]\n input r: f32[1, 24, 6, 16]\n c = conv2d(x, out = 24, kernel = 3)\n s = add(c, r)\n y = relu(s)\n output y",
        true,
    );
}

#[test]
fn direct_pointwise_small_plane_and_chunks() {
    // 16 pixels (under one 32-column tile), then 600 channels (several chunks) with a
    // residual, then an epilogue the kernels do not fuse (silu, applied after the store).
    check_direct(
        "input x: f32[1, 7, 4, 4]\n y = conv2d(x, out = 13, kernel = 1)\n output y",
        false,
    );
    check_direct(
        "input x: f32[1, 600, 7, 7]\n input r: f32[1, 30, 7, 7]\n c = conv2d(x, out = 30, kernel = 1, bias = false)\n s = add(c, r)\n y = silu(s)\n output y",
        false,
    );
}

#[test]
fn direct_pointwise_threads_split_by_m_tiles() {
    // 14x14 with 1024 channels: two pixel blocks of 4 and 3 tiles; with 2 threads the
    // units run m-tile first (each thread half the m-tiles over both blocks).
    check_direct(
        "input x: f32[1, 1024, 14, 14]\n y = conv2d(x, out = 40, kernel = 1)\n output y",
        false,
    );
}

#[test]
fn direct_chanvec_mid_images() {
    // 14x14 and 28x28 3x3 convs with three 32-channel tiles run channel-vectorised at one
    // thread (through the padded copy; pixel vectors would read the input through tap
    // masks), with a residual and relu, and a partial last channel tile.
    check_direct(
        "input x: f32[1, 40, 14, 14]\n input r: f32[1, 70, 14, 14]\n c = conv2d(x, out = 70, kernel = 3, pad = 1)\n s = add(c, r)\n y = relu(s)\n output y",
        true,
    );
    check_direct(
        "input x: f32[1, 24, 28, 28]\n y = conv2d(x, out = 96, kernel = 3, pad = 1)\n output y",
        true,
    );
}

/// Reductions cut into several chunks by small caches, on every conv path: partial sums
/// through C (pixel tiles, tap-masked or read in place) and through the scratch tile
/// (channel-vectorised).
#[test]
fn chunked_reductions_with_small_caches() {
    let small = bnc_codegen::Options {
        cache_sizes: Some(bnc_codegen::CacheSizes {
            l1d: 8 << 10,
            l2: 64 << 10,
            l2_ways: 4,
        }),
        ..common::options(1)
    };
    for body in [
        "input x: f32[1, 40, 14, 14]\n input r: f32[1, 70, 14, 14]\n c = conv2d(x, out = 70, kernel = 3, pad = 1)\n s = add(c, r)\n y = relu(s)\n output y",
        "input x: f32[1, 48, 7, 7]\n y = conv2d(x, out = 40, kernel = 3, pad = 1)\n output y",
        "input x: f32[1, 64, 20, 20]\n y = conv2d(x, out = 20, kernel = 3, pad = 1)\n output y",
        "input x: f32[1, 300, 9, 9]\n y = conv2d(x, out = 24, kernel = 1)\n output y",
    ] {
        check_with_options(body, small.clone(), "8 KiB L1, 64 KiB L2");
        check_with_options(
            body,
            bnc_codegen::Options {
                threads: 2,
                ..small.clone()
            },
            "2 threads, small caches",
        );
    }
}

#[test]
fn direct_stride2_phases() {
    // 3x3 / 2: four phase planes of pitch 16 for 15 output columns.
    check_direct(
        "input x: f32[1, 6, 13, 30]\n y = conv2d(x, out = 14, kernel = 3, stride = 2, pad = 1)\n output y",
        true,
    );
    // 1x1 / 2: one phase, the subsampled input, no garbage columns (odd sizes).
    check_direct(
        "input x: f32[1, 9, 15, 13]\n y = conv2d(x, out = 20, kernel = 1, stride = 2, bias = false)\n output y",
        true,
    );
    // A 7x7 / 2 stem (3 input channels, 49 taps per step) with pad fill.
    check_direct(
        "input x: f32[1, 3, 21, 40]\n y = conv2d(x, out = 16, kernel = 7, stride = 2, pad = 3, pad_fill = true)\n output y",
        true,
    );
}

#[test]
fn direct_short_rows_three_pieces() {
    // Pitch 9 for 7 columns and pitch 8 for 7 (stride 2): a vector spans up to three grid
    // rows; with a residual and relu through the three-piece row map, and more channels
    // than one reduction chunk.
    check_direct(
        "input x: f32[1, 40, 7, 7]\n input r: f32[1, 25, 7, 7]\n c = conv2d(x, out = 25, kernel = 3, pad = 1)\n s = add(c, r)\n y = relu(s)\n output y",
        true,
    );
    check_direct(
        "input x: f32[1, 8, 14, 14]\n y = conv2d(x, out = 12, kernel = 3, stride = 2, pad = 1)\n output y",
        true,
    );
}

#[test]
fn direct_depthwise() {
    // A 112-wide depthwise with stride 2 (four phases) and relu6; a 5x5 on 7x7 and a
    // multiplier of 2 with dilation, both keeping the size (tap masks); a valid 3x3 on 9x9
    // (pitch 9 for 7 columns: three pieces per vector).
    check_direct(
        "input x: f32[1, 12, 22, 30]\n c = conv2d(x, out = 12, kernel = 3, stride = 2, pad = 1, groups = 12)\n y = relu6(c)\n output y",
        true,
    );
    check_direct(
        "input x: f32[1, 20, 7, 7]\n c = conv2d(x, out = 20, kernel = 5, pad = 2, groups = 20, bias = false)\n y = silu(c)\n output y",
        false,
    );
    check_direct(
        "input x: f32[2, 6, 12, 17]\n y = conv2d(x, out = 12, kernel = 3, pad = 2, dilation = 2, groups = 6)\n output y",
        false,
    );
    check_direct(
        "input x: f32[1, 20, 9, 9]\n c = conv2d(x, out = 20, kernel = 3, groups = 20, bias = false)\n y = silu(c)\n output y",
        true,
    );
}

#[test]
fn direct_chanvec_small_images() {
    // 7x7 outputs: channel-vectorised tiles (vectors along output channels). 70 channels =
    // two whole 32-channel tiles and a partial one; a 3x3 with residual and relu6; a
    // stride-2 3x3 from 14x14 with groups and batch 2; a 1x1 whose epilogue multiplies by
    // another tensor (not fused: applied after the store).
    check_direct(
        "input x: f32[1, 48, 7, 7]\n input r: f32[1, 70, 7, 7]\n c = conv2d(x, out = 70, kernel = 3, pad = 1)\n s = add(c, r)\n y = relu6(s)\n output y",
        true,
    );
    check_direct(
        "input x: f32[2, 64, 14, 13]\n y = conv2d(x, out = 40, kernel = 3, stride = 2, pad = 1, groups = 2)\n output y",
        true,
    );
    check_direct(
        "input x: f32[1, 96, 5, 6]\n input m: f32[1, 33, 5, 6]\n c = conv2d(x, out = 33, kernel = 1)\n y = mul(c, m)\n output y",
        false,
    );
}

/// Resize on the shapes of segmentation heads and FPN/YOLO necks, every coordinate mode,
/// odd sizes and downsampling; `check_body` runs 1 and 2 threads against the interpreter.
#[test]
fn resize_bilinear_heads() {
    // FPN-style x2 (PyTorch align_corners=False exports scales and half_pixel).
    check_body(
        "input x: f32[1, 256, 28, 28]\n y = resize(x, mode = \"bilinear\", scale = 2, coordinates = \"half_pixel\")\n output y",
    );
    // fcn/deeplab head: 28x28 -> 224x224 by size.
    check_body(
        "input x: f32[1, 21, 28, 28]\n y = resize(x, mode = \"bilinear\", size = [224, 224], coordinates = \"half_pixel\")\n output y",
    );
    check_body(
        "input x: f32[2, 3, 7, 5]\n y = resize(x, mode = \"bilinear\", size = [13, 11], coordinates = \"align_corners\")\n output y",
    );
    check_body(
        "input x: f32[1, 5, 9, 6]\n y = resize(x, mode = \"bilinear\", scale = [1.5, 0.5], coordinates = \"pytorch_half_pixel\")\n output y",
    );
    check_body(
        "input x: f32[1, 4, 6, 6]\n y = resize(x, mode = \"bilinear\", size = [1, 3], coordinates = \"pytorch_half_pixel\")\n output y",
    );
    check_body(
        "input x: f32[1, 3, 5, 7]\n y = resize(x, mode = \"bilinear\", scale = 3, coordinates = \"asymmetric\")\n output y",
    );
}

#[test]
fn resize_nearest() {
    // YOLO neck: nn.Upsample(scale_factor=2) (asymmetric, floor).
    check_body("input x: f32[1, 128, 20, 20]\n y = resize(x, scale = 2)\n output y");
    check_body(
        "input x: f32[1, 3, 7, 9]\n y = resize(x, size = [10, 4], coordinates = \"half_pixel\", nearest_mode = \"round_prefer_ceil\")\n output y",
    );
    check_body(
        "input x: f32[1, 2, 5, 5]\n y = resize(x, scale = [2.5, 1.5], coordinates = \"align_corners\", nearest_mode = \"ceil\")\n output y",
    );
    check_body(
        "input x: f32[1, 2, 8, 6]\n y = resize(x, size = [3, 17], coordinates = \"pytorch_half_pixel\", nearest_mode = \"round_prefer_floor\")\n output y",
    );
}

/// A resize fuses the affine and relu after it as its epilogue, and writes into a concat.
#[test]
fn resize_epilogue_into_concat() {
    check_body(
        "input x: f32[1, 6, 10, 10]\n input s: f32[1, 4, 20, 20]\n u = resize(x, mode = \"bilinear\", scale = 2, coordinates = \"half_pixel\")\n b = batchnorm(u)\n r = relu(b)\n y = concat(r, s)\n output y",
    );
}

/// Global max pooling on the last feature maps of ResNet-18/34 (512x7x7) and
/// MobileNetV2/EfficientNet (1280x7x7), a plane with a tail past the last 4 lanes, a batch of
/// 2, and with an epilogue fused after it; `check_body` runs 1 and 2 threads against the
/// interpreter.
#[test]
fn global_maxpool() {
    check_body("input x: f32[1, 512, 7, 7]\n y = global_maxpool(x)\n output y");
    check_body("input x: f32[1, 1280, 7, 7]\n y = global_maxpool(x)\n output y");
    check_body("input x: f32[2, 5, 3, 5]\n y = global_maxpool(x)\n output y");
    check_body("input x: f32[1, 3, 1, 1]\n y = global_maxpool(x)\n output y");
    check_body(
        "input x: f32[1, 6, 7, 7]\n m = global_maxpool(x)\n b = batchnorm(m)\n r = relu(b)\n f = flatten(r)\n y = dense(f, out = 3)\n output y",
    );
}

/// `sqrt` and `pow` (on non-negative inputs where the exponent is not an integer), alone and
/// as the epilogue of a conv.
#[test]
fn sqrt_and_pow() {
    for act in [
        "sqrt(s)",
        "pow(s, exponent = 0.5)",
        "pow(s, exponent = 1.5)",
        "pow(x, exponent = 2)",
        "pow(x, exponent = 3)",
        "pow(x, exponent = 1)",
        "pow(x, exponent = 0)",
        "pow(x, exponent = 7)",
        "pow(g, exponent = -1)",
        "pow(g, exponent = -0.5)",
        "pow(g, exponent = -2)",
    ] {
        check_body(&format!(
            "input x: f32[2, 3, 5, 7]\n s = mul(x, x)\n g = sigmoid(x)\n y = {act}\n output y"
        ));
    }
    check_body(
        "input x: f32[1, 4, 6, 6]\n c = conv2d(x, out = 5, kernel = 3, pad = 1)\n s = mul(c, c)\n r = sqrt(s)\n p = pow(c, exponent = 2)\n y = add(r, p)\n output y",
    );
}

/// Transposed convs on the shapes of U-Net decoders (2x2 stride 2), FCN/DCGAN upsampling
/// (4x4 stride 2 pad 1), ResNet-style decoders (3x3 stride 2 pad 1 output_padding 1),
/// grouped and depthwise ones, dilation, asymmetric crops and no bias; `check_body` runs 1
/// and 2 threads against the interpreter.
#[test]
fn conv_transpose_unet_fcn() {
    // U-Net: 64 -> 32 channels, 56x56 -> 112x112.
    check_body(
        "input x: f32[1, 64, 56, 56]\n y = conv_transpose2d(x, out = 32, kernel = 2, stride = 2)\n output y",
    );
    // FCN-8s-style 21-class upsampling, 4x4 stride 2 pad 1: 28x28 -> 56x56.
    check_body(
        "input x: f32[1, 21, 28, 28]\n y = conv_transpose2d(x, out = 21, kernel = 4, stride = 2, pad = 1)\n output y",
    );
    check_body(
        "input x: f32[2, 5, 7, 9]\n y = conv_transpose2d(x, out = 6, kernel = 3, stride = 2, pad = 1, output_padding = 1)\n output y",
    );
}

#[test]
fn conv_transpose_grouped_dilated_odd() {
    // Depthwise (groups = channels) and grouped.
    check_body(
        "input x: f32[1, 8, 10, 10]\n y = conv_transpose2d(x, out = 8, kernel = 4, stride = 2, pad = 1, groups = 8)\n output y",
    );
    check_body(
        "input x: f32[1, 6, 5, 7]\n y = conv_transpose2d(x, out = 9, kernel = [3, 2], stride = [1, 3], groups = 3, bias = false)\n output y",
    );
    check_body(
        "input x: f32[1, 4, 6, 5]\n y = conv_transpose2d(x, out = 5, kernel = 3, dilation = 2, stride = 2, pad = [1, 0, 3, 2], output_padding = [1, 0])\n output y",
    );
    // Stride 1 with a full crop: an ordinary conv in disguise.
    check_body(
        "input x: f32[1, 3, 9, 8]\n y = conv_transpose2d(x, out = 7, kernel = 3, pad = 2)\n output y",
    );
    // 1x1 images, stride 3 larger than the kernel (phases without taps).
    check_body(
        "input x: f32[1, 3, 1, 1]\n y = conv_transpose2d(x, out = 2, kernel = 2, stride = 3, output_padding = 2)\n output y",
    );
}

/// The batchnorm and relu after a transposed conv are its epilogue.
#[test]
fn conv_transpose_epilogue() {
    check_body(
        "input x: f32[1, 16, 14, 14]\n u = conv_transpose2d(x, out = 8, kernel = 2, stride = 2)\n b = batchnorm(u)\n y = relu(b)\n output y",
    );
}

/// `check_body`, and the plan runs the transposed conv on the path named `path` (a
/// substring of its plan line: `"col2im depth-to-space"`, `"col2im"`, `"phase-split"`).
fn check_conv_transpose(body: &str, path: &str) {
    check_body(body);
    let g = common::model(body);
    for threads in [1, 2] {
        let plan = bnc_codegen::plan_text(&g, &common::options(threads)).unwrap();
        assert!(
            plan.contains(&format!("conv-transpose {path} ")),
            "expected `{path}` at {threads} threads:\n{plan}"
        );
    }
}

/// GEMM + col2im where no two taps overlap (stride = kernel, no padding): a depth-to-space
/// copy, on odd sizes, a batch of 2, stride 2 (vector interleave), 3 and [1, 4] (lane by
/// lane), grouped.
#[test]
fn conv_transpose_gemm_depth_to_space() {
    check_conv_transpose(
        "input x: f32[2, 16, 7, 9]\n y = conv_transpose2d(x, out = 5, kernel = 2, stride = 2)\n output y",
        "col2im depth-to-space",
    );
    check_conv_transpose(
        "input x: f32[1, 6, 5, 3]\n y = conv_transpose2d(x, out = 4, kernel = 3, stride = 3, bias = false)\n output y",
        "col2im depth-to-space",
    );
    check_conv_transpose(
        "input x: f32[1, 8, 4, 5]\n y = conv_transpose2d(x, out = 6, kernel = [1, 4], stride = [1, 4], groups = 2)\n output y",
        "col2im depth-to-space",
    );
    // Stride larger than the kernel: phases no tap reaches get the bias alone.
    check_conv_transpose(
        "input x: f32[1, 4, 3, 5]\n y = conv_transpose2d(x, out = 3, kernel = 2, stride = 3, output_padding = 2)\n output y",
        "col2im depth-to-space",
    );
}

/// GEMM + col2im where taps overlap and sum: FCN's 4x4 stride 2 pad 1, 3x3 stride 1 (nine
/// taps on interior outputs), 3x3 stride 2 pad 1 output_padding 1, odd sizes.
#[test]
fn conv_transpose_gemm_overlapping_taps() {
    check_conv_transpose(
        "input x: f32[1, 12, 9, 11]\n y = conv_transpose2d(x, out = 7, kernel = 4, stride = 2, pad = 1)\n output y",
        "col2im",
    );
    check_conv_transpose(
        "input x: f32[1, 5, 6, 7]\n y = conv_transpose2d(x, out = 3, kernel = 3)\n output y",
        "col2im",
    );
    check_conv_transpose(
        "input x: f32[2, 9, 5, 13]\n y = conv_transpose2d(x, out = 10, kernel = 3, stride = 2, pad = 1, output_padding = 1)\n output y",
        "col2im",
    );
}

/// GEMM + col2im with groups, dilation, asymmetric crops and output padding, stride 1 with
/// a full crop, and stride [1, 3].
#[test]
fn conv_transpose_gemm_groups_crops() {
    check_conv_transpose(
        "input x: f32[1, 8, 6, 7]\n y = conv_transpose2d(x, out = 6, kernel = 3, stride = 2, pad = 1, groups = 2)\n output y",
        "col2im",
    );
    check_conv_transpose(
        "input x: f32[1, 12, 5, 7]\n y = conv_transpose2d(x, out = 9, kernel = [3, 2], stride = [1, 3], groups = 3, bias = false)\n output y",
        "col2im",
    );
    check_conv_transpose(
        "input x: f32[1, 4, 6, 5]\n y = conv_transpose2d(x, out = 5, kernel = 3, dilation = 2, stride = 2, pad = [1, 0, 3, 2], output_padding = [1, 0])\n output y",
        "col2im",
    );
    check_conv_transpose(
        "input x: f32[1, 6, 9, 8]\n y = conv_transpose2d(x, out = 7, kernel = 3, pad = 2)\n output y",
        "col2im",
    );
    check_conv_transpose(
        "input x: f32[1, 4, 1, 1]\n y = conv_transpose2d(x, out = 2, kernel = 3, stride = 2, pad = [0, 1, 1, 0])\n output y",
        "col2im",
    );
}

/// Shapes that take several GEMM m-tiles and pixel blocks and split across threads (the
/// `cols` of 100x100 is 40 000 floats per row), with a fused epilogue and a residual add;
/// fewer than 4 input channels per group keep the phase-split kernel.
#[test]
fn conv_transpose_gemm_large_and_fallback() {
    check_conv_transpose(
        "input x: f32[1, 96, 20, 30]\n y = conv_transpose2d(x, out = 40, kernel = 3, stride = 2, pad = 1, output_padding = 1)\n output y",
        "col2im",
    );
    check_conv_transpose(
        "input x: f32[1, 32, 100, 100]\n u = conv_transpose2d(x, out = 19, kernel = 2, stride = 2)\n b = batchnorm(u)\n y = relu(b)\n output y",
        "col2im depth-to-space",
    );
    check_conv_transpose(
        "input x: f32[1, 24, 14, 14]\n input r: f32[1, 8, 28, 28]\n u = conv_transpose2d(x, out = 8, kernel = 4, stride = 2, pad = 1)\n y = add(u, r)\n output y",
        "col2im",
    );
    check_conv_transpose(
        "input x: f32[1, 8, 10, 10]\n y = conv_transpose2d(x, out = 8, kernel = 4, stride = 2, pad = 1, groups = 8)\n output y",
        "phase-split",
    );
    check_conv_transpose(
        "input x: f32[1, 6, 5, 7]\n y = conv_transpose2d(x, out = 9, kernel = [3, 2], stride = [1, 3], groups = 3)\n output y",
        "phase-split",
    );
}

/// `check_body`, and at 1 and 2 threads the plan runs the upsample inside the conv's
/// transposed-conv kernels (`fused`: no resize kernel, a col2im) or as its own kernel.
fn check_upsample_conv(body: &str, fused: bool) {
    check_body(body);
    let g = common::model(body);
    for threads in [1, 2] {
        let plan = bnc_codegen::plan_text(&g, &common::options(threads)).unwrap();
        let resize = plan.contains("\n    resize ");
        let col2im = plan.contains("conv-transpose col2im");
        assert_eq!(
            (resize, col2im),
            (!fused, fused),
            "expected the upsample {} at {threads} threads:\n{plan}",
            if fused { "fused" } else { "on its own" }
        );
    }
}

/// A nearest upsample by whole factors feeding a stride-1 conv runs as one transposed conv
/// on the small input: YOLO's 2x upsample then 3x3 conv with its BN and activation fused,
/// PyTorch's two nearest exports (asymmetric floor, and half_pixel rounding, which index
/// alike at whole factors), factors [2, 3] with a [3, 1] kernel, dilation with asymmetric
/// pads (the bottom one wider than the kernel reaches: rows of bias alone), groups, a batch
/// of 2, and an upsample given by size.
#[test]
fn upsample_conv_fused_as_conv_transpose() {
    check_upsample_conv(
        "input x: f32[1, 64, 20, 20]\n u = resize(x, scale = 2)\n c = conv2d(u, out = 32, kernel = 3, pad = 1)\n b = batchnorm(c)\n y = silu(b)\n output y",
        true,
    );
    check_upsample_conv(
        "input x: f32[1, 8, 7, 9]\n u = resize(x, scale = 2, coordinates = \"half_pixel\", nearest_mode = \"round_prefer_floor\")\n y = conv2d(u, out = 5, kernel = 3, pad = 1)\n output y",
        true,
    );
    check_upsample_conv(
        "input x: f32[2, 6, 5, 4]\n u = resize(x, scale = [2, 3])\n y = conv2d(u, out = 7, kernel = [3, 1], pad = [1, 0, 1, 0], bias = false)\n output y",
        true,
    );
    check_upsample_conv(
        "input x: f32[1, 5, 6, 7]\n u = resize(x, size = [18, 21])\n y = conv2d(u, out = 4, kernel = 3, dilation = 2, pad = [4, 0, 6, 3])\n output y",
        true,
    );
    check_upsample_conv(
        "input x: f32[1, 8, 5, 5]\n u = resize(x, scale = 3)\n y = conv2d(u, out = 6, kernel = 2, groups = 2)\n output y",
        true,
    );
}

/// Where the rewrite would be wrong or would not pay, the upsample keeps its own kernel:
/// rounding that is not `j div s` (asymmetric ceil), a per-channel pad fill (the upsampled
/// image's border is not the transposed conv's empty edge), a stride-2 conv, a 1x1 conv
/// (as many multiply-adds either way), a depthwise conv (the phase-split path), bilinear,
/// and an upsample something else also reads.
#[test]
fn upsample_conv_kept_apart() {
    for (body, why) in [
        (
            "input x: f32[1, 6, 5, 6]\n u = resize(x, scale = 2, nearest_mode = \"ceil\")\n y = conv2d(u, out = 4, kernel = 3, pad = 1)\n output y",
            "ceil rounding",
        ),
        (
            "input x: f32[1, 6, 5, 6]\n u = resize(x, scale = 2)\n y = conv2d(u, out = 4, kernel = 3, pad = 1, pad_fill = true)\n output y",
            "pad fill",
        ),
        (
            "input x: f32[1, 6, 5, 6]\n u = resize(x, scale = 2)\n y = conv2d(u, out = 4, kernel = 3, pad = 1, stride = 2)\n output y",
            "stride 2",
        ),
        (
            "input x: f32[1, 6, 5, 6]\n u = resize(x, scale = 2)\n y = conv2d(u, out = 4, kernel = 1)\n output y",
            "1x1",
        ),
        (
            "input x: f32[1, 6, 5, 6]\n u = resize(x, scale = 2)\n y = conv2d(u, out = 6, kernel = 3, pad = 1, groups = 6)\n output y",
            "depthwise",
        ),
        (
            "input x: f32[1, 6, 5, 6]\n u = resize(x, mode = \"bilinear\", scale = 2)\n y = conv2d(u, out = 4, kernel = 3, pad = 1)\n output y",
            "bilinear",
        ),
        (
            "input x: f32[1, 6, 5, 6]\n u = resize(x, scale = 2)\n c = conv2d(u, out = 6, kernel = 3, pad = 1)\n y = add(c, u)\n output y",
            "two readers",
        ),
    ] {
        eprintln!("{why}");
        check_upsample_conv(body, false);
    }
}
