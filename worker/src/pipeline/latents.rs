//! Between pixels and latents: the VAE in both directions, with the VAE's own
//! scale (and shift) from its config.

use anyhow::Result;
use candle_core::{DType, Device, IndexOp, Tensor};
use image::{GrayImage, RgbImage};

use super::noise::SeededNoise;
use crate::model::LoadedModel;

/// RGB8 to a [1, 3, H, W] tensor in [-1, 1] on the model's device, in the
/// VAE's dtype.
pub fn pixels_to_tensor(model: &LoadedModel, img: &RgbImage) -> Result<Tensor> {
    let (w, h) = img.dimensions();
    let data: Vec<f32> = img
        .as_raw()
        .iter()
        .map(|&v| v as f32 / 127.5 - 1.0)
        .collect();
    Ok(
        Tensor::from_vec(data, (h as usize, w as usize, 3), &Device::Cpu)?
            .permute((2, 0, 1))?
            .unsqueeze(0)?
            .to_dtype(model.vae_dtype)?
            .to_device(&model.device)?,
    )
}

/// A mask at latent resolution, [1, 1, h, w] with 1 = repaint. A latent cell
/// counts as masked when most of its pixels are.
pub fn mask_to_latent(
    model: &LoadedModel,
    mask: &GrayImage,
    lh: usize,
    lw: usize,
) -> Result<Tensor> {
    let small = image::imageops::resize(
        mask,
        lw as u32,
        lh as u32,
        image::imageops::FilterType::Triangle,
    );
    let data: Vec<f32> = small
        .as_raw()
        .iter()
        .map(|&v| if v >= 128 { 1.0 } else { 0.0 })
        .collect();
    Ok(Tensor::from_vec(data, (1, 1, lh, lw), &Device::Cpu)?
        .to_dtype(model.dtype)?
        .to_device(&model.device)?)
}

/// Encodes one image and samples `n` latents from its posterior, one per image
/// of the job, each with that image's seeded noise: (sample - shift) * scale.
pub fn encode(
    model: &LoadedModel,
    pixels: &Tensor,
    n: usize,
    noise: &mut SeededNoise,
) -> Result<Tensor> {
    let (mean, logvar) = model.vae_encoder.posterior(pixels)?;
    let std = (logvar * 0.5)?.exp()?;
    let (_, c, h, w) = mean.dims4()?;
    let eps = noise.sample(&[c, h, w])?.to_dtype(mean.dtype())?;
    let sample = mean.broadcast_add(&eps.broadcast_mul(&std)?)?;
    let shifted = match model.meta.vae_shift_factor {
        Some(shift) => (sample - shift)?,
        None => sample,
    };
    debug_assert_eq!(shifted.dim(0)?, n);
    Ok((shifted * model.meta.vae_scaling_factor)?.to_dtype(model.dtype)?)
}

/// Latents [1, c, h, w] to interleaved RGB8, as diffusers does:
/// x / scaling_factor (+ shift), decode, (x / 2 + 0.5) clamped to [0, 1], x 255, rounded.
pub fn decode(model: &LoadedModel, latents: &Tensor) -> Result<RgbImage> {
    let mut x = (latents.to_dtype(model.vae_dtype)? / model.meta.vae_scaling_factor)?;
    if let Some(shift) = model.meta.vae_shift_factor {
        x = (x + shift)?;
    }
    let img = model.vae.decode(&x)?;
    let img = ((img.to_dtype(DType::F32)? / 2.0)? + 0.5)?.clamp(0f32, 1f32)?;
    let img = (img * 255.0)?.round()?.to_dtype(DType::U8)?;
    let (_, _, h, w) = img.dims4()?;
    // [1, 3, H, W] -> [H, W, 3]
    let hwc = img.i(0)?.permute((1, 2, 0))?.contiguous()?;
    let raw = hwc
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<u8>()?;
    RgbImage::from_raw(w as u32, h as u32, raw)
        .ok_or_else(|| anyhow::anyhow!("decoded image has the wrong size"))
}
