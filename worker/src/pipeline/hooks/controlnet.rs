//! ControlNet as a step hook: before each denoiser call, every unit active at
//! this step adds its residuals (times its `conditioning_scale`) to the
//! UNet's, as diffusers' `StableDiffusionControlNetPipeline` (and its
//! image-to-image, inpainting and SDXL siblings) with a `MultiControlNetModel`.

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use image::RgbImage;
use std::sync::Arc;

use super::{DenoiserCall, StepContext, StepHook};
use crate::model::controlnet::ControlNet;
use crate::model::LoadedModel;

struct Unit {
    net: Arc<ControlNet>,
    /// The control map in [0, 1], [batch, 3, H, W], batched like the UNet input.
    image: Tensor,
    scale: f64,
    start: f64,
    end: f64,
}

pub struct ControlNetHook {
    units: Vec<Unit>,
}

/// One unit's network and control map, for [`ControlNetHook::new`].
pub struct ControlInput {
    pub net: Arc<ControlNet>,
    /// The control map at the output size.
    pub map: RgbImage,
    pub conditioning_scale: f64,
    pub guidance_start: f64,
    pub guidance_end: f64,
}

impl ControlNetHook {
    /// `batch`: the UNet's batch (the job's images, twice when guided); each
    /// map is repeated to it, as diffusers' `prepare_image` does.
    pub fn new(model: &LoadedModel, inputs: Vec<ControlInput>, batch: usize) -> Result<Self> {
        model
            .denoiser()
            .as_unet()
            .context("ControlNets steer a UNet; this model has none")?;
        let units = inputs
            .into_iter()
            .map(|u| {
                Ok(Unit {
                    image: map_tensor(&u.map, model)?.repeat((batch, 1, 1, 1))?,
                    net: u.net,
                    scale: u.conditioning_scale,
                    start: u.guidance_start,
                    end: u.guidance_end,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self { units })
    }
}

/// Whether a unit acts at `step` (from 0) of `steps`: diffusers'
/// `controlnet_keep`, `1 - (i / n < start or (i + 1) / n > end)`.
pub fn active(step: usize, steps: usize, start: f64, end: f64) -> bool {
    let (i, n) = (step as f64, steps as f64);
    !(i / n < start || (i + 1.0) / n > end)
}

impl StepHook for ControlNetHook {
    fn before(&mut self, ctx: &StepContext, call: &mut DenoiserCall) -> Result<()> {
        let text_time = ctx.cond.text_time();
        for u in &self.units {
            if !active(ctx.step, ctx.steps, u.start, u.end) {
                continue;
            }
            let residuals = u.net.forward(
                &call.sample,
                ctx.timestep,
                &ctx.cond.context,
                text_time.as_ref(),
                &u.image,
                u.scale,
            )?;
            call.add_residuals(residuals)?;
        }
        Ok(())
    }
}

/// RGB8 to [1, 3, H, W] in [0, 1] (diffusers' control image processor:
/// `do_normalize=False`) in the model's dtype on its device.
fn map_tensor(map: &RgbImage, model: &LoadedModel) -> Result<Tensor> {
    let (w, h) = map.dimensions();
    let data: Vec<f32> = map.as_raw().iter().map(|&v| v as f32 / 255.0).collect();
    Ok(
        Tensor::from_vec(data, (h as usize, w as usize, 3), &Device::Cpu)?
            .permute((2, 0, 1))?
            .unsqueeze(0)?
            .to_dtype(model.dtype())?
            .to_device(model.device())?,
    )
}

#[cfg(test)]
mod tests {
    use super::active;

    /// diffusers' `controlnet_keep` for 10 steps: start 0.2 skips steps 0
    /// and 1; end 0.5 stops after step 4 ((4 + 1) / 10 = 0.5 is kept).
    #[test]
    fn guidance_start_and_end_switch_units_as_diffusers_does() {
        let on: Vec<usize> = (0..10).filter(|&i| active(i, 10, 0.2, 0.5)).collect();
        assert_eq!(on, [2, 3, 4]);
        assert!((0..7).all(|i| active(i, 7, 0.0, 1.0)));
        let late: Vec<usize> = (0..4).filter(|&i| active(i, 4, 0.9, 1.0)).collect();
        assert!(late.is_empty(), "{late:?}");
    }
}
