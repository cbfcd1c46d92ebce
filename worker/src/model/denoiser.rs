//! The denoiser seam: one prediction call that every denoising network
//! implements (the UNet of SD 1.x/2.x/XL, the MMDiT of SD 3), and the
//! conditioning it takes. The pipeline only ever calls [`Denoiser::predict`];
//! what a family needs beyond text embeddings travels in [`Conditioning`].

use anyhow::{bail, Context, Result};
use candle_core::Tensor;

use super::mmdit::Mmdit;
use super::unet::{ControlResiduals, TextTime, Unet};

/// What a denoiser is conditioned on, batched like its input
/// ([uncond x n, cond x n] under classifier-free guidance, else [cond x n]).
#[derive(Debug, Clone)]
pub struct Conditioning {
    /// Text embeddings: [batch, tokens, dim].
    pub context: Tensor,
    /// Pooled text embedding, [batch, pooled dim]: SDXL's second encoder's
    /// (the UNet's `text_embeds`), SD 3's two CLIPs' side by side (the
    /// MMDiT's `pooled_projections`). None for SD 1.x/2.x.
    pub pooled: Option<Tensor>,
    /// SDXL's micro-conditioning `[orig_h, orig_w, crop_top, crop_left,
    /// target_h, target_w]`: [batch, 6], f32 (diffusers' `add_time_ids`).
    pub time_ids: Option<Tensor>,
}

impl Conditioning {
    /// The UNet's `added_cond_kwargs` (SDXL), when both parts are present.
    pub fn text_time(&self) -> Option<TextTime> {
        match (&self.pooled, &self.time_ids) {
            (Some(text_embeds), Some(time_ids)) => Some(TextTime {
                text_embeds: text_embeds.clone(),
                time_ids: time_ids.clone(),
            }),
            _ => None,
        }
    }
}

/// A network that predicts noise, v or flow velocity at each step.
pub trait Denoiser: Send + Sync {
    /// The model output for `sample` [batch, in channels, h, w] (the
    /// scheduler-scaled latents, plus any extra input channels such as an
    /// inpainting UNet's mask and masked image) at `timestep` (the
    /// scheduler's value: 0..1000, or sigma x 1000 for flow matching);
    /// [batch, latent channels, h, w].
    ///
    /// Errors: conditioning the network needs is missing, or residuals are
    /// given to a network that cannot take them (only the UNet can).
    fn predict(
        &self,
        sample: &Tensor,
        timestep: f64,
        cond: &Conditioning,
        residuals: Option<&ControlResiduals>,
    ) -> Result<Tensor>;

    /// The UNet, for extensions that work alongside one (ControlNet).
    fn as_unet(&self) -> Option<&Unet> {
        None
    }
}

impl Denoiser for Unet {
    fn predict(
        &self,
        sample: &Tensor,
        timestep: f64,
        cond: &Conditioning,
        residuals: Option<&ControlResiduals>,
    ) -> Result<Tensor> {
        let text_time = cond.text_time();
        self.forward(
            sample,
            timestep,
            &cond.context,
            text_time.as_ref(),
            residuals,
        )
    }

    fn as_unet(&self) -> Option<&Unet> {
        Some(self)
    }
}

impl Denoiser for Mmdit {
    fn predict(
        &self,
        sample: &Tensor,
        timestep: f64,
        cond: &Conditioning,
        residuals: Option<&ControlResiduals>,
    ) -> Result<Tensor> {
        if residuals.is_some() {
            bail!("SD 3's transformer takes no UNet ControlNet residuals");
        }
        let pooled = cond
            .pooled
            .as_ref()
            .context("SD 3 needs pooled text embeddings")?;
        self.forward(sample, timestep, &cond.context, pooled)
    }
}
