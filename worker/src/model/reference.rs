//! What the reference tests share: a tensor sampled by a reference script
//! (`worker/tests/reference/*.py`: every `stride`-th value, with the mean and
//! mean magnitude of the whole tensor) and the comparison against it, with
//! the reference tests' tolerance.

use candle_core::{DType, Tensor};
use serde::Deserialize;

/// A tensor as a reference script samples it.
#[derive(Debug, Deserialize)]
pub struct Sampled {
    pub shape: Vec<usize>,
    pub stride: usize,
    pub values: Vec<f64>,
    pub mean: f64,
    pub abs_mean: f64,
}

/// The reference tests' tolerance: `2e-4 + 1e-3 |reference|`.
pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 2e-4 + 1e-3 * b.abs()
}

/// A tensor's values, flat, as f64.
pub fn flat(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Asserts `ours` has the reference's shape and agrees with its sampled
/// values, mean and mean magnitude within [`close`]; returns the largest
/// absolute difference over the sampled values. `what` names it in failures.
pub fn check(what: &str, ours: &Tensor, reference: &Sampled) -> f64 {
    assert_eq!(ours.dims(), reference.shape.as_slice(), "{what}: shape");
    let ours = flat(ours);
    let mut worst = 0f64;
    for (k, want) in reference.values.iter().enumerate() {
        let got = ours[k * reference.stride];
        worst = worst.max((got - want).abs());
        assert!(
            close(got, *want),
            "{what}[{}]: ours {got}, reference {want}",
            k * reference.stride
        );
    }
    let n = ours.len() as f64;
    let mean = ours.iter().sum::<f64>() / n;
    let abs_mean = ours.iter().map(|v| v.abs()).sum::<f64>() / n;
    assert!(
        close(mean, reference.mean),
        "{what}: mean {mean} vs {}",
        reference.mean
    );
    assert!(
        close(abs_mean, reference.abs_mean),
        "{what}: mean magnitude {abs_mean} vs {}",
        reference.abs_mean
    );
    worst
}
