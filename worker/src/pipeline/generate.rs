//! One job, top to bottom: encode the prompts, prepare the starting latents
//! (noise; or the input image's latents noised to the start step), denoise,
//! decode with the VAE's own scale, paste the kept pixels back, encode.

use anyhow::{bail, Result};
use candle_core::{DType, IndexOp, Tensor};
use image::RgbImage;
use std::time::Instant;

use super::denoise::{self, Loop};
use super::encode::{encode_jpeg, encode_png, Parameters};
use super::hires::{self, PassObserver};
use super::hooks::controlnet::{ControlInput, ControlNetHook};
use super::hooks::inpaint::{InpaintChannels, LatentBlend};
use super::hooks::StepHook;
use super::latents::{decode_with, encode, mask_to_latent, pixels_to_tensor};
use super::noise::SeededNoise;
use super::{adapters, conditioning, Image, InitImage, Observer, Outcome, Request, StageTimings};
use crate::images::paste_back;
use crate::model::denoiser::Conditioning;
use crate::model::LoadedModel;
use crate::scheduler::{self, Scheduler};
use sd_worker_sdk::{ImageFormat, Phase};

pub fn run(model: &LoadedModel, req: &Request, observer: &mut dyn Observer) -> Result<Outcome> {
    let mut timings = StageTimings::default();
    let n = req.num_images;
    let start = req.start_step();
    if start == req.steps {
        // Strength 0 (or small enough to round to no step): nothing to denoise.
        let init = req
            .init
            .as_ref()
            .expect("only image inputs start past the last step");
        let images = vec![init.image.clone(); n];
        return Ok(Outcome::Completed {
            images: encode_images(model, req, images, &mut timings)?,
            timings,
            loras: Vec::new(),
        });
    }
    // diffusers skips the unconditional pass entirely at guidance <= 1.
    let guided = req.guidance_scale > 1.0;

    // 1. The job's LoRAs merged (or the base weights back), its embeddings
    //    loaded; then the conditioning: [uncond x n, cond x n] when guided,
    //    else [cond x n].
    let t0 = Instant::now();
    let adapters = adapters::prepare(model, req, observer)?;
    let cond = conditioning::for_batch(model, req, &adapters.embeddings, guided, observer)?;
    timings.text_encoder_ms = ms(t0);

    // 2-3. Starting latents and denoising: the first (or only) pass, then a
    //      hires fix's second pass from its result.
    let t0 = Instant::now();
    let total = req.steps_to_run();
    let first = match &req.hires {
        None => sample(model, req, &cond, guided, observer)?,
        Some(_) => {
            let mut pass = PassObserver::new(observer, Phase::Base, 0, total);
            sample(model, req, &cond, guided, &mut pass)?
        }
    };
    let Some(mut latents) = first else {
        return Ok(Outcome::Cancelled);
    };
    if let Some(h) = &req.hires {
        let mut pass = PassObserver::new(observer, Phase::Hires, req.first_pass_steps(), total);
        let Some(second) = hires::second_pass(model, req, h, &cond, guided, &latents, &mut pass)?
        else {
            return Ok(Outcome::Cancelled);
        };
        check_finite(&second)?;
        latents = second;
    }
    timings.unet_steps = total;
    timings.denoise_ms = ms(t0);

    // 4. Decode one image at a time (bounded memory); keep the input's pixels
    //    outside an inpainting mask exactly.
    let t0 = Instant::now();
    let mut images = Vec::with_capacity(n);
    for i in 0..n {
        let mut rgb = decode_with(
            model,
            &latents.i(i..i + 1)?,
            req.decoding.vae,
            req.decoding.tiling,
        )?;
        if let Some(InitImage {
            image,
            mask: Some(mask),
            ..
        }) = &req.init
        {
            paste_back(image, &mut rgb, &mask.blend);
        }
        images.push(rgb);
    }
    timings.vae_decode_ms = ms(t0);
    let images = encode_images(model, req, images, &mut timings)?;
    Ok(Outcome::Completed {
        images,
        timings,
        loras: adapters.loras,
    })
}

/// The first (or only) pass at the request's size: starting latents, hooks,
/// the denoising loop. `None` when the observer stopped it.
fn sample(
    model: &LoadedModel,
    req: &Request,
    cond: &Conditioning,
    guided: bool,
    observer: &mut dyn Observer,
) -> Result<Option<Tensor>> {
    // With ChaCha, noise is drawn first, so a seed gives the same starting
    // noise whatever the operation; with torch's generator, in diffusers'
    // order (see `prepare`).
    let n = req.num_images;
    let start = req.start_step();
    let mut sched = scheduler::build(req.scheduler, model.scheduler_config(), req.steps)?;
    let f = model.meta().vae_scale_factor as usize;
    let (lh, lw) = (req.height as usize / f, req.width as usize / f);
    let mut noise = SeededNoise::with_rng(req.rng, req.seed, n, model.device(), model.dtype());
    let (latents, mut hooks) = prepare(model, req, &*sched, start, &mut noise, guided, (lh, lw))?;
    if !req.controls.is_empty() {
        let batch = if guided { 2 * n } else { n };
        hooks.push(Box::new(control_hook(model, req, batch)?));
    }
    let mut lp = Loop {
        cond,
        guided,
        guidance_scale: req.guidance_scale,
        hooks,
        start,
    };
    let out = denoise::run(model, &mut *sched, &mut lp, latents, &mut noise, observer)?;
    if let Some(latents) = &out {
        check_finite(latents)?;
    }
    Ok(out)
}

fn check_finite(latents: &Tensor) -> Result<()> {
    if !latents
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?
        .is_finite()
    {
        bail!("the latents became NaN or infinite during denoising (try --dtype f32)");
    }
    Ok(())
}

/// Starting latents and inpainting conditioning, per operation:
/// - text to image: noise x init sigma;
/// - image to image: the input's latents noised to the start step;
/// - inpainting: the same (pure noise at strength 1), plus the mask and masked
///   image for an inpainting UNet, or per-step blending for any other UNet.
///   An inpainting UNet asked for text to image gets an all-repaint mask.
///
/// The starting noise is the first draw of each image's stream, except with
/// an input image when [`SeededNoise::posterior_before_noise`] (torch's
/// generator): then the input's VAE posterior sample comes first, as in
/// diffusers' `StableDiffusionImg2ImgPipeline.prepare_latents`.
fn prepare(
    model: &LoadedModel,
    req: &Request,
    sched: &dyn Scheduler,
    start: usize,
    noise: &mut SeededNoise,
    guided: bool,
    (lh, lw): (usize, usize),
) -> Result<(Tensor, Vec<Box<dyn StepHook>>)> {
    let n = req.num_images;
    let meta = model.meta();
    let shape = [meta.latent_channels, lh, lw];
    let pure_noise =
        |initial: &Tensor| -> Result<Tensor> { Ok((initial * sched.init_noise_sigma())?) };
    let batch_for_unet = |t: Tensor| -> Result<Tensor> {
        Ok(if guided {
            Tensor::cat(&[&t, &t], 0)?
        } else {
            t
        })
    };
    let Some(init) = &req.init else {
        let initial_noise = noise.sample(&shape)?;
        if !meta.inpainting {
            return Ok((pure_noise(&initial_noise)?, Vec::new()));
        }
        // Everything repainted: the masked image is all 0 (mid-grey in [-1, 1]).
        let masked = Tensor::zeros(
            (1, 3, req.height as usize, req.width as usize),
            model.vae().dtype(),
            model.device(),
        )?;
        let masked_latents = encode(model, &masked, n, noise, req.decoding.tiling)?;
        let mask = Tensor::ones((n, 1, lh, lw), model.dtype(), model.device())?;
        let inpaint = InpaintChannels {
            mask: batch_for_unet(mask)?,
            masked_latents: batch_for_unet(masked_latents)?,
        };
        return Ok((pure_noise(&initial_noise)?, vec![Box::new(inpaint)]));
    };
    let pixels = pixels_to_tensor(model, &init.image)?;
    let (image_latents, initial_noise) = if noise.posterior_before_noise() {
        let image_latents = encode(model, &pixels, n, noise, req.decoding.tiling)?;
        (image_latents, noise.sample(&shape)?)
    } else {
        let initial_noise = noise.sample(&shape)?;
        (
            encode(model, &pixels, n, noise, req.decoding.tiling)?,
            initial_noise,
        )
    };
    let latents = if init.strength >= 1.0 && init.mask.is_some() {
        pure_noise(&initial_noise)?
    } else {
        sched.add_noise(&image_latents, &initial_noise, start)?
    };
    let Some(mask) = &init.mask else {
        return Ok((latents, Vec::new()));
    };
    let latent_mask = mask_to_latent(model, &mask.binary, lh, lw)?;
    let inpaint: Box<dyn StepHook> = if meta.inpainting {
        // The masked image: the input where kept, 0 (mid-grey) where repainted.
        let pixel_mask =
            mask_to_latent(model, &mask.binary, req.height as usize, req.width as usize)?;
        let masked = pixels.broadcast_mul(&(1.0 - pixel_mask.to_dtype(model.vae().dtype())?)?)?;
        let masked_latents = encode(model, &masked, n, noise, req.decoding.tiling)?;
        Box::new(InpaintChannels {
            mask: batch_for_unet(latent_mask.repeat((n, 1, 1, 1))?)?,
            masked_latents: batch_for_unet(masked_latents)?,
        })
    } else {
        Box::new(LatentBlend {
            mask: latent_mask,
            image_latents,
            noise: initial_noise,
        })
    };
    Ok((latents, vec![inpaint]))
}

/// The job's ControlNet units: each network loaded (if it is not in memory)
/// and each control map computed by its preprocessor.
fn control_hook(model: &LoadedModel, req: &Request, batch: usize) -> Result<ControlNetHook> {
    let inputs = req
        .controls
        .iter()
        .map(|u| {
            Ok(ControlInput {
                net: u.net.load()?,
                map: u.preprocessors.run(&u.image, &u.preprocess)?,
                conditioning_scale: u.conditioning_scale,
                guidance_start: u.guidance_start,
                guidance_end: u.guidance_end,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    ControlNetHook::new(model, inputs, batch)
}

/// Encodes the final pixels, with the parameters that reproduce each image.
fn encode_images(
    model: &LoadedModel,
    req: &Request,
    images: Vec<RgbImage>,
    timings: &mut StageTimings,
) -> Result<Vec<Image>> {
    let t0 = Instant::now();
    let png_prompt = prompt_with_lora_tags(req);
    let mut out = Vec::with_capacity(images.len());
    for (i, rgb) in images.into_iter().enumerate() {
        let seed = req.seed.wrapping_add(i as u64);
        let (w, h) = rgb.dimensions();
        let bytes = match req.output_format {
            ImageFormat::Png => {
                let params = Parameters {
                    // As written, LoRA tags included (A1111's infotexts keep
                    // them), and tags for the LoRAs the `loras` list chose.
                    prompt: &png_prompt,
                    negative_prompt: req
                        .negative_prompt_as_written
                        .as_deref()
                        .unwrap_or_default(),
                    steps: req.steps,
                    scheduler: req.scheduler,
                    guidance_scale: req.guidance_scale,
                    seed,
                    // A hires fix writes the first pass's size (A1111's `Size`).
                    width: if req.hires.is_some() { req.width } else { w },
                    height: if req.hires.is_some() { req.height } else { h },
                    model: &model.meta().id,
                    denoising_strength: req.init.as_ref().map(|i| i.strength),
                    rng: req.rng,
                    controlnets: &req.controls,
                    lora_hashes: req
                        .loras
                        .iter()
                        .map(|l| (l.name.as_str(), l.hash.as_str()))
                        .collect(),
                    ti_hashes: req
                        .embeddings
                        .iter()
                        .map(|e| (e.name.as_str(), e.hash.as_str()))
                        .collect(),
                    hires: req.hires.as_ref(),
                    tiny_vae: req.decoding.vae == sd_worker_sdk::VaeChoice::Tiny,
                };
                encode_png(rgb.as_raw(), w, h, Some(&params.to_a1111()))?
            }
            ImageFormat::Jpeg => encode_jpeg(rgb.as_raw(), w, h, 92)?,
        };
        out.push(Image {
            bytes,
            format: req.output_format,
            seed,
            width: w,
            height: h,
        });
    }
    timings.encode_ms = ms(t0);
    Ok(out)
}

/// The prompt as a PNG's `parameters` write it: as written, with a
/// `<lora:name:weight>` tag (`<lora:name:te:unet>` when the two weights
/// differ) appended for each LoRA the request chose by its `loras` list
/// rather than by a tag. A1111's infotexts carry LoRAs as prompt tags, and
/// `Lora hashes` has no weights: so the PNG gives back every LoRA with its
/// weights to A1111 and to the studio.
fn prompt_with_lora_tags(req: &Request) -> String {
    use crate::catalog::tags::extract_lora_tags;
    let tagged: Vec<String> = [
        Some(req.prompt_as_written.as_str()),
        req.negative_prompt_as_written.as_deref(),
    ]
    .into_iter()
    .flatten()
    .flat_map(|text| extract_lora_tags(text).1)
    .filter_map(Result::ok)
    .map(|tag| tag.name.to_lowercase())
    .collect();
    let mut prompt = req.prompt_as_written.clone();
    for l in &req.loras {
        if tagged.contains(&l.name.to_lowercase()) {
            continue;
        }
        let tag = if l.unet_weight == l.text_encoder_weight {
            format!("<lora:{}:{}>", l.name, l.unet_weight)
        } else {
            format!(
                "<lora:{}:{}:{}>",
                l.name, l.text_encoder_weight, l.unet_weight
            )
        };
        if !prompt.is_empty() {
            prompt.push(' ');
        }
        prompt.push_str(&tag);
    }
    prompt
}

fn ms(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1000.0
}
