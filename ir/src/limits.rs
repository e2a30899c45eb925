//! Size limits that hold for every graph, however it was made: `.nn` lowering, ONNX import
//! and the passes all build nodes through [`crate::Op::infer_shape`], which checks every value
//! and parameter shape here; whole models are checked with [`Limits::check`] before any
//! weight is generated or compiled. Sizes come from files, so all arithmetic on them is
//! checked: a shape that overflows is "too large", never a wrapped small number.

use crate::{Graph, Shape};

/// Largest number of elements of one tensor (16 GiB of f32).
pub const MAX_ELEMENTS: usize = 1 << 32;

/// The number of elements of `shape`, or `None` on overflow or past [`MAX_ELEMENTS`].
pub fn numel(shape: &[usize]) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
}

/// "f32[...] has more than N elements".
pub fn too_large(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!(
        "tensor too large: f32[{}] has more than {MAX_ELEMENTS} elements",
        dims.join(", ")
    )
}

/// `Ok` when `shape` is within [`MAX_ELEMENTS`].
pub fn check_shape(shape: &[usize]) -> Result<(), String> {
    numel(shape).map(drop).ok_or_else(|| too_large(shape))
}

/// Limits on a whole model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// All parameter tensors together, in bytes of f32.
    pub param_bytes: u64,
    /// All values (inputs and every node's output) together, in bytes of f32: a bound on the
    /// workspace, which reuses memory between values.
    pub value_bytes: u64,
}

/// `n` zeros, or `None` if the memory is not there: for buffers whose size a model file
/// decides, so that a machine short of memory gives an error instead of an abort.
pub fn try_zeros(n: usize) -> Option<Vec<f32>> {
    let mut data = Vec::new();
    data.try_reserve_exact(n).ok()?;
    data.resize(n, 0.0);
    Some(data)
}

/// The bytes of all of `graph`'s values, saturating (what [`Limits::check`] bounds).
pub fn value_bytes(graph: &Graph) -> u64 {
    graph.values.iter().fold(0u64, |total, v| {
        let n = numel(&v.shape).map_or(u64::MAX, |n| n as u64);
        total.saturating_add(n.saturating_mul(4))
    })
}

impl Default for Limits {
    /// 4 GiB of parameters (ten times the largest CNN bnc targets) and 16 GiB of values;
    /// `BNC_MAX_MODEL_BYTES` in the environment sets both.
    fn default() -> Limits {
        let from_env = std::env::var("BNC_MAX_MODEL_BYTES")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok());
        Limits {
            param_bytes: from_env.unwrap_or(4 << 30),
            value_bytes: from_env.unwrap_or(16 << 30),
        }
    }
}

impl Limits {
    /// Checks `graph`'s parameters (those it has, and those its nodes need but that are not
    /// generated yet) and values against the limits.
    pub fn check(&self, graph: &Graph) -> Result<(), String> {
        let mut params: u64 = 0;
        for node in &graph.nodes {
            let shapes: Vec<&Shape> = node.inputs.iter().map(|&i| graph.shape(i)).collect();
            for spec in node.op.param_specs(&shapes) {
                let n = numel(&spec.shape).ok_or_else(|| too_large(&spec.shape))?;
                params = params.saturating_add(4 * n as u64);
            }
        }
        if params > self.param_bytes {
            return Err(format!(
                "model too large: its parameters need {} bytes, more than the limit of {} (set BNC_MAX_MODEL_BYTES to raise it)",
                params, self.param_bytes
            ));
        }
        for v in &graph.values {
            numel(&v.shape).ok_or_else(|| too_large(&v.shape))?;
        }
        let values = value_bytes(graph);
        if values > self.value_bytes {
            return Err(format!(
                "model too large: its tensors need {} bytes, more than the limit of {} (set BNC_MAX_MODEL_BYTES to raise it)",
                values, self.value_bytes
            ));
        }
        Ok(())
    }
}
