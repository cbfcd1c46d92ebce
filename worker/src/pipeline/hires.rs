//! The hires fix's second pass (AUTOMATIC1111's `sample_hr_pass`): the first
//! pass's latents upscaled to the target size, in latent space
//! ([`super::resize`]) or through pixels (decode, upscale, Lanczos to the
//! exact size, encode), then noised to the pass's start step and denoised as
//! image to image with the same conditioning. The noise comes from a fresh
//! stream of the job's seed (per image `seed + i`), as A1111 seeds its second
//! pass.

use anyhow::Result;
use candle_core::{IndexOp, Tensor};
use sd_worker_sdk::{Phase, VaeChoice};

use super::denoise::{self, Loop};
use super::latents::{decode_with, encode, pixels_to_tensor};
use super::noise::SeededNoise;
use super::resize::{resize, Interpolation};
use super::{Observer, Request};
use crate::model::denoiser::Conditioning;
use crate::model::LoadedModel;
use crate::scheduler;
use crate::upscale::registry::UpscalerChoice;

/// A validated hires fix.
#[derive(Debug, Clone, PartialEq)]
pub struct Hires {
    /// Target size in pixels (multiples of the model's size multiple).
    pub width: u32,
    pub height: u32,
    pub upscaler: HiresUpscaler,
    /// The second pass's schedule length (the job's `steps` when the request
    /// said 0 or nothing).
    pub steps: usize,
    /// `denoising_strength`, in (0, 1].
    pub strength: f64,
    /// What the PNG `parameters` say, as A1111 writes them.
    pub infotext: HiresInfotext,
}

/// The hires fields of an A1111 infotext.
#[derive(Debug, Clone, PartialEq)]
pub struct HiresInfotext {
    /// `Hires upscale: 2` when the request gave a scale, else `Hires resize: WxH`.
    pub scale: Option<f64>,
    /// `Hires steps` (only when the request gave a non-zero number).
    pub steps: Option<u32>,
    /// `Hires upscaler`: A1111's name for a latent upscaler, else the name.
    pub upscaler: String,
}

/// How the first pass becomes the second pass's starting point.
#[derive(Debug, Clone, PartialEq)]
pub enum HiresUpscaler {
    /// The latents resized directly.
    Latent(Interpolation),
    /// Through pixels, by this upscaler (a built-in resampler or a model of
    /// `--upscaler-dir`, then Lanczos to the exact size).
    Pixel(UpscalerChoice),
}

impl Hires {
    /// Steps the second pass runs: `floor(steps x strength)`, as image to image.
    pub fn steps_to_run(&self) -> usize {
        ((self.steps as f64 * self.strength).floor() as usize).min(self.steps)
    }
}

/// Forwards a pass's steps to the job's observer, counted after `offset`
/// steps of `total` (both passes), tagged with the pass.
pub struct PassObserver<'a> {
    pub inner: &'a mut dyn Observer,
    pub offset: usize,
    pub total: usize,
}

impl<'a> PassObserver<'a> {
    pub fn new(inner: &'a mut dyn Observer, phase: Phase, offset: usize, total: usize) -> Self {
        inner.set_phase(phase);
        Self {
            inner,
            offset,
            total,
        }
    }
}

impl Observer for PassObserver<'_> {
    fn warning(&mut self, code: &str, message: &str) {
        self.inner.warning(code, message);
    }
    fn step(&mut self, step: usize, _total: usize) -> bool {
        self.inner.step(self.offset + step, self.total)
    }
    fn wants_preview(&self, step: usize) -> bool {
        self.inner.wants_preview(self.offset + step)
    }
    fn preview(&mut self, step: usize, clean_latents: &Tensor) {
        self.inner.preview(self.offset + step, clean_latents);
    }
}

/// The second pass from the first pass's clean latents [n, c, h, w]: the
/// denoised latents at the target size, or `None` when the observer stopped it.
pub fn second_pass(
    model: &LoadedModel,
    req: &Request,
    hires: &Hires,
    cond: &Conditioning,
    guided: bool,
    latents: &Tensor,
    observer: &mut dyn Observer,
) -> Result<Option<Tensor>> {
    let n = req.num_images;
    let f = model.meta().vae_scale_factor as usize;
    let (lh, lw) = (hires.height as usize / f, hires.width as usize / f);
    let mut sched = scheduler::build(req.scheduler, model.scheduler_config(), hires.steps)?;
    let start = hires.steps - hires.steps_to_run();
    let mut noise = SeededNoise::with_rng(req.rng, req.seed, n, model.device(), model.dtype());
    let shape = [model.meta().latent_channels, lh, lw];
    let (upscaled, initial_noise) = match &hires.upscaler {
        HiresUpscaler::Latent(mode) => (resize(latents, (lh, lw), *mode)?, noise.sample(&shape)?),
        HiresUpscaler::Pixel(up) => {
            let mut pixels = Vec::with_capacity(n);
            for i in 0..n {
                let rgb = decode_with(
                    model,
                    &latents.i(i..i + 1)?,
                    VaeChoice::Full,
                    req.decoding.tiling,
                )?;
                let big = up.resize(&rgb, hires.width, hires.height)?;
                pixels.push(pixels_to_tensor(model, &big)?);
            }
            let pixels = Tensor::cat(&pixels, 0)?;
            // The same draw order as image to image (see `generate::prepare`).
            if noise.posterior_before_noise() {
                let image_latents = encode(model, &pixels, n, &mut noise, req.decoding.tiling)?;
                (image_latents, noise.sample(&shape)?)
            } else {
                let initial = noise.sample(&shape)?;
                (
                    encode(model, &pixels, n, &mut noise, req.decoding.tiling)?,
                    initial,
                )
            }
        }
    };
    let start_latents = sched.add_noise(&upscaled, &initial_noise, start)?;
    let mut lp = Loop {
        cond,
        guided,
        guidance_scale: req.guidance_scale,
        hooks: Vec::new(),
        start,
    };
    denoise::run(
        model,
        &mut *sched,
        &mut lp,
        start_latents,
        &mut noise,
        observer,
    )
}
