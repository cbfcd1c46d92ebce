//! Scaled dot-product attention, `softmax(q k^T / sqrt(d)) v`, computed by
//! groups of heads so the score matrix stays near a byte budget whatever the
//! resolution (Candle computes every head at once: 1 GiB per SD 1.5
//! self-attention at 512x512, guided). Shared by the UNet's transformer
//! blocks and SD 3's MMDiT; the result does not depend on the grouping.
//! On the CPU in f32 it runs our kernel instead ([`crate::kernels::attention`]),
//! which never holds more than a tile of scores.

use anyhow::Result;
use candle_core::{DType, Tensor};
use candle_nn::ops::softmax_last_dim;

/// Bytes of f32 attention scores computed at once.
pub const SCORE_BUDGET: usize = 256 << 20;

/// What runs in f32 when the model's dtype is narrower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upcast {
    /// q, k, v, the scores, the softmax and the product with v: diffusers'
    /// `Attention` with `upcast_attention` (SD 2.x's scores overflow f16),
    /// as Candle's UNet did.
    All,
    /// The softmax only (SD 3's MMDiT, as diffusers' `F.scaled_dot_product_attention`
    /// keeps the matmuls in the model's dtype).
    Softmax,
}

/// Attention over q [batch, heads, tokens, head] and k, v [batch, heads,
/// tokens_kv, head], back to [batch, tokens, heads x head] in q's dtype.
/// Heads go in groups whose f32 scores stay near `budget` bytes (at least
/// one head). q is scaled before the product, which saves a pass over the
/// largest tensor. CPU f32 tensors go to [`crate::kernels::attention::sdpa`].
pub fn attention_in_groups(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    budget: usize,
    upcast: Upcast,
) -> Result<Tensor> {
    let _timed = crate::kernels::timing::span(crate::kernels::timing::Op::Attention);
    if let Some(out) = crate::kernels::attention::sdpa(q, k, v)? {
        return Ok(out);
    }
    by_groups_of_heads(q, k, v, budget, upcast)
}

/// Candle's matmuls and softmax, `budget` bytes of scores at a time.
fn by_groups_of_heads(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    budget: usize,
    upcast: Upcast,
) -> Result<Tensor> {
    let (b, heads, s, d) = q.dims4()?;
    let dtype = q.dtype();
    let scale = 1.0 / (d as f64).sqrt();
    let per_head = b * s * k.dim(2)? * 4;
    let group = (budget / per_head.max(1)).clamp(1, heads);
    let mut outs = Vec::with_capacity(heads.div_ceil(group));
    for start in (0..heads).step_by(group) {
        let n = group.min(heads - start);
        // A slice of heads is strided; the CPU matmul wants it contiguous.
        let part = |t: &Tensor| -> Result<Tensor> {
            let t = if n == heads {
                t.clone()
            } else {
                t.narrow(1, start, n)?
            };
            Ok(match upcast {
                Upcast::All => t.to_dtype(DType::F32)?.contiguous()?,
                Upcast::Softmax if n == heads => t,
                Upcast::Softmax => t.contiguous()?,
            })
        };
        let (q, k, v) = (part(q)?, part(k)?, part(v)?);
        let scores = (q * scale)?.matmul(&k.t()?)?;
        let out = match upcast {
            Upcast::All => softmax_last_dim(&scores)?.matmul(&v)?.to_dtype(dtype)?,
            Upcast::Softmax => softmax_last_dim(&scores.to_dtype(DType::F32)?)?
                .to_dtype(v.dtype())?
                .matmul(&v)?,
        };
        outs.push(out);
    }
    let out = Tensor::cat(&outs, 1)?;
    Ok(out.transpose(1, 2)?.reshape((b, s, heads * d))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_util::max_diff;
    use candle_core::Device;

    #[test]
    fn attention_by_groups_of_heads_equals_all_heads_at_once() {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (2, 6, 10, 8), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (2, 6, 7, 8), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (2, 6, 7, 8), &dev).unwrap();
        for upcast in [Upcast::All, Upcast::Softmax] {
            let all = by_groups_of_heads(&q, &k, &v, usize::MAX, upcast).unwrap();
            let kernel = attention_in_groups(&q, &k, &v, usize::MAX, upcast).unwrap();
            assert!(max_diff(&kernel, &all) < 1e-5, "{upcast:?}: the CPU kernel");
            assert_eq!(all.dims(), [2, 10, 48]);
            // One head per group, and groups of 4 (6 heads: 4 + 2).
            for budget in [1, 4 * 2 * 10 * 7 * 4] {
                let grouped = by_groups_of_heads(&q, &k, &v, budget, upcast).unwrap();
                assert!(
                    max_diff(&grouped, &all) < 1e-6,
                    "{upcast:?} budget {budget}"
                );
            }
        }
    }
}
