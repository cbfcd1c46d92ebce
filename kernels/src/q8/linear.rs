//! `y = x W^T + b` with an int8 `W` ([`Q8Weight`]) and per-token int8 `x`.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::micro::{tile, Isa, Tile, MR, NV_MAX};
use super::pack::quantize_rows;
use super::weight::{Q8Weight, BLOCK};
use crate::contiguous_f32;

/// Tokens per task: a multiple of [`MR`]; their bytes (`ROWS * k`) stay in L2.
const ROWS: usize = 64;

/// `x [.., k] -> [.., n]` for a weight `[n, k]` and an optional `bias [n]`.
/// On CPU f32 inputs the int8 kernel runs ([`Isa::detect`]); otherwise
/// (another device or dtype) `x` is multiplied by the dequantised weight.
///
/// Errors: `x`'s last dimension is not `k`, the bias is not `[n]`, the
/// weight is not rank 2.
pub fn linear(x: &Tensor, w: &Q8Weight, bias: Option<&Tensor>) -> Result<Tensor> {
    linear_on(Isa::detect(), x, w, bias)
}

/// [`linear`] on a given instruction set (tests compare them).
pub(crate) fn linear_on(
    isa: Isa,
    x: &Tensor,
    w: &Q8Weight,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let (n, k) = w.n_k();
    if w.dims().len() != 2 {
        candle_core::bail!("q8 linear: a {:?} weight is not a matrix", w.dims())
    }
    let dims = x.dims();
    if dims.last() != Some(&k) {
        candle_core::bail!("q8 linear: input {dims:?} for a [{n}, {k}] weight")
    }
    if let Some(b) = bias {
        if b.dims() != [n] {
            candle_core::bail!("q8 linear: bias {:?} for {n} outputs", b.dims())
        }
    }
    let mut out_dims = dims.to_vec();
    *out_dims.last_mut().expect("rank >= 1") = n;
    if !matches!(x.device(), Device::Cpu) || x.dtype() != DType::F32 {
        let wt = w.dequantize()?.to_device(x.device())?.to_dtype(x.dtype())?;
        let y = x.broadcast_matmul(&wt.t()?)?;
        return match bias {
            None => Ok(y),
            Some(b) => y.broadcast_add(&b.to_dtype(x.dtype())?),
        };
    }
    let m = x.elem_count() / k.max(1);
    let bias = bias
        .map(|b| {
            b.to_device(&Device::Cpu)?
                .to_dtype(DType::F32)?
                .to_vec1::<f32>()
        })
        .transpose()?;
    let y = x
        .reshape((m, k))?
        .contiguous()?
        .apply_op1_no_bwd(&LinearOp { w, bias, isa })?;
    y.reshape(out_dims)
}

struct LinearOp<'a> {
    w: &'a Q8Weight,
    bias: Option<Vec<f32>>,
    isa: Isa,
}

impl CustomOp1 for LinearOp<'_> {
    fn name(&self) -> &'static str {
        "sd-q8-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32("sd-q8-linear", s, l)?;
        let (m, _) = l.shape().dims2()?;
        let (n, _) = self.w.n_k();
        let out = run(self.isa, x, m, self.w, self.bias.as_deref());
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

/// `[m, n]`: each task quantises [`ROWS`] tokens, then runs the tile kernel
/// over every column block of the weight.
fn run(isa: Isa, x: &[f32], m: usize, w: &Q8Weight, bias: Option<&[f32]>) -> Vec<f32> {
    let (n, k) = w.n_k();
    // Every element is written once by the tile kernel (never read).
    let mut out = vec![0f32; m * n];
    if m == 0 || n == 0 {
        return out;
    }
    let k4 = w.k4();
    let kp = 4 * k4;
    let blocks = w.blocks();
    let zeros = [0i32; MR];
    let no_row_bias = [0f32; MR];
    let mut col_bias = vec![0f32; blocks * BLOCK];
    if let Some(b) = bias {
        col_bias[..n].copy_from_slice(b);
    }
    out.par_chunks_mut(ROWS * n)
        .enumerate()
        .for_each(|(task, out_rows)| {
            let r0 = task * ROWS;
            let rows = out_rows.len() / n;
            let mut a = vec![128u8; rows.next_multiple_of(MR) * kp];
            let mut a_scale = vec![0f32; rows.next_multiple_of(MR)];
            quantize_rows(&x[r0 * k..(r0 + rows) * k], k, kp, &mut a, &mut a_scale);
            for blk0 in (0..blocks).step_by(NV_MAX) {
                let nv = NV_MAX.min(blocks - blk0);
                let c0 = blk0 * BLOCK;
                let cols = (nv * BLOCK).min(n - c0);
                for rb in (0..rows).step_by(MR) {
                    let t = Tile {
                        k4,
                        bcast: a[rb * kp..].as_ptr(),
                        bcast_rs: kp,
                        bcast_gs: 4,
                        packed: w.packed()[blk0 * k4 * 64..].as_ptr() as *const u8,
                        packed_bs: k4 * 64,
                        dst: out_rows[rb * n + c0..].as_mut_ptr(),
                        ldc: n,
                        rows: MR.min(rows - rb),
                        cols,
                        row_scale: &a_scale[rb..rb + MR],
                        row_off: &zeros,
                        col_scale: &w.scales_padded()[c0..c0 + nv * BLOCK],
                        col_off: &w.offsets_padded()[c0..c0 + nv * BLOCK],
                        row_bias: &no_row_bias,
                        col_bias: &col_bias[c0..c0 + nv * BLOCK],
                    };
                    // SAFETY: `a` holds MR rows of kp bytes from rb (padded to
                    // a multiple of MR); the weight holds nv blocks of k4 * 64
                    // bytes from blk0; dst's valid `rows x cols` lie in
                    // out_rows (row stride n); `isa` was detected or is portable.
                    unsafe { tile::<true>(isa, nv, &t) };
                }
            }
        });
    out
}
