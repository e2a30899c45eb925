//! The structured target's models: a small valid graph read from the fuzzer's bytes (convs
//! plain, padded, strided, grouped and depthwise; BNs; activations; adds; concats; pads;
//! pools; squeeze-excite gates), then BN parameters from a palette of extreme values.

use std::fmt::Write;

use arbitrary::{Result, Unstructured};
use bnc::ir::Graph;
use bnc::ir::op::window_out;

/// A value of the model being written: its name, channels and spatial size.
struct Val {
    name: String,
    c: usize,
    h: usize,
    w: usize,
}

/// A model's `.nn` text and its BNs (name, channels).
pub struct Generated {
    pub text: String,
    pub batchnorms: Vec<(String, usize)>,
}

/// Reads a model from `u`: up to 10 layers over one input.
pub fn generate(u: &mut Unstructured) -> Result<Generated> {
    let c = u.int_in_range(1..=4)?;
    let (h, w) = (u.int_in_range(1..=6)?, u.int_in_range(1..=6)?);
    let batch = u.int_in_range(1..=2)?;
    let mut text = format!(
        "model fuzz {{\n  weights random(seed = {})\n  input x: f32[{batch}, {c}, {h}, {w}]\n",
        u.int_in_range(0..=1000u32)?
    );
    let mut vals = vec![Val {
        name: "x".into(),
        c,
        h,
        w,
    }];
    let mut batchnorms = Vec::new();
    let layers = u.int_in_range(1..=10)?;
    for k in 0..layers {
        let src = u.choose_index(vals.len())?;
        let (sc, sh, sw) = (vals[src].c, vals[src].h, vals[src].w);
        let s = vals[src].name.clone();
        let name = format!("v{k}");
        let (expr, c, h, w) = match u.int_in_range(0..=9)? {
            0 | 1 => {
                let out = u.int_in_range(1..=6)?;
                let kernel = u.int_in_range(1..=3)?;
                let pad = u.int_in_range(0..=kernel - 1)?;
                let stride = u.int_in_range(1..=2)?;
                let groups = match u.int_in_range(0..=2)? {
                    0 if out % sc == 0 => sc,
                    _ => 1,
                };
                let bias = u.arbitrary::<bool>()?;
                let out_size = |x| window_out(x, pad, pad, kernel, stride, 1, false);
                let (Some(oh), Some(ow)) = (out_size(sh), out_size(sw)) else {
                    continue;
                };
                let expr = format!(
                    "conv2d({s}, out = {out}, kernel = {kernel}, pad = {pad}, stride = {stride}, \
                     groups = {groups}, bias = {bias})"
                );
                (expr, out, oh, ow)
            }
            2 | 3 => {
                batchnorms.push((name.clone(), sc));
                (format!("batchnorm({s})"), sc, sh, sw)
            }
            4 => {
                let act = ["relu", "relu6", "sigmoid", "leaky_relu(ALPHA)"][u.choose_index(4)?];
                let expr = match act.strip_suffix("(ALPHA)") {
                    Some(f) => {
                        let alpha = [0.1, -0.5, 2.0][u.choose_index(3)?];
                        format!("{f}({s}, alpha = {alpha:?})")
                    }
                    None => format!("{act}({s})"),
                };
                (expr, sc, sh, sw)
            }
            5 => {
                let same: Vec<usize> = (0..vals.len())
                    .filter(|&v| (vals[v].c, vals[v].h, vals[v].w) == (sc, sh, sw))
                    .collect();
                let other = &vals[same[u.choose_index(same.len())?]].name;
                let op = if u.arbitrary::<bool>()? { "add" } else { "mul" };
                (format!("{op}({s}, {other})"), sc, sh, sw)
            }
            6 => {
                let same: Vec<usize> = (0..vals.len())
                    .filter(|&v| (vals[v].h, vals[v].w) == (sh, sw))
                    .collect();
                let other = &vals[same[u.choose_index(same.len())?]];
                if sc + other.c > 16 {
                    continue;
                }
                (format!("concat({s}, {})", other.name), sc + other.c, sh, sw)
            }
            7 => {
                let pads: Vec<usize> = (0..4)
                    .map(|_| u.int_in_range(0..=2))
                    .collect::<Result<_>>()?;
                let value = [0.0, 0.5, -1.0, 3.0][u.choose_index(4)?];
                let expr = format!(
                    "pad({s}, pads = [{}, {}, {}, {}], value = {value:?})",
                    pads[0], pads[1], pads[2], pads[3]
                );
                (expr, sc, sh + pads[0] + pads[2], sw + pads[1] + pads[3])
            }
            8 => {
                let kernel = u.int_in_range(1..=3)?;
                let stride = u.int_in_range(1..=2)?;
                let pad = u.int_in_range(0..=kernel / 2)?;
                let out_size = |x| window_out(x, pad, pad, kernel, stride, 1, false);
                let (Some(oh), Some(ow)) = (out_size(sh), out_size(sw)) else {
                    continue;
                };
                let expr = if u.arbitrary::<bool>()? {
                    format!("maxpool({s}, kernel = {kernel}, stride = {stride}, pad = {pad})")
                } else {
                    let count = u.arbitrary::<bool>()?;
                    format!(
                        "avgpool({s}, kernel = {kernel}, stride = {stride}, pad = {pad}, \
                         count_include_pad = {count})"
                    )
                };
                (expr, sc, oh, ow)
            }
            _ => {
                // Squeeze-excite: the map times a sigmoid gate of its global average.
                let g = format!("{name}_g");
                let _ = writeln!(text, "  {g} = global_avgpool({s})");
                let _ = writeln!(text, "  {g}s = sigmoid({g})");
                (format!("mul({s}, {g}s)"), sc, sh, sw)
            }
        };
        let _ = writeln!(text, "  {name} = {expr}");
        vals.push(Val { name, c, h, w });
    }
    let last = &vals[vals.len() - 1].name;
    let extra = &vals[u.choose_index(vals.len())?].name;
    if extra != last && extra != "x" {
        let _ = writeln!(text, "  output {last}, {extra}\n}}");
    } else {
        let _ = writeln!(text, "  output {last}\n}}");
    }
    Ok(Generated { text, batchnorms })
}

/// Overwrites each BN's parameters with values from `u`, drawn from the palette the folding
/// conditions care about: γ negative, zero, tiny, subnormal; running_var down to 1e-8;
/// |mean| up to 1e4; β up to 10.
pub fn extreme_parameters(graph: &mut Graph, bns: &[(String, usize)], u: &mut Unstructured) {
    const GAMMA: [f32; 8] = [1.0, 0.7, -1.3, 0.0, 1e-5, -1e-5, 1e-40, 2.5];
    const BETA: [f32; 5] = [0.0, 0.1, -2.0, 5.0, 10.0];
    const MEAN: [f32; 6] = [0.0, 0.2, -3.0, 100.0, -1e3, 1e4];
    const VAR: [f32; 5] = [1.0, 0.5, 1e-2, 1e-6, 1e-8];
    for (name, channels) in bns {
        for (suffix, palette) in [
            ("weight", &GAMMA[..]),
            ("bias", &BETA[..]),
            ("running_mean", &MEAN[..]),
            ("running_var", &VAR[..]),
        ] {
            let Some(t) = graph.params.get_mut(&format!("{name}.{suffix}")) else {
                continue;
            };
            for c in 0..*channels {
                match u.choose(palette) {
                    Ok(&v) => t.data[c] = v,
                    Err(_) => return,
                }
            }
        }
    }
}
