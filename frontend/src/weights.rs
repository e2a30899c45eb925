//! Parameter tensors: read from a safetensors file or generated deterministically.

use std::path::Path;

use bnc_ir::{ParamKind, Shape, Tensor, WeightsSource};
use safetensors::{Dtype, SafeTensors};

use crate::diag::Error;
use crate::lower::{Lowered, fmt_shape, similar};

/// FNV-1a, 64-bit: a fixed, portable hash of a tensor name.
fn fnv1a64(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in text.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64: tiny, fast, and the same sequence on every machine.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Approximately standard normal: the sum of four uniforms (16 bits each, from one
    /// draw), centred and scaled to unit variance. Only `+`, `*` and a constant are used, so
    /// the result is bit-identical everywhere (no libm `ln`/`cos`, which may differ).
    fn normal(&mut self) -> f64 {
        let bits = self.next();
        let mut sum = 0.0;
        for i in 0..4 {
            let part = (bits >> (16 * i)) & 0xffff;
            sum += (part as f64 + 0.5) * (1.0 / 65536.0);
        }
        // Sum of 4 uniforms has mean 2 and variance 4/12.
        (sum - 2.0) * SQRT_3
    }
}

const SQRT_3: f64 = 1.732_050_807_568_877_2;

/// A deterministic pseudo-random parameter tensor. Values depend only on `seed`, the full
/// tensor `name` (e.g. `c1.weight`), the shape and the kind, so adding a layer leaves the
/// other layers' values unchanged.
///
/// Weights are normal with He scaling (std `sqrt(2 / fan_in)`); biases uniform in
/// [-0.1, 0.1]; BN γ, running variance and affine scales uniform in [0.5, 1.5]; BN β, running
/// mean, affine shifts and pad fills uniform in [-0.2, 0.2].
pub fn random_tensor(seed: u64, name: &str, shape: &[usize], kind: ParamKind) -> Tensor {
    try_random_tensor(seed, name, shape, kind).unwrap_or_else(|e| panic!("{e}"))
}

/// [`random_tensor`], with an error instead of an abort when the memory is not there (the
/// shape comes from a model file; the model limits bound it, not the machine's memory).
pub fn try_random_tensor(
    seed: u64,
    name: &str,
    shape: &[usize],
    kind: ParamKind,
) -> Result<Tensor, String> {
    let n: usize = shape.iter().product();
    let mut rng = SplitMix64(seed ^ fnv1a64(name));
    let mut data = reserve(n, "random weights", name)?;
    let uniform = |lo: f64, hi: f64, rng: &mut SplitMix64| lo + (hi - lo) * rng.unit();
    match kind {
        ParamKind::Weight { fan_in } => {
            let std = (2.0 / fan_in.max(1) as f64).sqrt();
            data.extend((0..n).map(|_| (rng.normal() * std) as f32));
        }
        other => {
            let (lo, hi) = match other {
                ParamKind::Bias => (-0.1, 0.1),
                ParamKind::BnWeight | ParamKind::BnVar | ParamKind::AffineScale => (0.5, 1.5),
                _ => (-0.2, 0.2),
            };
            data.extend((0..n).map(|_| uniform(lo, hi, &mut rng) as f32));
        }
    }
    Ok(Tensor {
        shape: shape.to_vec(),
        data,
    })
}

/// A deterministic tensor of approximately standard-normal values, keyed like
/// [`random_tensor`]: for sample inputs (`bnc run` without `--input`, tests, benchmarks).
pub fn random_normal(seed: u64, name: &str, shape: &[usize]) -> Tensor {
    try_random_normal(seed, name, shape).unwrap_or_else(|e| panic!("{e}"))
}

/// [`random_normal`], with an error instead of an abort when the memory is not there.
pub fn try_random_normal(seed: u64, name: &str, shape: &[usize]) -> Result<Tensor, String> {
    let n: usize = shape.iter().product();
    let mut rng = SplitMix64(seed ^ fnv1a64(name));
    let mut data = reserve(n, "random input", name)?;
    data.extend((0..n).map(|_| rng.normal() as f32));
    Ok(Tensor {
        shape: shape.to_vec(),
        data,
    })
}

/// An empty vector with room for `n` floats, or the out-of-memory error for `what` `name`.
fn reserve(n: usize, what: &str, name: &str) -> Result<Vec<f32>, String> {
    let mut data = Vec::new();
    data.try_reserve_exact(n).map_err(|_| {
        format!(
            "out of memory: cannot allocate {} bytes for the {what} `{name}`",
            n.saturating_mul(4)
        )
    })?;
    Ok(data)
}

/// Fills `lowered.graph.params` from the model's weights source. `base_dir` is the model
/// file's directory.
pub fn load(lowered: &mut Lowered, base_dir: &Path) -> Result<(), Error> {
    let (seed, file) = match &lowered.graph.weights {
        WeightsSource::Random { seed } => (*seed, None),
        WeightsSource::File(path) => {
            let resolved = base_dir.join(path);
            let bytes = std::fs::read(&resolved).map_err(|e| {
                Error::at(
                    lowered.weights_span.clone(),
                    format!("cannot read weights file `{}`: {e}", resolved.display()),
                    "this file",
                )
                .with_help("the path is relative to the model file's directory")
            })?;
            (0, Some((resolved, bytes)))
        }
    };
    let tensors = match &file {
        Some((resolved, bytes)) => {
            let not_valid = |detail: String| {
                Error::at(
                    lowered.weights_span.clone(),
                    format!(
                        "`{}` is not a valid safetensors file: {detail}",
                        resolved.display()
                    ),
                    "this file",
                )
            };
            // The header parser does unchecked sums on offsets taken from the file; a
            // crafted header must give an error, never a crash.
            let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                SafeTensors::deserialize(bytes)
            }));
            match parsed {
                Ok(Ok(st)) => Some(st),
                Ok(Err(e)) => return Err(not_valid(e.to_string())),
                Err(_) => return Err(not_valid("corrupt header".to_string())),
            }
        }
        None => None,
    };

    let graph = &mut lowered.graph;
    for (node, origin) in graph.nodes.iter().zip(&lowered.nodes) {
        let Some(prefix) = &node.params else {
            continue;
        };
        let shapes: Vec<&Shape> = node
            .inputs
            .iter()
            .map(|&i| &graph.values[i.0].shape)
            .collect();
        let layer = &graph.values[node.output.0].name;
        for spec in node.op.param_specs(&shapes) {
            let name = format!("{prefix}.{}", spec.suffix);
            if let Some(existing) = graph.params.get(&name) {
                if existing.shape != spec.shape {
                    let mut e = Error::at(
                        origin.name_span.clone(),
                        format!(
                            "parameter `{name}` is shared by layers that need different shapes: {} and {}",
                            fmt_shape(&existing.shape),
                            fmt_shape(&spec.shape)
                        ),
                        format!("`{layer}` needs {}", fmt_shape(&spec.shape)),
                    );
                    if let Some(span) = &origin.params_span {
                        e = e.with_label(span.clone(), "parameter prefix given here");
                    }
                    return Err(e);
                }
                continue;
            }
            let tensor = match (&tensors, &file) {
                (Some(st), Some((resolved, _))) => read_tensor(st, &name, &spec.shape, layer)
                    .map_err(|message| {
                        let mut e =
                            Error::at(origin.name_span.clone(), message.text, message.label)
                                .with_label(
                                    lowered.weights_span.clone(),
                                    format!("reading `{}`", resolved.display()),
                                );
                        if let Some(span) = &origin.params_span {
                            e = e.with_label(span.clone(), "parameter prefix given here");
                        }
                        if let Some(help) = message.help {
                            e = e.with_help(help);
                        }
                        e
                    })?,
                _ => try_random_tensor(seed, &name, &spec.shape, spec.kind).map_err(|e| {
                    Error::at(origin.name_span.clone(), e, "this layer's parameters")
                })?,
            };
            graph.params.insert(name, tensor);
        }
    }
    Ok(())
}

/// A problem with one tensor of the file, before it gets its location.
struct TensorProblem {
    text: String,
    label: String,
    help: Option<String>,
}

fn read_tensor(
    st: &SafeTensors<'_>,
    name: &str,
    shape: &Shape,
    layer: &str,
) -> Result<Tensor, TensorProblem> {
    let view = match st.tensor(name) {
        Ok(v) => v,
        Err(_) => {
            let names = st.names();
            let close = similar(name, names.iter().copied(), 5);
            let help = if close.is_empty() {
                None
            } else {
                let q: Vec<String> = close.iter().map(|n| format!("`{n}`")).collect();
                Some(format!("similar names in the file: {}", q.join(", ")))
            };
            return Err(TensorProblem {
                text: format!("tensor `{name}` not found in the weights file"),
                label: format!("`{layer}` needs `{name}` with shape {}", fmt_shape(shape)),
                help,
            });
        }
    };
    if view.shape() != shape.as_slice() {
        return Err(TensorProblem {
            text: format!(
                "tensor `{name}` has shape {} in the weights file, but `{layer}` needs {}",
                fmt_shape(view.shape()),
                fmt_shape(shape)
            ),
            label: format!("needs {} for `{name}`", fmt_shape(shape)),
            help: None,
        });
    }
    let bytes = view.data();
    let data: Vec<f32> = match view.dtype() {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => {
            return Err(TensorProblem {
                text: format!(
                    "tensor `{name}` has dtype {other:?}; only F32, F16, BF16 and F64 are supported"
                ),
                label: format!("`{layer}` reads `{name}`"),
                help: Some("convert the tensor to float32 before saving".to_string()),
            });
        }
    };
    let expected: usize = shape.iter().product();
    if data.len() != expected {
        return Err(TensorProblem {
            text: format!(
                "tensor `{name}` has {} values in the weights file, expected {expected}",
                data.len()
            ),
            label: format!("`{layer}` reads `{name}`"),
            help: None,
        });
    }
    Ok(Tensor {
        shape: shape.clone(),
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_reference() {
        // Reference values of FNV-1a 64.
        assert_eq!(fnv1a64(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64("a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn splitmix_matches_reference() {
        // First output of SplitMix64 seeded with 0.
        let mut r = SplitMix64(0);
        assert_eq!(r.next(), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut r = SplitMix64(42);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((var - 1.0).abs() < 0.02, "{var}");
    }

    #[test]
    fn ranges_by_kind() {
        let check = |kind, lo: f32, hi: f32| {
            let t = random_tensor(1, "x", &[1000], kind);
            assert!(t.data.iter().all(|&v| v >= lo && v <= hi), "{kind:?}");
        };
        check(ParamKind::Bias, -0.1, 0.1);
        check(ParamKind::BnWeight, 0.5, 1.5);
        check(ParamKind::BnBias, -0.2, 0.2);
        check(ParamKind::BnMean, -0.2, 0.2);
        check(ParamKind::BnVar, 0.5, 1.5);
        check(ParamKind::AffineScale, 0.5, 1.5);
        check(ParamKind::AffineShift, -0.2, 0.2);
        check(ParamKind::PadFill, -0.2, 0.2);
    }
}
