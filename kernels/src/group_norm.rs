//! GroupNorm, optionally followed by SiLU, in three passes over each group on
//! the CPU (f32): the mean, the variance around it, then normalise, scale,
//! shift (and `x * sigmoid(x)`) into the output.
//!
//! Candle's `GroupNorm` is eight tensor ops (reshape, sum, divide, subtract,
//! square, sum, divide, sqrt, divide, multiply, add), each allocating and
//! writing a full-size tensor, and its reductions are scalar; the SiLU that
//! follows it in every ResNet block is two more. Formula as
//! `torch.nn.functional.group_norm` (biased variance, `eps` inside the square
//! root), then `torch.nn.functional.silu`.

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::contiguous_f32;
use crate::exp::silu;

/// `x [b, c, ...]` normalised over `groups` groups of `c / groups` channels
/// (and every position), then `* weight [c] + bias [c]`, then SiLU when
/// `silu`. Our kernel for CPU f32 contiguous-able input; Candle's ops
/// otherwise (in f32 for f16/bf16 input, as `candle_nn::GroupNorm`).
///
/// Errors: `c` not a multiple of `groups`, weight or bias not `[c]`, rank < 3.
pub fn group_norm(
    x: &Tensor,
    groups: usize,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    let dims = x.dims();
    if dims.len() < 3 {
        candle_core::bail!("group_norm: input of rank {} (at least 3)", dims.len())
    }
    let c = dims[1];
    if groups == 0 || !c.is_multiple_of(groups) {
        candle_core::bail!("group_norm: {c} channels do not split into {groups} groups")
    }
    if weight.dims() != [c] || bias.dims() != [c] {
        candle_core::bail!("group_norm: weight and bias must be [{c}]")
    }
    let ours = matches!(x.device(), Device::Cpu)
        && [x.dtype(), weight.dtype(), bias.dtype()] == [DType::F32; 3];
    if ours {
        let x = x.contiguous()?;
        return x.apply_op3_no_bwd(weight, bias, &GroupNormOp { groups, eps, silu });
    }
    reference(x, groups, weight, bias, eps, silu)
}

/// Candle's ops: what [`group_norm`] computes, for the devices and dtypes the
/// kernel does not take (and the unit tests' yardstick).
pub fn reference(
    x: &Tensor,
    groups: usize,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let dtype = x.dtype();
    let wide = match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    };
    let n = x.elem_count() / (dims[0] * groups);
    let g = x.reshape((dims[0], groups, n))?.to_dtype(wide)?;
    let centred = g.broadcast_sub(&(g.sum_keepdim(2)? / n as f64)?)?;
    let var = (centred.sqr()?.sum_keepdim(2)? / n as f64)?;
    let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
    let mut shape = vec![1; dims.len()];
    shape[1] = dims[1];
    let y = normed
        .to_dtype(dtype)?
        .reshape(dims)?
        .broadcast_mul(&weight.reshape(shape.clone())?)?
        .broadcast_add(&bias.reshape(shape)?)?;
    if silu {
        candle_nn::ops::silu(&y)
    } else {
        Ok(y)
    }
}

struct GroupNormOp {
    groups: usize,
    eps: f64,
    silu: bool,
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        "sd-group-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32("sd-group-norm", s1, l1)?;
        let (w, b) = (
            contiguous_f32("sd-group-norm", s2, l2)?,
            contiguous_f32("sd-group-norm", s3, l3)?,
        );
        let dims = l1.shape().dims();
        let c = dims[1];
        let positions: usize = dims[2..].iter().product();
        let per_group = c / self.groups;
        let group_len = per_group * positions;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(group_len.max(1))
            .zip(x.par_chunks(group_len.max(1)))
            .enumerate()
            .for_each(|(task, (dst, src))| {
                let first_channel = (task % self.groups) * per_group;
                let (mean, inv_std) = moments(src, self.eps);
                for (ch, (d, s)) in dst
                    .chunks_exact_mut(positions.max(1))
                    .zip(src.chunks_exact(positions.max(1)))
                    .enumerate()
                {
                    let scale = inv_std * w[first_channel + ch];
                    let shift = b[first_channel + ch] - mean * scale;
                    if self.silu {
                        for (d, &s) in d.iter_mut().zip(s) {
                            let y = s * scale + shift;
                            *d = silu(y);
                        }
                    } else {
                        for (d, &s) in d.iter_mut().zip(s) {
                            *d = s * scale + shift;
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Mean and `1 / sqrt(biased variance + eps)` of one group, summed in 16
/// f32 lanes (vectorised) and combined in f64.
fn moments(src: &[f32], eps: f64) -> (f32, f32) {
    const LANES: usize = 16;
    let n = src.len().max(1) as f64;
    let lane_sum = |f: &dyn Fn(f32) -> f32| -> f64 {
        let mut acc = [0f32; LANES];
        let chunks = src.chunks_exact(LANES);
        let tail: f64 = chunks.remainder().iter().map(|&v| f(v) as f64).sum();
        for chunk in chunks {
            for (a, &v) in acc.iter_mut().zip(chunk) {
                *a += f(v);
            }
        }
        acc.iter().map(|&a| a as f64).sum::<f64>() + tail
    };
    let mean = (lane_sum(&|v| v) / n) as f32;
    let var = lane_sum(&|v| (v - mean) * (v - mean)) / n;
    (mean, (1.0 / (var + eps).sqrt()) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::max_abs;

    #[test]
    fn matches_candles_group_norm_and_silu() {
        let dev = Device::Cpu;
        for (shape, groups) in [
            (vec![2, 64, 9, 7], 32),
            (vec![1, 6, 33], 3),
            (vec![2, 320, 16, 16], 32),
        ] {
            let c = shape[1];
            // Offset and scaled input: the variance pass must not lose the mean.
            let x = ((Tensor::randn(0f32, 1.0, shape.as_slice(), &dev).unwrap() * 3.0).unwrap()
                + 5.0)
                .unwrap();
            let w = Tensor::randn(1f32, 0.2, c, &dev).unwrap();
            let b = Tensor::randn(0f32, 0.2, c, &dev).unwrap();
            for silu in [false, true] {
                let ours = group_norm(&x, groups, &w, &b, 1e-5, silu).unwrap();
                let theirs = reference(&x, groups, &w, &b, 1e-5, silu).unwrap();
                let diff = max_abs(&ours, &theirs);
                assert!(diff < 2e-5, "{shape:?} / {groups}, silu {silu}: {diff:e}");
            }
        }
    }

    #[test]
    fn refuses_bad_shapes_and_falls_back_for_f16() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (1, 6, 4, 4), &dev).unwrap();
        let ones = Tensor::ones(6, DType::F32, &dev).unwrap();
        let zeros = Tensor::zeros(6, DType::F32, &dev).unwrap();
        assert!(group_norm(&x, 4, &ones, &zeros, 1e-5, false).is_err());
        let flat = Tensor::randn(0f32, 1.0, (6, 4), &dev).unwrap();
        assert!(group_norm(&flat, 3, &ones, &zeros, 1e-5, false).is_err());
        let half = x.to_dtype(DType::F16).unwrap();
        let y = group_norm(
            &half,
            3,
            &ones.to_dtype(DType::F16).unwrap(),
            &zeros.to_dtype(DType::F16).unwrap(),
            1e-5,
            true,
        )
        .unwrap();
        assert_eq!(y.dtype(), DType::F16);
        let y32 = group_norm(&x, 3, &ones, &zeros, 1e-5, true).unwrap();
        assert!(max_abs(&y.to_dtype(DType::F32).unwrap(), &y32) < 1e-2);
    }
}
