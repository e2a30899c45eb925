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

/// The budget at the border positions where a padded conv reads a pad fill `−t/s` that a fold
/// gave it. There the fill's terms cancel the bias's `Σ W·t` and the error concentrates on a
/// few positions, which decide a max-norm error alone (fuzz seed 4273: a border factor of 4.3
/// gave 50 times the unfolded model's output error). Declining costs a map at most: the BN
/// stays, or only its scale folds (fill 0, factor 1) and its shift stays.
pub const FILL_BUDGET: f64 = 2.0;

/// Per channel: estimated mean and standard deviation of a tensor's values, in the bulk of
/// the tensor and at its edges. The edges are the positions a padded conv computes from
/// padding alone (or partly): there a channel can be far smaller than in the bulk (a 1x1 conv
/// with padding is its bias there), and a rounding that is small against the bulk is not
/// small against them.
#[derive(Clone, Debug, PartialEq)]
pub struct Spread {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub edge_mean: Vec<f64>,
    pub edge_std: Vec<f64>,
}

impl Spread {
    /// Mean 0, standard deviation 1 on every channel: what a graph input is assumed to carry.
    pub fn unit(channels: usize) -> Spread {
        Spread::uniform(vec![0.0; channels], vec![1.0; channels])
    }

    /// The same moments in the bulk and at the edges.
    fn uniform(mean: Vec<f64>, std: Vec<f64>) -> Spread {
        Spread {
            edge_mean: mean.clone(),
            edge_std: std.clone(),
            mean,
            std,
        }
    }

    /// The bulk and the edges as two spreads of their own.
    fn parts(&self) -> [Spread; 2] {
        [
            Spread::uniform(self.mean.clone(), self.std.clone()),
            Spread::uniform(self.edge_mean.clone(), self.edge_std.clone()),
        ]
    }

    /// The bulk of `bulk` and the edges of `edge`.
    fn join(bulk: Spread, edge: Spread) -> Spread {
        Spread {
            mean: bulk.mean,
            std: bulk.std,
            edge_mean: edge.mean,
            edge_std: edge.std,
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
        let affine = |mean: &[f64], std: &[f64]| -> (Vec<f64>, Vec<f64>) {
            (0..mean.len())
                .map(|c| {
                    (
                        map.scale[c] * mean[c] + map.shift[c],
                        map.scale[c].abs() * std[c],
                    )
                })
                .unzip()
        };
        let (mean, std) = affine(&self.mean, &self.std);
        let (edge_mean, edge_std) = affine(&self.edge_mean, &self.edge_std);
        Spread {
            mean,
            std,
            edge_mean,
            edge_std,
        }
    }

    fn concat(parts: &[&Spread]) -> Spread {
        let cat = |f: fn(&Spread) -> &Vec<f64>| -> Vec<f64> {
            parts.iter().flat_map(|p| f(p).iter().copied()).collect()
        };
        Spread {
            mean: cat(|p| &p.mean),
            std: cat(|p| &p.std),
            edge_mean: cat(|p| &p.edge_mean),
            edge_std: cat(|p| &p.edge_std),
        }
    }

    fn per_channel(&self, f: impl Fn(f64, f64) -> (f64, f64)) -> Spread {
        let apply = |mean: &[f64], std: &[f64]| -> (Vec<f64>, Vec<f64>) {
            mean.iter().zip(std).map(|(&m, &d)| f(m, d)).unzip()
        };
        let (mean, std) = apply(&self.mean, &self.std);
        let (edge_mean, edge_std) = apply(&self.edge_mean, &self.edge_std);
        Spread {
            mean,
            std,
            edge_mean,
            edge_std,
        }
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
        Op::Conv2d(_) | Op::Dense { .. } | Op::ConvTranspose2d(_) => {
            through_layer(graph, node, inputs[0], input_shapes[0])
        }
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
        // Normalised values (mean 0, deviation 1 over channels) through weight and bias.
        Op::LayerNorm { .. } => {
            let c = out_shape[1];
            let w = param("weight").unwrap_or_else(|| vec![1.0; c]);
            let b = param("bias").unwrap_or_else(|| vec![0.0; c]);
            Spread::uniform(b, w.iter().map(|v| v.abs()).collect())
        }
        Op::Pad {
            fill: true, pads, ..
        } => {
            let fill = param("pad_fill").unwrap_or_default();
            through_pad(inputs[0], pads, &fill, input_shapes[0])
        }
        op => through_op(op, inputs, input_shapes, out_shape),
    }
}

/// The spread of a conv or dense layer's output (its own weights and bias). At the edges a
/// padded conv reads only part of its taps from the input.
pub fn through_layer(graph: &Graph, node: &Node, x: &Spread, input_shape: &Shape) -> Spread {
    let [bulk, edge] = x.parts();
    let inside = match &node.op {
        Op::Conv2d(c) => taps_inside(c, input_shape),
        _ => 1.0,
    };
    let bulk_share = transposed_share(&node.op);
    Spread::join(
        layer_part(graph, node, &bulk, bulk_share),
        layer_part(graph, node, &edge, inside * bulk_share),
    )
}

/// The share of a layer's taps one output position receives, on average: `1/(sh·sw)` for a
/// transposed conv (each stride phase gets its own taps), 1 for the others.
fn transposed_share(op: &Op) -> f64 {
    match op {
        Op::ConvTranspose2d(c) => 1.0 / (c.stride[0] * c.stride[1]) as f64,
        _ => 1.0,
    }
}

/// The smallest share of a padded conv's taps that read the input, over its output positions.
fn taps_inside(c: &bnc_ir::Conv2d, shape: &Shape) -> f64 {
    let axis = |size: usize, before: usize, after: usize, k: usize, stride: usize, dil: usize| {
        let outs = bnc_ir::op::window_out(size, before, after, k, stride, dil, false).unwrap_or(1);
        (0..outs)
            .map(|o| {
                let start = (o * stride) as isize - before as isize;
                let inside = (0..k)
                    .filter(|&t| (0..size as isize).contains(&(start + (t * dil) as isize)))
                    .count();
                inside as f64 / k as f64
            })
            .fold(1.0, f64::min)
    };
    if shape.len() < 4 {
        return 1.0;
    }
    let h = axis(
        shape[2],
        c.pad[0],
        c.pad[2],
        c.kernel[0],
        c.stride[0],
        c.dilation[0],
    );
    let w = axis(
        shape[3],
        c.pad[1],
        c.pad[3],
        c.kernel[1],
        c.stride[1],
        c.dilation[1],
    );
    h * w
}

/// What a layer's weights say about one (output channel, input channel) pair: the sum, the
/// sum of absolute values and the sum of squares of the kernel taps between them.
struct Taps {
    sum: f64,
    abs_sum: f64,
    squares: f64,
}

impl Taps {
    /// The sums over one kernel's weights.
    fn of(row: &[f32]) -> Taps {
        let mut t = Taps {
            sum: 0.0,
            abs_sum: 0.0,
            squares: 0.0,
        };
        for &w in row {
            let w = w as f64;
            t.sum += w;
            t.abs_sum += w.abs();
            t.squares += w * w;
        }
        t
    }
}

/// The taps of a conv or dense layer by output channel: `(input channel, taps)` for the input
/// channels of its group; `None` without weights.
fn taps_by_output(graph: &Graph, node: &Node) -> Option<Vec<Vec<(usize, Taps)>>> {
    let weight = graph.param(node, "weight")?;
    let taps: usize = weight.shape[2..].iter().product();
    if let Op::ConvTranspose2d(c) = &node.op {
        // Weight [in, out / groups, kh, kw]: output channel o reads the input channels of
        // its group.
        let (ins, out_per_group) = (weight.shape[0], weight.shape[1]);
        let in_per_group = ins / c.groups;
        return Some(
            (0..c.out_channels)
                .map(|o| {
                    let (group, local) = (o / out_per_group, o % out_per_group);
                    (0..in_per_group)
                        .map(|li| {
                            let i = group * in_per_group + li;
                            let row = &weight.data[(i * out_per_group + local) * taps..][..taps];
                            (i, Taps::of(row))
                        })
                        .collect()
                })
                .collect(),
        );
    }
    let (outs, in_per_group) = (weight.shape[0], weight.shape[1]);
    let groups = match &node.op {
        Op::Conv2d(c) => c.groups,
        _ => 1,
    };
    let out_per_group = outs / groups;
    Some(
        (0..outs)
            .map(|o| {
                let group = o / out_per_group;
                (0..in_per_group)
                    .map(|local| {
                        let row = &weight.data[(o * in_per_group + local) * taps..][..taps];
                        (group * in_per_group + local, Taps::of(row))
                    })
                    .collect()
            })
            .collect(),
    )
}

/// One part (bulk or edges) through a layer of which a share `inside` of the taps reads `x`.
fn layer_part(graph: &Graph, node: &Node, x: &Spread, inside: f64) -> Spread {
    let Some(rows) = taps_by_output(graph, node) else {
        return x.clone();
    };
    let bias = graph.param(node, "bias");
    let (mut means, mut stds) = (
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
    );
    for (o, row) in rows.iter().enumerate() {
        let mut mean = bias.map_or(0.0, |b| b.data[o] as f64);
        let mut var = 0.0;
        for (i, t) in row {
            // Channels of different positions are taken as independent.
            if *i < x.channels() {
                mean += inside * t.sum * x.mean[*i];
                var += inside * t.squares * x.std[*i] * x.std[*i];
            }
        }
        means.push(mean);
        stds.push(var.sqrt());
    }
    Spread::uniform(means, stds)
}

/// A padded map: a mixture of the input's values and the pad values, in the bulk and at the
/// edges alike. (Which positions a later layer reads from padding alone is that layer's
/// business: a padded conv counts its own taps, and a pad node is read through windows that
/// mix it with the input.)
pub fn through_pad(x: &Spread, pads: &[usize; 4], fill: &[f64], shape: &Shape) -> Spread {
    let [bulk, edge] = x.parts();
    Spread::join(
        pad_mixture(&bulk, pads, fill, shape),
        pad_mixture(&edge, pads, fill, shape),
    )
}

fn pad_mixture(x: &Spread, pads: &[usize; 4], fill: &[f64], shape: &Shape) -> Spread {
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
    if let Op::Pad {
        pads, value, fill, ..
    } = op
    {
        debug_assert!(!fill, "pads with fills need their parameters: through_node");
        let x = inputs[0];
        return through_pad(x, pads, &vec![*value; x.channels()], input_shapes[0]);
    }
    let parts: Vec<[Spread; 2]> = inputs.iter().map(|s| s.parts()).collect();
    let part = |k: usize| {
        let inputs: Vec<&Spread> = parts.iter().map(|p| &p[k]).collect();
        op_part(op, &inputs, input_shapes, out)
    };
    Spread::join(part(0), part(1))
}

/// One part (bulk or edges) through an operator without parameters.
fn op_part(op: &Op, inputs: &[&Spread], input_shapes: &[&Shape], out: &Shape) -> Spread {
    let x = inputs[0];
    match op {
        Op::Activation(a) => x.per_channel(|m, d| through_activation(a, m, d)),
        Op::Add => Spread::uniform(
            (0..x.channels())
                .map(|c| inputs.iter().map(|s| s.mean[c]).sum())
                .collect(),
            (0..x.channels())
                .map(|c| {
                    inputs
                        .iter()
                        .map(|s| s.std[c] * s.std[c])
                        .sum::<f64>()
                        .sqrt()
                })
                .collect(),
        ),

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
            Spread::uniform(mean, std)
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
        Op::Pad { .. } => x.clone(),
        // Nearest copies values; bilinear averages two or four neighbours, which are
        // correlated enough that the spread stays about the input's (as for a small pool
        // window, but without shrinking it: a resize to a larger size mostly interpolates
        // between near-equal values).
        Op::Resize(_) => x.clone(),
        Op::Flatten => {
            let per_channel: usize = input_shapes[0][2..].iter().product();
            let (mut mean, mut std) = (Vec::with_capacity(out[1]), Vec::with_capacity(out[1]));
            for c in 0..x.channels() {
                for _ in 0..per_channel {
                    mean.push(x.mean[c]);
                    std.push(x.std[c]);
                }
            }
            Spread::uniform(mean, std)
        }
        Op::Softmax => {
            let share = 1.0 / x.channels().max(1) as f64;
            Spread::uniform(vec![share; x.channels()], vec![share; x.channels()])
        }
        Op::Identity | Op::Dropout => x.clone(),
        // They copy values: each output channel carries its source channel's moments.
        Op::ChannelShuffle { groups } => {
            let c = x.channels();
            let src = |o| bnc_ir::shuffle_source(c, *groups, o);
            Spread {
                mean: (0..c).map(|o| x.mean[src(o)]).collect(),
                std: (0..c).map(|o| x.std[src(o)]).collect(),
                edge_mean: (0..c).map(|o| x.edge_mean[src(o)]).collect(),
                edge_std: (0..c).map(|o| x.edge_std[src(o)]).collect(),
            }
        }
        Op::SliceChannels { start, end } => Spread {
            mean: x.mean[*start..*end].to_vec(),
            std: x.std[*start..*end].to_vec(),
            edge_mean: x.edge_mean[*start..*end].to_vec(),
            edge_std: x.edge_std[*start..*end].to_vec(),
        },
        // The largest of H·W values: as a maxpool whose window is the whole plane.
        Op::GlobalMaxPool => {
            let k = (input_shapes[0][2] * input_shapes[0][3]) as f64;
            let lift = 0.8 * k.ln().max(0.0).sqrt();
            x.per_channel(|m, d| (m + lift * d, 0.6 * d))
        }
        // Parameterised operators are handled by `through_node`.
        Op::Conv2d(_)
        | Op::Dense { .. }
        | Op::BatchNorm { .. }
        | Op::Affine
        | Op::ConvTranspose2d(_)
        | Op::LayerNorm { .. } => x.clone(),
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
    map_amplifications(map, x).into_iter().fold(0.0, f64::max)
}

/// [`map_amplification`] per channel (the worse of the bulk and the edges).
pub fn map_amplifications(map: &ChannelMap, x: &Spread) -> Vec<f64> {
    let parts = x.parts().map(|x| {
        let out = x.mapped(map);
        (0..map.len())
            .map(|c| ratio(map.scale[c].abs() * x.rms(c), out.rms(c)))
            .collect::<Vec<f64>>()
    });
    parts[0]
        .iter()
        .zip(&parts[1])
        .map(|(a, b)| a.max(*b))
        .collect()
}

/// The amplification of an affine node that reads `stored` and applies `before` then `own`,
/// relative to `own` applied to the tensor it read before the fold (`before(stored)`), channel
/// by channel: what a compensated affine (`B2∘B1⁻¹`) adds over the BN it replaces.
pub fn affine_amplification(before: &ChannelMap, own: &ChannelMap, stored: &Spread) -> f64 {
    stored
        .parts()
        .iter()
        .flat_map(|part| {
            let folded = map_amplifications(&before.then(own), part);
            let unfolded = map_amplifications(own, &part.mapped(before));
            folded
                .into_iter()
                .zip(unfolded)
                .map(|(f, u)| ratio(f, u.max(1.0)))
                .collect::<Vec<f64>>()
        })
        .fold(0.0, f64::max)
}

/// Whether layer `node` (conv or dense) reading `x` after absorbing `before` on its input
/// channels, with pad fill `fill` (the values it pads `x` with after the fold), stays exact in
/// f32. Its amplification, per output channel, is `Σ|W|·|s|·max(rms(x), |fill|) + |b'|` (what
/// the folded layer adds up) over `Σ|W|·rms(before(x)) + |b|` (what the unfolded layer adds
/// up), the largest over channels: within [`BUDGET`] in the bulk, and at the edges too unless
/// they read a non-zero fill, where [`FILL_BUDGET`] applies.
pub fn check_layer(
    graph: &Graph,
    node: &Node,
    before: &ChannelMap,
    fill: Option<&[f64]>,
    x: &Spread,
    input_shape: &Shape,
) -> Result<(), IllConditioned> {
    // At the edges a padded conv reads its pad fill on a share of its taps.
    let inside = match &node.op {
        Op::Conv2d(c) => taps_inside(c, input_shape),
        _ => 1.0,
    };
    let [bulk, edge] = x.parts();
    let share = transposed_share(&node.op);
    check_within(
        layer_part_amplification(graph, node, before, fill, &bulk, share),
        BUDGET,
    )?;
    let reads_fill = inside < 1.0 && fill.is_some_and(|f| f.iter().any(|&v| v != 0.0));
    check_within(
        layer_part_amplification(graph, node, before, fill, &edge, inside * share),
        if reads_fill { FILL_BUDGET } else { BUDGET },
    )
}

/// One part of [`check_layer`]'s amplification, where a share `inside` of the taps reads `x` and
/// the rest the pad fill.
fn layer_part_amplification(
    graph: &Graph,
    node: &Node,
    before: &ChannelMap,
    fill: Option<&[f64]>,
    x: &Spread,
    inside: f64,
) -> f64 {
    let old_fill = graph.param(node, "pad_fill");
    let Some(rows) = taps_by_output(graph, node) else {
        return 1.0;
    };
    let bias = |o: usize| graph.param(node, "bias").map_or(0.0, |b| b.data[o] as f64);
    let unfolded_in = x.mapped(before);
    let outside = 1.0 - inside;
    let mut worst: f64 = 0.0;
    for (o, row) in rows.iter().enumerate() {
        let (mut folded, mut unfolded, mut folded_bias) = (0.0, bias(o).abs(), bias(o));
        for &(i, ref t) in row {
            let new_fill = fill.map_or(0.0, |f| f[i].abs());
            let old_fill = old_fill.map_or(0.0, |f| (f.data[i] as f64).abs());
            folded += t.abs_sum * before.scale[i].abs() * (inside * x.rms(i) + outside * new_fill);
            unfolded += t.abs_sum * (inside * unfolded_in.rms(i) + outside * old_fill);
            folded_bias += t.sum * before.shift[i];
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

/// The largest magnitude a value a fold creates (a weight, a pad fill `−t/s`, a compensated
/// tensor) may have: f32's largest over 2²⁴, so that a sum of up to 2²⁴ such terms (a conv's
/// taps, a pool's window) cannot overflow where the unfolded model's sum did not.
pub const LARGEST_FOLDED: f64 = f32::MAX as f64 / 16_777_216.0;

/// Whether every value stays within [`LARGEST_FOLDED`] (a fill of `−t/s` with a tiny `s`
/// does not: summed by the pool or conv that reads it, it overflows).
pub fn fits_f32(values: impl IntoIterator<Item = f64>) -> bool {
    values.into_iter().all(|v| v.abs() <= LARGEST_FOLDED)
}

/// Whether a tensor of this spread stays within [`LARGEST_FOLDED`], in the bulk and at the
/// edges (six standard deviations from the mean).
pub fn spread_fits_f32(x: &Spread) -> bool {
    x.parts()
        .iter()
        .all(|part| fits_f32((0..part.channels()).map(|c| part.mean[c].abs() + 6.0 * part.std[c])))
}

/// Whether every factor (a weight, a scale) is 0 or rounds to a normal f32. Compiled kernels
/// flush subnormals to zero (FTZ/DAZ), so a factor `W·s` that becomes subnormal is a factor 0
/// there: harmless in a BN that scales by it, but not after a fold that divides the same
/// channel by `s` elsewhere.
pub fn factors_normal(values: impl IntoIterator<Item = f64>) -> bool {
    values
        .into_iter()
        .all(|v| v == 0.0 || (v as f32).is_normal())
}

/// A fold declined because it would not be exact in f32.
#[derive(Clone, Debug, PartialEq)]
pub struct IllConditioned {
    /// The amplification measured (infinite when a value overflows f32).
    pub factor: f64,
    /// The budget it exceeded.
    pub budget: f64,
}

impl IllConditioned {
    /// A folded value that would overflow f32 (or leave no room for the sums that read it).
    pub fn overflow() -> IllConditioned {
        IllConditioned {
            factor: f64::INFINITY,
            budget: BUDGET,
        }
    }
}

impl std::fmt::Display for IllConditioned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.factor.is_finite() {
            write!(
                f,
                "ill-conditioned in f32: it would amplify rounding {:.1e}x (budget {}x)",
                self.factor, self.budget
            )
        } else {
            write!(f, "ill-conditioned in f32: a folded value overflows f32")
        }
    }
}

/// `Ok` when `factor` is within [`BUDGET`].
pub fn check(factor: f64) -> Result<(), IllConditioned> {
    check_within(factor, BUDGET)
}

/// `Ok` when `factor` is within `budget`.
pub fn check_within(factor: f64, budget: f64) -> Result<(), IllConditioned> {
    if factor <= budget {
        Ok(())
    } else {
        Err(IllConditioned { factor, budget })
    }
}
