//! The denoising loop shared by every operation: the step hooks around the
//! denoiser call ([`super::hooks`]), classifier-free guidance, the
//! scheduler's step, and the observer's progress and previews.

use anyhow::Result;
use candle_core::Tensor;

use super::hooks::{DenoiserCall, StepContext, StepHook};
use super::noise::SeededNoise;
use super::Observer;
use crate::model::denoiser::Conditioning;
use crate::model::LoadedModel;
use crate::scheduler::Scheduler;

pub struct Loop<'a> {
    pub cond: &'a Conditioning,
    /// Whether `cond` holds [uncond x n, cond x n] (guidance > 1).
    pub guided: bool,
    pub guidance_scale: f64,
    /// Per-step extensions, in order.
    pub hooks: Vec<Box<dyn StepHook>>,
    /// Index of the first timestep to run.
    pub start: usize,
}

/// Runs the loop from `latents`; `None` when the observer stopped it.
pub fn run(
    model: &LoadedModel,
    sched: &mut dyn Scheduler,
    lp: &mut Loop,
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
        let mut call = DenoiserCall::new(sched.scale_model_input(&input, i)?);
        {
            let ctx = StepContext {
                index: i,
                step: done,
                steps: total,
                timestep: timesteps[i],
                cond: lp.cond,
                guided: lp.guided,
                scheduler: &*sched,
            };
            for hook in &mut lp.hooks {
                hook.before(&ctx, &mut call)?;
            }
        }
        let out = model.denoiser().predict(
            &call.input()?,
            timesteps[i],
            lp.cond,
            call.residuals.as_ref(),
        )?;
        let eps = if lp.guided {
            let uncond = out.narrow(0, 0, n)?;
            let cond = out.narrow(0, n, n)?;
            (&uncond + ((cond - &uncond)? * lp.guidance_scale)?)?
        } else {
            out
        };
        latents = sched.step(&eps, i, &latents, noise)?;
        let ctx = StepContext {
            index: i,
            step: done,
            steps: total,
            timestep: timesteps[i],
            cond: lp.cond,
            guided: lp.guided,
            scheduler: &*sched,
        };
        for hook in &mut lp.hooks {
            latents = hook.after(&ctx, latents)?;
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
