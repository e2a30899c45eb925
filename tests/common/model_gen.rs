//! A seeded generator of small random models for the folding fuzzer (`tests/fold_fuzz.rs`),
//! biased toward the places where folding a batch-norm is hard: BNs after add, concat,
//! activations, pools and pads, on the graph input, before padded convs, in chains, on shared
//! values and with shared parameters; depthwise, grouped, strided and dilated convs;
//! squeeze-excite, pre-activation residual and dense-net blocks; flatten into dense;
//! ShuffleNet's channel operators; BNs around conv_transpose2d (uniform-shift and phased
//! geometries), layer_norm, gelu (and ConvNeXt blocks), global_maxpool, sqrt and pow.
//!
//! A model is emitted as `.nn` text with `weights random(seed = ..)`; [`Generated::build`]
//! loads it and then overwrites the BN parameters with extreme per-channel values (γ negative,
//! zero, tiny, subnormal; running_var down to 1e-8; |mean| up to 1e4; β up to 10).

use std::fmt::Write;

use bnc::ir::ConvTranspose2d;
use bnc::ir::op::window_out;
use bnc::ir::{Graph, Tensor};

use super::fold::Rng;

/// The largest channel count a concat may grow to (convs produce at most 8).
const MAX_CONCAT_CHANNELS: usize = 16;

/// The parameters of one BN prefix (several BNs may share it through `params = "..."`).
#[derive(Clone, Debug)]
pub struct BnParams {
    pub prefix: String,
    pub channels: usize,
}

/// A generated model: its source text and the distinct BN parameter prefixes in it.
#[derive(Clone, Debug)]
pub struct Generated {
    pub seed: u64,
    pub text: String,
    pub batchnorms: Vec<BnParams>,
    /// How many `batchnorm` nodes the text has (shared prefixes counted once per node).
    pub batchnorm_nodes: usize,
}

impl Generated {
    /// Loads the model and gives its BNs extreme parameters. Returns the graph and one line
    /// per BN prefix describing the values written.
    pub fn build(&self) -> Result<(Graph, Vec<String>), String> {
        let mut graph =
            bnc::load_str(&self.text, "fuzz.nn", &super::root()).map_err(|e| e.render(false))?;
        let mut rng = Rng::new(self.seed ^ 0x5EED_BA7C_4000_0001);
        let mut described = Vec::new();
        for bn in &self.batchnorms {
            described.push(extreme_parameters(&mut graph, bn, &mut rng));
        }
        Ok((graph, described))
    }
}

/// Generates the model for `seed` (the same text on every machine).
pub fn generate(seed: u64) -> Generated {
    let mut b = Builder::new(seed);
    b.model();
    Generated {
        seed,
        text: b.text,
        batchnorms: b.bns,
        batchnorm_nodes: b.bn_nodes,
    }
}

/// One value of the model: a feature map `[N, c, h, w]` or a vector `[N, c]`.
#[derive(Clone, Debug)]
struct Val {
    name: String,
    c: usize,
    /// `None` for a vector.
    hw: Option<(usize, usize)>,
    reads: usize,
}

/// The parameter shape of a conv, for sharing `params` between convs of the same shape.
#[derive(Clone, Debug, PartialEq)]
struct ConvKey {
    out: usize,
    c_per_group: usize,
    kernel: (usize, usize),
    bias: bool,
}

/// The parameter shape of a transposed conv: input channels, output channels, output
/// channels per group, kernel, bias.
type ConvtKey = (usize, usize, usize, (usize, usize), bool);

struct Builder {
    rng: Rng,
    seed: u64,
    batch: usize,
    text: String,
    values: Vec<Val>,
    bns: Vec<BnParams>,
    bn_nodes: usize,
    convs: Vec<(ConvKey, String)>,
    /// Transposed convs by parameter shape (input channels, output channels, output channels
    /// per group, kernel, bias), for sharing `params`.
    convts: Vec<(ConvtKey, String)>,
    counter: usize,
}

impl Builder {
    fn new(seed: u64) -> Builder {
        Builder {
            rng: Rng::new(seed),
            seed,
            batch: 1,
            text: String::new(),
            values: Vec::new(),
            bns: Vec::new(),
            bn_nodes: 0,
            convs: Vec::new(),
            convts: Vec::new(),
            counter: 0,
        }
    }

    fn model(&mut self) {
        self.batch = 1 + self.rng.below(2);
        let c0 = 1 + self.rng.below(8);
        let h = 1 + self.rng.below(9);
        // Mostly square images, sometimes not.
        let w = if self.rng.chance(0.7) {
            h
        } else {
            1 + self.rng.below(9)
        };
        let _ = write!(
            self.text,
            "model fuzz {{\n  weights random(seed = {})\n  input x: f32[{}, {c0}, {h}, {w}]\n",
            self.seed, self.batch
        );
        self.values.push(Val {
            name: "x".into(),
            c: c0,
            hw: Some((h, w)),
            reads: 0,
        });
        if self.rng.chance(0.35) {
            self.batchnorm(0);
        }
        let motifs = 3 + self.rng.below(8);
        for _ in 0..motifs {
            self.motif();
        }
        if self.bn_nodes == 0 {
            let m = self.pick_map();
            self.batchnorm(m);
        }
        self.outputs();
        self.text += "}\n";
    }

    /// One random construct, biased toward the hard places for folding.
    fn motif(&mut self) {
        match self.rng.below(20) {
            0..=3 => {
                // conv -> BN (-> activation): the ordinary case, with every kind of conv.
                let src = self.pick_map();
                let c = self.random_conv(src, None);
                let b = if self.rng.chance(0.75) {
                    self.batchnorm(c)
                } else {
                    c
                };
                if self.rng.chance(0.5) {
                    self.activation(b);
                }
            }
            4..=6 => {
                // An op, then a BN right after it.
                let src = self.pick_map();
                let v = match self.rng.below(7) {
                    0 => self.add(src),
                    1 => self.concat(src),
                    2 | 3 => self.activation(src),
                    4 => self.pool(src),
                    5 => self.pad(src),
                    _ => self.global_avgpool(src),
                };
                if self.rng.chance(0.8) {
                    self.batchnorm(v);
                }
            }
            7 => {
                // BN -> BN (-> BN) chain.
                let mut v = self.pick_any();
                for _ in 0..2 + self.rng.below(2) {
                    v = self.batchnorm(v);
                }
            }
            8 => {
                // BN before a padded conv.
                let src = self.pick_map();
                let b = self.batchnorm(src);
                let b = if self.rng.chance(0.3) {
                    self.activation(b)
                } else {
                    b
                };
                self.random_conv(b, Some(true));
            }
            9 => self.squeeze_excite(),
            10 => self.preact_residual(),
            11 => self.dense_chain(),
            12 => {
                // Two BNs reading one conv.
                let src = self.pick_map();
                let c = self.random_conv(src, None);
                self.batchnorm(c);
                let b2 = self.batchnorm(c);
                if self.rng.chance(0.5) {
                    self.activation(b2);
                }
            }
            13 => self.flatten_dense(),
            14 => {
                // One value read by several layers.
                let src = self.pick_map();
                self.batchnorm(src);
                self.random_conv(src, None);
                if self.rng.chance(0.5) {
                    self.activation(src);
                } else {
                    self.pool(src);
                }
            }
            15 => {
                let src = self.pick_map();
                self.add(src);
            }
            16 => {
                let src = self.pick_map();
                self.concat(src);
            }
            17 => {
                let src = self.pick_map();
                self.pool(src);
            }
            18 => {
                let src = self.pick_map();
                self.pad(src);
            }
            _ => {
                let src = self.pick_any();
                self.activation(src);
            }
        }
    }

    fn fresh(&mut self, stem: &str) -> String {
        self.counter += 1;
        format!("{stem}{}", self.counter)
    }

    /// Appends `name = expr` producing a value of `c` channels (and size `hw`, or a vector);
    /// marks `inputs` as read.
    fn bind(
        &mut self,
        stem: &str,
        expr: String,
        inputs: &[usize],
        c: usize,
        hw: Option<(usize, usize)>,
    ) -> usize {
        let name = self.fresh(stem);
        let _ = writeln!(self.text, "  {name} = {expr}");
        for &i in inputs {
            self.values[i].reads += 1;
        }
        self.values.push(Val {
            name,
            c,
            hw,
            reads: 0,
        });
        self.values.len() - 1
    }

    fn name(&self, i: usize) -> &str {
        &self.values[i].name
    }

    /// A value among the recent ones (70 %), or any earlier one (which makes it shared).
    fn pick_where(&mut self, ok: impl Fn(&Val) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.values.len())
            .filter(|&i| ok(&self.values[i]))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let n = candidates.len();
        let k = if self.rng.chance(0.7) {
            n - 1 - self.rng.below(n.min(3))
        } else {
            self.rng.below(n)
        };
        Some(candidates[k])
    }

    fn pick_map(&mut self) -> usize {
        self.pick_where(|v| v.hw.is_some())
            .expect("the input is a map")
    }

    fn pick_any(&mut self) -> usize {
        self.pick_where(|_| true).expect("the input exists")
    }

    fn batchnorm(&mut self, src: usize) -> usize {
        let (c, hw) = (self.values[src].c, self.values[src].hw);
        let mut attrs = String::new();
        match self.rng.below(10) {
            0 | 1 => attrs += ", eps = 0",
            2 => attrs += ", eps = 0.001",
            _ => {}
        }
        // Sometimes share the parameters of an earlier BN with the same channel count.
        let shared = self
            .bns
            .iter()
            .filter(|b| b.channels == c)
            .map(|b| b.prefix.clone())
            .collect::<Vec<_>>();
        let prefix = if !shared.is_empty() && self.rng.chance(0.15) {
            let p = shared[self.rng.below(shared.len())].clone();
            let _ = write!(attrs, ", params = \"{p}\"");
            Some(p)
        } else {
            None
        };
        let expr = format!("batchnorm({}{attrs})", self.name(src));
        let v = self.bind("bn", expr, &[src], c, hw);
        self.bn_nodes += 1;
        if prefix.is_none() {
            self.bns.push(BnParams {
                prefix: self.values[v].name.clone(),
                channels: c,
            });
        }
        v
    }

    fn activation(&mut self, src: usize) -> usize {
        let (c, hw) = (self.values[src].c, self.values[src].hw);
        let s = self.name(src).to_string();
        let expr = match self.rng.below(20) {
            0..=7 => format!("relu({s})"),
            8..=12 => {
                let alpha = ["0.01", "0.1", "0.2", "1.5", "-0.5"][self.rng.below(5)];
                format!("leaky_relu({s}, alpha = {alpha})")
            }
            13 => format!("relu6({s})"),
            14 => format!("clip({s}, min = -0.5, max = 2.5)"),
            15 => format!("sigmoid({s})"),
            16 => format!("silu({s})"),
            17 => format!("hardswish({s})"),
            18 => format!("tanh({s})"),
            _ => format!("hardsigmoid({s})"),
        };
        self.bind("a", expr, &[src], c, hw)
    }

    /// `add(src, other)` with another value of the same shape; a 1×1 conv of `src` when
    /// there is none.
    fn add(&mut self, src: usize) -> usize {
        let (c, hw) = (self.values[src].c, self.values[src].hw);
        let other = self
            .pick_where(|v| v.c == c && v.hw == hw)
            .filter(|&o| o != src || self.rng.chance(0.2));
        let other = match other {
            Some(o) => o,
            None => self.conv(src, c, (1, 1), (1, 1), [0; 4], 1, 1, true),
        };
        let (a, b) = if self.rng.chance(0.5) {
            (src, other)
        } else {
            (other, src)
        };
        let expr = format!("add({}, {})", self.name(a), self.name(b));
        self.bind("add", expr, &[a, b], c, hw)
    }

    /// `concat` of `src` with one or two other maps of the same size.
    fn concat(&mut self, src: usize) -> usize {
        let hw = self.values[src].hw;
        let mut parts = vec![src];
        let mut c = self.values[src].c;
        for _ in 0..1 + self.rng.below(2) {
            let room = MAX_CONCAT_CHANNELS.saturating_sub(c);
            let Some(o) = self.pick_where(|v| v.hw == hw && v.c <= room) else {
                break;
            };
            c += self.values[o].c;
            parts.push(o);
        }
        if parts.len() == 1 {
            // Nothing fits beside it: concat with a fresh conv of it.
            let out = 1 + self
                .rng
                .below(MAX_CONCAT_CHANNELS.saturating_sub(c).clamp(1, 4));
            let o = self.conv(src, out, (1, 1), (1, 1), [0; 4], 1, 1, true);
            c += out;
            parts.push(o);
        }
        if self.rng.chance(0.5) {
            parts.reverse();
        }
        let names: Vec<&str> = parts.iter().map(|&p| self.name(p)).collect();
        let expr = format!("concat({})", names.join(", "));
        self.bind("cat", expr, &parts, c, hw)
    }

    fn global_avgpool(&mut self, src: usize) -> usize {
        let c = self.values[src].c;
        let expr = format!("global_avgpool({})", self.name(src));
        self.bind("gap", expr, &[src], c, Some((1, 1)))
    }

    fn pool(&mut self, src: usize) -> usize {
        let (c, (h, w)) = (self.values[src].c, self.values[src].hw.expect("a map"));
        let max = self.rng.chance(0.45);
        let k = 2 + self.rng.below(2);
        let stride = [1, 2, k][self.rng.below(3)];
        let pad = self.rng.below(k / 2 + 1);
        let ceil = self.rng.chance(0.15);
        let out = |x: usize| window_out(x, pad, pad, k, stride, 1, ceil);
        let (k, stride, pad, ceil, oh, ow) = match (out(h), out(w)) {
            (Some(oh), Some(ow)) => (k, stride, pad, ceil, oh, ow),
            // Too small for the window: a 1×1 window always fits.
            _ => (1, 1, 0, false, h, w),
        };
        let mut attrs = format!("kernel = {k}, stride = {stride}");
        if pad > 0 {
            let _ = write!(attrs, ", pad = {pad}");
        }
        if ceil {
            attrs += ", ceil_mode = true";
        }
        let op = if max {
            "maxpool"
        } else {
            let count = self.rng.chance(0.5);
            let _ = write!(attrs, ", count_include_pad = {count}");
            "avgpool"
        };
        let expr = format!("{op}({}, {attrs})", self.name(src));
        self.bind("pool", expr, &[src], c, Some((oh, ow)))
    }

    fn pad(&mut self, src: usize) -> usize {
        let (c, (h, w)) = (self.values[src].c, self.values[src].hw.expect("a map"));
        let mut pads = [0; 4];
        for p in &mut pads {
            *p = self.rng.below(3);
        }
        if pads == [0; 4] {
            pads[self.rng.below(4)] = 1;
        }
        let value = ["0", "0", "0.5", "-1.0", "2.5", "-3"][self.rng.below(6)];
        let value_attr = if value == "0" && self.rng.chance(0.5) {
            String::new()
        } else {
            format!(", value = {value}")
        };
        let expr = format!(
            "pad({}, pads = [{}, {}, {}, {}]{value_attr})",
            self.name(src),
            pads[0],
            pads[1],
            pads[2],
            pads[3]
        );
        self.bind(
            "pad",
            expr,
            &[src],
            c,
            Some((h + pads[0] + pads[2], w + pads[1] + pads[3])),
        )
    }

    /// Groups and output channels of a layer on `c` channels, from one draw of ten: two
    /// depthwise (channel multiplier 1, or 2 for up to 4 channels), `grouped` grouped (a
    /// proper divisor of `c`, when there is one), the rest ungrouped; at most 8 outputs
    /// otherwise.
    fn groups_and_out(&mut self, c: usize, grouped: usize) -> (usize, usize) {
        let draw = self.rng.below(10);
        if draw < 2 {
            let multiplier = if c <= 4 && self.rng.chance(0.5) { 2 } else { 1 };
            return (c, multiplier * c);
        }
        if draw < 2 + grouped {
            let divisors: Vec<usize> = (2..c).filter(|&g| c.is_multiple_of(g)).collect();
            if !divisors.is_empty() {
                let g = divisors[self.rng.below(divisors.len())];
                return (g, g * (1 + self.rng.below((8 / g).max(1))));
            }
        }
        (1, 1 + self.rng.below(8))
    }

    /// A conv of `src` with random kernel, padding (`padded = Some(true)` forces some),
    /// stride, dilation and groups.
    fn random_conv(&mut self, src: usize, padded: Option<bool>) -> usize {
        let c = self.values[src].c;
        let (groups, out) = self.groups_and_out(c, 2);
        let kernel = match self.rng.below(10) {
            0..=2 => (1, 1),
            3 => (2, 2),
            4 => (1, 3),
            _ => (3, 3),
        };
        let pad = if padded == Some(true) || self.rng.chance(0.6) {
            match self.rng.below(6) {
                0 => [1, 0, 0, 1],
                1 => [2, 2, 2, 2],
                2 => [0, 1, 0, 1],
                _ => [1; 4],
            }
        } else {
            [0; 4]
        };
        let stride = if self.rng.chance(0.2) { (2, 2) } else { (1, 1) };
        let dilation = if self.rng.chance(0.15) { 2 } else { 1 };
        let bias = self.rng.chance(0.5);
        self.conv(src, out, kernel, stride, pad, dilation, groups, bias)
    }

    /// Appends a conv; falls back to a 1×1 unpadded window when the asked one does not fit.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        src: usize,
        out: usize,
        kernel: (usize, usize),
        stride: (usize, usize),
        pad: [usize; 4],
        dilation: usize,
        groups: usize,
        bias: bool,
    ) -> usize {
        let (c, (h, w)) = (self.values[src].c, self.values[src].hw.expect("a map"));
        let fit = |kernel: (usize, usize), stride: (usize, usize), pad: [usize; 4], dilation| {
            Some((
                window_out(h, pad[0], pad[2], kernel.0, stride.0, dilation, false)?,
                window_out(w, pad[1], pad[3], kernel.1, stride.1, dilation, false)?,
            ))
        };
        let (kernel, stride, pad, dilation, (oh, ow)) = match fit(kernel, stride, pad, dilation) {
            Some(size) => (kernel, stride, pad, dilation, size),
            None => (
                (1, 1),
                stride,
                [0; 4],
                1,
                fit((1, 1), stride, [0; 4], 1).unwrap(),
            ),
        };
        let mut attrs = format!("out = {out}, kernel = {}", list_attr(&[kernel.0, kernel.1]));
        if stride != (1, 1) {
            let _ = write!(attrs, ", stride = {}", stride.0);
        }
        if pad != [0; 4] {
            let _ = write!(attrs, ", pad = {}", list_attr(&pad));
        }
        if dilation != 1 {
            let _ = write!(attrs, ", dilation = {dilation}");
        }
        let key = ConvKey {
            out,
            c_per_group: c / groups,
            kernel,
            bias,
        };
        let layer = Layer {
            op: "conv2d",
            stem: "conv",
            attrs,
            groups,
            bias,
        };
        self.bind_layer(|b| &mut b.convs, key, 0.3, layer, src, out, (oh, ow))
    }

    /// Binds `layer` on `src`, giving it the parameters of an earlier layer of the same
    /// `key` in `registry` with probability `chance` (`shared_params`), else registering it
    /// there.
    #[allow(clippy::too_many_arguments)]
    fn bind_layer<K: PartialEq>(
        &mut self,
        registry: fn(&mut Builder) -> &mut Vec<(K, String)>,
        key: K,
        chance: f64,
        layer: Layer,
        src: usize,
        out: usize,
        hw: (usize, usize),
    ) -> usize {
        let mut attrs = layer.attrs;
        if layer.groups != 1 {
            let _ = write!(attrs, ", groups = {}", layer.groups);
        }
        if !layer.bias {
            attrs += ", bias = false";
        }
        let layers = std::mem::take(registry(self));
        let shared = shared_params(&mut self.rng, &layers, &key, chance);
        *registry(self) = layers;
        if let Some(p) = &shared {
            let _ = write!(attrs, ", params = \"{p}\"");
        }
        let expr = format!("{}({}, {attrs})", layer.op, self.name(src));
        let v = self.bind(layer.stem, expr, &[src], out, Some(hw));
        if shared.is_none() {
            let name = self.values[v].name.clone();
            registry(self).push((key, name));
        }
        v
    }

    /// `src · sigmoid(conv(relu(conv(global_avgpool(src)))))`, sometimes with BNs around.
    fn squeeze_excite(&mut self) {
        let mut src = self.pick_map();
        if self.rng.chance(0.4) {
            src = self.batchnorm(src);
        }
        let c = self.values[src].c;
        let g = self.global_avgpool(src);
        let squeezed = self.conv(g, c.div_ceil(2), (1, 1), (1, 1), [0; 4], 1, 1, true);
        let squeezed = if self.rng.chance(0.3) {
            self.batchnorm(squeezed)
        } else {
            squeezed
        };
        let r = self.bind(
            "a",
            format!("relu({})", self.name(squeezed)),
            &[squeezed],
            c.div_ceil(2),
            Some((1, 1)),
        );
        let e = self.conv(r, c, (1, 1), (1, 1), [0; 4], 1, 1, true);
        let gate = self.bind(
            "a",
            format!("sigmoid({})", self.name(e)),
            &[e],
            c,
            Some((1, 1)),
        );
        let (a, b) = if self.rng.chance(0.7) {
            (src, gate)
        } else {
            (gate, src)
        };
        let hw = self.values[src].hw;
        let expr = format!("mul({}, {})", self.name(a), self.name(b));
        let m = self.bind("se", expr, &[a, b], c, hw);
        if self.rng.chance(0.6) {
            self.batchnorm(m);
        }
    }

    /// BN -> relu -> conv -> BN -> relu -> conv, added to the block input (or to the first
    /// relu, as pre-activation ResNets do on their projection blocks).
    fn preact_residual(&mut self) {
        let x = self.pick_map();
        let c = self.values[x].c;
        let bias = self.rng.chance(0.3);
        let b1 = self.batchnorm(x);
        let r1 = self.bind(
            "a",
            format!("relu({})", self.name(b1)),
            &[b1],
            c,
            self.values[b1].hw,
        );
        let c1 = self.conv(r1, c, (3, 3), (1, 1), [1; 4], 1, 1, bias);
        let b2 = self.batchnorm(c1);
        let r2 = self.bind(
            "a",
            format!("relu({})", self.name(b2)),
            &[b2],
            c,
            self.values[b2].hw,
        );
        let c2 = self.conv(r2, c, (3, 3), (1, 1), [1; 4], 1, 1, bias);
        let shortcut = if self.rng.chance(0.7) { x } else { r1 };
        let hw = self.values[c2].hw;
        let expr = format!("add({}, {})", self.name(c2), self.name(shortcut));
        self.bind("add", expr, &[c2, shortcut], c, hw);
    }

    /// Dense-net layers: `cur = concat(cur, conv(relu(BN(cur))))`, growing the channels.
    fn dense_chain(&mut self) {
        let mut cur = self.pick_map();
        for _ in 0..2 + self.rng.below(2) {
            let c = self.values[cur].c;
            if c >= MAX_CONCAT_CHANNELS {
                break;
            }
            let growth = 1 + self.rng.below((MAX_CONCAT_CHANNELS - c).min(3));
            let b = self.batchnorm(cur);
            let r = self.bind(
                "a",
                format!("relu({})", self.name(b)),
                &[b],
                c,
                self.values[b].hw,
            );
            let (k, pad) = if self.rng.chance(0.5) {
                (3, [1; 4])
            } else {
                (1, [0; 4])
            };
            let new = self.conv(r, growth, (k, k), (1, 1), pad, 1, 1, false);
            let hw = self.values[cur].hw;
            let expr = format!("concat({}, {})", self.name(cur), self.name(new));
            cur = self.bind("cat", expr, &[cur, new], c + growth, hw);
        }
        if self.rng.chance(0.3) {
            // Transition: BN -> relu -> 1×1 conv -> avgpool.
            let c = self.values[cur].c;
            let b = self.batchnorm(cur);
            let r = self.bind(
                "a",
                format!("relu({})", self.name(b)),
                &[b],
                c,
                self.values[b].hw,
            );
            let out = 1 + self.rng.below(8);
            let t = self.conv(r, out, (1, 1), (1, 1), [0; 4], 1, 1, false);
            self.pool(t);
        }
    }

    /// (BN ->) flatten of an H×W map -> dense (-> BN on the vector).
    fn flatten_dense(&mut self) {
        let mut src = self.pick_map();
        if self.rng.chance(0.6) {
            src = self.batchnorm(src);
        }
        let (c, (h, w)) = (self.values[src].c, self.values[src].hw.unwrap());
        let f = self.bind(
            "flat",
            format!("flatten({})", self.name(src)),
            &[src],
            c * h * w,
            None,
        );
        let out = 1 + self.rng.below(8);
        let bias = if self.rng.chance(0.5) {
            ""
        } else {
            ", bias = false"
        };
        let d = self.bind(
            "fc",
            format!("dense({}, out = {out}{bias})", self.name(f)),
            &[f],
            out,
            None,
        );
        if self.rng.chance(0.5) {
            self.batchnorm(d);
        }
    }

    /// Every value nobody reads becomes an output: through a 1×1 conv, a relu, a pooled
    /// dense head, or directly (a graph output blocks a fold through it).
    fn outputs(&mut self) {
        let mut outputs = Vec::new();
        for i in 1..self.values.len() {
            if self.values[i].reads > 0 {
                continue;
            }
            let is_map = self.values[i].hw.is_some();
            let y = match self.rng.below(10) {
                0..=3 if is_map => {
                    let out = 1 + self.rng.below(4);
                    self.conv(i, out, (1, 1), (1, 1), [0; 4], 1, 1, true)
                }
                4 | 5 => {
                    let (c, hw) = (self.values[i].c, self.values[i].hw);
                    self.bind("y", format!("relu({})", self.name(i)), &[i], c, hw)
                }
                6 if is_map => {
                    let g = self.global_avgpool(i);
                    let c = self.values[g].c;
                    let f = self.bind("flat", format!("flatten({})", self.name(g)), &[g], c, None);
                    self.bind(
                        "fc",
                        format!("dense({}, out = 3)", self.name(f)),
                        &[f],
                        3,
                        None,
                    )
                }
                _ => i,
            };
            outputs.push(self.values[y].name.clone());
        }
        if outputs.is_empty() {
            // Only the input: output a relu of it.
            let y = self.activation(0);
            outputs.push(self.values[y].name.clone());
        }
        self.channel_motif(&mut outputs);
        self.recent_op_motifs(&mut outputs);
        self.upsample_motif(&mut outputs);
        let _ = writeln!(self.text, "  output {}", outputs.join(", "));
    }

    /// Sometimes, ShuffleNet's channel operators on a branch of their own from the input:
    /// conv → BN → channel_shuffle (→ BN) → two slice_channels (→ BN) → readers. Drawn from
    /// a random stream of its own and placed after everything else, so the models of earlier
    /// seeds (the regression seeds) keep their text up to here.
    fn channel_motif(&mut self, outputs: &mut Vec<String>) {
        let main = std::mem::replace(&mut self.rng, Rng::new(self.seed ^ 0x5407_F1E5_0000_0001));
        if self.rng.chance(0.5) {
            let groups = 2 + self.rng.below(2);
            let c = groups * (1 + self.rng.below(3));
            let (kernel, pad) = if self.rng.chance(0.5) {
                ((1, 1), [0; 4])
            } else {
                ((3, 3), [1; 4])
            };
            let bias = self.rng.chance(0.5);
            let c0 = self.conv(0, c, kernel, (1, 1), pad, 1, 1, bias);
            let mut v = if self.rng.chance(0.8) {
                self.batchnorm(c0)
            } else {
                c0
            };
            let hw = self.values[v].hw;
            let expr = format!("channel_shuffle({}, groups = {groups})", self.name(v));
            v = self.bind("shuf", expr, &[v], c, hw);
            if self.rng.chance(0.3) {
                v = self.batchnorm(v);
            }
            let cut = 1 + self.rng.below(c - 1);
            let mut halves = Vec::new();
            for (start, end) in [(0, cut), (cut, c)] {
                let expr = format!(
                    "slice_channels({}, start = {start}, end = {end})",
                    self.name(v)
                );
                let mut h = self.bind("half", expr, &[v], end - start, hw);
                if self.rng.chance(0.3) {
                    h = self.batchnorm(h);
                }
                halves.push(h);
            }
            for h in halves {
                let y = match self.rng.below(3) {
                    0 => self.activation(h),
                    1 => {
                        let out = 1 + self.rng.below(4);
                        self.conv(h, out, (3, 3), (1, 1), [1; 4], 1, 1, true)
                    }
                    _ => {
                        let out = 1 + self.rng.below(4);
                        self.conv(h, out, (1, 1), (1, 1), [0; 4], 1, 1, true)
                    }
                };
                outputs.push(self.values[y].name.clone());
            }
        }
        self.rng = main;
    }
    /// Sometimes, one to three motifs of the operators added after the generator's first
    /// version, with BNs in their hard places: conv_transpose2d (BN before it, whose shift
    /// folds only into a uniform-shift geometry, and after it), layer_norm (a BN after it
    /// folds into its weight and bias, one before it must stay), gelu (blocks), a ConvNeXt
    /// block, global_maxpool (a negative γ must not pass it), sqrt and pow (on positive or
    /// squared inputs). Drawn from a random stream of its own and placed after
    /// `channel_motif`, so the models of earlier seeds keep their text up to here. Values no
    /// one reads become outputs.
    fn recent_op_motifs(&mut self, outputs: &mut Vec<String>) {
        let main = std::mem::replace(&mut self.rng, Rng::new(self.seed ^ 0x0E77_0B5A_7000_0002));
        let first = self.values.len();
        let count = [0, 1, 1, 2, 2, 3][self.rng.below(6)];
        for _ in 0..count {
            match self.rng.below(12) {
                0..=2 => self.conv_transpose_motif(),
                3 | 4 => self.layer_norm_motif(),
                5 => self.convnext_block(),
                6 | 7 => self.gelu_motif(),
                8 | 9 => self.global_maxpool_motif(),
                _ => self.sqrt_pow_motif(),
            }
        }
        for i in first..self.values.len() {
            if self.values[i].reads == 0 {
                outputs.push(self.values[i].name.clone());
            }
        }
        self.rng = main;
    }

    /// Sometimes, a resize feeding a conv (BNs before, between and after): nearest by whole
    /// factors with the roundings PyTorch exports (compiled as one transposed conv on the
    /// small input when the conv has at least 4 input channels per group and is stride 1),
    /// and the forms that must stay apart: ceil rounding, bilinear, a pad fill from a BN
    /// folded forward into the conv, a second reader. Its own random stream, after the
    /// other motifs, so earlier seeds keep their models up to here.
    fn upsample_motif(&mut self, outputs: &mut Vec<String>) {
        let main = std::mem::replace(&mut self.rng, Rng::new(self.seed ^ 0x0095_A3B1_E000_0003));
        let first = self.values.len();
        if self.rng.chance(0.3) {
            let mut v = self.small_map();
            if self.values[v].c < 4 || self.rng.chance(0.3) {
                let c = 4 + self.rng.below(5);
                let bias = self.rng.chance(0.5);
                v = self.conv(v, c, (1, 1), (1, 1), [0; 4], 1, 1, bias);
            }
            if self.rng.chance(0.5) {
                v = self.batchnorm(v);
            }
            let factors = [[2, 2], [3, 3], [2, 3], [1, 2]][self.rng.below(4)];
            let (mode, rounding) = match self.rng.below(6) {
                0 => ("bilinear", "coordinates = \"half_pixel\""),
                1 => ("nearest", "nearest_mode = \"ceil\""),
                2 => (
                    "nearest",
                    "coordinates = \"half_pixel\", nearest_mode = \"round_prefer_floor\"",
                ),
                _ => ("nearest", "coordinates = \"asymmetric\""),
            };
            let (c, (h, w)) = (self.values[v].c, self.values[v].hw.expect("a map"));
            let expr = format!(
                "resize({}, mode = \"{mode}\", scale = {}, {rounding})",
                self.name(v),
                list_attr(&factors)
            );
            let hw = (h * factors[0], w * factors[1]);
            let mut u = self.bind("up", expr, &[v], c, Some(hw));
            if self.rng.chance(0.4) {
                // A BN between: it folds back through the upsample, or forward into the conv
                // (its shift then becomes a pad fill, which keeps the two kernels apart).
                u = self.batchnorm(u);
            }
            let (kernel, pad, dilation) = match self.rng.below(4) {
                0 => ((3, 3), [1; 4], 1),
                1 => ((2, 2), [1, 0, 0, 1], 1),
                2 => ((3, 1), [2, 0, 1, 0], 2),
                _ => ((3, 3), [0; 4], 1),
            };
            let groups = if c % 2 == 0 && self.rng.chance(0.2) {
                2
            } else {
                1
            };
            let out = groups * (1 + self.rng.below(4));
            let y = self.conv(u, out, kernel, (1, 1), pad, dilation, groups, true);
            if self.rng.chance(0.6) {
                self.batchnorm(y);
            }
            if self.rng.chance(0.15) {
                self.activation(u);
            }
        }
        for i in first..self.values.len() {
            if self.values[i].reads == 0 {
                outputs.push(self.values[i].name.clone());
            }
        }
        self.rng = main;
    }

    /// A map of at most 10×10 (the input is one), so that transposed convs stay small.
    fn small_map(&mut self) -> usize {
        self.pick_where(|v| v.hw.is_some_and(|(h, w)| h <= 10 && w <= 10))
            .unwrap_or(0)
    }

    /// `op(src, attrs)` of the same shape as `src` (`attrs` empty or starting with `, `).
    fn unary(&mut self, stem: &str, op: &str, attrs: &str, src: usize) -> usize {
        let (c, hw) = (self.values[src].c, self.values[src].hw);
        let expr = format!("{op}({}{attrs})", self.name(src));
        self.bind(stem, expr, &[src], c, hw)
    }

    fn gelu(&mut self, src: usize) -> usize {
        self.unary("gelu", "gelu", "", src)
    }

    /// `layer_norm` with a random eps (never 0: one channel, or equal channels, have
    /// variance 0).
    fn layer_norm(&mut self, src: usize) -> usize {
        let eps = ["", ", eps = 1e-6", ", eps = 0.001", ", eps = 0.1"][self.rng.below(4)];
        let (c, hw) = (self.values[src].c, self.values[src].hw);
        let expr = format!("layer_norm({}{eps})", self.name(src));
        self.bind("ln", expr, &[src], c, hw)
    }

    /// A transposed conv of `src`. `uniform`: stride 1 and a crop of at least the kernel's
    /// span on each side (plus the output padding on the trailing side), so that every
    /// output position receives every tap and a BN's shift before it can become a bias;
    /// otherwise a phased or bordered geometry (stride 2 or 3, padding, output padding,
    /// dilation, or stride 1 without the full crop), where the shift must not fold.
    fn conv_transpose(&mut self, src: usize, uniform: bool) -> usize {
        let (c, (h, w)) = (self.values[src].c, self.values[src].hw.expect("a map"));
        let (groups, out) = self.groups_and_out(c, 1);
        let square = self.rng.chance(0.75);
        let mut t = ConvTranspose2d {
            out_channels: out,
            kernel: [1, 1],
            stride: [1, 1],
            pad: [0; 4],
            output_padding: [0, 0],
            dilation: [1, 1],
            groups,
            bias: self.rng.chance(0.6),
        };
        let lens = [h, w];
        if uniform {
            let k = 1 + self.rng.below(3);
            let d = if self.rng.chance(0.2) { 2 } else { 1 };
            for (a, &len) in lens.iter().enumerate() {
                let (mut k, d) = if a == 1 && !square {
                    (1 + self.rng.below(3), 1 + usize::from(self.rng.chance(0.2)))
                } else {
                    (k, d)
                };
                // The output is `len − span − extra crops`: keep it at least 1.
                while k > 1 && d * (k - 1) >= len {
                    k -= 1;
                }
                let span = d * (k - 1);
                let op = usize::from(d > 1 && self.rng.chance(0.4));
                let room = len - span - 1;
                let lead = self.rng.below(room.min(1) + 1);
                let trail = self.rng.below((room - lead).min(1) + 1);
                t.kernel[a] = k;
                t.dilation[a] = if k > 1 { d } else { 1 };
                t.output_padding[a] = if k > 1 { op } else { 0 };
                t.pad[a] = span + lead;
                t.pad[a + 2] = span + t.output_padding[a] + trail;
            }
        } else {
            let variant = self.rng.below(6);
            for (a, &len) in lens.iter().enumerate() {
                let v = if a == 1 && !square {
                    self.rng.below(6)
                } else {
                    variant
                };
                let (k, s, p, op, d) = match v {
                    // U-Net: each output phase receives one tap.
                    0 => (2, 2, [0, 0], 0, 1),
                    // DCGAN/FCN: 4×4 stride 2 pad 1.
                    1 => (4, 2, [1, 1], 0, 1),
                    // 3×3 stride 2 pad 1 output_padding 1.
                    2 => (3, 2, [1, 1], 1, 1),
                    // Stride 1 without the full crop: the borders receive fewer taps.
                    3 => {
                        let p = self.rng.below(2);
                        (3, 1, [p, self.rng.below(3)], 0, 1)
                    }
                    // Anything.
                    _ => {
                        let k = 1 + self.rng.below(4);
                        let s = 2 + self.rng.below(2);
                        let d = if self.rng.chance(0.25) { 2 } else { 1 };
                        let span = d * (k - 1);
                        let p = [self.rng.below(span + 2), self.rng.below(span + 2)];
                        (k, s, p, self.rng.below(s.max(d)), d)
                    }
                };
                t.kernel[a] = k;
                t.stride[a] = s;
                t.pad[a] = p[0];
                t.pad[a + 2] = p[1];
                t.output_padding[a] = op;
                t.dilation[a] = d;
                if t.out_len(a, len).is_none() {
                    // Cropped away: no crop.
                    t.pad[a] = 0;
                    t.pad[a + 2] = 0;
                }
            }
        }
        let (oh, ow) = (
            t.out_len(0, h).expect("the output is not empty"),
            t.out_len(1, w).expect("the output is not empty"),
        );
        let mut attrs = format!("out = {out}, kernel = {}", list_attr(&t.kernel));
        if t.stride != [1, 1] {
            let _ = write!(attrs, ", stride = {}", list_attr(&t.stride));
        }
        if t.pad != [0; 4] {
            let _ = write!(attrs, ", pad = {}", list_attr(&t.pad));
        }
        if t.output_padding != [0, 0] {
            let _ = write!(attrs, ", output_padding = {}", list_attr(&t.output_padding));
        }
        if t.dilation != [1, 1] {
            let _ = write!(attrs, ", dilation = {}", list_attr(&t.dilation));
        }
        let key = (c, out, out / groups, (t.kernel[0], t.kernel[1]), t.bias);
        let layer = Layer {
            op: "conv_transpose2d",
            stem: "convt",
            attrs,
            groups,
            bias: t.bias,
        };
        self.bind_layer(|b| &mut b.convts, key, 0.4, layer, src, out, (oh, ow))
    }

    /// (conv ->) (activation ->) BN -> conv_transpose2d -> BN (-> BN) -> reader, sometimes
    /// with a second transposed conv (of the other geometry) reading the same BN.
    fn conv_transpose_motif(&mut self) {
        let mut v = self.small_map();
        if self.rng.chance(0.4) {
            v = self.random_conv(v, None);
        }
        if self.rng.chance(0.3) {
            // Blocks the BN's backward fold: it can only go forward, into the transposed conv.
            v = self.activation(v);
        }
        if self.rng.chance(0.75) {
            v = self.batchnorm(v);
        }
        let uniform = self.rng.chance(0.5);
        let t = self.conv_transpose(v, uniform);
        if self.rng.chance(0.25) {
            let other = self.conv_transpose(v, !uniform);
            if self.rng.chance(0.5) {
                self.batchnorm(other);
            }
        }
        let mut y = t;
        if self.rng.chance(0.75) {
            y = self.batchnorm(y);
            if self.rng.chance(0.15) {
                y = self.batchnorm(y);
            }
        }
        match self.rng.below(5) {
            0 => {
                self.activation(y);
            }
            1 => {
                self.random_conv(y, None);
            }
            2 if self.values[y].hw.is_some_and(|(h, w)| h <= 10 && w <= 10) => {
                // A BN between two transposed convs.
                let b = self.batchnorm(y);
                let u = self.rng.chance(0.5);
                self.conv_transpose(b, u);
            }
            _ => {}
        }
    }

    /// (conv or dense ->) (BN ->) layer_norm -> (BN) -> reader. A BN after folds into the
    /// layer_norm's weight and bias (not when the layer_norm has another reader); a BN
    /// before must stay (it changes the channels' mean and variance).
    fn layer_norm_motif(&mut self) {
        let mut v = self.pick_any();
        if self.rng.chance(0.4) {
            v = if self.values[v].hw.is_some() {
                self.random_conv(v, None)
            } else {
                let out = 1 + self.rng.below(8);
                let expr = format!("dense({}, out = {out})", self.name(v));
                self.bind("fc", expr, &[v], out, None)
            };
        }
        if self.rng.chance(0.5) {
            v = self.batchnorm(v);
        }
        let n = self.layer_norm(v);
        if self.rng.chance(0.25) {
            // Another reader of the layer_norm.
            self.activation(n);
        }
        let mut y = n;
        if self.rng.chance(0.7) {
            y = self.batchnorm(y);
        }
        match self.rng.below(4) {
            0 => {
                self.gelu(y);
            }
            1 if self.values[y].hw.is_some() => {
                let out = 1 + self.rng.below(8);
                self.conv(y, out, (1, 1), (1, 1), [0; 4], 1, 1, true);
            }
            2 => {
                self.activation(y);
            }
            _ => {}
        }
    }

    /// ConvNeXt: depthwise conv -> layer_norm -> 1×1 conv -> gelu -> 1×1 conv, added to the
    /// block input; BNs after the depthwise conv, the layer_norm, the expansion and the gelu.
    fn convnext_block(&mut self) {
        let x = self.small_map();
        let (c, (h, w)) = (self.values[x].c, self.values[x].hw.unwrap());
        let k = if h >= 7 && w >= 7 && self.rng.chance(0.5) {
            7
        } else {
            3
        };
        let mut v = self.conv(x, c, (k, k), (1, 1), [k / 2; 4], 1, c, true);
        if self.rng.chance(0.3) {
            v = self.batchnorm(v);
        }
        v = self.layer_norm(v);
        if self.rng.chance(0.4) {
            v = self.batchnorm(v);
        }
        let wide = (2 * c).min(MAX_CONCAT_CHANNELS);
        let bias = self.rng.chance(0.7);
        v = self.conv(v, wide, (1, 1), (1, 1), [0; 4], 1, 1, bias);
        if self.rng.chance(0.4) {
            v = self.batchnorm(v);
        }
        v = self.gelu(v);
        if self.rng.chance(0.4) {
            v = self.batchnorm(v);
        }
        v = self.conv(v, c, (1, 1), (1, 1), [0; 4], 1, 1, true);
        if self.rng.chance(0.3) {
            v = self.batchnorm(v);
        }
        let expr = format!("add({}, {})", self.name(x), self.name(v));
        let hw = self.values[x].hw;
        self.bind("add", expr, &[x, v], c, hw);
    }

    /// (conv ->) BN -> gelu -> BN -> reader: gelu blocks both BNs, the first can fold back
    /// into the conv and the second forward into a conv after it.
    fn gelu_motif(&mut self) {
        let mut v = self.pick_any();
        if self.values[v].hw.is_some() && self.rng.chance(0.5) {
            v = self.random_conv(v, None);
        }
        if self.rng.chance(0.8) {
            v = self.batchnorm(v);
        }
        let g = self.gelu(v);
        let mut y = g;
        if self.rng.chance(0.7) {
            y = self.batchnorm(y);
        }
        if self.values[y].hw.is_some() && self.rng.chance(0.5) {
            let padded = self.rng.chance(0.5);
            self.random_conv(y, Some(padded));
        }
    }

    /// (activation, pad or pool ->) BN -> global_maxpool (-> BN) -> 1×1 conv, flatten ->
    /// dense, or a max-squeeze gate. The extreme parameters give most BNs a negative γ on
    /// some channel, which turns the max into a min: those channels must not pass the pool.
    fn global_maxpool_motif(&mut self) {
        let mut v = self.pick_map();
        match self.rng.below(5) {
            0 => v = self.activation(v),
            1 => v = self.pad(v),
            2 => v = self.pool(v),
            3 => v = self.random_conv(v, None),
            _ => {}
        }
        if self.rng.chance(0.85) {
            v = self.batchnorm(v);
        }
        let src = v;
        let c = self.values[v].c;
        let expr = format!("global_maxpool({})", self.name(v));
        let mut g = self.bind("gmp", expr, &[v], c, Some((1, 1)));
        if self.rng.chance(0.4) {
            g = self.batchnorm(g);
        }
        match self.rng.below(4) {
            0 => {
                let out = 1 + self.rng.below(8);
                let bias = self.rng.chance(0.5);
                self.conv(g, out, (1, 1), (1, 1), [0; 4], 1, 1, bias);
            }
            1 => {
                let f = self.bind("flat", format!("flatten({})", self.name(g)), &[g], c, None);
                let out = 1 + self.rng.below(8);
                let expr = format!("dense({}, out = {out})", self.name(f));
                self.bind("fc", expr, &[f], out, None);
            }
            2 => {
                // Squeeze-excite with a max: src · sigmoid(conv(gmp(src))).
                let e = self.conv(g, c, (1, 1), (1, 1), [0; 4], 1, 1, true);
                let gate = self.unary("a", "sigmoid", "", e);
                let hw = self.values[src].hw;
                let expr = format!("mul({}, {})", self.name(src), self.name(gate));
                self.bind("se", expr, &[src, gate], c, hw);
            }
            _ => {}
        }
    }

    /// (conv of the input ->) (BN ->) a positive or squared value -> sqrt or pow (-> BN) ->
    /// reader. sqrt and pow block; their inputs are kept where they are defined and not
    /// near a pole (a BN's output squared, clipped to [0.5, 4], or raised to an odd power),
    /// and the input's magnitude is bounded (no BN chains before: x⁴ of an extreme BN's
    /// output would overflow f32).
    fn sqrt_pow_motif(&mut self) {
        let mut v = 0;
        if self.rng.chance(0.6) {
            v = self.random_conv(v, None);
        }
        if self.rng.chance(0.75) {
            v = self.batchnorm(v);
        }
        let s = self.name(v).to_string();
        let f = match self.rng.below(4) {
            0 | 1 => {
                // A square (a BN right before pow or mul), then maybe a root or power of it.
                let sq = if self.rng.chance(0.5) {
                    self.unary("sq", "pow", ", exponent = 2", v)
                } else {
                    let (c, hw) = (self.values[v].c, self.values[v].hw);
                    self.bind("sq", format!("mul({s}, {s})"), &[v, v], c, hw)
                };
                match self.rng.below(4) {
                    0 | 1 => self.unary("rt", "sqrt", "", sq),
                    2 => {
                        let e = ["0.5", "1", "1.5"][self.rng.below(3)];
                        self.unary("pw", "pow", &format!(", exponent = {e}"), sq)
                    }
                    _ => sq,
                }
            }
            2 => {
                let cl = self.unary("cl", "clip", ", min = 0.5, max = 4", v);
                if self.rng.chance(0.3) {
                    self.unary("rt", "sqrt", "", cl)
                } else {
                    let e = ["0.5", "1.5", "2", "3", "8", "-0.5", "-1", "-2", "-8", "0"]
                        [self.rng.below(10)];
                    self.unary("pw", "pow", &format!(", exponent = {e}"), cl)
                }
            }
            _ => self.unary("pw", "pow", ", exponent = 3", v),
        };
        let mut y = f;
        if self.rng.chance(0.6) {
            y = self.batchnorm(y);
        }
        match self.rng.below(3) {
            0 => {
                self.random_conv(y, None);
            }
            1 => {
                self.activation(y);
            }
            _ => {}
        }
    }
}

/// An attribute list as the language takes it: `v` when every entry is `v`, else `[a, b, ..]`.
fn list_attr(values: &[usize]) -> String {
    if values.iter().all(|&v| v == values[0]) {
        values[0].to_string()
    } else {
        let items: Vec<String> = values.iter().map(usize::to_string).collect();
        format!("[{}]", items.join(", "))
    }
}

/// A conv-like layer to bind: `op(src, attrs)` with `groups` and `bias` still to append.
struct Layer {
    op: &'static str,
    stem: &'static str,
    attrs: String,
    groups: usize,
    bias: bool,
}

/// With probability `chance`, when layers of the same `key` exist, the params of one of them
/// (drawn in that order, so the models of existing seeds stay as they are).
fn shared_params<K: PartialEq>(
    rng: &mut Rng,
    layers: &[(K, String)],
    key: &K,
    chance: f64,
) -> Option<String> {
    let shared: Vec<&String> = layers
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, p)| p)
        .collect();
    if shared.is_empty() || !rng.chance(chance) {
        return None;
    }
    Some(shared[rng.below(shared.len())].clone())
}

/// Overwrites the parameters of `bn` with per-channel values mixing the hard cases, and
/// describes them. Running variance stays > 0, so var + eps > 0 even with eps = 0.
fn extreme_parameters(graph: &mut Graph, bn: &BnParams, rng: &mut Rng) -> String {
    let n = bn.channels;
    let (mut gamma, mut beta, mut mean, mut var) = (
        param(graph, &bn.prefix, "weight"),
        param(graph, &bn.prefix, "bias"),
        param(graph, &bn.prefix, "running_mean"),
        param(graph, &bn.prefix, "running_var"),
    );
    // A third of the BNs keep the ordinary random values except for a few channels.
    let extreme_share = if rng.chance(0.33) { 0.2 } else { 0.8 };
    for (c, g) in gamma.iter_mut().enumerate() {
        if !rng.chance(extreme_share) {
            continue;
        }
        let sign = if rng.chance(0.5) { 1.0 } else { -1.0 };
        *g = match rng.below(10) {
            0..=2 => -(0.2 + 2.0 * rng.unit().abs()),
            3 => 0.0,
            4 => sign * 1e-5,
            5 => sign * 1e-40,
            6 => 1e-6,
            _ => *g,
        };
        if rng.chance(0.4) {
            beta[c] = 10.0 * rng.unit();
        }
        var[c] = match rng.below(10) {
            0 | 1 => 1e-8,
            2 | 3 => 10f32.powf(-2.0 - 6.0 * rng.unit().abs()),
            _ => var[c],
        };
        mean[c] = match rng.below(10) {
            0 => sign * 1e4,
            1 | 2 => sign * 10f32.powf(1.0 + 3.0 * rng.unit().abs()),
            _ => mean[c],
        };
    }
    let describe = format!(
        "{}: weight {gamma:?}, bias {beta:?}, running_mean {mean:?}, running_var {var:?}",
        bn.prefix
    );
    for (suffix, data) in [
        ("weight", gamma),
        ("bias", beta),
        ("running_mean", mean),
        ("running_var", var),
    ] {
        graph.params.insert(
            format!("{}.{suffix}", bn.prefix),
            Tensor::new(vec![n], data),
        );
    }
    describe
}

fn param(graph: &Graph, prefix: &str, suffix: &str) -> Vec<f32> {
    graph.params[&format!("{prefix}.{suffix}")].data.clone()
}
