//! 2-D convolution with an int8 kernel ([`Q8Weight`]) and per-pixel int8
//! activations: the f32 kernel's bands of output rows and im2col
//! ([`crate::conv2d`]), each band's columns quantised and packed, then the
//! tile kernel with the weights broadcast and the pixels packed, written
//! straight into the NCHW output.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};

use super::micro::{tile, Isa, Tile, MR, NV_MAX};
use super::pack::pack_columns;
use super::weight::{Q8Weight, BLOCK};
use crate::contiguous_f32;
use crate::conv2d::{for_each_band, Band, Conv2dParams, Dims};

/// `x [b, c_in, h, w] (*) w [c_out, c_in, kh, kw] (+ bias [c_out])`, as
/// [`crate::conv2d::conv2d_bias`] with `groups == 1`. On CPU f32 inputs the
/// int8 kernel runs; otherwise the f32 convolution with the dequantised kernel.
///
/// Errors: the weight is not rank 4, the shapes disagree (as the f32 op).
pub fn conv2d(x: &Tensor, w: &Q8Weight, bias: Option<&Tensor>, p: Conv2dParams) -> Result<Tensor> {
    conv2d_on(Isa::detect(), x, w, bias, p)
}

/// [`conv2d`] on a given instruction set (tests compare them).
pub(crate) fn conv2d_on(
    isa: Isa,
    x: &Tensor,
    w: &Q8Weight,
    bias: Option<&Tensor>,
    p: Conv2dParams,
) -> Result<Tensor> {
    if w.dims().len() != 4 {
        candle_core::bail!(
            "q8 conv2d: a {:?} weight is not a convolution kernel",
            w.dims()
        )
    }
    if !matches!(x.device(), Device::Cpu) || x.dtype() != DType::F32 {
        let k = w.dequantize()?.to_device(x.device())?.to_dtype(x.dtype())?;
        return crate::conv2d::conv2d_bias(x, &k, bias, p, 1);
    }
    let d = Dims::from_shapes(x.shape(), &Shape::from(w.dims()), p)?;
    let bias = match bias {
        None => None,
        Some(b) if b.dims() == [d.c_out] => Some(
            b.to_device(&Device::Cpu)?
                .to_dtype(DType::F32)?
                .to_vec1::<f32>()?,
        ),
        Some(b) => candle_core::bail!(
            "q8 conv2d: bias {:?} for {} output channels",
            b.dims(),
            d.c_out
        ),
    };
    x.contiguous()?
        .apply_op1_no_bwd(&ConvOp { w, bias, p, d, isa })
}

struct ConvOp<'a> {
    w: &'a Q8Weight,
    bias: Option<Vec<f32>>,
    p: Conv2dParams,
    d: Dims,
    isa: Isa,
}

impl CustomOp1 for ConvOp<'_> {
    fn name(&self) -> &'static str {
        "sd-q8-conv2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32("sd-q8-conv2d", s, l)?;
        let d = self.d;
        let out = run(self.isa, x, self.w, self.bias.as_deref(), d, self.p);
        Ok((
            CpuStorage::F32(out),
            Shape::from((d.b, d.c_out, d.out_h, d.out_w)),
        ))
    }
}

fn run(
    isa: Isa,
    x: &[f32],
    w: &Q8Weight,
    bias: Option<&[f32]>,
    d: Dims,
    p: Conv2dParams,
) -> Vec<f32> {
    let plane = d.out_h * d.out_w;
    // Every element is written once by the tile kernel (never read).
    let mut out = vec![0f32; d.b * d.c_out * plane];
    if plane == 0 || d.c_out == 0 {
        return out;
    }
    let k = d.k_size();
    let k4 = w.k4();
    let mut row_bias = vec![0f32; w.blocks() * BLOCK];
    if let Some(b) = bias {
        row_bias[..d.c_out].copy_from_slice(b);
    }
    let no_col_bias = [0f32; NV_MAX * BLOCK];
    let zeros = [0i32; NV_MAX * BLOCK];
    let out_addr = out.as_mut_ptr() as usize;
    for_each_band(x, d, p, |band| {
        let Band {
            image: bi,
            y0,
            n,
            src,
            rs,
        } = band;
        let blocks = n.div_ceil(BLOCK);
        let mut a = vec![0u8; blocks * k4 * 64];
        let mut a_scale = vec![0f32; blocks * BLOCK];
        pack_columns(src, rs, k, n, &mut a, &mut a_scale);
        let dst0 = (out_addr as *mut f32).wrapping_add(bi * d.c_out * plane + y0 * d.out_w);
        for blk0 in (0..blocks).step_by(NV_MAX) {
            let nv = NV_MAX.min(blocks - blk0);
            let c0 = blk0 * BLOCK;
            for o0 in (0..d.c_out).step_by(MR) {
                let (wb, lane) = (o0 / BLOCK, o0 % BLOCK);
                let t = Tile {
                    k4,
                    bcast: w.packed()[wb * k4 * 64 + lane * 4..].as_ptr() as *const u8,
                    bcast_rs: 4,
                    bcast_gs: 64,
                    packed: a[blk0 * k4 * 64..].as_ptr(),
                    packed_bs: k4 * 64,
                    dst: dst0.wrapping_add(o0 * plane + c0),
                    ldc: plane,
                    rows: MR.min(d.c_out - o0),
                    cols: (nv * BLOCK).min(n - c0),
                    row_scale: &w.scales_padded()[o0..o0 + MR],
                    row_off: &w.offsets_padded()[o0..o0 + MR],
                    col_scale: &a_scale[c0..c0 + nv * BLOCK],
                    col_off: &zeros,
                    row_bias: &row_bias[o0..o0 + MR],
                    col_bias: &no_col_bias,
                };
                // SAFETY: rows o0..o0 + MR lie in one 16-row block of the
                // weight (MR divides 16), readable for k4 groups 64 bytes
                // apart; `a` holds nv blocks from blk0; the valid
                // `rows x cols` of dst are this band's columns [c0, c0 +
                // cols) of output channels [o0, o0 + rows) of image bi (row
                // stride `plane`), written by this task only.
                unsafe { tile::<false>(isa, nv, &t) };
            }
        }
    });
    out
}
