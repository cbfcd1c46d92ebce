//! diffusers' GEGLU activation, `h * gelu(gate)` with the exact (erf) GELU,
//! over the two halves of the feed-forward projection, in one pass on the CPU
//! (f32). Candle's path is a chunk (two strided views), `gelu_erf` (libm's
//! scalar `erf`, one value at a time) and a product: three full-size tensors.
//!
//! `gelu(x) = x / 2 * (1 + erf(x / sqrt 2))`, with `erfc` from Numerical
//! Recipes' `erfcc` (Chebyshev fit, fractional error below 1.2e-7) on our
//! vectorisable [`crate::exp::exp`]: no branch, so the loop vectorises.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use crate::contiguous_f32;
use crate::exp::exp;

/// `x [..., 2n]` -> `[..., n]`: the first half times the GELU of the second.
/// Our kernel for CPU f32; Candle's ops otherwise. Errors: an odd last dim.
pub fn geglu(x: &Tensor) -> Result<Tensor> {
    let last = x.dim(D::Minus1)?;
    if last % 2 != 0 {
        candle_core::bail!("geglu: the last dimension ({last}) must be even")
    }
    if !matches!(x.device(), Device::Cpu) || x.dtype() != DType::F32 {
        let halves = x.chunk(2, D::Minus1)?;
        return &halves[0] * halves[1].gelu_erf()?;
    }
    x.contiguous()?.apply_op1_no_bwd(&Geglu)
}

struct Geglu;

impl CustomOp1 for Geglu {
    fn name(&self) -> &'static str {
        "sd-geglu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32("sd-geglu", s, l)?;
        let dims = l.shape().dims();
        let n = dims[dims.len() - 1] / 2;
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("rank >= 1") = n;
        let mut out = vec![0f32; x.len() / 2];
        if n > 0 {
            out.par_chunks_mut(n)
                .zip(x.par_chunks(2 * n))
                .for_each(|(o, row)| {
                    let (h, gate) = row.split_at(n);
                    for ((o, &h), &g) in o.iter_mut().zip(h).zip(gate) {
                        *o = h * gelu(g);
                    }
                });
        }
        Ok((CpuStorage::F32(out), Shape::from(out_dims)))
    }
}

/// The exact GELU, `x / 2 * erfc(-x / sqrt 2)`.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    let z = (x * std::f32::consts::FRAC_1_SQRT_2).abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.265_512_2
        + t * (1.000_023_7
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_204
                                + t * (1.488_515_9 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    // erfc(|x| / sqrt 2)
    let e = t * exp(-z * z + poly);
    let half = 0.5 * x;
    if x >= 0.0 {
        x - half * e
    } else {
        half * e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::max_abs;

    #[test]
    fn gelu_matches_the_exact_gelu() {
        let xs: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.005).collect();
        let t = Tensor::new(xs.as_slice(), &Device::Cpu).unwrap();
        let exact = t.gelu_erf().unwrap().to_vec1::<f32>().unwrap();
        for (&x, &e) in xs.iter().zip(&exact) {
            let ours = gelu(x);
            assert!(
                (ours - e).abs() <= 2e-6 * e.abs().max(1.0),
                "x {x}: {ours} vs {e}"
            );
        }
    }

    #[test]
    fn geglu_gates_the_first_half_with_the_second() {
        let x = (Tensor::randn(0f32, 1.0, (2, 7, 24), &Device::Cpu).unwrap() * 3.0).unwrap();
        let ours = geglu(&x).unwrap();
        let halves = x.chunk(2, D::Minus1).unwrap();
        let reference = (&halves[0] * halves[1].gelu_erf().unwrap()).unwrap();
        assert_eq!(ours.dims(), [2, 7, 12]);
        assert!(max_abs(&ours, &reference) < 1e-5);
        assert!(geglu(&Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap()).is_err());
        let f64s = x.to_dtype(DType::F64).unwrap();
        assert_eq!(geglu(&f64s).unwrap().dims(), [2, 7, 12]);
    }
}
