//! When an exact fold stays exact in f32 (docs/folding.md derives the bound).
//!
//! Every fold is an identity over the reals. In f32 some lose all precision: a reader
//! compensated with `W/s` re-amplifies the rounding of a tensor that carries a large `t`; a
//! layer that absorbs a map forward adds terms `W·s·x` far larger than the `W·(s·x + t)` the
//! unfolded layer adds. Both show as one ratio, computed here per fold from the actual weights:
//! the magnitude of the terms the folded layer adds up over the magnitude of the terms the
//! unfolded layer adds up. A fold whose ratio exceeds [`BUDGET`] is declined.
//!
//! Magnitudes come from [`Spread`]: per channel, an estimate of the mean and standard deviation
//! of a tensor, propagated through the graph from inputs of mean 0 and standard deviation 1 (the
//! scale of normalised images). They need not be accurate: well-conditioned folds have ratios
//! near 1 and ill-conditioned ones of 1e3 and more.
//!
//! ```
//! use bnc_passes::affine::ChannelMap;
//! use bnc_passes::conditioning::{Spread, map_amplification};
//! let x = Spread::unit(1);
//! // Undoing `y' = 1e-5·y + 5` multiplies the rounding of y' (about 5·2⁻²⁴) by 1e5.
//! let undo = ChannelMap { scale: vec![1e5], shift: vec![-5e5] };
//! let stored = x.mapped(&ChannelMap { scale: vec![1e-5], shift: vec![5.0] });
//! assert!(map_amplification(&undo, &stored) > 1e5);
//! let benign = ChannelMap { scale: vec![0.9], shift: vec![0.1] };
//! assert!(map_amplification(&benign, &x) < 2.0);
//! ```

use bnc_ir::{Activation, Graph, Node, Op, Shape};

use crate::affine::ChannelMap;

/// The largest amplification of f32 rounding a fold may add, relative to the unfolded layer.
/// Well-conditioned folds measure 1-3; the compensation of a BN with γ = 1e-5 measures 1e5.
pub const BUDGET: f64 = 16.0;

/// Per channel: estimated mean and standard deviation of a tensor's values.
#[derive(Clone, Debug, PartialEq)]
pub struct Spread {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Spread {
    /// Mean 0, standard deviation 1 on every channel: what a graph input is assumed to carry.
    pub fn unit(channels: usize) -> Spread {
        Spread {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// Root mean square of channel `c`.
    pub fn rms(&self, c: usize) -> f64 {
        self.mean[c].hypot(self.std[c])
    }

    /// The spread of `map(x)`.
    pub fn mapped(&self, map: &ChannelMap) -> Spread {
        Spread {
            mean: (0..self.channels())
                .map(|c| map.scale[c] * self.mean[c] + map.shift[c])
                .collect(),
            std: (0..self.channels())
                .map(|c| map.scale[c].abs() * self.std[c])
                .collect(),
        }
    }

    fn concat(parts: &[&Spread]) -> Spread {
        Spread {
            mean: parts.iter().flat_map(|p| p.mean.iter().copied()).collect(),
            std: parts.iter().flat_map(|p| p.std.iter().copied()).collect(),
        }
    }

    fn per_channel(&self, f: impl Fn(f64, f64) -> (f64, f64)) -> Spread {
        let (mean, std) = self
            .mean
            .iter()
            .zip(&self.std)
            .map(|(&m, &d)| f(m, d))
            .unzip();
        Spread { mean, std }
    }
}

/// Estimates for every value of `graph` (indexed like `graph.values`).
pub fn estimate(graph: &Graph) -> Vec<Spread> {
    let mut spreads: Vec<Spread> = graph.values.iter().map(|_| Spread::unit(0)).collect();
    for &input in &graph.inputs {
        let shape = graph.shape(input);
        spreads[input.0] = Spread::unit(shape.get(1).copied().unwrap_or(1));
    }
    for node in &graph.nodes {
        let inputs: Vec<&Spread> = node.inputs.iter().map(|&i| &spreads[i.0]).collect();
        let shapes: Vec<&Shape> = node.inputs.iter().map(|&i| graph.shape(i)).collect();
        let out = through_node(graph, node, &inputs, &shapes, graph.shape(node.output));
        spreads[node.output.0] = out;
    }
    spreads
}

/// The spread of `node`'s output, given its inputs' spreads and shapes.
pub fn through_node(
    graph: &Graph,
    node: &Node,
    inputs: &[&Spread],
    input_shapes: &[&Shape],
    out_shape: &Shape,
) -> Spread {
    let param = |suffix: &str| -> Option<Vec<f64>> {
        graph
            .param(node, suffix)
            .map(|t| t.data.iter().map(|&v| v as f64).collect())
    };
    match &node.op {
        Op::Conv2d(_) | Op::Dense { .. } => through_layer(graph, node, inputs[0]),
        Op::BatchNorm { eps } => {
            let get = |s| {
                graph
                    .param(node, s)
                    .map(|t| t.data.clone())
                    .unwrap_or_default()
            };
            let map = ChannelMap::from_batchnorm(
                &get("weight"),
                &get("bias"),
                &get("running_mean"),
                &get("running_var"),
                *eps,
            );
            inputs[0].mapped(&map)
        }
        Op::Affine => inputs[0].mapped(&ChannelMap::of_affine(graph, node)),
        Op::Pad {
            fill: true, pads, ..
        } => {
            let fill = param("pad_fill").unwrap_or_default();
            through_pad(inputs[0], pads, &fill, input_shapes[0])
        }
        op => through_op(op, inputs, input_shapes, out_shape),
    }
}

/// The spread of a conv or dense layer's output (its own weights and bias).
pub fn through_layer(graph: &Graph, node: &Node, x: &Spread) -> Spread {
    let Some(weight) = graph.param(node, "weight") else {
        return x.clone();
    };
    let bias = graph.param(node, "bias");
    let (outs, in_per_group) = (weight.shape[0], weight.shape[1]);
    let taps: usize = weight.shape[2..].iter().product();
    let groups = match &node.op {
        Op::Conv2d(c) => c.groups,
        _ => 1,
    };
    let out_per_group = outs / groups;
    let mut spread = Spread {
        mean: Vec::with_capacity(outs),
        std: Vec::with_capacity(outs),
    };
    for o in 0..outs {
        let group = o / out_per_group;
        let mut mean = bias.map_or(0.0, |b| b.data[o] as f64);
        let mut var = 0.0;
        for local in 0..in_per_group {
            let i = group * in_per_group + local;
            let row = &weight.data[(o * in_per_group + local) * taps..][..taps];
            let (sum, squares) = row.iter().fold((0.0, 0.0), |(s, q), &w| {
                let w = w as f64;
                (s + w, q + w * w)
            });
            // Channels of different positions are taken as independent.
            if i < x.channels() {
                mean += sum * x.mean[i];
                var += squares * x.std[i] * x.std[i];
            }
        }
        spread.mean.push(mean);
        spread.std.push(var.sqrt());
    }
    spread
}

/// A padded map: a mixture of the input's values and the pad values.
pub fn through_pad(x: &Spread, pads: &[usize; 4], fill: &[f64], shape: &Shape) -> Spread {
    let (h, w) = (shape[2] as f64, shape[3] as f64);
    let inside = h * w / ((h + (pads[0] + pads[2]) as f64) * (w + (pads[1] + pads[3]) as f64));
    let mut out = x.clone();
    for c in 0..x.channels() {
        let f = fill.get(c).copied().unwrap_or(0.0);
        let (m, d) = (x.mean[c], x.std[c]);
        let mean = inside * m + (1.0 - inside) * f;
        let square = inside * (m * m + d * d) + (1.0 - inside) * f * f;
        out.mean[c] = mean;
        out.std[c] = (square - mean * mean).max(0.0).sqrt();
    }
    out
}

/// The spread after an operator without parameters.
pub fn through_op(op: &Op, inputs: &[&Spread], input_shapes: &[&Shape], out: &Shape) -> Spread {
    let x = inputs[0];
    match op {
        Op::Activation(a) => x.per_channel(|m, d| through_activation(a, m, d)),
        Op::Add => Spread {
            mean: (0..x.channels())
                .map(|c| inputs.iter().map(|s| s.mean[c]).sum())
                .collect(),
            std: (0..x.channels())
                .map(|c| {
                    inputs
                        .iter()
                        .map(|s| s.std[c] * s.std[c])
                        .sum::<f64>()
                        .sqrt()
                })
                .collect(),
        },
        Op::Mul => {
            let (a, b) = (inputs[0], inputs[1]);
            let channels = a.channels().max(b.channels());
            let at = |s: &Spread, c: usize| {
                (
                    s.mean[c.min(s.channels() - 1)],
                    s.std[c.min(s.channels() - 1)],
                )
            };
            let (mean, std) = (0..channels)
                .map(|c| {
                    let ((ma, da), (mb, db)) = (at(a, c), at(b, c));
                    let square = (ma * ma + da * da) * (mb * mb + db * db);
                    let mean = ma * mb;
                    (mean, (square - mean * mean).max(0.0).sqrt())
                })
                .unzip();
            Spread { mean, std }
        }
        Op::Concat => Spread::concat(inputs),
        Op::MaxPool(p) => {
            // The largest of k values sits about one standard deviation above their mean.
            let k = (p.kernel[0] * p.kernel[1]) as f64;
            let lift = 0.8 * k.ln().max(0.0).sqrt();
            x.per_channel(|m, d| (m + lift * d, 0.6 * d))
        }
        Op::AvgPool(p) => {
            let k = (p.kernel[0] * p.kernel[1]) as f64;
            let padded = p.count_include_pad && p.pad.iter().any(|&q| q > 0);
            let inside = if padded { 0.75 } else { 1.0 };
            // Neighbouring values are correlated: averaging shrinks the spread less than √k.
            x.per_channel(|m, d| (inside * m, d / k.powf(0.25)))
        }
        Op::GlobalAvgPool => {
            let k = (input_shapes[0][2] * input_shapes[0][3]) as f64;
            x.per_channel(|m, d| (m, d / k.powf(0.25)))
        }
        Op::Pad {
            pads, value, fill, ..
        } => {
            debug_assert!(!fill, "pads with fills need their parameters: through_node");
            through_pad(x, pads, &vec![*value; x.channels()], input_shapes[0])
        }
        Op::Flatten => {
            let per_channel: usize = input_shapes[0][2..].iter().product();
            let mut spread = Spread {
                mean: Vec::with_capacity(out[1]),
                std: Vec::with_capacity(out[1]),
            };
            for c in 0..x.channels() {
                for _ in 0..per_channel {
                    spread.mean.push(x.mean[c]);
                    spread.std.push(x.std[c]);
                }
            }
            spread
        }
        Op::Softmax => {
            let share = 1.0 / x.channels().max(1) as f64;
            Spread {
                mean: vec![share; x.channels()],
                std: vec![share; x.channels()],
            }
        }
        Op::Identity | Op::Dropout => x.clone(),
        // Parameterised operators are handled by `through_node`.
        Op::Conv2d(_) | Op::Dense { .. } | Op::BatchNorm { .. } | Op::Affine => x.clone(),
    }
}

/// Mean and standard deviation of `a(z)` for `z ~ N(m, d²)`, by quadrature on a fixed grid.
fn through_activation(a: &Activation, m: f64, d: f64) -> (f64, f64) {
    const STEPS: i32 = 24;
    let (mut total, mut mean, mut square) = (0.0, 0.0, 0.0);
    for k in -STEPS..=STEPS {
        let z = 3.5 * k as f64 / STEPS as f64;
        let weight = (-0.5 * z * z).exp();
        let v = a.apply(m + d * z);
        total += weight;
        mean += weight * v;
        square += weight * v * v;
    }
    let (mean, square) = (mean / total, square / total);
    (mean, (square - mean * mean).max(0.0).sqrt())
}

/// The amplification of an affine node computing `map(x)`: the magnitude of `scale·x` over
/// that of the result, the largest over channels. A channel whose scale is 0 adds nothing.
pub fn map_amplification(map: &ChannelMap, x: &Spread) -> f64 {
    let out = x.mapped(map);
    (0..map.len())
        .map(|c| ratio(map.scale[c].abs() * x.rms(c), out.rms(c)))
        .fold(0.0, f64::max)
}

/// The amplification of layer `node` (conv or dense) reading `x` after absorbing `before` on
/// its input channels, with pad fill `fill` (the values it pads `x` with after the fold): per
/// output channel, `Σ|W|·|s|·max(rms(x), |fill|) + |b'|` (what the folded layer adds up) over
/// `Σ|W|·rms(before(x)) + |b|` (what the unfolded layer adds up); the largest over channels.
pub fn layer_amplification(
    graph: &Graph,
    node: &Node,
    before: &ChannelMap,
    fill: Option<&[f64]>,
    x: &Spread,
) -> f64 {
    let Some(weight) = graph.param(node, "weight") else {
        return 1.0;
    };
    let bias = |o: usize| graph.param(node, "bias").map_or(0.0, |b| b.data[o] as f64);
    let (outs, in_per_group) = (weight.shape[0], weight.shape[1]);
    let taps: usize = weight.shape[2..].iter().product();
    let groups = match &node.op {
        Op::Conv2d(c) => c.groups,
        _ => 1,
    };
    let out_per_group = outs / groups;
    let unfolded_in = x.mapped(before);
    let mut worst: f64 = 0.0;
    for o in 0..outs {
        let group = o / out_per_group;
        let (mut folded, mut unfolded, mut folded_bias) = (0.0, bias(o).abs(), bias(o));
        for local in 0..in_per_group {
            let i = group * in_per_group + local;
            let row = &weight.data[(o * in_per_group + local) * taps..][..taps];
            let (abs_sum, sum) = row.iter().fold((0.0, 0.0), |(a, s), &w| {
                (a + (w as f64).abs(), s + w as f64)
            });
            let stored = fill.map_or(x.rms(i), |f| x.rms(i).max(f[i].abs()));
            folded += abs_sum * before.scale[i].abs() * stored;
            unfolded += abs_sum * unfolded_in.rms(i);
            folded_bias += sum * before.shift[i];
        }
        worst = worst.max(ratio(folded + folded_bias.abs(), unfolded));
    }
    worst
}

/// `num / den`, with 0/0 = 0 and anything else over 0 infinite.
fn ratio(num: f64, den: f64) -> f64 {
    if num == 0.0 {
        0.0
    } else if den > 0.0 {
        num / den
    } else {
        f64::INFINITY
    }
}

/// Whether every value rounds to a finite f32 (a fill of `−t/s` with a subnormal `s` does not).
pub fn fits_f32(values: impl IntoIterator<Item = f64>) -> bool {
    values.into_iter().all(|v| (v as f32).is_finite())
}

/// A fold declined because it would not be exact in f32.
#[derive(Clone, Debug, PartialEq)]
pub struct IllConditioned {
    /// The amplification measured (infinite when a value overflows f32).
    pub factor: f64,
}

impl std::fmt::Display for IllConditioned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.factor.is_finite() {
            write!(
                f,
                "ill-conditioned in f32: it would amplify rounding {:.1e}x (budget {BUDGET}x)",
                self.factor
            )
        } else {
            write!(f, "ill-conditioned in f32: a folded value overflows f32")
        }
    }
}

/// `Ok` when `factor` is within the budget.
pub fn check(factor: f64) -> Result<(), IllConditioned> {
    if factor <= BUDGET {
        Ok(())
    } else {
        Err(IllConditioned { factor })
    }
}
