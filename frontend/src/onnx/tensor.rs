//! Constant tensors at import time: decoding initializers (inline or external data) and
//! evaluating the small shape computations exporters emit (Shape, Gather, Concat, ...).

use std::path::Path;

use super::proto::TensorProto;
use super::proto::tensor_proto::{DataLocation, DataType};

/// Element values of a constant: floating point (kept as f32) or integer (kept as i64;
/// booleans are 0/1).
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F(Vec<f32>),
    I(Vec<i64>),
}

/// A constant tensor known while importing.
#[derive(Clone, Debug, PartialEq)]
pub struct Const {
    pub shape: Vec<usize>,
    pub data: Data,
}

impl Const {
    pub fn floats(shape: Vec<usize>, v: Vec<f32>) -> Const {
        Const {
            shape,
            data: Data::F(v),
        }
    }

    pub fn ints(shape: Vec<usize>, v: Vec<i64>) -> Const {
        Const {
            shape,
            data: Data::I(v),
        }
    }

    pub fn numel(&self) -> usize {
        match &self.data {
            Data::F(v) => v.len(),
            Data::I(v) => v.len(),
        }
    }

    pub fn is_float(&self) -> bool {
        matches!(self.data, Data::F(_))
    }

    /// The values as f32 (integers converted).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            Data::F(v) => v.clone(),
            Data::I(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// The values as i64 (floats truncated toward zero, as ONNX Cast does).
    pub fn to_i64(&self) -> Vec<i64> {
        match &self.data {
            Data::F(v) => v.iter().map(|&x| x as i64).collect(),
            Data::I(v) => v.clone(),
        }
    }

    /// The single value of a scalar or one-element tensor.
    pub fn scalar_f64(&self) -> Option<f64> {
        if self.numel() != 1 {
            return None;
        }
        Some(match &self.data {
            Data::F(v) => f64::from(v[0]),
            Data::I(v) => v[0] as f64,
        })
    }

    fn map_index(&self, idx: &[usize]) -> Const {
        let data = match &self.data {
            Data::F(v) => Data::F(idx.iter().map(|&i| v[i]).collect()),
            Data::I(v) => Data::I(idx.iter().map(|&i| v[i]).collect()),
        };
        Const {
            shape: Vec::new(),
            data,
        }
    }
}

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Largest number of elements of a tensor known at import time (an initializer or a folded
/// constant): 1 GiB of f32, four times the largest weight of the CNNs bnc targets.
pub const MAX_CONST_ELEMENTS: usize = 1 << 28;

/// The number of elements of `dims` (ONNX int64 dims), or an error for a negative dimension
/// or an absurd size.
pub fn checked_numel(dims: &[i64]) -> Result<(Vec<usize>, usize), String> {
    let mut shape = Vec::with_capacity(dims.len());
    for &d in dims {
        shape.push(usize::try_from(d).map_err(|_| format!("negative dimension {d}"))?);
    }
    let n = check_const_shape(&shape)?;
    Ok((shape, n))
}

/// The number of elements of a constant of this shape, or an error past
/// [`MAX_CONST_ELEMENTS`]. Zero-size dimensions count as 1 in the bound, so that any product
/// of a subset of the dimensions (strides, flattened sizes) stays small too.
pub fn check_const_shape(shape: &[usize]) -> Result<usize, String> {
    let mut bound: usize = 1;
    for &d in shape {
        bound = bound
            .checked_mul(d.max(1))
            .filter(|&b| b <= MAX_CONST_ELEMENTS)
            .ok_or_else(|| {
                format!(
                    "tensor shape {shape:?} is too large (at most {MAX_CONST_ELEMENTS} elements)"
                )
            })?;
    }
    Ok(shape.iter().product())
}

fn dtype_name(t: i32) -> String {
    DataType::try_from(t)
        .map(|d| d.as_str_name().to_string())
        .unwrap_or_else(|_| format!("type {t}"))
}

/// Decodes a tensor. External data is looked up relative to `base_dir`.
pub fn decode(t: &TensorProto, base_dir: &Path) -> Result<Const, String> {
    let (shape, n) = checked_numel(&t.dims)?;
    let dt = t.data_type();
    let ty = DataType::try_from(dt).map_err(|_| format!("unknown data type {dt}"))?;
    let unsupported = || {
        Err(format!(
            "data type {} is not supported (bnc reads float, double, float16, bfloat16 and integer tensors)",
            dtype_name(dt)
        ))
    };
    let size = match ty {
        DataType::Float | DataType::Int32 | DataType::Uint32 => 4,
        DataType::Double | DataType::Int64 | DataType::Uint64 => 8,
        DataType::Float16 | DataType::Bfloat16 | DataType::Int16 | DataType::Uint16 => 2,
        DataType::Int8 | DataType::Uint8 | DataType::Bool => 1,
        _ => return unsupported(),
    };
    let external = t.data_location() == DataLocation::External || !t.external_data.is_empty();
    let owned;
    let raw: Option<&[u8]> = if external {
        owned = read_external(t, base_dir, n * size)?;
        Some(&owned)
    } else if t.raw_data.is_some() {
        Some(t.raw_data())
    } else {
        None
    };
    let count_err = |got: usize| {
        Err(format!(
            "holds {got} element(s) of {} but its shape {:?} needs {n}",
            dtype_name(dt),
            shape
        ))
    };
    if let Some(raw) = raw {
        if raw.len() != n * size {
            return Err(format!(
                "has {} bytes of {} data but its shape {:?} needs {}",
                raw.len(),
                dtype_name(dt),
                shape,
                n * size
            ));
        }
        let f = |k: usize| -> [u8; 8] {
            let mut b = [0u8; 8];
            b[..size].copy_from_slice(&raw[k * size..(k + 1) * size]);
            b
        };
        let data = match ty {
            DataType::Float => Data::F(
                (0..n)
                    .map(|k| f32::from_le_bytes(f(k)[..4].try_into().expect("4 bytes")))
                    .collect(),
            ),
            DataType::Double => Data::F((0..n).map(|k| f64::from_le_bytes(f(k)) as f32).collect()),
            DataType::Float16 => Data::F(
                (0..n)
                    .map(|k| half::f16::from_le_bytes([f(k)[0], f(k)[1]]).to_f32())
                    .collect(),
            ),
            DataType::Bfloat16 => Data::F(
                (0..n)
                    .map(|k| half::bf16::from_le_bytes([f(k)[0], f(k)[1]]).to_f32())
                    .collect(),
            ),
            DataType::Int64 | DataType::Uint64 => {
                Data::I((0..n).map(|k| i64::from_le_bytes(f(k))).collect())
            }
            DataType::Int32 => Data::I(
                (0..n)
                    .map(|k| i64::from(i32::from_le_bytes(f(k)[..4].try_into().expect("4"))))
                    .collect(),
            ),
            DataType::Uint32 => Data::I(
                (0..n)
                    .map(|k| i64::from(u32::from_le_bytes(f(k)[..4].try_into().expect("4"))))
                    .collect(),
            ),
            DataType::Int16 => Data::I(
                (0..n)
                    .map(|k| i64::from(i16::from_le_bytes([f(k)[0], f(k)[1]])))
                    .collect(),
            ),
            DataType::Uint16 => Data::I(
                (0..n)
                    .map(|k| i64::from(u16::from_le_bytes([f(k)[0], f(k)[1]])))
                    .collect(),
            ),
            DataType::Int8 => Data::I((0..n).map(|k| i64::from(f(k)[0] as i8)).collect()),
            DataType::Uint8 | DataType::Bool => {
                Data::I((0..n).map(|k| i64::from(f(k)[0])).collect())
            }
            _ => return unsupported(),
        };
        return Ok(Const { shape, data });
    }
    let data = match ty {
        DataType::Float => {
            if t.float_data.len() != n {
                return count_err(t.float_data.len());
            }
            Data::F(t.float_data.clone())
        }
        DataType::Double => {
            if t.double_data.len() != n {
                return count_err(t.double_data.len());
            }
            Data::F(t.double_data.iter().map(|&v| v as f32).collect())
        }
        DataType::Float16 | DataType::Bfloat16 => {
            if t.int32_data.len() != n {
                return count_err(t.int32_data.len());
            }
            Data::F(
                t.int32_data
                    .iter()
                    .map(|&bits| {
                        let bits = bits as u16;
                        if ty == DataType::Float16 {
                            half::f16::from_bits(bits).to_f32()
                        } else {
                            half::bf16::from_bits(bits).to_f32()
                        }
                    })
                    .collect(),
            )
        }
        DataType::Int64 => {
            if t.int64_data.len() != n {
                return count_err(t.int64_data.len());
            }
            Data::I(t.int64_data.clone())
        }
        DataType::Uint32 | DataType::Uint64 => {
            if t.uint64_data.len() != n {
                return count_err(t.uint64_data.len());
            }
            Data::I(t.uint64_data.iter().map(|&v| v as i64).collect())
        }
        _ => {
            if t.int32_data.len() != n {
                return count_err(t.int32_data.len());
            }
            Data::I(t.int32_data.iter().map(|&v| i64::from(v)).collect())
        }
    };
    Ok(Const { shape, data })
}

/// Reads the `bytes` bytes of an externally stored tensor. The ONNX spec requires `location`
/// to be a relative path inside the model's folder: an absolute path, a `..` component, a
/// symbolic link leading out of the folder, or anything but a regular file (`/dev/zero`,
/// `/dev/stdin`) is refused, and exactly `offset..offset + bytes` is read.
fn read_external(t: &TensorProto, base_dir: &Path, bytes: usize) -> Result<Vec<u8>, String> {
    use std::io::{Read, Seek, SeekFrom};
    use std::path::Component;

    let mut location = None;
    let mut offset = 0u64;
    let mut length = None;
    for e in &t.external_data {
        match e.key() {
            "location" => location = Some(e.value().to_string()),
            "offset" => {
                offset = e
                    .value()
                    .parse()
                    .map_err(|_| format!("external data offset `{}` is not a number", e.value()))?
            }
            "length" => {
                length =
                    Some(e.value().parse::<u64>().map_err(|_| {
                        format!("external data length `{}` is not a number", e.value())
                    })?)
            }
            _ => {}
        }
    }
    let location = location.ok_or("is stored externally but names no `location`")?;
    let relative = Path::new(&location);
    let inside = !location.is_empty()
        && relative
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !inside {
        return Err(format!(
            "names the external data file `{location}`, which is not a relative path inside the model's folder"
        ));
    }
    let path = base_dir.join(relative);
    let cannot = |e: std::io::Error| {
        format!(
            "is stored in the external data file `{location}`, which cannot be read ({}: {e})",
            path.display()
        )
    };
    // Resolve links: the file itself must lie inside the model's folder.
    let folder = base_dir.canonicalize().map_err(cannot)?;
    let resolved = path.canonicalize().map_err(cannot)?;
    if !resolved.starts_with(&folder) {
        return Err(format!(
            "names the external data file `{location}`, which leads out of the model's folder"
        ));
    }
    let mut file = std::fs::File::open(&resolved).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(format!(
            "names the external data file `{location}`, which is not a regular file"
        ));
    }
    if let Some(len) = length
        && len != bytes as u64
    {
        return Err(format!(
            "reads {len} bytes of the external data file `{location}`, but its shape and type need {bytes}"
        ));
    }
    let end = offset.checked_add(bytes as u64);
    if end.is_none_or(|end| end > meta.len()) {
        return Err(format!(
            "reads bytes {offset}..{offset}+{bytes} of the external data file `{location}`, which has only {}",
            meta.len()
        ));
    }
    let mut data = Vec::new();
    data.try_reserve_exact(bytes)
        .map_err(|_| format!("needs {bytes} bytes of memory for its external data"))?;
    file.seek(SeekFrom::Start(offset)).map_err(cannot)?;
    file.take(bytes as u64)
        .read_to_end(&mut data)
        .map_err(cannot)?;
    if data.len() != bytes {
        return Err(format!(
            "external data file `{location}` ended after {} of {bytes} bytes",
            data.len()
        ));
    }
    Ok(data)
}

/// The broadcast shape of two shapes (numpy rules), or `None`.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return None;
        };
    }
    Some(out)
}

/// For each element of the broadcast `out` shape, the flat index into a tensor of `shape`.
pub fn broadcast_index(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let r = out.len();
    let s = strides(shape);
    let n: usize = out.iter().product();
    let mut idx = Vec::with_capacity(n);
    let mut pos = vec![0usize; r];
    for _ in 0..n {
        let mut k = 0;
        for (i, &p) in pos.iter().enumerate() {
            if i + shape.len() >= r {
                let j = i + shape.len() - r;
                if shape[j] != 1 {
                    k += p * s[j];
                }
            }
        }
        idx.push(k);
        for i in (0..r).rev() {
            pos[i] += 1;
            if pos[i] < out[i] {
                break;
            }
            pos[i] = 0;
        }
    }
    idx
}

/// Elementwise arithmetic with broadcasting: `op` is one of Add, Sub, Mul, Div.
pub fn binary(op: &str, a: &Const, b: &Const) -> Result<Const, String> {
    let out = broadcast_shape(&a.shape, &b.shape)
        .ok_or_else(|| format!("shapes {:?} and {:?} do not broadcast", a.shape, b.shape))?;
    let ia = broadcast_index(&a.shape, &out);
    let ib = broadcast_index(&b.shape, &out);
    if let (Data::I(x), Data::I(y)) = (&a.data, &b.data) {
        let mut v = Vec::with_capacity(ia.len());
        for (&i, &j) in ia.iter().zip(&ib) {
            let (p, q) = (x[i], y[j]);
            v.push(match op {
                "Add" => p.wrapping_add(q),
                "Sub" => p.wrapping_sub(q),
                "Mul" => p.wrapping_mul(q),
                _ => {
                    if q == 0 {
                        return Err("integer division by zero".into());
                    }
                    p.wrapping_div(q)
                }
            });
        }
        return Ok(Const::ints(out, v));
    }
    let (x, y) = (a.to_f32(), b.to_f32());
    let v = ia
        .iter()
        .zip(&ib)
        .map(|(&i, &j)| {
            let (p, q) = (x[i], y[j]);
            match op {
                "Add" => p + q,
                "Sub" => p - q,
                "Mul" => p * q,
                _ => p / q,
            }
        })
        .collect();
    Ok(Const::floats(out, v))
}

/// Normalises an axis in `-rank..rank` (with `inclusive`, in `-rank-1..=rank`).
pub fn axis(a: i64, rank: usize, inclusive: bool) -> Result<usize, String> {
    let r = rank as i64 + i64::from(inclusive);
    let v = if a < 0 { a + r } else { a };
    if v < 0 || v >= r {
        return Err(format!("axis {a} is out of range for rank {rank}"));
    }
    Ok(v as usize)
}

pub fn gather(data: &Const, indices: &Const, ax: i64) -> Result<Const, String> {
    if data.shape.is_empty() {
        return Err("Gather of a scalar".into());
    }
    let ax = axis(ax, data.shape.len(), false)?;
    let dim = data.shape[ax];
    let idx: Vec<usize> = indices
        .to_i64()
        .into_iter()
        .map(|i| {
            let j = if i < 0 { i + dim as i64 } else { i };
            usize::try_from(j)
                .ok()
                .filter(|&j| j < dim)
                .ok_or_else(|| format!("index {i} is out of range for a dimension of {dim}"))
        })
        .collect::<Result<_, _>>()?;
    let outer: usize = data.shape[..ax].iter().product();
    let inner: usize = data.shape[ax + 1..].iter().product();
    let mut flat = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &i in &idx {
            for k in 0..inner {
                flat.push((o * dim + i) * inner + k);
            }
        }
    }
    let mut c = data.map_index(&flat);
    let mut shape = data.shape[..ax].to_vec();
    shape.extend_from_slice(&indices.shape);
    shape.extend_from_slice(&data.shape[ax + 1..]);
    c.shape = shape;
    Ok(c)
}

pub fn concat(parts: &[&Const], ax: i64) -> Result<Const, String> {
    let first = parts.first().ok_or("Concat of nothing")?;
    let rank = first.shape.len();
    let ax = axis(ax, rank, false)?;
    let float = parts.iter().any(|p| p.is_float());
    let mut shape = first.shape.clone();
    shape[ax] = 0;
    for p in parts {
        let same =
            p.shape.len() == rank && (0..rank).all(|i| i == ax || p.shape[i] == first.shape[i]);
        if !same {
            return Err(format!(
                "Concat inputs {:?} and {:?} disagree off axis {ax}",
                first.shape, p.shape
            ));
        }
        shape[ax] += p.shape[ax];
    }
    check_const_shape(&shape)?;
    let outer: usize = first.shape[..ax].iter().product();
    let mut fv = Vec::new();
    let mut iv = Vec::new();
    for o in 0..outer {
        for p in parts {
            let chunk: usize = p.shape[ax..].iter().product();
            let range = o * chunk..(o + 1) * chunk;
            if float {
                fv.extend_from_slice(&p.to_f32()[range]);
            } else {
                iv.extend_from_slice(&p.to_i64()[range]);
            }
        }
    }
    Ok(if float {
        Const::floats(shape, fv)
    } else {
        Const::ints(shape, iv)
    })
}

/// ONNX Slice on a constant.
pub fn slice(
    data: &Const,
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> Result<Const, String> {
    let rank = data.shape.len();
    let mut begin = vec![0i64; rank];
    let mut step = vec![1i64; rank];
    let mut count: Vec<usize> = data.shape.clone();
    if starts.len() != ends.len() {
        return Err("Slice starts and ends differ in length".into());
    }
    for k in 0..starts.len() {
        let ax = match axes {
            Some(a) => axis(*a.get(k).ok_or("Slice axes too short")?, rank, false)?,
            None => k,
        };
        if ax >= rank {
            return Err("Slice has more starts than axes".into());
        }
        let st = steps.map_or(1, |s| s.get(k).copied().unwrap_or(1));
        if st == 0 {
            return Err("Slice step 0".into());
        }
        let dim = data.shape[ax] as i64;
        let norm = |v: i64| if v < 0 { v + dim } else { v };
        let (s, e) = (norm(starts[k]), norm(ends[k]));
        let (s, e, n) = if st > 0 {
            let s = s.clamp(0, dim);
            let e = e.clamp(0, dim);
            // (e - s - 1) / st + 1, which cannot overflow for any step.
            (s, e, if e > s { (e - s - 1) / st + 1 } else { 0 })
        } else {
            let s = s.clamp(-1, dim - 1);
            let e = e.clamp(-1, dim - 1);
            (
                s,
                e,
                if s > e {
                    (s - e - 1) / st.checked_neg().unwrap_or(i64::MAX) + 1
                } else {
                    0
                },
            )
        };
        let _ = e;
        begin[ax] = s;
        step[ax] = st;
        count[ax] = n as usize;
    }
    let str_in = strides(&data.shape);
    let total: usize = count.iter().product();
    let mut idx = Vec::with_capacity(total);
    let mut pos = vec![0usize; rank];
    for _ in 0..total {
        let mut k = 0i64;
        for i in 0..rank {
            k += (begin[i] + pos[i] as i64 * step[i]) * str_in[i] as i64;
        }
        idx.push(k as usize);
        for i in (0..rank).rev() {
            pos[i] += 1;
            if pos[i] < count[i] {
                break;
            }
            pos[i] = 0;
        }
    }
    let mut c = data.map_index(&idx);
    c.shape = count;
    Ok(c)
}

pub fn transpose(data: &Const, perm: &[usize]) -> Result<Const, String> {
    let rank = data.shape.len();
    let mut seen = vec![false; rank];
    if perm.len() != rank
        || perm
            .iter()
            .any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
    {
        return Err(format!("Transpose perm {perm:?} does not fit rank {rank}"));
    }
    let out: Vec<usize> = perm.iter().map(|&p| data.shape[p]).collect();
    let s = strides(&data.shape);
    let n: usize = out.iter().product();
    let mut idx = Vec::with_capacity(n);
    let mut pos = vec![0usize; rank];
    for _ in 0..n {
        idx.push((0..rank).map(|i| pos[i] * s[perm[i]]).sum());
        for i in (0..rank).rev() {
            pos[i] += 1;
            if pos[i] < out[i] {
                break;
            }
            pos[i] = 0;
        }
    }
    let mut c = data.map_index(&idx);
    c.shape = out;
    Ok(c)
}

/// The target shape of an ONNX Reshape of `input` to `spec` (0 copies a dimension unless
/// `allow_zero`, -1 is inferred).
pub fn reshape_target(
    input: &[usize],
    spec: &[i64],
    allow_zero: bool,
) -> Result<Vec<usize>, String> {
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 => {
                if infer.replace(i).is_some() {
                    return Err(format!("Reshape shape {spec:?} has more than one -1"));
                }
                out.push(1);
            }
            0 if !allow_zero => out.push(
                *input
                    .get(i)
                    .ok_or_else(|| format!("Reshape shape {spec:?} copies a missing dimension"))?,
            ),
            d if d >= 0 => out.push(d as usize),
            _ => return Err(format!("Reshape shape {spec:?} has a negative dimension")),
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot reshape {input:?} to {spec:?}"));
        }
        out[i] = total / known;
    } else if known != total {
        return Err(format!(
            "cannot reshape {input:?} ({total} elements) to {spec:?}"
        ));
    }
    Ok(out)
}
