//! Tests of the reference interpreter against hand-computed values (or, for the larger
//! cases, against tiny direct computations written out here from the definitions).

use std::collections::BTreeMap;

use bnc_ir::interp::{self, InterpError};
use bnc_ir::{
    Activation, Conv2d, Graph, Node, Op, Pool2d, Shape, Tensor, Value, ValueId, WeightsSource,
};

// ---------------------------------------------------------------------------------------------
// Helpers

/// Appends values and nodes to a graph, shapes computed by `Op::infer_shape`.
struct Builder {
    g: Graph,
}

impl Builder {
    fn new() -> Builder {
        Builder {
            g: Graph {
                name: "test".into(),
                weights: WeightsSource::Random { seed: 0 },
                values: Vec::new(),
                inputs: Vec::new(),
                nodes: Vec::new(),
                outputs: Vec::new(),
                params: BTreeMap::new(),
            },
        }
    }

    fn value(&mut self, name: &str, shape: Shape) -> ValueId {
        self.g.values.push(Value {
            name: name.into(),
            shape,
        });
        ValueId(self.g.values.len() - 1)
    }

    fn input(&mut self, name: &str, shape: &[usize]) -> ValueId {
        let id = self.value(name, shape.to_vec());
        self.g.inputs.push(id);
        id
    }

    /// A node named `name`; its parameters (if any) live under the prefix `name`.
    fn node(&mut self, name: &str, op: Op, inputs: &[ValueId]) -> ValueId {
        let shapes: Vec<&Shape> = inputs.iter().map(|&i| self.g.shape(i)).collect();
        let shape = op
            .infer_shape(&shapes)
            .expect("test graph has valid shapes");
        let params = if op.param_specs(&shapes).is_empty() {
            None
        } else {
            Some(name.to_string())
        };
        let output = self.value(name, shape);
        self.g.nodes.push(Node {
            op,
            inputs: inputs.to_vec(),
            output,
            params,
        });
        output
    }

    fn param(&mut self, name: &str, shape: &[usize], data: &[f32]) {
        self.g
            .params
            .insert(name.into(), Tensor::new(shape.to_vec(), data.to_vec()));
    }

    fn output(&mut self, id: ValueId) {
        self.g.outputs.push(id);
    }

    fn finish(self) -> Graph {
        self.g.verify().expect("test graph verifies");
        self.g
    }
}

type Param<'a> = (&'a str, &'a [usize], &'a [f32]);

/// Runs a one-node graph `n = op(x...)` with parameters `n.<suffix>`, returning its output.
fn eval(op: Op, inputs: &[(&[usize], &[f32])], params: &[Param]) -> Tensor {
    let mut b = Builder::new();
    let ids: Vec<ValueId> = (0..inputs.len())
        .map(|i| b.input(&format!("x{i}"), inputs[i].0))
        .collect();
    let y = b.node("n", op, &ids);
    for (suffix, shape, data) in params {
        b.param(&format!("n.{suffix}"), shape, data);
    }
    b.output(y);
    let g = b.finish();
    let tensors: Vec<Tensor> = inputs
        .iter()
        .map(|(s, d)| Tensor::new(s.to_vec(), d.to_vec()))
        .collect();
    let mut out = interp::run(&g, &tensors).expect("interpreter runs");
    assert_eq!(out.len(), 1);
    out.remove(0)
}

fn eval1(op: Op, shape: &[usize], data: &[f32], params: &[Param]) -> Tensor {
    eval(op, &[(shape, data)], params)
}

#[track_caller]
fn assert_close(got: &Tensor, shape: &[usize], want: &[f32], tol: f32) {
    assert_eq!(got.shape, shape, "shape");
    assert_eq!(got.data.len(), want.len(), "length");
    for (i, (&g, &w)) in got.data.iter().zip(want).enumerate() {
        let ok = (g - w).abs() <= tol * w.abs().max(1.0) || (g == w);
        assert!(ok, "element {i}: got {g}, want {w} (all: {:?})", got.data);
    }
}

fn iota(n: usize) -> Vec<f32> {
    (0..n).map(|i| i as f32).collect()
}

fn conv(out: usize, kernel: [usize; 2]) -> Conv2d {
    Conv2d {
        out_channels: out,
        kernel,
        stride: [1, 1],
        pad: [0; 4],
        dilation: [1, 1],
        groups: 1,
        bias: false,
        pad_fill: false,
    }
}

fn pool(kernel: [usize; 2], stride: [usize; 2], pad: [usize; 4]) -> Pool2d {
    Pool2d {
        kernel,
        stride,
        pad,
        ceil_mode: false,
        count_include_pad: true,
    }
}

/// Convolution straight from the definition: every output element sums over its group's
/// input channels and kernel taps, reading `fill[c]` (or 0) outside the input.
fn reference_conv(
    c: &Conv2d,
    x: &[f32],
    [n, cin, h, w]: [usize; 4],
    weight: &[f32],
    bias: Option<&[f32]>,
    fill: Option<&[f32]>,
) -> (Vec<usize>, Vec<f32>) {
    let [kh, kw] = c.kernel;
    let [pt, pl, pb, pr] = c.pad;
    let oh = (h + pt + pb - c.dilation[0] * (kh - 1) - 1) / c.stride[0] + 1;
    let ow = (w + pl + pr - c.dilation[1] * (kw - 1) - 1) / c.stride[1] + 1;
    let cout = c.out_channels;
    let cin_g = cin / c.groups;
    let cout_g = cout / c.groups;
    let mut out = Vec::new();
    for b in 0..n {
        for o in 0..cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut sum = bias.map_or(0.0, |bs| bs[o] as f64);
                    for ci in 0..cin_g {
                        let ch = (o / cout_g) * cin_g + ci;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy =
                                    (oy * c.stride[0] + ky * c.dilation[0]) as isize - pt as isize;
                                let ix =
                                    (ox * c.stride[1] + kx * c.dilation[1]) as isize - pl as isize;
                                let inside =
                                    iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w;
                                let v = if inside {
                                    x[((b * cin + ch) * h + iy as usize) * w + ix as usize]
                                } else {
                                    fill.map_or(0.0, |f| f[ch])
                                };
                                let wv = weight[((o * cin_g + ci) * kh + ky) * kw + kx];
                                sum += wv as f64 * v as f64;
                            }
                        }
                    }
                    out.push(sum as f32);
                }
            }
        }
    }
    (vec![n, cout, oh, ow], out)
}

/// Deterministic, irregular test data in [-2, 2].
fn pattern(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 37 + seed * 11) % 17) as f32 / 4.0 - 2.0)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// conv2d

#[test]
fn conv_odd_input_with_bias() {
    // 5x7 input holding 0..35, a 3x3 kernel of ones, bias 0.5: each output is 9 times the
    // window's centre value plus 0.5.
    let mut c = conv(1, [3, 3]);
    c.bias = true;
    let y = eval1(
        Op::Conv2d(c),
        &[1, 1, 5, 7],
        &iota(35),
        &[("weight", &[1, 1, 3, 3], &[1.0; 9]), ("bias", &[1], &[0.5])],
    );
    let mut want = Vec::new();
    for oy in 0..3 {
        for ox in 0..5 {
            want.push(9.0 * ((oy + 1) * 7 + (ox + 1)) as f32 + 0.5);
        }
    }
    assert_close(&y, &[1, 1, 3, 5], &want, 1e-6);
}

#[test]
fn conv_stride_2() {
    // 1x1 kernel of weight 2, stride 2 on the 5x7 iota: rows 0, 2, 4 and columns 0, 2, 4, 6.
    let mut c = conv(1, [1, 1]);
    c.stride = [2, 2];
    let y = eval1(
        Op::Conv2d(c),
        &[1, 1, 5, 7],
        &iota(35),
        &[("weight", &[1, 1, 1, 1], &[2.0])],
    );
    let want = [
        0.0, 4.0, 8.0, 12.0, 28.0, 32.0, 36.0, 40.0, 56.0, 60.0, 64.0, 68.0,
    ];
    assert_close(&y, &[1, 1, 3, 4], &want, 1e-6);
}

#[test]
fn conv_dilation_2() {
    // 2x2 kernel of ones with dilation 2 on the 5x7 iota: x[y][x] + x[y][x+2] + x[y+2][x] +
    // x[y+2][x+2] = 4 (7y + x) + 32.
    let mut c = conv(1, [2, 2]);
    c.dilation = [2, 2];
    let y = eval1(
        Op::Conv2d(c),
        &[1, 1, 5, 7],
        &iota(35),
        &[("weight", &[1, 1, 2, 2], &[1.0; 4])],
    );
    let want = [
        32.0, 36.0, 40.0, 44.0, 48.0, 60.0, 64.0, 68.0, 72.0, 76.0, 88.0, 92.0, 96.0, 100.0, 104.0,
    ];
    assert_close(&y, &[1, 1, 3, 5], &want, 1e-6);
}

#[test]
fn conv_groups_2() {
    // Channels [1, 2 | 3, 4]; outputs 0, 1 see the first pair, outputs 2, 3 the second.
    let mut c = conv(4, [1, 1]);
    c.groups = 2;
    let weight = [1.0, 1.0, 1.0, -1.0, 1.0, 1.0, 2.0, 0.0];
    let y = eval1(
        Op::Conv2d(c),
        &[1, 4, 1, 1],
        &[1.0, 2.0, 3.0, 4.0],
        &[("weight", &[4, 2, 1, 1], &weight)],
    );
    assert_close(&y, &[1, 4, 1, 1], &[3.0, -1.0, 7.0, 6.0], 1e-6);
}

#[test]
fn conv_depthwise_multiplier_2() {
    // groups = C = 2, out = 4: outputs 0, 1 read channel 0 ([1 2; 3 4]), outputs 2, 3 read
    // channel 1 ([5 6; 7 8]).
    let mut c = conv(4, [2, 2]);
    c.groups = 2;
    let weight = [
        1.0, 0.0, 0.0, 0.0, // picks 1
        0.0, 0.0, 0.0, 1.0, // picks 4
        1.0, 1.0, 1.0, 1.0, // 5 + 6 + 7 + 8
        1.0, -1.0, 0.0, 0.0, // 5 - 6
    ];
    let y = eval1(
        Op::Conv2d(c),
        &[1, 2, 2, 2],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
        &[("weight", &[4, 1, 2, 2], &weight)],
    );
    assert_close(&y, &[1, 4, 1, 1], &[1.0, 4.0, 26.0, -1.0], 1e-6);
}

#[test]
fn conv_asymmetric_padding_no_bias() {
    // Input [1 2 3; 4 5 6], pad top 1, right 2: padded
    //   0 0 0 0 0
    //   1 2 3 0 0
    //   4 5 6 0 0
    // and a 2x2 kernel of ones.
    let mut c = conv(1, [2, 2]);
    c.pad = [1, 0, 0, 2];
    let y = eval1(
        Op::Conv2d(c),
        &[1, 1, 2, 3],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        &[("weight", &[1, 1, 2, 2], &[1.0; 4])],
    );
    let want = [3.0, 5.0, 3.0, 0.0, 12.0, 16.0, 9.0, 0.0];
    assert_close(&y, &[1, 1, 2, 4], &want, 1e-6);
}

#[test]
fn conv_pad_fill() {
    // As above with two channels: channel 0 is [1 2 3; 4 5 6] padded with 10, channel 1 is
    // all zeros padded with -1 and weighted 100:
    //   ch0: 10 10 10 10 10     ch1: -1 -1 -1 -1 -1
    //         1  2  3 10 10           0  0  0 -1 -1
    //         4  5  6 10 10           0  0  0 -1 -1
    let mut c = conv(1, [2, 2]);
    c.pad = [1, 0, 0, 2];
    c.pad_fill = true;
    let mut weight = vec![1.0; 4];
    weight.extend([100.0; 4]);
    let mut x = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    x.extend([0.0; 6]);
    let y = eval1(
        Op::Conv2d(c),
        &[1, 2, 2, 3],
        &x,
        &[
            ("weight", &[1, 2, 2, 2], &weight),
            ("pad_fill", &[2], &[10.0, -1.0]),
        ],
    );
    // ch0 sums: 23 25 33 40 / 12 16 29 40; ch1 sums: -2 -2 -3 -4 / 0 0 -2 -4.
    let want = [-177.0, -175.0, -267.0, -360.0, 12.0, 16.0, -171.0, -360.0];
    assert_close(&y, &[1, 1, 2, 4], &want, 1e-6);
}

#[test]
fn conv_batch_2() {
    // Each batch item [a, b] gives a + b.
    let c = conv(1, [1, 2]);
    let y = eval1(
        Op::Conv2d(c),
        &[2, 1, 1, 2],
        &[1.0, 2.0, 3.0, 4.0],
        &[("weight", &[1, 1, 1, 2], &[1.0, 1.0])],
    );
    assert_close(&y, &[2, 1, 1, 1], &[3.0, 7.0], 1e-6);
}

#[test]
fn conv_everything_at_once_matches_definition() {
    // Batch 2, groups 2, strides [2, 3], dilation [2, 1], asymmetric padding, bias and
    // pad_fill on a 5x7 input, against `reference_conv`.
    let c = Conv2d {
        out_channels: 6,
        kernel: [3, 2],
        stride: [2, 3],
        pad: [2, 2, 0, 1],
        dilation: [2, 1],
        groups: 2,
        bias: true,
        pad_fill: true,
    };
    let xs = [2, 4, 5, 7];
    let x = pattern(2 * 4 * 5 * 7, 1);
    let weight = pattern(6 * 2 * 3 * 2, 2);
    let bias = [0.5, -0.25, 1.0, 0.0, -1.5, 2.0];
    let fill = [0.75, -1.25, 0.0, 1.5];
    let (shape, want) = reference_conv(&c, &x, xs, &weight, Some(&bias), Some(&fill));
    assert_eq!(shape, [2, 6, 2, 3]);
    let y = eval1(
        Op::Conv2d(c),
        &xs,
        &x,
        &[
            ("weight", &[6, 2, 3, 2], &weight),
            ("bias", &[6], &bias),
            ("pad_fill", &[4], &fill),
        ],
    );
    assert_close(&y, &shape, &want, 1e-5);
}

#[test]
fn conv_depthwise_strided_padded_matches_definition() {
    // Depthwise with multiplier 2, stride 2 and symmetric padding, 3x3, batch 2.
    let c = Conv2d {
        out_channels: 6,
        kernel: [3, 3],
        stride: [2, 2],
        pad: [1, 1, 1, 1],
        dilation: [1, 1],
        groups: 3,
        bias: true,
        pad_fill: false,
    };
    let xs = [2, 3, 5, 7];
    let x = pattern(2 * 3 * 5 * 7, 3);
    let weight = pattern(6 * 9, 4);
    let bias = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6];
    let (shape, want) = reference_conv(&c, &x, xs, &weight, Some(&bias), None);
    assert_eq!(shape, [2, 6, 3, 4]);
    let y = eval1(
        Op::Conv2d(c),
        &xs,
        &x,
        &[("weight", &[6, 1, 3, 3], &weight), ("bias", &[6], &bias)],
    );
    assert_close(&y, &shape, &want, 1e-5);
}

// ---------------------------------------------------------------------------------------------
// dense, batchnorm, affine

#[test]
fn dense_with_and_without_bias() {
    let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let w = [1.0, 0.0, -1.0, 0.5, 0.5, 0.5];
    let y = eval1(
        Op::Dense {
            out_features: 2,
            bias: true,
        },
        &[2, 3],
        &x,
        &[("weight", &[2, 3], &w), ("bias", &[2], &[10.0, 20.0])],
    );
    assert_close(&y, &[2, 2], &[8.0, 23.0, 8.0, 27.5], 1e-6);
    let y = eval1(
        Op::Dense {
            out_features: 2,
            bias: false,
        },
        &[2, 3],
        &x,
        &[("weight", &[2, 3], &w)],
    );
    assert_close(&y, &[2, 2], &[-2.0, 3.0, -2.0, 7.5], 1e-6);
}

/// gamma [2, 1], beta [β0, 0], mean [1, 5], var [3.75, 0], eps 0.25: the standard
/// deviations are sqrt(4) = 2 and sqrt(0.25) = 0.5 (without eps channel 1 would divide by 0).
fn bn_params(beta0: f32) -> [(&'static str, Vec<f32>); 4] {
    [
        ("weight", vec![2.0, 1.0]),
        ("bias", vec![beta0, 0.0]),
        ("running_mean", vec![1.0, 5.0]),
        ("running_var", vec![3.75, 0.0]),
    ]
}

#[test]
fn batchnorm_2d() {
    let p = bn_params(1.0);
    let params: Vec<Param> = p.iter().map(|(s, d)| (*s, &[2usize][..], &d[..])).collect();
    let y = eval1(
        Op::BatchNorm { eps: 0.25 },
        &[2, 2],
        &[3.0, 6.0, -1.0, 4.0],
        &params,
    );
    // ch0: 2 (x - 1) / 2 + 1; ch1: (x - 5) / 0.5.
    assert_close(&y, &[2, 2], &[3.0, 2.0, -1.0, -2.0], 1e-6);
}

#[test]
fn batchnorm_4d_batch_2() {
    let p = bn_params(0.5);
    let params: Vec<Param> = p.iter().map(|(s, d)| (*s, &[2usize][..], &d[..])).collect();
    let x = [
        1.0, 3.0, 0.0, 2.0, // n0: ch0, ch1
        5.0, -1.0, 5.0, 6.0, // n1: ch0, ch1
    ];
    let y = eval1(Op::BatchNorm { eps: 0.25 }, &[2, 2, 1, 2], &x, &params);
    let want = [0.5, 2.5, -10.0, -6.0, 4.5, -1.5, 0.0, 2.0];
    assert_close(&y, &[2, 2, 1, 2], &want, 1e-6);
}

#[test]
fn batchnorm_small_eps() {
    // var 0, eps 1e-5: (x - mean) / sqrt(1e-5) = 2 * 316.227766...
    let one = [1.0f32];
    let zero = [0.0f32];
    let y = eval1(
        Op::BatchNorm { eps: 1e-5 },
        &[1, 1],
        &[2.0],
        &[
            ("weight", &[1], &one),
            ("bias", &[1], &zero),
            ("running_mean", &[1], &zero),
            ("running_var", &[1], &zero),
        ],
    );
    assert_close(&y, &[1, 1], &[632.455_5], 1e-6);
}

#[test]
fn affine_2d_and_4d() {
    let params: [Param; 2] = [("scale", &[2], &[2.0, -1.0]), ("shift", &[2], &[0.5, 1.0])];
    let y = eval1(Op::Affine, &[1, 2, 1, 2], &[1.0, 2.0, 3.0, 4.0], &params);
    assert_close(&y, &[1, 2, 1, 2], &[2.5, 4.5, -2.0, -3.0], 1e-6);
    let y = eval1(Op::Affine, &[2, 2], &[1.0, 2.0, 3.0, 4.0], &params);
    assert_close(&y, &[2, 2], &[2.5, -1.0, 6.5, -3.0], 1e-6);
}

// ---------------------------------------------------------------------------------------------
// activations

#[test]
fn activations() {
    let xs = [-7.0, -3.0, -1.0, 0.0, 0.5, 3.0, 7.0];
    let cases: Vec<(Activation, [f64; 7])> = vec![
        (Activation::Relu, [0.0, 0.0, 0.0, 0.0, 0.5, 3.0, 7.0]),
        (Activation::Relu6, [0.0, 0.0, 0.0, 0.0, 0.5, 3.0, 6.0]),
        (
            Activation::LeakyRelu { alpha: 0.1 },
            [-0.7, -0.3, -0.1, 0.0, 0.5, 3.0, 7.0],
        ),
        (
            Activation::Clip {
                min: -2.0,
                max: 4.0,
            },
            [-2.0, -2.0, -1.0, 0.0, 0.5, 3.0, 4.0],
        ),
        (
            Activation::Sigmoid,
            [
                0.000_911_051_2,
                0.047_425_873,
                0.268_941_42,
                0.5,
                0.622_459_3,
                0.952_574_1,
                0.999_088_95,
            ],
        ),
        (
            Activation::Silu,
            [
                -0.006_377_358_4,
                -0.142_277_62,
                -0.268_941_42,
                0.0,
                0.311_229_67,
                2.857_722_4,
                6.993_622_6,
            ],
        ),
        (
            Activation::HardSwish,
            [0.0, 0.0, -1.0 / 3.0, 0.0, 0.5 * 3.5 / 6.0, 3.0, 7.0],
        ),
        (
            Activation::HardSigmoid,
            [0.0, 0.0, 1.0 / 3.0, 0.5, 3.5 / 6.0, 1.0, 1.0],
        ),
        (
            Activation::Tanh,
            [
                -0.999_998_3,
                -0.995_054_76,
                -0.761_594_16,
                0.0,
                0.462_117_16,
                0.995_054_76,
                0.999_998_3,
            ],
        ),
    ];
    for (a, want) in cases {
        let name = a.name();
        let y = eval1(Op::Activation(a), &[1, 7], &xs, &[]);
        assert_eq!(y.shape, [1, 7]);
        for (i, (&g, &w)) in y.data.iter().zip(&want).enumerate() {
            assert!(
                (f64::from(g) - w).abs() <= 1e-6 * w.abs().max(1.0),
                "{name}({}): got {g}, want {w}",
                xs[i]
            );
        }
    }
}

#[test]
fn activation_on_4d_batch() {
    let y = eval1(
        Op::Activation(Activation::Relu6),
        &[2, 1, 1, 2],
        &[-1.0, 8.0, 2.0, 6.5],
        &[],
    );
    assert_close(&y, &[2, 1, 1, 2], &[0.0, 6.0, 2.0, 6.0], 0.0);
}

// ---------------------------------------------------------------------------------------------
// elementwise, concat

#[test]
fn add_same_shape() {
    let s: &[usize] = &[1, 2, 1, 2];
    let y = eval(
        Op::Add,
        &[(s, &[1.0, 2.0, 3.0, 4.0]), (s, &[10.0, -2.0, 0.5, -4.0])],
        &[],
    );
    assert_close(&y, s, &[11.0, 0.0, 3.5, 0.0], 0.0);
}

#[test]
fn mul_same_shape_and_broadcast_both_sides() {
    let big: &[usize] = &[2, 2, 1, 2];
    let small: &[usize] = &[2, 2, 1, 1];
    let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
    let s = [10.0, -1.0, 0.5, 2.0];
    // Plane (n, c) is scaled by s[n * 2 + c].
    let want = [10.0, 20.0, -3.0, -4.0, 2.5, 3.0, 14.0, 16.0];
    let y = eval(Op::Mul, &[(big, &x), (small, &s)], &[]);
    assert_close(&y, big, &want, 0.0);
    let y = eval(Op::Mul, &[(small, &s), (big, &x)], &[]);
    assert_close(&y, big, &want, 0.0);
    let y = eval(Op::Mul, &[(big, &x), (big, &x)], &[]);
    let squares: Vec<f32> = x.iter().map(|v| v * v).collect();
    assert_close(&y, big, &squares, 0.0);
}

#[test]
fn concat_three_inputs_4d_batch_2() {
    let a: &[usize] = &[2, 1, 1, 2];
    let b: &[usize] = &[2, 2, 1, 2];
    let y = eval(
        Op::Concat,
        &[
            (a, &[1.0, 2.0, 3.0, 4.0]),
            (b, &[10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0]),
            (a, &[-1.0, -2.0, -3.0, -4.0]),
        ],
        &[],
    );
    let want = [
        1.0, 2.0, 10.0, 11.0, 12.0, 13.0, -1.0, -2.0, // n0
        3.0, 4.0, 14.0, 15.0, 16.0, 17.0, -3.0, -4.0, // n1
    ];
    assert_close(&y, &[2, 4, 1, 2], &want, 0.0);
}

#[test]
fn concat_2d() {
    let y = eval(
        Op::Concat,
        &[
            (&[2, 1], &[1.0, 2.0]),
            (&[2, 2], &[3.0, 4.0, 5.0, 6.0]),
            (&[2, 1], &[7.0, 8.0]),
        ],
        &[],
    );
    assert_close(&y, &[2, 4], &[1.0, 3.0, 4.0, 7.0, 2.0, 5.0, 6.0, 8.0], 0.0);
}

// ---------------------------------------------------------------------------------------------
// pooling

#[test]
fn maxpool_padding_never_wins() {
    // [-1 -2 -3; -4 -5 -6; -7 -8 -9], kernel 3, stride 2, pad 1: zero padding would give 0s.
    let x: Vec<f32> = (1..=9).map(|v| -(v as f32)).collect();
    let y = eval1(
        Op::MaxPool(pool([3, 3], [2, 2], [1; 4])),
        &[1, 1, 3, 3],
        &x,
        &[],
    );
    assert_close(&y, &[1, 1, 2, 2], &[-1.0, -2.0, -4.0, -5.0], 0.0);
}

#[test]
fn maxpool_ceil_mode_batch_and_channels() {
    // 5x5 planes holding base + 5y + x, kernel 2, stride 2: ceil mode adds a clipped third
    // row and column of windows.
    let mut x = Vec::new();
    for plane in 0..4 {
        x.extend((0..25).map(|i| (plane * 100 + i) as f32));
    }
    let mut p = pool([2, 2], [2, 2], [0; 4]);
    p.ceil_mode = true;
    let y = eval1(Op::MaxPool(p), &[2, 2, 5, 5], &x, &[]);
    let base = [6.0, 8.0, 9.0, 16.0, 18.0, 19.0, 21.0, 23.0, 24.0];
    let want: Vec<f32> = (0..4)
        .flat_map(|plane| base.iter().map(move |v| v + 100.0 * plane as f32))
        .collect();
    assert_close(&y, &[2, 2, 3, 3], &want, 0.0);

    let y = eval1(
        Op::MaxPool(pool([2, 2], [2, 2], [0; 4])),
        &[1, 1, 5, 5],
        &x[..25],
        &[],
    );
    assert_close(&y, &[1, 1, 2, 2], &[6.0, 8.0, 16.0, 18.0], 0.0);
}

#[test]
fn avgpool_count_include_pad_at_borders() {
    // 1..9 in 3x3, kernel 3, stride 2, pad 1: each window holds 4 real elements of 9.
    let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    let p = pool([3, 3], [2, 2], [1; 4]);
    let y = eval1(Op::AvgPool(p.clone()), &[1, 1, 3, 3], &x, &[]);
    let sums = [12.0f32, 16.0, 24.0, 28.0];
    let want: Vec<f32> = sums.iter().map(|s| s / 9.0).collect();
    assert_close(&y, &[1, 1, 2, 2], &want, 1e-6);

    let mut p = p;
    p.count_include_pad = false;
    let y = eval1(Op::AvgPool(p), &[1, 1, 3, 3], &x, &[]);
    assert_close(&y, &[1, 1, 2, 2], &[3.0, 4.0, 6.0, 7.0], 1e-6);
}

#[test]
fn avgpool_ceil_mode_clips_divisor() {
    // 1..9 in 3x3, kernel 2, stride 2, ceil mode: the last row/column of windows hangs past
    // the input and is divided by the elements it really covers.
    let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    for include in [true, false] {
        let mut p = pool([2, 2], [2, 2], [0; 4]);
        p.ceil_mode = true;
        p.count_include_pad = include;
        let y = eval1(Op::AvgPool(p), &[1, 1, 3, 3], &x, &[]);
        assert_close(&y, &[1, 1, 2, 2], &[3.0, 4.5, 7.5, 9.0], 1e-6);
    }
}

#[test]
fn avgpool_ceil_mode_with_padding() {
    // Row [1 2 3 4], kernel 1x3, stride 1x2, pad 1 left and right, ceil mode: windows start
    // at columns -1, 1, 3. The last covers column 3, the right pad column 4, and column 5
    // beyond the padded input: PyTorch divides by 2 when padding counts, by 1 when not.
    for (include, want) in [(true, [1.0, 3.0, 2.0]), (false, [1.5, 3.0, 4.0])] {
        let p = Pool2d {
            kernel: [1, 3],
            stride: [1, 2],
            pad: [0, 1, 0, 1],
            ceil_mode: true,
            count_include_pad: include,
        };
        let y = eval1(Op::AvgPool(p), &[1, 1, 1, 4], &[1.0, 2.0, 3.0, 4.0], &[]);
        assert_close(&y, &[1, 1, 1, 3], &want, 1e-6);
    }
}

#[test]
fn global_avgpool_batch_2() {
    let x = [
        1.0, 2.0, 3.0, 4.0, -1.0, -1.0, -1.0, 3.0, 0.0, 0.0, 0.0, 1.0, 8.0, 8.0, 8.0, 8.0,
    ];
    let y = eval1(Op::GlobalAvgPool, &[2, 2, 2, 2], &x, &[]);
    assert_close(&y, &[2, 2, 1, 1], &[2.5, 0.0, 0.25, 8.0], 1e-6);
}

// ---------------------------------------------------------------------------------------------
// shape-only operators, softmax

#[test]
fn pad_constant() {
    let y = eval1(
        Op::Pad {
            pads: [1, 0, 0, 2],
            value: 9.0,
            fill: false,
        },
        &[1, 1, 2, 2],
        &[1.0, 2.0, 3.0, 4.0],
        &[],
    );
    let want = [
        9.0, 9.0, 9.0, 9.0, //
        1.0, 2.0, 9.0, 9.0, //
        3.0, 4.0, 9.0, 9.0,
    ];
    assert_close(&y, &[1, 1, 3, 4], &want, 0.0);
}

#[test]
fn pad_with_a_per_channel_fill() {
    // Two channels, batch 2: each channel pads with its own fill, `value` is not used.
    let y = eval1(
        Op::Pad {
            pads: [0, 1, 1, 0],
            value: 9.0,
            fill: true,
        },
        &[2, 2, 1, 1],
        &[1.0, 2.0, 3.0, 4.0],
        &[("pad_fill", &[2], &[-1.0, 5.0])],
    );
    let want = [
        -1.0, 1.0, -1.0, -1.0, // n0 c0: [[f, x], [f, f]]
        5.0, 2.0, 5.0, 5.0, // n0 c1
        -1.0, 3.0, -1.0, -1.0, // n1 c0
        5.0, 4.0, 5.0, 5.0, // n1 c1
    ];
    assert_close(&y, &[2, 2, 2, 2], &want, 0.0);
}

#[test]
fn flatten_identity_dropout() {
    let x = iota(8);
    let y = eval1(Op::Flatten, &[2, 2, 1, 2], &x, &[]);
    assert_close(&y, &[2, 4], &x, 0.0);
    let y = eval1(Op::Identity, &[2, 2, 1, 2], &x, &[]);
    assert_close(&y, &[2, 2, 1, 2], &x, 0.0);
    let y = eval1(Op::Dropout, &[2, 2, 1, 2], &x, &[]);
    assert_close(&y, &[2, 2, 1, 2], &x, 0.0);
}

#[test]
fn softmax_2d() {
    // exp(0), exp(ln 2), exp(ln 3) = 1, 2, 3; the second row would overflow exp without
    // subtracting the maximum.
    let x = [0.0, 2f32.ln(), 3f32.ln(), 1000.0, 1000.0, 1000.0];
    let y = eval1(Op::Softmax, &[2, 3], &x, &[]);
    let third = 1.0 / 3.0;
    assert_close(
        &y,
        &[2, 3],
        &[1.0 / 6.0, third, 0.5, third, third, third],
        1e-6,
    );
    for row in y.data.chunks(3) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}

#[test]
fn softmax_4d_over_channels() {
    // Position 0 has channels [0, ln 3] -> [1/4, 3/4]; position 1 has [5, 5] -> [1/2, 1/2].
    let x = [0.0, 5.0, 3f32.ln(), 5.0];
    let y = eval1(Op::Softmax, &[1, 2, 1, 2], &x, &[]);
    assert_close(&y, &[1, 2, 1, 2], &[0.25, 0.5, 0.75, 0.5], 1e-6);
}

// ---------------------------------------------------------------------------------------------
// graph-level behaviour and errors

fn relu_conv_graph() -> Graph {
    let mut b = Builder::new();
    let x = b.input("x", &[1, 1, 5, 7]);
    let mut c = conv(1, [3, 3]);
    c.bias = true;
    let y = b.node("c", Op::Conv2d(c), &[x]);
    b.param("c.weight", &[1, 1, 3, 3], &[1.0; 9]);
    b.param("c.bias", &[1], &[0.5]);
    b.output(y);
    b.finish()
}

#[test]
fn wrong_input_count_is_an_error() {
    let g = relu_conv_graph();
    let err = interp::run(&g, &[]).unwrap_err();
    assert_eq!(
        err,
        InterpError::InputCount {
            expected: 1,
            got: 0
        }
    );
    assert!(err.to_string().contains("1 input"), "{err}");
    let x = Tensor::zeros(vec![1, 1, 5, 7]);
    assert!(matches!(
        interp::run(&g, &[x.clone(), x]),
        Err(InterpError::InputCount {
            expected: 1,
            got: 2
        })
    ));
}

#[test]
fn wrong_input_shape_is_an_error() {
    let g = relu_conv_graph();
    let err = interp::run(&g, &[Tensor::zeros(vec![1, 1, 7, 5])]).unwrap_err();
    assert!(matches!(err, InterpError::InputShape { .. }), "{err:?}");
    assert!(err.to_string().contains("`x`"), "{err}");
    // Data that disagrees with its own shape.
    let bad = Tensor {
        shape: vec![1, 1, 5, 7],
        data: vec![0.0; 3],
    };
    assert!(matches!(
        interp::run(&g, &[bad]),
        Err(InterpError::MalformedTensor { .. })
    ));
}

#[test]
fn missing_parameter_is_an_error() {
    let mut g = relu_conv_graph();
    g.params.remove("c.bias");
    let err = interp::run(&g, &[Tensor::zeros(vec![1, 1, 5, 7])]).unwrap_err();
    assert_eq!(
        err,
        InterpError::MissingParam {
            node: "c".into(),
            param: "c.bias".into()
        }
    );
    assert!(err.to_string().contains("c.bias"), "{err}");

    // No prefix at all.
    let mut g = relu_conv_graph();
    g.nodes[0].params = None;
    let err = interp::run(&g, &[Tensor::zeros(vec![1, 1, 5, 7])]).unwrap_err();
    assert!(matches!(err, InterpError::MissingParam { .. }), "{err:?}");
}

#[test]
fn wrong_parameter_shape_is_an_error() {
    let mut g = relu_conv_graph();
    g.params
        .insert("c.weight".into(), Tensor::zeros(vec![1, 1, 3, 2]));
    let err = interp::run(&g, &[Tensor::zeros(vec![1, 1, 5, 7])]).unwrap_err();
    assert!(matches!(err, InterpError::ParamShape { .. }), "{err:?}");
}

#[test]
fn declared_shape_mismatch_is_an_error() {
    let mut g = relu_conv_graph();
    g.values[1].shape = vec![1, 1, 3, 4];
    let err = interp::run(&g, &[Tensor::zeros(vec![1, 1, 5, 7])]).unwrap_err();
    assert!(matches!(err, InterpError::InvalidGraph(_)), "{err:?}");
}

#[test]
fn eval_node_rejects_bad_input_shapes() {
    let g = relu_conv_graph();
    let x = Tensor::zeros(vec![1, 2, 5, 7]);
    let err = interp::eval_node(&g, &g.nodes[0], &[&x]).unwrap_err();
    // Two input channels need a [1, 2, 3, 3] weight.
    assert!(matches!(err, InterpError::ParamShape { .. }), "{err:?}");
    let x = Tensor::zeros(vec![1, 1, 2, 2]);
    let err = interp::eval_node(&g, &g.nodes[0], &[&x]).unwrap_err();
    assert!(matches!(err, InterpError::BadNode { .. }), "{err:?}");
    let err = interp::eval_node(&g, &g.nodes[0], &[]).unwrap_err();
    assert!(matches!(err, InterpError::BadNode { .. }), "{err:?}");
}

#[test]
fn outputs_in_order_and_run_all() {
    // x -> r = relu(x) -> s = add(r, x); outputs [s, x, s].
    let mut b = Builder::new();
    let x = b.input("x", &[1, 3]);
    let r = b.node("r", Op::Activation(Activation::Relu), &[x]);
    let s = b.node("s", Op::Add, &[r, x]);
    b.output(s);
    b.output(x);
    b.output(s);
    let g = b.finish();
    let input = Tensor::new(vec![1, 3], vec![-1.0, 0.0, 2.0]);
    let out = interp::run(&g, std::slice::from_ref(&input)).unwrap();
    assert_eq!(out.len(), 3);
    assert_close(&out[0], &[1, 3], &[-1.0, 0.0, 4.0], 0.0);
    assert_eq!(out[1], input);
    assert_eq!(out[2], out[0]);

    let all = interp::run_all(&g, std::slice::from_ref(&input)).unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[x.0], input);
    assert_close(&all[r.0], &[1, 3], &[0.0, 0.0, 2.0], 0.0);
    assert_eq!(all[s.0], out[0]);
}

#[test]
fn small_network_matches_direct_computation() {
    // conv(3x3, pad 1, bias) -> batchnorm -> relu -> maxpool 2/2 -> flatten -> dense, batch 2.
    let (n, cin, h, w, cout) = (2, 2, 5, 5, 3);
    let mut b = Builder::new();
    let x = b.input("x", &[n, cin, h, w]);
    let mut c = conv(cout, [3, 3]);
    c.pad = [1; 4];
    c.bias = true;
    let y = b.node("conv", Op::Conv2d(c.clone()), &[x]);
    let y = b.node("bn", Op::BatchNorm { eps: 1e-3 }, &[y]);
    let y = b.node("relu", Op::Activation(Activation::Relu), &[y]);
    let y = b.node("pool", Op::MaxPool(pool([2, 2], [2, 2], [0; 4])), &[y]);
    let y = b.node("flat", Op::Flatten, &[y]);
    let y = b.node(
        "fc",
        Op::Dense {
            out_features: 2,
            bias: true,
        },
        &[y],
    );
    b.output(y);

    let conv_w = pattern(cout * cin * 9, 5);
    let conv_b = [0.25, -0.5, 0.0];
    let gamma = [1.5, 0.5, -1.0];
    let beta = [0.1, -0.2, 0.3];
    let mean = [0.5, -0.25, 1.0];
    let var = [2.0, 0.5, 1.25];
    let fc_w = pattern(2 * cout * 4, 6);
    let fc_b = [0.75, -0.75];
    b.param("conv.weight", &[cout, cin, 3, 3], &conv_w);
    b.param("conv.bias", &[cout], &conv_b);
    b.param("bn.weight", &[cout], &gamma);
    b.param("bn.bias", &[cout], &beta);
    b.param("bn.running_mean", &[cout], &mean);
    b.param("bn.running_var", &[cout], &var);
    b.param("fc.weight", &[2, cout * 4], &fc_w);
    b.param("fc.bias", &[2], &fc_b);
    let g = b.finish();

    let xs = pattern(n * cin * h * w, 7);
    let out = interp::run(&g, &[Tensor::new(vec![n, cin, h, w], xs.clone())]).unwrap();

    // The same computation, written out directly.
    let (shape, conv_out) = reference_conv(&c, &xs, [n, cin, h, w], &conv_w, Some(&conv_b), None);
    assert_eq!(shape, [n, cout, h, w]);
    let mut act = conv_out;
    for (i, v) in act.iter_mut().enumerate() {
        let ch = (i / (h * w)) % cout;
        let bn = gamma[ch] as f64 * (*v as f64 - mean[ch] as f64) / (var[ch] as f64 + 1e-3).sqrt()
            + beta[ch] as f64;
        *v = bn.max(0.0) as f32;
    }
    let mut pooled = Vec::new(); // [n, cout * 2 * 2] after flatten
    for plane in act.chunks(h * w) {
        for py in 0..2 {
            for px in 0..2 {
                let at = |dy: usize, dx: usize| plane[(2 * py + dy) * w + 2 * px + dx];
                pooled.push(at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1)));
            }
        }
    }
    let mut want = Vec::new();
    for row in pooled.chunks(cout * 4) {
        for o in 0..2 {
            let mut sum = fc_b[o] as f64;
            for (k, &v) in row.iter().enumerate() {
                sum += fc_w[o * cout * 4 + k] as f64 * v as f64;
            }
            want.push(sum as f32);
        }
    }
    assert_close(&out[0], &[n, 2], &want, 1e-5);
    // The data is irregular enough that relu actually clips something and the output is not
    // trivially zero.
    assert!(act.contains(&0.0) && want.iter().any(|v| v.abs() > 0.1));
}

// ---------------------------------------------------------------------------------------------
// timing (run by hand: cargo test -p bnc-ir --release --test interp -- --ignored --nocapture)

/// ResNet-18 at 1x3x224x224 with arbitrary parameters.
fn resnet18() -> Graph {
    let mut b = Builder::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut random = |len: usize, scale: f32| -> Vec<f32> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
            })
            .collect()
    };
    let mut conv_bn = |b: &mut Builder,
                       name: &str,
                       x: ValueId,
                       out: usize,
                       k: usize,
                       stride: usize,
                       relu: bool| {
        let cin = b.g.shape(x)[1];
        let c = Conv2d {
            out_channels: out,
            kernel: [k, k],
            stride: [stride, stride],
            pad: [k / 2; 4],
            dilation: [1, 1],
            groups: 1,
            bias: false,
            pad_fill: false,
        };
        let y = b.node(name, Op::Conv2d(c), &[x]);
        let scale = (2.0 / (cin * k * k) as f32).sqrt() * 3.4;
        b.param(
            &format!("{name}.weight"),
            &[out, cin, k, k],
            &random(out * cin * k * k, scale),
        );
        let bn = format!("{name}.bn");
        let y = b.node(&bn, Op::BatchNorm { eps: 1e-5 }, &[y]);
        b.param(&format!("{bn}.weight"), &[out], &vec![1.0; out]);
        b.param(&format!("{bn}.bias"), &[out], &random(out, 0.2));
        b.param(&format!("{bn}.running_mean"), &[out], &random(out, 0.2));
        b.param(&format!("{bn}.running_var"), &[out], &vec![1.0; out]);
        if relu {
            b.node(
                &format!("{name}.relu"),
                Op::Activation(Activation::Relu),
                &[y],
            )
        } else {
            y
        }
    };
    let x = b.input("x", &[1, 3, 224, 224]);
    let mut y = conv_bn(&mut b, "conv1", x, 64, 7, 2, true);
    y = b.node("maxpool", Op::MaxPool(pool([3, 3], [2, 2], [1; 4])), &[y]);
    for (stage, out) in [64, 128, 256, 512].into_iter().enumerate() {
        for block in 0..2 {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            let name = format!("layer{}.{block}", stage + 1);
            let a = conv_bn(&mut b, &format!("{name}.conv1"), y, out, 3, stride, true);
            let a = conv_bn(&mut b, &format!("{name}.conv2"), a, out, 3, 1, false);
            let skip = if stride != 1 || b.g.shape(y)[1] != out {
                conv_bn(&mut b, &format!("{name}.down"), y, out, 1, stride, false)
            } else {
                y
            };
            let s = b.node(&format!("{name}.add"), Op::Add, &[a, skip]);
            y = b.node(
                &format!("{name}.relu"),
                Op::Activation(Activation::Relu),
                &[s],
            );
        }
    }
    y = b.node("avgpool", Op::GlobalAvgPool, &[y]);
    y = b.node("flatten", Op::Flatten, &[y]);
    y = b.node(
        "fc",
        Op::Dense {
            out_features: 1000,
            bias: true,
        },
        &[y],
    );
    b.param("fc.weight", &[1000, 512], &random(1000 * 512, 0.1));
    b.param("fc.bias", &[1000], &random(1000, 0.1));
    b.output(y);
    b.finish()
}

#[test]
#[ignore = "timing; run with --release --ignored --nocapture"]
fn resnet18_timing() {
    let g = resnet18();
    let x = Tensor::new(
        vec![1, 3, 224, 224],
        pattern(3 * 224 * 224, 8).iter().map(|v| v * 0.5).collect(),
    );
    let start = std::time::Instant::now();
    let out = interp::run(&g, &[x]).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(out[0].shape, [1, 1000]);
    assert!(out[0].data.iter().all(|v| v.is_finite()));
    println!(
        "resnet18 1x3x224x224: {elapsed:?}, max |y| = {}",
        out[0].max_abs()
    );
}
