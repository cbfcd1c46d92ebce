//! The two ways of keeping an inpainting job's known pixels, as step hooks.

use anyhow::Result;
use candle_core::Tensor;

use super::{DenoiserCall, StepContext, StepHook};

/// An inpainting UNet (9 input channels): every call takes
/// `cat([latents, mask, masked_image_latents])` on the channel axis, as
/// diffusers' `StableDiffusionInpaintPipeline` does.
pub struct InpaintChannels {
    /// [batch, 1, h, w], 1 = repaint, batched like the UNet input.
    pub mask: Tensor,
    /// The masked image's latents [batch, latent channels, h, w], batched
    /// like the UNet input.
    pub masked_latents: Tensor,
}

impl StepHook for InpaintChannels {
    fn before(&mut self, _ctx: &StepContext, call: &mut DenoiserCall) -> Result<()> {
        call.extra_channels.push(self.mask.clone());
        call.extra_channels.push(self.masked_latents.clone());
        Ok(())
    }
}

/// Any other UNet: after each step the known region is reset to the input's
/// latents noised to the next timestep, and to the clean latents after the
/// last step (diffusers' inpaint pipeline with a 4-channel UNet).
pub struct LatentBlend {
    /// [1, 1, h, w], 1 = repaint.
    pub mask: Tensor,
    /// The input's latents, [n, latent channels, h, w].
    pub image_latents: Tensor,
    /// The job's starting noise, [n, latent channels, h, w].
    pub noise: Tensor,
}

impl StepHook for LatentBlend {
    fn after(&mut self, ctx: &StepContext, latents: Tensor) -> Result<Tensor> {
        let known = if ctx.is_last() {
            self.image_latents.clone()
        } else {
            ctx.scheduler
                .add_noise(&self.image_latents, &self.noise, ctx.index + 1)?
        };
        Ok((known.broadcast_mul(&(1.0 - &self.mask)?)? + latents.broadcast_mul(&self.mask)?)?)
    }
}
