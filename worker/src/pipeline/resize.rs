//! Resizing latents as PyTorch's `F.interpolate(x, size=(h, w), mode=...)`
//! with `align_corners=False` and no antialiasing: what AUTOMATIC1111's
//! latent hires-fix upscalers ("Latent", "Latent (nearest)", "Latent
//! (bicubic)") call. Candle has only nearest upsampling by integer factors.

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};

/// The interpolation of [`resize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    /// `mode="nearest"`: source index `floor(dst x in / out)`.
    Nearest,
    /// `mode="bilinear"`: source coordinate `(dst + 0.5) x in / out - 0.5`,
    /// clamped at 0, two taps per axis.
    Bilinear,
    /// `mode="bicubic"`: the same coordinate unclamped, four taps per axis of
    /// Keys' cubic convolution with A = -0.75, indices clamped to the border.
    Bicubic,
}

impl Interpolation {
    /// From the contract's mode names (`sd_worker_sdk::hires::LatentUpscaler::mode`).
    pub fn from_mode(mode: &str) -> Result<Self> {
        Ok(match mode {
            "nearest" => Self::Nearest,
            "bilinear" => Self::Bilinear,
            "bicubic" => Self::Bicubic,
            other => bail!("unknown interpolation `{other}`"),
        })
    }
}

/// Per output index along one axis: (source indices, weights).
fn taps(input: usize, output: usize, mode: Interpolation) -> Vec<Vec<(usize, f32)>> {
    let scale = input as f64 / output as f64;
    let last = input as i64 - 1;
    let clamp = |i: i64| i.clamp(0, last) as usize;
    (0..output)
        .map(|d| match mode {
            Interpolation::Nearest => {
                vec![(((d as f64 * scale).floor() as usize).min(input - 1), 1.0)]
            }
            Interpolation::Bilinear => {
                let src = ((d as f64 + 0.5) * scale - 0.5).max(0.0);
                let i0 = src.floor() as i64;
                let i1 = if i0 < last { i0 + 1 } else { i0 };
                let l1 = (src - i0 as f64) as f32;
                vec![(clamp(i0), 1.0 - l1), (clamp(i1), l1)]
            }
            Interpolation::Bicubic => {
                let src = (d as f64 + 0.5) * scale - 0.5;
                let i = src.floor() as i64;
                let t = (src - i as f64) as f32;
                cubic_weights(t)
                    .into_iter()
                    .enumerate()
                    .map(|(k, w)| (clamp(i - 1 + k as i64), w))
                    .collect()
            }
        })
        .collect()
}

/// Keys' cubic convolution weights for the taps at -1, 0, 1, 2 of a point
/// `t` in [0, 1) past tap 0, with A = -0.75 (PyTorch's `upsample_bicubic2d`).
fn cubic_weights(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// `x` [n, c, h, w] resized to [n, c, out_h, out_w] by `mode`, computed in
/// f32 on the CPU and returned in `x`'s dtype and device.
///
/// Errors: a tensor that is not 4-d; a zero size.
pub fn resize(x: &Tensor, (out_h, out_w): (usize, usize), mode: Interpolation) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        bail!("cannot resize {h}x{w} latents to {out_h}x{out_w}");
    }
    let src: Vec<f32> = x
        .to_dtype(DType::F32)?
        .to_device(&candle_core::Device::Cpu)?
        .flatten_all()?
        .to_vec1()?;
    let (ty, tx) = (taps(h, out_h, mode), taps(w, out_w, mode));
    let mut out = vec![0f32; n * c * out_h * out_w];
    // Rows first (width), then columns: separable, as PyTorch's kernels.
    let mut rows = vec![0f32; h * out_w];
    for plane in 0..n * c {
        let p = &src[plane * h * w..(plane + 1) * h * w];
        for y in 0..h {
            for (ox, taps) in tx.iter().enumerate() {
                rows[y * out_w + ox] = taps.iter().map(|&(i, wt)| p[y * w + i] * wt).sum();
            }
        }
        let o = &mut out[plane * out_h * out_w..(plane + 1) * out_h * out_w];
        for (oy, taps) in ty.iter().enumerate() {
            for ox in 0..out_w {
                o[oy * out_w + ox] = taps.iter().map(|&(i, wt)| rows[i * out_w + ox] * wt).sum();
            }
        }
    }
    Ok(
        Tensor::from_vec(out, (n, c, out_h, out_w), &candle_core::Device::Cpu)?
            .to_dtype(x.dtype())?
            .to_device(x.device())?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Case {
        mode: String,
        input: Vec<usize>,
        size: (usize, usize),
        output: Vec<f32>,
    }

    /// Against `torch.nn.functional.interpolate` (see
    /// `tests/reference/latent_resize_reference.py`): up and down, odd
    /// factors, every mode.
    #[test]
    fn matches_torch_interpolate() {
        let cases: Vec<Case> = serde_json::from_str(include_str!(
            "../../tests/reference/latent_resize_reference.json"
        ))
        .unwrap();
        assert!(cases.len() >= 9);
        for case in cases {
            let n: usize = case.input.iter().product();
            let v: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let x = Tensor::from_vec(v, case.input.as_slice(), &Device::Cpu).unwrap();
            let mode = Interpolation::from_mode(&case.mode).unwrap();
            let y: Vec<f32> = resize(&x, case.size, mode)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(y.len(), case.output.len());
            let worst = y
                .iter()
                .zip(&case.output)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-5, "{} to {:?}: {worst}", case.mode, case.size);
        }
    }

    #[test]
    fn a_zero_size_is_an_error() {
        let x = Tensor::zeros((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(resize(&x, (0, 4), Interpolation::Bilinear).is_err());
    }
}
