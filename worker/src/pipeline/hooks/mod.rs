//! Per-step extensions: hooks around the denoiser call of each step.
//!
//! Before the call a hook may add inputs: extra input channels (an
//! inpainting UNet's mask and masked image, [`inpaint::InpaintChannels`]) or
//! residuals for the UNet's skip connections (ControlNet). After the
//! scheduler's step it may rework the latents (latent-blend inpainting,
//! [`inpaint::LatentBlend`]). Hooks run in the order they were added; a new
//! per-step extension is one more module implementing [`StepHook`], added
//! to the list where the job's hooks are made (`generate::prepare`).

pub mod controlnet;
pub mod inpaint;

use anyhow::Result;
use candle_core::Tensor;

use crate::model::denoiser::Conditioning;
use crate::model::unet::ControlResiduals;
use crate::scheduler::Scheduler;

/// Where the loop stands when a hook is called.
pub struct StepContext<'a> {
    /// Index of this step's timestep in the scheduler's list.
    pub index: usize,
    /// This step among the job's steps, from 0, and how many the job runs
    /// (image to image starts part-way: `steps` counts only those run).
    pub step: usize,
    pub steps: usize,
    /// The scheduler's timestep value given to the denoiser.
    pub timestep: f64,
    /// The batch's conditioning (guided: [uncond x n, cond x n]).
    pub cond: &'a Conditioning,
    /// Whether the batch holds the unconditional half first.
    pub guided: bool,
    pub scheduler: &'a dyn Scheduler,
}

impl StepContext<'_> {
    /// Whether this is the job's last step.
    pub fn is_last(&self) -> bool {
        self.step + 1 == self.steps
    }
}

/// One denoiser call being assembled by the hooks.
pub struct DenoiserCall {
    /// The scheduler-scaled latents, batched like the conditioning:
    /// [batch, latent channels, h, w]. Hooks read it (ControlNet's input).
    pub sample: Tensor,
    /// Extra input channels, concatenated after `sample` in order, each
    /// [batch, c, h, w].
    pub extra_channels: Vec<Tensor>,
    /// Residuals for the UNet's skip connections, summed over hooks.
    pub residuals: Option<ControlResiduals>,
}

impl DenoiserCall {
    pub fn new(sample: Tensor) -> Self {
        Self {
            sample,
            extra_channels: Vec::new(),
            residuals: None,
        }
    }

    /// Adds `r` to the residuals gathered so far (diffusers'
    /// `MultiControlNetModel` sums its nets' residuals).
    ///
    /// Errors: `r` does not match the gathered residuals in number or shape.
    pub fn add_residuals(&mut self, r: ControlResiduals) -> Result<()> {
        self.residuals = Some(match self.residuals.take() {
            None => r,
            Some(acc) => {
                anyhow::ensure!(
                    acc.down.len() == r.down.len(),
                    "controlnet residuals: {} and {} down residuals",
                    acc.down.len(),
                    r.down.len()
                );
                ControlResiduals {
                    down: acc
                        .down
                        .iter()
                        .zip(&r.down)
                        .map(|(a, b)| a + b)
                        .collect::<candle_core::Result<_>>()?,
                    mid: (&acc.mid + &r.mid)?,
                }
            }
        });
        Ok(())
    }

    /// The denoiser's input: `sample` with the extra channels after it.
    pub fn input(&self) -> Result<Tensor> {
        if self.extra_channels.is_empty() {
            return Ok(self.sample.clone());
        }
        let mut parts = vec![&self.sample];
        parts.extend(&self.extra_channels);
        Ok(Tensor::cat(&parts, 1)?)
    }
}

/// A per-step extension. Both methods default to doing nothing.
pub trait StepHook: Send {
    /// Before the denoiser call: may add inputs to `call`.
    fn before(&mut self, _ctx: &StepContext, _call: &mut DenoiserCall) -> Result<()> {
        Ok(())
    }

    /// After the scheduler's step: may replace the new `latents`
    /// [n, latent channels, h, w] (not batched for guidance).
    fn after(&mut self, _ctx: &StepContext, latents: Tensor) -> Result<Tensor> {
        Ok(latents)
    }
}
