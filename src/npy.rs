//! Tensors in and out as NumPy `.npy` files.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;

use bnc_ir::Tensor;
use npyz::WriterBuilder;

/// Why a `.npy` file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: unsupported dtype `{dtype}` (expected float32 or float64)")]
    DType { path: String, dtype: String },
    #[error("{path}: Fortran-order arrays are not supported; save with np.ascontiguousarray")]
    FortranOrder { path: String },
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> NpyError + '_ {
    move |source| NpyError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Reads a float32 or float64 C-order array as an f32 tensor.
pub fn read(path: &Path) -> Result<Tensor, NpyError> {
    let file = File::open(path).map_err(io_error(path))?;
    let npy = npyz::NpyFile::new(BufReader::new(file)).map_err(io_error(path))?;
    if npy.order() == npyz::Order::Fortran {
        return Err(NpyError::FortranOrder {
            path: path.display().to_string(),
        });
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let dtype = npy.dtype();
    let descr = dtype.descr();
    let data: Vec<f32> = match descr.trim_matches('\'') {
        "<f4" => npy.into_vec::<f32>().map_err(io_error(path))?,
        "<f8" => npy
            .into_vec::<f64>()
            .map_err(io_error(path))?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        other => {
            return Err(NpyError::DType {
                path: path.display().to_string(),
                dtype: other.to_string(),
            });
        }
    };
    Ok(Tensor::new(shape, data))
}

/// Writes a tensor as a float32 C-order array.
pub fn write(path: &Path, tensor: &Tensor) -> Result<(), NpyError> {
    let file = File::create(path).map_err(io_error(path))?;
    let shape: Vec<u64> = tensor.shape.iter().map(|&d| d as u64).collect();
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(BufWriter::new(file))
        .begin_nd()
        .map_err(io_error(path))?;
    writer
        .extend(tensor.data.iter().copied())
        .map_err(io_error(path))?;
    writer.finish().map_err(io_error(path))
}
