//! Between pixels and latents: the VAE in both directions, with the VAE's own
//! scale (and shift) from its config.

use anyhow::Result;
use candle_core::{DType, Device, IndexOp, Tensor};
use image::{GrayImage, RgbImage};

use super::noise::SeededNoise;
use crate::model::LoadedModel;
use sd_worker_sdk::{VaeChoice, VaeTiling};

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
            .to_dtype(model.vae().dtype())?
            .to_device(model.device())?,
    )
}

/// A repaint mask resized to `h` x `w`, [1, 1, h, w] with 1 = repaint, in the
/// model's dtype on its device: the inpainting UNet's mask channel and the
/// latent blending mask at latent size; the masked image's mask at the
/// output size. See [`resize_mask`].
pub fn mask_to_latent(
    model: &LoadedModel,
    mask: &GrayImage,
    lh: usize,
    lw: usize,
) -> Result<Tensor> {
    let data = resize_mask(mask, lh, lw);
    Ok(Tensor::from_vec(data, (1, 1, lh, lw), &Device::Cpu)?
        .to_dtype(model.dtype())?
        .to_device(model.device())?)
}

/// A repaint mask (255 = repaint) resized to `h` x `w`, row by row, 1.0 =
/// repaint, as diffusers' inpainting pipelines make it: the mask processor
/// binarises at 0.5 (`v / 255 >= 0.5`, i.e. `v >= 128`), then
/// `prepare_mask_latents` resizes with `torch.nn.functional.interpolate`'s
/// default mode, nearest: output cell (y, x) takes the input pixel
/// (floor(y * in_h / h), floor(x * in_w / w)), the scale in f32 as PyTorch's
/// `nearest_idx` computes it. At latent size that is the top-left pixel of
/// each cell, which is what inpainting UNets were trained with (not the
/// majority of the cell's pixels).
pub fn resize_mask(mask: &GrayImage, h: usize, w: usize) -> Vec<f32> {
    let (in_w, in_h) = (mask.width() as usize, mask.height() as usize);
    let xs: Vec<usize> = (0..w).map(|x| nearest_index(x, in_w, w)).collect();
    let mut out = Vec::with_capacity(h * w);
    for y in 0..h {
        let sy = nearest_index(y, in_h, h) as u32;
        out.extend(xs.iter().map(|&sx| {
            if mask.get_pixel(sx as u32, sy)[0] >= 128 {
                1.0
            } else {
                0.0
            }
        }));
    }
    out
}

/// PyTorch's `nearest_idx` (upsample nearest, no scale factor given): the
/// input index for output index `dst` when resizing `input` to `output` (> 0).
fn nearest_index(dst: usize, input: usize, output: usize) -> usize {
    if output == input {
        dst
    } else if output == 2 * input {
        dst >> 1
    } else {
        let scale = input as f32 / output as f32;
        ((dst as f32 * scale).floor() as usize).min(input.saturating_sub(1))
    }
}

/// Encodes one image and samples `n` latents from its posterior, one per image
/// of the job, each with that image's seeded noise: (sample - shift) * scale.
pub fn encode(
    model: &LoadedModel,
    pixels: &Tensor,
    n: usize,
    noise: &mut SeededNoise,
    tiling: VaeTiling,
) -> Result<Tensor> {
    let vae = model.vae();
    let (mean, logvar) = vae.posterior_with(pixels, tiling)?;
    let std = (logvar * 0.5)?.exp()?;
    let (_, c, h, w) = mean.dims4()?;
    let eps = noise.sample_posterior(&[c, h, w])?.to_dtype(mean.dtype())?;
    let sample = mean.broadcast_add(&eps.broadcast_mul(&std)?)?;
    let shifted = match vae.shift_factor {
        Some(shift) => (sample - shift)?,
        None => sample,
    };
    debug_assert_eq!(shifted.dim(0)?, n);
    Ok((shifted * vae.scaling_factor)?.to_dtype(model.dtype())?)
}

/// Latents [1, c, h, w] to interleaved RGB8, as diffusers does:
/// x / scaling_factor (+ shift), decode, (x / 2 + 0.5) clamped to [0, 1], x 255, rounded.
pub fn decode(model: &LoadedModel, latents: &Tensor) -> Result<RgbImage> {
    decode_with(model, latents, VaeChoice::Full, VaeTiling::Auto)
}

/// [`decode`] by the chosen decoder: the model's VAE (tiled as `tiling`
/// says, see [`crate::model::vae_tiling`]), or TAESD (which takes the
/// denoiser's latents as they are, see [`crate::model::taesd::Taesd::decode`]).
///
/// Errors: `Tiny` without TAESD loaded (validation refuses such jobs).
pub fn decode_with(
    model: &LoadedModel,
    latents: &Tensor,
    choice: VaeChoice,
    tiling: VaeTiling,
) -> Result<RgbImage> {
    let vae = model.vae();
    let img = match (choice, vae.tiny()) {
        (VaeChoice::Tiny, Some(tiny)) => tiny.decode(latents)?,
        (VaeChoice::Tiny, None) => anyhow::bail!("TAESD is not loaded (--taesd)"),
        (VaeChoice::Full, _) => {
            let mut x = (latents.to_dtype(vae.dtype())? / vae.scaling_factor)?;
            if let Some(shift) = vae.shift_factor {
                x = (x + shift)?;
            }
            vae.decode_with(&x, tiling)?
        }
    };
    to_rgb(&img)
}

/// Pixels [1, 3, H, W] in about [-1, 1] to RGB8.
fn to_rgb(img: &Tensor) -> Result<RgbImage> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// tests/reference/inpaint_mask_reference.json (how to recompute it: the
    /// `.py` beside it).
    #[derive(Deserialize)]
    struct MaskReference {
        width: u32,
        height: u32,
        vae_scale_factor: usize,
        mask: Vec<Vec<u8>>,
        binarised_mask: Vec<String>,
        latent_mask: Vec<String>,
    }

    fn rows(values: &[f32], w: usize) -> Vec<String> {
        values
            .chunks(w)
            .map(|r| {
                r.iter()
                    .map(|&v| if v == 1.0 { '1' } else { '0' })
                    .collect()
            })
            .collect()
    }

    /// A mask with edges off the 8-pixel grid and greys around 50 %, at the
    /// output size and at latent size, cell for cell against diffusers'
    /// mask_processor + prepare_mask_latents.
    #[test]
    fn the_inpainting_mask_is_resized_to_latents_as_diffusers_does() {
        let r: MaskReference = serde_json::from_str(include_str!(
            "../../tests/reference/inpaint_mask_reference.json"
        ))
        .unwrap();
        let raw: Vec<u8> = r.mask.concat();
        let mask = GrayImage::from_raw(r.width, r.height, raw).unwrap();
        let (w, h) = (r.width as usize, r.height as usize);
        assert_eq!(rows(&resize_mask(&mask, h, w), w), r.binarised_mask);

        let (lw, lh) = (w / r.vae_scale_factor, h / r.vae_scale_factor);
        let ours = rows(&resize_mask(&mask, lh, lw), lw);
        let differing: usize = ours
            .iter()
            .zip(&r.latent_mask)
            .map(|(a, b)| a.chars().zip(b.chars()).filter(|(x, y)| x != y).count())
            .sum();
        assert_eq!(
            ours,
            r.latent_mask,
            "{differing} of {} latent cells differ from diffusers",
            lw * lh
        );
    }
}
