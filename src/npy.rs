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
    #[error("{path}: not a .npy file (it does not start with the NumPy magic `\\x93NUMPY`)")]
    NotNpy { path: String },
    #[error("{path}: malformed .npy header: {why}")]
    Header { path: String, why: String },
}

/// Headers longer than this are refused (NumPy writes a few hundred bytes).
const MAX_HEADER: usize = 1 << 16;

/// Checks the header before the parser sees it: its length, and that brackets nest no deeper
/// than a header needs (a dict holding a shape tuple). A crafted header of nested brackets
/// made the parser take time exponential in the depth.
fn check_header(path: &Path, file: &mut File) -> Result<(), NpyError> {
    use std::io::{Read, Seek, SeekFrom};
    let header_error = |why: String| NpyError::Header {
        path: path.display().to_string(),
        why,
    };
    let mut magic = [0u8; 8];
    if file.read_exact(&mut magic).is_err() || &magic[..6] != b"\x93NUMPY" {
        return Err(NpyError::NotNpy {
            path: path.display().to_string(),
        });
    }
    let len = match magic[6] {
        1 => {
            let mut b = [0u8; 2];
            file.read_exact(&mut b).map_err(io_error(path))?;
            u16::from_le_bytes(b) as usize
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            file.read_exact(&mut b).map_err(io_error(path))?;
            u32::from_le_bytes(b) as usize
        }
        v => return Err(header_error(format!("unknown format version {v}"))),
    };
    if len > MAX_HEADER {
        return Err(header_error(format!(
            "{len} bytes long (at most {MAX_HEADER})"
        )));
    }
    let mut header = vec![0u8; len];
    file.read_exact(&mut header)
        .map_err(|_| header_error("the file ends inside its header".into()))?;
    let mut depth = 0usize;
    for &b in &header {
        match b {
            b'{' | b'(' | b'[' => {
                depth += 1;
                if depth > 3 {
                    return Err(header_error("brackets nest too deep".into()));
                }
            }
            b'}' | b')' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    let data_start = file.stream_position().map_err(io_error(path))?;
    let data_bytes = file
        .metadata()
        .map_err(io_error(path))?
        .len()
        .saturating_sub(data_start);
    // The shape must fit the bytes the file holds before the parser sizes anything by it.
    let text = String::from_utf8_lossy(&header);
    let shape = text
        .find("'shape'")
        .and_then(|at| {
            let rest = &text[at..];
            let open = rest.find('(')? + 1;
            let close = open + rest[open..].find(')')?;
            Some(&rest[open..close])
        })
        .ok_or_else(|| header_error("no shape".into()))?;
    let width: u64 = if text.contains("f8") { 8 } else { 4 };
    let mut needed = Some(width);
    for dim in shape.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let dim: u64 = dim
            .parse()
            .map_err(|_| header_error(format!("shape entry `{dim}` is not a number")))?;
        needed = needed.and_then(|n| n.checked_mul(dim));
    }
    if needed.is_none_or(|n| n > data_bytes) {
        return Err(header_error(format!(
            "its shape ({shape}) needs more data than the file's {data_bytes} bytes"
        )));
    }
    file.seek(SeekFrom::Start(0)).map_err(io_error(path))?;
    Ok(())
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> NpyError + '_ {
    move |source| NpyError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Reads a float32 or float64 C-order array as an f32 tensor.
pub fn read(path: &Path) -> Result<Tensor, NpyError> {
    let mut file = File::open(path).map_err(io_error(path))?;
    check_header(path, &mut file)?;
    let npy = npyz::NpyFile::new(BufReader::new(file)).map_err(|e| NpyError::Header {
        path: path.display().to_string(),
        why: e.to_string(),
    })?;
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
