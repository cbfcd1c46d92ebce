//! Scaled dot-product attention on the CPU (f32) without the score matrix:
//! `softmax(q k^T / sqrt(d)) v`, one tile of query rows at a time.
//!
//! Candle's path computes `q k^T` for whole heads (an SD 1.5 self-attention at
//! 512x512 with guidance is 2 x 8 heads x 4096 x 4096 floats, 1 GiB, allocated,
//! zeroed by the kernel, written, read, freed every call) and the softmax as a
//! separate pass over it. Here each task takes `rows` queries of one head:
//! their scores against every key (`rows x kv`, about 1 MiB) by one GEMM, the
//! softmax in place (max-subtracted, f32), then a second GEMM with v written
//! straight into the output `[b, tokens, heads x head]` at that head's
//! columns. Tasks run in parallel on the rayon pool, each GEMM single-threaded.
//! q, k and v are read through their strides (the transposed head views the
//! attention layers pass), so nothing is copied to make them contiguous.
//!
//! Same result as `torch.nn.functional.scaled_dot_product_attention` (no mask,
//! no dropout, default scale `1 / sqrt(head)`), up to f32 rounding.

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::exp::softmax_in_place;
use crate::f32_data;

/// Score floats per task: a tile of queries times every key.
const TILE_SCORES: usize = 1 << 18;

/// `q [b, heads, s, d]`, `k`/`v [b, heads, s_kv, d]` -> `[b, s, heads x d]`,
/// when all three are f32 on the CPU with the last dimension contiguous;
/// `None` otherwise (the caller keeps its own path).
pub fn sdpa(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Option<Tensor>> {
    let fits = |t: &Tensor| {
        matches!(t.device(), Device::Cpu)
            && t.dtype() == DType::F32
            && t.rank() == 4
            && t.stride()[3] == 1
    };
    if !(fits(q) && fits(k) && fits(v)) {
        return Ok(None);
    }
    let (b, h, _, d) = q.dims4()?;
    let (kb, kh, s_kv, kd) = k.dims4()?;
    if (kb, kh, kd) != (b, h, d) || v.dims() != k.dims() {
        candle_core::bail!(
            "attention: q {:?}, k {:?} and v {:?} disagree",
            q.dims(),
            k.dims(),
            v.dims()
        )
    }
    if s_kv == 0 || d == 0 {
        return Ok(None);
    }
    Ok(Some(q.apply_op3_no_bwd(k, v, &Sdpa)?))
}

struct Sdpa;

/// A 4-d strided view: element offset of `[i0, i1, i2, 0]` and the row stride.
#[derive(Clone, Copy)]
struct View {
    offset: usize,
    s0: usize,
    s1: usize,
    s2: usize,
}

impl View {
    fn of(l: &Layout) -> Self {
        let s = l.stride();
        Self {
            offset: l.start_offset(),
            s0: s[0],
            s1: s[1],
            s2: s[2],
        }
    }

    fn at(&self, i0: usize, i1: usize, i2: usize) -> usize {
        self.offset + i0 * self.s0 + i1 * self.s1 + i2 * self.s2
    }
}

impl CustomOp3 for Sdpa {
    fn name(&self) -> &'static str {
        "sd-sdpa"
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
        let (q, k, v) = (
            f32_data("sd-sdpa", s1)?,
            f32_data("sd-sdpa", s2)?,
            f32_data("sd-sdpa", s3)?,
        );
        let (b, heads, s, d) = l1.shape().dims4()?;
        let s_kv = l2.shape().dims()[2];
        let (qv, kv, vv) = (View::of(l1), View::of(l2), View::of(l3));
        let width = heads * d;
        let mut out = vec![0f32; b * s * width];
        let rows = (TILE_SCORES / s_kv).clamp(8, s.max(8));
        let tiles = s.div_ceil(rows);
        let scale = 1.0 / (d as f32).sqrt();
        let out_addr = out.as_mut_ptr() as usize;
        (0..b * heads * tiles).into_par_iter().for_each(|task| {
            let (bh, tile) = (task / tiles, task % tiles);
            let (bi, hi) = (bh / heads, bh % heads);
            let r0 = tile * rows;
            let m = rows.min(s - r0);
            let mut p = vec![0f32; m * s_kv];
            // SAFETY (both GEMMs): every lhs/rhs element addressed lies in q,
            // k, v as their layouts describe (rows r0..r0+m of q, all s_kv
            // rows of k and v, d columns each); `p` is m x s_kv; the output
            // block (rows r0..r0+m, columns hi*d..hi*d+d of batch bi, row
            // stride `width`) is inside `out` and written by this task only.
            unsafe {
                gemm::gemm(
                    m,
                    s_kv,
                    d,
                    p.as_mut_ptr(),
                    1,
                    s_kv as isize,
                    false,
                    q.as_ptr().add(qv.at(bi, hi, r0)),
                    1,
                    qv.s2 as isize,
                    k.as_ptr().add(kv.at(bi, hi, 0)),
                    kv.s2 as isize,
                    1,
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            for row in p.chunks_exact_mut(s_kv) {
                softmax_in_place(row);
            }
            let dst = (out_addr as *mut f32).wrapping_add((bi * s + r0) * width + hi * d);
            unsafe {
                gemm::gemm(
                    m,
                    d,
                    s_kv,
                    dst,
                    1,
                    width as isize,
                    false,
                    p.as_ptr(),
                    1,
                    s_kv as isize,
                    v.as_ptr().add(vv.at(bi, hi, 0)),
                    1,
                    vv.s2 as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, s, width))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::max_abs;
    use candle_nn::ops::softmax_last_dim;

    fn reference(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
        let (b, h, s, d) = q.dims4().unwrap();
        let scores = (q.contiguous().unwrap() * (1.0 / (d as f64).sqrt()))
            .unwrap()
            .matmul(&k.contiguous().unwrap().t().unwrap())
            .unwrap();
        softmax_last_dim(&scores)
            .unwrap()
            .matmul(&v.contiguous().unwrap())
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, s, h * d))
            .unwrap()
    }

    #[test]
    fn matches_candles_attention_on_strided_heads() {
        let dev = Device::Cpu;
        // As the attention layers pass them: [b, s, h*d] viewed as [b, h, s, d].
        for (b, h, s, s_kv, d) in [(2, 3, 70, 70, 8), (1, 2, 5, 77, 16), (2, 8, 600, 300, 40)] {
            let heads = |n: usize, seed: f64| {
                Tensor::randn(seed as f32, 1.0, (b, n, h, d), &dev)
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
            };
            let (q, k, v) = (heads(s, 0.0), heads(s_kv, 0.1), heads(s_kv, -0.1));
            let ours = sdpa(&q, &k, &v).unwrap().expect("f32 on the CPU");
            let diff = max_abs(&ours, &reference(&q, &k, &v));
            assert!(diff < 1e-5, "b {b} h {h} s {s} kv {s_kv} d {d}: {diff:e}");
        }
    }

    #[test]
    fn leaves_other_dtypes_to_the_caller_and_refuses_mismatches() {
        let dev = Device::Cpu;
        let t = Tensor::randn(0f32, 1.0, (1, 2, 4, 8), &dev).unwrap();
        let half = t.to_dtype(DType::F16).unwrap();
        assert!(sdpa(&half, &half, &half).unwrap().is_none());
        let other = Tensor::randn(0f32, 1.0, (1, 2, 4, 4), &dev).unwrap();
        assert!(sdpa(&t, &other, &other).is_err());
    }
}
