//! 2-D convolution on the CPU (f32): tiled im2col in the input's own NCHW
//! layout, one GEMM per tile written straight into the output.
//!
//! Candle 0.11's CPU `conv2d` first transposes the whole input to NHWC and the
//! weights to `[c_out, kh, kw, c_in]` on every call (scalar loops), builds each
//! im2col tile by scattered writes, multiplies, then copies the tile to the
//! output pixel by pixel. Profiled on the SD VAE decoder, those copies took 60 %
//! of the decode and the GEMM only 16 %. Here:
//! - the weights are used as they are: `[c_out, c_in, kh, kw]` contiguous is
//!   already the `[c_out, c_in * kh * kw]` matrix the GEMM needs;
//! - a tile is a band of whole output rows; its im2col matrix
//!   `[c_in * kh * kw, rows * out_w]` (Caffe's layout) is filled row segment by
//!   row segment, which for stride 1 are contiguous copies of input rows with
//!   the padding zeroed at the ends;
//! - 1x1, stride 1, unpadded convolutions read the input plane directly (no
//!   im2col at all);
//! - the GEMM (`gemm` crate, AVX-512 / AVX2 picked at run time) writes the
//!   tile's `[c_out, rows * out_w]` result into the output through its strides;
//! - tiles run in parallel on Candle's rayon pool, each GEMM single-threaded.
//!
//! Same definition as `torch.nn.functional.conv2d` (cross-correlation, zero
//! padding, `groups == 1`); `out = floor((in + 2 p - d (k - 1) - 1) / s) + 1`.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::contiguous_f32;

/// Target number of output pixels per tile: large enough for the GEMM to run
/// at speed, small enough that an im2col tile (`c_in * kh * kw` rows) stays in
/// the L2/L3 cache and that a 64x64 latent gives several tiles per core.
const TILE_PIXELS: usize = 512;

/// The convolution's parameters (square kernels' stride, padding and dilation,
/// as `candle_nn::Conv2dConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dParams {
    pub padding: usize,
    pub stride: usize,
    pub dilation: usize,
}

/// `x [b, c_in, h, w] (*) w [c_out, c_in, kh, kw] -> [b, c_out, out_h, out_w]`,
/// without bias. Runs the kernel below on CPU f32 tensors; everything else
/// (other devices, dtypes, `groups > 1`) goes to Candle's `Tensor::conv2d`.
///
/// Errors: the shapes' ranks or channel counts disagree, or the kernel does not
/// fit the padded input.
pub fn conv2d(x: &Tensor, w: &Tensor, p: Conv2dParams, groups: usize) -> Result<Tensor> {
    conv2d_bias(x, w, None, p, groups)
}

/// [`conv2d`] plus `bias [c_out]` per output channel. The kernel starts each
/// output channel at its bias and accumulates into it (no pass of its own);
/// the fallback adds it after Candle's convolution.
pub fn conv2d_bias(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    p: Conv2dParams,
    groups: usize,
) -> Result<Tensor> {
    let f32_cpu = |t: &Tensor| matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32;
    if !f32_cpu(x) || !f32_cpu(w) || !bias.is_none_or(f32_cpu) || groups != 1 {
        let y = x.conv2d(w, p.padding, p.stride, p.dilation, groups)?;
        return match bias {
            None => Ok(y),
            Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
        };
    }
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    match bias {
        None => x.apply_op2_no_bwd(&w, &Conv2dOp(p)),
        Some(b) => {
            if b.dims() != [w.dim(0)?] {
                candle_core::bail!(
                    "conv2d: bias {:?} for {} output channels",
                    b.dims(),
                    w.dim(0)?
                )
            }
            x.apply_op3_no_bwd(&w, &b.contiguous()?, &Conv2dOp(p))
        }
    }
}

struct Conv2dOp(Conv2dParams);

/// Sizes of one call, checked once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub b: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl Dims {
    fn new(x: &Layout, k: &Layout, p: Conv2dParams) -> Result<Self> {
        Self::from_shapes(x.shape(), k.shape(), p)
    }

    /// Input `[b, c_in, h, w]` and kernel `[c_out, c_in, kh, kw]`, checked.
    pub(crate) fn from_shapes(x: &Shape, k: &Shape, p: Conv2dParams) -> Result<Self> {
        let (b, c_in, h, w) = x.dims4()?;
        let (c_out, k_c_in, kh, kw) = k.dims4()?;
        if k_c_in != c_in {
            candle_core::bail!("conv2d: the input has {c_in} channels, the kernel expects {k_c_in}")
        }
        if p.stride == 0 || p.dilation == 0 {
            candle_core::bail!("conv2d: stride and dilation must be at least 1")
        }
        let out = |size: usize, k: usize| {
            let span = p.dilation * (k - 1) + 1;
            (size + 2 * p.padding)
                .checked_sub(span)
                .map(|v| v / p.stride + 1)
        };
        match (out(h, kh), out(w, kw)) {
            (Some(out_h), Some(out_w)) => Ok(Self {
                b,
                c_in,
                h,
                w,
                c_out,
                kh,
                kw,
                out_h,
                out_w,
            }),
            _ => candle_core::bail!(
                "conv2d: a {kh}x{kw} kernel (dilation {}) does not fit a {h}x{w} input padded by {}",
                p.dilation,
                p.padding
            ),
        }
    }

    pub(crate) fn k_size(&self) -> usize {
        self.c_in * self.kh * self.kw
    }
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "sd-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward(s1, l1, s2, l2, None)
    }
}

impl CustomOp3 for Conv2dOp {
    fn name(&self) -> &'static str {
        "sd-conv2d-bias"
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
        let bias = contiguous_f32("sd-conv2d", s3, l3)?;
        self.forward(s1, l1, s2, l2, Some(bias))
    }
}

impl Conv2dOp {
    /// Both ops' forward pass: input and kernel checked, then [`run`].
    fn forward(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        bias: Option<&[f32]>,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32("sd-conv2d", s1, l1)?;
        let k = contiguous_f32("sd-conv2d", s2, l2)?;
        let d = Dims::new(l1, l2, self.0)?;
        Ok((
            CpuStorage::F32(run(x, k, bias, d, self.0)),
            Shape::from((d.b, d.c_out, d.out_h, d.out_w)),
        ))
    }
}

/// The output, `[b, c_out, out_h, out_w]` contiguous; each channel starts at
/// its `bias` (or 0) and the GEMM accumulates into it.
fn run(x: &[f32], k: &[f32], bias: Option<&[f32]>, d: Dims, p: Conv2dParams) -> Vec<f32> {
    let plane = d.out_h * d.out_w;
    let mut out = match bias {
        None => vec![0f32; d.b * d.c_out * plane],
        Some(bias) => {
            let mut out = Vec::with_capacity(d.b * d.c_out * plane);
            for _ in 0..d.b {
                for &b in bias {
                    out.extend(std::iter::repeat_n(b, plane));
                }
            }
            out
        }
    };
    if plane == 0 || d.c_out == 0 {
        return out;
    }
    // Bands write disjoint column ranges of one image's [c_out, plane]
    // output; the pointer crosses threads as an integer.
    let out_addr = out.as_mut_ptr() as usize;
    for_each_band(x, d, p, |band| {
        let Band {
            image: bi,
            y0,
            n,
            src: rhs,
            rs: rhs_rs,
        } = band;
        let dst = (out_addr as *mut f32).wrapping_add(bi * d.c_out * plane + y0 * d.out_w);
        // SAFETY: `dst` addresses the columns [y0 * out_w, y1 * out_w) of this
        // image's [c_out, plane] output (row stride `plane`), which no other
        // task writes and which lie inside `out`; lhs is [c_out, k_size] and
        // rhs [k_size, n] with row stride `rhs_rs`, both inside their slices.
        unsafe {
            gemm::gemm(
                d.c_out,
                n,
                d.k_size(),
                dst,
                1,
                plane as isize,
                bias.is_some(),
                k.as_ptr(),
                1,
                d.k_size() as isize,
                rhs.as_ptr(),
                1,
                rhs_rs as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    });
    out
}

/// A band of whole output rows of one image, as the convolution's GEMM sees
/// it: output rows from `y0`, `n` output pixels, and their `[k_size, n]`
/// im2col matrix at `src` with row stride `rs` (the input plane itself for a
/// 1x1, stride 1, unpadded convolution).
pub(crate) struct Band<'a> {
    pub image: usize,
    pub y0: usize,
    pub n: usize,
    pub src: &'a [f32],
    pub rs: usize,
}

/// Calls `f` for every band of about [`TILE_PIXELS`] output pixels of every
/// image of `x`, in parallel on the rayon pool.
pub(crate) fn for_each_band(x: &[f32], d: Dims, p: Conv2dParams, f: impl Fn(Band<'_>) + Sync) {
    let rows_per_tile = (TILE_PIXELS / d.out_w).clamp(1, d.out_h);
    let tiles_per_image = d.out_h.div_ceil(rows_per_tile);
    let direct = d.kh == 1 && d.kw == 1 && p.stride == 1 && p.padding == 0;
    (0..d.b * tiles_per_image).into_par_iter().for_each(|task| {
        let (bi, tile) = (task / tiles_per_image, task % tiles_per_image);
        let y0 = tile * rows_per_tile;
        let y1 = (y0 + rows_per_tile).min(d.out_h);
        let n = (y1 - y0) * d.out_w;
        let image = &x[bi * d.c_in * d.h * d.w..(bi + 1) * d.c_in * d.h * d.w];
        let col;
        let (src, rs): (&[f32], usize) = if direct {
            (&image[y0 * d.w..], d.h * d.w)
        } else {
            col = im2col_rows(image, d, p, y0, y1);
            (&col, n)
        };
        f(Band {
            image: bi,
            y0,
            n,
            src,
            rs,
        })
    });
}

/// The im2col matrix of output rows `[y0, y1)`: `[c_in * kh * kw, (y1 - y0) * out_w]`,
/// row `(c * kh + i) * kw + j` holding, for each output pixel `(oy, ox)`, the
/// input value at `(oy * s + i * d - p, ox * s + j * d - p)` or 0 outside.
fn im2col_rows(image: &[f32], d: Dims, p: Conv2dParams, y0: usize, y1: usize) -> Vec<f32> {
    let n = (y1 - y0) * d.out_w;
    let mut col = vec![0f32; d.k_size() * n];
    let pad = p.padding as isize;
    for (r, row) in col.chunks_exact_mut(n).enumerate() {
        let (c, i, j) = (r / (d.kh * d.kw), (r / d.kw) % d.kh, r % d.kw);
        let src = &image[c * d.h * d.w..(c + 1) * d.h * d.w];
        for (oy, seg) in (y0..y1).zip(row.chunks_exact_mut(d.out_w)) {
            let iy = (oy * p.stride + i * p.dilation) as isize - pad;
            if iy < 0 || iy >= d.h as isize {
                continue; // padding rows stay zero
            }
            let src_row = &src[iy as usize * d.w..(iy as usize + 1) * d.w];
            let x_off = (j * p.dilation) as isize - pad;
            if p.stride == 1 {
                // Output columns whose input column x_off + ox lies in [0, w).
                let lo = (-x_off).clamp(0, d.out_w as isize) as usize;
                let hi = (d.w as isize - x_off).clamp(lo as isize, d.out_w as isize) as usize;
                if hi > lo {
                    let s = (lo as isize + x_off) as usize;
                    seg[lo..hi].copy_from_slice(&src_row[s..s + (hi - lo)]);
                }
            } else {
                for (ox, v) in seg.iter_mut().enumerate() {
                    let ix = (ox * p.stride) as isize + x_off;
                    if ix >= 0 && ix < d.w as isize {
                        *v = src_row[ix as usize];
                    }
                }
            }
        }
    }
    col
}

#[cfg(test)]
mod tests {
    use super::*;

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Largest |ours - Candle's| over the output, relative to Candle's largest |value|.
    fn check(x: &[usize], k: &[usize], p: Conv2dParams) -> f32 {
        let (xt, kt) = (randn(x, 1), randn(k, 2));
        let ours = conv2d(&xt, &kt, p, 1).unwrap();
        let reference = xt.conv2d(&kt, p.padding, p.stride, p.dilation, 1).unwrap();
        assert_eq!(ours.dims(), reference.dims(), "{x:?} {k:?} {p:?}");
        let diff = (&ours - &reference).unwrap().abs().unwrap();
        let max = diff
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let scale = reference
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap();
        max / scale.to_scalar::<f32>().unwrap().max(1e-6)
    }

    fn params(padding: usize, stride: usize, dilation: usize) -> Conv2dParams {
        Conv2dParams {
            padding,
            stride,
            dilation,
        }
    }

    #[test]
    fn matches_candles_conv2d_on_every_shape_the_models_use() {
        let cases: &[(&[usize], &[usize], Conv2dParams)] = &[
            // 3x3 same (resnets, conv_in/out), batch 2, more output pixels than a tile.
            (&[2, 8, 40, 33], &[6, 8, 3, 3], params(1, 1, 1)),
            // 3x3 stride 2 (downsamplers), odd sizes.
            (&[2, 5, 17, 12], &[7, 5, 3, 3], params(1, 2, 1)),
            // VAE encoder's downsampler: stride 2 without padding.
            (&[1, 4, 16, 16], &[4, 4, 3, 3], params(0, 2, 1)),
            // 1x1 (shortcuts, proj_in/out), direct path.
            (&[2, 16, 9, 30], &[24, 16, 1, 1], params(0, 1, 1)),
            // 1x1 with padding and stride (im2col path).
            (&[1, 3, 7, 7], &[2, 3, 1, 1], params(1, 2, 1)),
            // Unpadded 3x3, dilation 2, one output channel, a single row of output.
            (&[1, 3, 5, 64], &[1, 3, 3, 3], params(0, 1, 2)),
            // TAESD / upscaler shapes: wide 3x3 over a tiny image, 7x7 kernel.
            (&[1, 64, 4, 4], &[64, 64, 3, 3], params(1, 1, 1)),
            (&[1, 3, 20, 20], &[8, 3, 7, 7], params(3, 1, 1)),
        ];
        for (x, k, p) in cases {
            let rel = check(x, k, *p);
            assert!(rel < 2e-6, "{x:?} * {k:?} {p:?}: max relative diff {rel:e}");
        }
    }

    #[test]
    fn a_bias_is_added_per_output_channel() {
        let (x, k) = (randn(&[2, 5, 9, 11], 8), randn(&[7, 5, 3, 3], 9));
        let b = randn(&[7], 10);
        let p = params(1, 1, 1);
        let ours = conv2d_bias(&x, &k, Some(&b), p, 1).unwrap();
        let reference = x
            .conv2d(&k, 1, 1, 1, 1)
            .unwrap()
            .broadcast_add(&b.reshape((1, 7, 1, 1)).unwrap())
            .unwrap();
        let diff = (&ours - &reference)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap();
        assert!(diff.max(0).unwrap().to_scalar::<f32>().unwrap() < 1e-4);
        assert!(conv2d_bias(&x, &k, Some(&randn(&[6], 11)), p, 1).is_err());
    }

    #[test]
    fn takes_strided_inputs_and_falls_back_off_its_cases() {
        // A transposed (non-contiguous) input is made contiguous first.
        let x = randn(&[2, 6, 10, 12], 3).transpose(2, 3).unwrap();
        let k = randn(&[4, 6, 3, 3], 4);
        let p = params(1, 1, 1);
        let ours = conv2d(&x, &k, p, 1).unwrap();
        let reference = x.conv2d(&k, 1, 1, 1, 1).unwrap();
        let diff = (&ours - &reference)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap();
        assert!(diff.max(0).unwrap().to_scalar::<f32>().unwrap() < 1e-4);
        // Grouped convolutions and f64 go to Candle's op (same result by definition).
        let kg = randn(&[4, 3, 3, 3], 5);
        let grouped = conv2d(&x, &kg, p, 2).unwrap();
        assert_eq!(grouped.dims(), &[2, 4, 12, 10]);
        let x64 = x.to_dtype(DType::F64).unwrap();
        let k64 = k.to_dtype(DType::F64).unwrap();
        assert_eq!(conv2d(&x64, &k64, p, 1).unwrap().dtype(), DType::F64);
    }

    #[test]
    fn refuses_shapes_that_do_not_fit() {
        let x = randn(&[1, 3, 2, 2], 6);
        let err = conv2d(&x, &randn(&[1, 3, 5, 5], 7), params(0, 1, 1), 1).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
        let err = conv2d(&x, &randn(&[1, 4, 1, 1], 7), params(0, 1, 1), 1).unwrap_err();
        assert!(err.to_string().contains("channels"), "{err}");
    }
}
