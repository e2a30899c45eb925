//! A dense f32 tensor, row-major, outermost dimension first.

use crate::Shape;

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Shape,
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor from its shape and data; panics if they disagree (a programming error).
    pub fn new(shape: Shape, data: Vec<f32>) -> Tensor {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "tensor data does not match shape {shape:?}"
        );
        Tensor { shape, data }
    }

    /// [`Tensor::zeros`], or `None` if the memory is not there.
    pub fn try_zeros(shape: Shape) -> Option<Tensor> {
        let data = crate::limits::try_zeros(shape.iter().product())?;
        Some(Tensor { shape, data })
    }

    pub fn zeros(shape: Shape) -> Tensor {
        let n = shape.iter().product();
        Tensor {
            shape,
            data: vec![0.0; n],
        }
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// Largest absolute value (0 for an empty tensor).
    pub fn max_abs(&self) -> f32 {
        self.data.iter().fold(0.0f32, |m, v| m.max(v.abs()))
    }

    /// Largest absolute elementwise difference to `other` (same shape required);
    /// NaN anywhere gives infinity, so a comparison never passes by accident.
    pub fn max_abs_diff(&self, other: &Tensor) -> f32 {
        assert_eq!(
            self.shape, other.shape,
            "comparing tensors of different shapes"
        );
        self.data
            .iter()
            .zip(&other.data)
            .map(|(a, b)| {
                let d = (a - b).abs();
                if d.is_nan() { f32::INFINITY } else { d }
            })
            .fold(0.0f32, f32::max)
    }
}
