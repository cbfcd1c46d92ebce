//! The denoising loop shared by every operation: classifier-free guidance, and
//! the two ways of keeping an inpainting job's known pixels.

use anyhow::{Context, Result};
use candle_core::Tensor;

use super::noise::SeededNoise;
use super::Observer;
use crate::model::unet::TextTime;
use crate::model::{Denoiser, LoadedModel};
use crate::scheduler::Scheduler;

/// Extra conditioning of inpainting jobs.
pub enum Inpaint {
    None,
    /// An inpainting UNet: `cat([latents, mask, masked_image_latents])` on the
    /// channel axis (both already batched like the UNet input).
    Concat {
        mask: Tensor,
        masked_latents: Tensor,
    },
    /// Any other UNet: after each step the known region is reset to the input's
    /// latents noised to the next timestep (clean after the last step).
    Blend {
        mask: Tensor,
        image_latents: Tensor,
        noise: Tensor,
    },
}

/// What the UNet is conditioned on, batched like its input.
pub struct Conditioning {
    /// Text embeddings: [batch, tokens, dim].
    pub context: Tensor,
    /// SDXL's pooled text embedding and time ids.
    pub text_time: Option<TextTime>,
    /// SD 3's pooled CLIP embeddings: [batch, pooled dim].
    pub pooled: Option<Tensor>,
}

pub struct Loop<'a> {
    pub cond: &'a Conditioning,
    /// Whether `cond` holds [uncond x n, cond x n] (guidance > 1).
    pub guided: bool,
    pub guidance_scale: f64,
    pub inpaint: Inpaint,
    /// Index of the first timestep to run.
    pub start: usize,
}

/// Runs the loop from `latents`; `None` when the observer stopped it.
pub fn run(
    model: &LoadedModel,
    sched: &mut dyn Scheduler,
    lp: &Loop,
    mut latents: Tensor,
    noise: &mut SeededNoise,
    observer: &mut dyn Observer,
) -> Result<Option<Tensor>> {
    let n = latents.dim(0)?;
    let timesteps = sched.timesteps().to_vec();
    let total = timesteps.len() - lp.start;
    for (done, i) in (lp.start..timesteps.len()).enumerate() {
        let input = if lp.guided {
            Tensor::cat(&[&latents, &latents], 0)?
        } else {
            latents.clone()
        };
        let mut input = sched.scale_model_input(&input, i)?;
        if let Inpaint::Concat {
            mask,
            masked_latents,
        } = &lp.inpaint
        {
            input = Tensor::cat(&[&input, mask, masked_latents], 1)?;
        }
        let out = match &model.denoiser {
            Denoiser::Unet(unet) => unet.forward(
                &input,
                timesteps[i],
                &lp.cond.context,
                lp.cond.text_time.as_ref(),
                None,
            )?,
            Denoiser::Mmdit(mmdit) => {
                let pooled = lp
                    .cond
                    .pooled
                    .as_ref()
                    .context("SD 3 needs pooled text embeddings")?;
                mmdit.forward(&input, timesteps[i], &lp.cond.context, pooled)?
            }
        };
        let eps = if lp.guided {
            let uncond = out.narrow(0, 0, n)?;
            let cond = out.narrow(0, n, n)?;
            (&uncond + ((cond - &uncond)? * lp.guidance_scale)?)?
        } else {
            out
        };
        latents = sched.step(&eps, i, &latents, noise)?;
        if let Inpaint::Blend {
            mask,
            image_latents,
            noise: blend_noise,
        } = &lp.inpaint
        {
            let known = if i + 1 < timesteps.len() {
                sched.add_noise(image_latents, blend_noise, i + 1)?
            } else {
                image_latents.clone()
            };
            latents = (known.broadcast_mul(&(1.0 - mask)?)? + latents.broadcast_mul(mask)?)?;
        }
        if !observer.step(done + 1, total) {
            return Ok(None);
        }
        if observer.wants_preview(done + 1) {
            // The estimate of the clean image, not the noisy latents; after
            // the last step the latents themselves are clean.
            match sched.pred_original_sample() {
                Some(x0) if i + 1 < timesteps.len() => observer.preview(done + 1, x0),
                _ => observer.preview(done + 1, &latents),
            }
        }
    }
    Ok(Some(latents))
}
