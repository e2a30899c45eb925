//! Writing a graph's parameters as a safetensors file (the counterpart of the frontend's
//! loader), so a folded model saved as `.nn` parses and runs again.

use std::path::Path;

use bnc_ir::Graph;
use safetensors::Dtype;
use safetensors::tensor::TensorView;

/// Writes every parameter tensor of `graph` as little-endian F32.
pub fn save_weights(graph: &Graph, path: &Path) -> Result<(), safetensors::SafeTensorError> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = graph
        .params
        .iter()
        .map(|(name, t)| {
            let data = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), data, t.shape.clone())
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, data, shape)| {
            Ok((
                name.as_str(),
                TensorView::new(Dtype::F32, shape.clone(), data)?,
            ))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    // Not `serialize_to_file`: it writes through a file created with mode 0600, and a
    // weights file should get the permissions the user's umask gives any other file.
    let bytes = safetensors::serialize(views, None)?;
    std::fs::write(path, bytes).map_err(safetensors::SafeTensorError::from)
}
