//! Text to image, top to bottom as the algorithm: encode the prompts, draw the
//! seeded noise, denoise with classifier-free guidance, decode with the VAE's
//! own scale, encode the images.

use anyhow::{bail, Result};
use candle_core::{DType, IndexOp, Tensor};
use std::time::Instant;

use super::encode::{encode_jpeg, encode_png, Parameters};
use super::noise::SeededNoise;
use super::{prompt, Image, Observer, Outcome, Request, StageTimings};
use crate::model::LoadedModel;
use crate::scheduler;
use sd_worker_sdk::ImageFormat;

pub fn run(model: &LoadedModel, req: &Request, observer: &mut dyn Observer) -> Result<Outcome> {
    let mut timings = StageTimings::default();
    let n = req.num_images;
    // diffusers skips the unconditional pass entirely at guidance <= 1.
    let guided = req.guidance_scale > 1.0;

    // 1. Conditioning: [uncond x n, cond x n] when guided, else [cond x n].
    let t0 = Instant::now();
    let cond = prompt::encode(model, &req.prompt, "prompt")?;
    let mut parts = vec![cond.embedding; n];
    if let Some(w) = &cond.warning {
        observer.warning("prompt_truncated", w);
    }
    if guided {
        let uncond = prompt::encode(model, &req.negative_prompt, "negative prompt")?;
        if let Some(w) = &uncond.warning {
            observer.warning("prompt_truncated", w);
        }
        let mut all = vec![uncond.embedding; n];
        all.append(&mut parts);
        parts = all;
    }
    let context = Tensor::cat(&parts, 0)?;
    timings.text_encoder_ms = ms(t0);

    // 2. Initial noise, seeded per image, scaled for the scheduler.
    let t0 = Instant::now();
    let mut sched = scheduler::build(req.scheduler, &model.scheduler_config, req.steps)?;
    let f = model.meta.vae_scale_factor as usize;
    let (lh, lw) = (req.height as usize / f, req.width as usize / f);
    let mut noise = SeededNoise::new(req.seed, n, &model.device, model.dtype);
    let mut latents =
        (noise.sample(&[model.meta.latent_channels, lh, lw])? * sched.init_noise_sigma())?;

    // 3. Denoising loop.
    let timesteps = sched.timesteps().to_vec();
    let total = timesteps.len();
    for (i, &t) in timesteps.iter().enumerate() {
        let input = if guided {
            Tensor::cat(&[&latents, &latents], 0)?
        } else {
            latents.clone()
        };
        let input = sched.scale_model_input(&input, i)?;
        let out = model.unet.forward(&input, t, &context)?;
        let eps = if guided {
            let uncond = out.narrow(0, 0, n)?;
            let cond = out.narrow(0, n, n)?;
            (&uncond + ((cond - &uncond)? * req.guidance_scale)?)?
        } else {
            out
        };
        latents = sched.step(&eps, i, &latents, &mut noise)?;
        timings.unet_steps += 1;
        let display = if i + 1 < total {
            sched.scale_model_input(&latents, i + 1)?
        } else {
            latents.clone()
        };
        if !observer.step(i + 1, total, &display) {
            return Ok(Outcome::Cancelled);
        }
    }
    timings.denoise_ms = ms(t0);
    let finite = latents
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?
        .is_finite();
    if !finite {
        bail!("the latents became NaN or infinite during denoising (try --dtype f32)");
    }

    // 4. Decode one image at a time (bounded memory), with the VAE's own scale.
    let mut images = Vec::with_capacity(n);
    let mut rgbs = Vec::with_capacity(n);
    let t0 = Instant::now();
    for i in 0..n {
        rgbs.push(decode(model, &latents.i(i..i + 1)?)?);
    }
    timings.vae_decode_ms = ms(t0);

    // 5. Encode, with the parameters that reproduce each image.
    let t0 = Instant::now();
    for (i, rgb) in rgbs.into_iter().enumerate() {
        let seed = req.seed.wrapping_add(i as u64);
        let bytes = match req.output_format {
            ImageFormat::Png => {
                let params = Parameters {
                    prompt: &req.prompt,
                    negative_prompt: &req.negative_prompt,
                    steps: req.steps,
                    sampler: req.scheduler.a1111_name(),
                    guidance_scale: req.guidance_scale,
                    seed,
                    width: req.width,
                    height: req.height,
                    model: &model.meta.id,
                };
                encode_png(&rgb, req.width, req.height, Some(&params.to_a1111()))?
            }
            ImageFormat::Jpeg => encode_jpeg(&rgb, req.width, req.height, 92)?,
        };
        images.push(Image {
            bytes,
            format: req.output_format,
            seed,
            width: req.width,
            height: req.height,
        });
    }
    timings.encode_ms = ms(t0);
    Ok(Outcome::Completed { images, timings })
}

/// Latents [1, c, h, w] to interleaved RGB8, as diffusers does:
/// x / scaling_factor (+ shift), decode, (x / 2 + 0.5) clamped to [0, 1], x 255, rounded.
pub fn decode(model: &LoadedModel, latents: &Tensor) -> Result<Vec<u8>> {
    let mut x = (latents / model.meta.vae_scaling_factor)?;
    if let Some(shift) = model.meta.vae_shift_factor {
        x = (x + shift)?;
    }
    let img = model.vae.decode(&x)?;
    let img = ((img.to_dtype(DType::F32)? / 2.0)? + 0.5)?.clamp(0f32, 1f32)?;
    let img = (img * 255.0)?.round()?.to_dtype(DType::U8)?;
    // [1, 3, H, W] -> [H, W, 3]
    let hwc = img.i(0)?.permute((1, 2, 0))?.contiguous()?;
    Ok(hwc
        .to_device(&candle_core::Device::Cpu)?
        .flatten_all()?
        .to_vec1::<u8>()?)
}

fn ms(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1000.0
}
