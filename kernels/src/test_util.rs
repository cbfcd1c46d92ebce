//! Helpers of the kernels' unit tests.

use candle_core::Tensor;

/// The largest `|a - b|` over two tensors of one shape.
pub fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}
