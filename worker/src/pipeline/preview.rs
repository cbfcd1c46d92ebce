//! Live previews: the scheduler's current estimate of the clean latents (x0,
//! diffusers' `pred_original_sample`), decoded by the model's own VAE at a
//! reduced resolution. x0 shows the composition and colours of the finished
//! image long before the noisy latents do.
//!
//! Cost: the latents are area-averaged by a factor `k` per side before the
//! decode, `k = max(2, ceil(longest side / 32))`, so a preview costs at most
//! 1/4 of a full decode of one image (SD 1.5 at 512x512: 1/4, a 256x256
//! preview; SDXL at 1024x1024: 1/16, a 256x256 preview). Only the first image
//! of a batch is previewed.
//!
//! Why not a fixed latent-to-RGB table (A1111's and ComfyUI's cheap
//! previews): such a table is fitted to one VAE, and a linear map is a poor fit
//! for some VAEs (on the bundled model's VAE a least-squares map is ~45/255
//! off), while the VAE itself is right for every model.
//!
//! With TAESD loaded (`--taesd`), `preview_method: taesd` (then the default)
//! decodes x0 at the full size with it instead: sharp, for a few percent of
//! the VAE's cost.

use anyhow::Result;
use candle_core::{IndexOp, Tensor};

use super::encode::encode_jpeg;
use super::latents::{decode, decode_with};
use crate::model::LoadedModel;
use sd_worker_sdk::{PreviewMethod, VaeChoice, VaeTiling};

/// Longest side, in latent cells, that a preview decodes.
const MAX_PREVIEW_CELLS: usize = 32;

/// The averaging factor per side for latents of `h` x `w` cells: at least 2,
/// and enough to bring the longer side to [`MAX_PREVIEW_CELLS`]; never more
/// than the shorter side.
pub fn reduction(h: usize, w: usize) -> usize {
    h.max(w)
        .div_ceil(MAX_PREVIEW_CELLS)
        .max(2)
        .min(h.min(w))
        .max(1)
}

/// JPEG preview of the first image of `clean_latents` ([batch, channels, h,
/// w], in the denoiser's latent space), JPEG quality 80: by TAESD at the full
/// size, or averaged down by [`reduction`] and decoded by the VAE (with its
/// scale and shift).
///
/// Errors: the decode fails (the caller logs it and goes on).
pub fn preview_jpeg(
    model: &LoadedModel,
    clean_latents: &Tensor,
    method: PreviewMethod,
) -> Result<Vec<u8>> {
    let first = clean_latents.i(0..1)?;
    if method == PreviewMethod::Taesd && model.vae().tiny().is_some() {
        let rgb = decode_with(model, &first, VaeChoice::Tiny, VaeTiling::Off)?;
        return encode_jpeg(rgb.as_raw(), rgb.width(), rgb.height(), 80);
    }
    let (_, _, h, w) = first.dims4()?;
    let k = reduction(h, w);
    let small = if k > 1 {
        first
            .narrow(2, 0, h / k * k)?
            .narrow(3, 0, w / k * k)?
            .contiguous()?
            .avg_pool2d(k)?
    } else {
        first
    };
    let rgb = decode(model, &small)?;
    encode_jpeg(rgb.as_raw(), rgb.width(), rgb.height(), 80)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_average_by_at_least_two_and_to_at_most_32_cells() {
        assert_eq!(reduction(16, 16), 2); // the bundled model at 64x64
        assert_eq!(reduction(64, 64), 2); // SD 1.5 at 512x512
        assert_eq!(reduction(128, 128), 4); // SDXL at 1024x1024
        assert_eq!(reduction(64, 160), 5);
        assert_eq!(reduction(3, 200), 3); // never past the shorter side
        assert_eq!(reduction(1, 1), 1);
    }
}
