//! The diffusion pipeline: text to image, image to image and inpainting are one
//! algorithm with different starting latents and conditioning ([`generate`]).
//! It takes a validated [`Request`] and a loaded model, reports each step to an
//! [`Observer`], and returns encoded images. It knows nothing of HTTP, queues or jobs.

pub mod adapters;
pub mod conditioning;
pub mod denoise;
pub mod encode;
pub mod generate;
pub mod hires;
pub mod hooks;
pub mod latents;
pub mod noise;
pub mod preview;
#[cfg(test)]
mod reference_tests;
pub mod resize;

use candle_core::Tensor;
use image::RgbImage;
use sd_worker_sdk::{ImageFormat, Rng};

use crate::images::InpaintMask;
use crate::scheduler::SchedulerKind;

/// A fully validated text-to-image request: every default resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub prompt: String,
    /// None when the request has no `negative_prompt` (or null), kept apart
    /// from an explicit "": SDXL pipelines with `force_zeros_for_empty_prompt`
    /// condition on zeros only for an absent one (the SDXL conditioner's `encode_negative`).
    pub negative_prompt: Option<String>,
    pub steps: usize,
    pub guidance_scale: f64,
    pub seed: u64,
    pub width: u32,
    pub height: u32,
    pub scheduler: SchedulerKind,
    pub num_images: usize,
    pub output_format: ImageFormat,
    /// Random source of every noise draw.
    pub rng: Rng,
    /// Image to image and inpainting: the input, already at the output size.
    pub init: Option<InitImage>,
    /// ControlNet units, their residuals summed at each step.
    pub controls: Vec<ControlUnit>,
    /// LoRAs to merge into the model for this job: the request's `loras`,
    /// then the prompt's and the negative prompt's tags (already removed
    /// from `prompt` and `negative_prompt`), each name once.
    pub loras: Vec<LoraChoice>,
    /// The prompt and negative prompt as the request wrote them, LoRA tags
    /// included: what A1111's infotexts (the PNG `parameters`) carry, so
    /// pasting them back chooses the same LoRAs.
    pub prompt_as_written: String,
    pub negative_prompt_as_written: Option<String>,
    /// Embeddings whose names `prompt` or `negative_prompt` hold, in order
    /// of first appearance (the names stay in the text).
    pub embeddings: Vec<EmbeddingChoice>,
    /// Text to image: a second pass at a larger size (the hires fix).
    pub hires: Option<hires::Hires>,
    /// How previews and the final images are decoded.
    pub decoding: Decoding,
}

/// What a job does: diffusion (text to image, image to image, inpainting),
/// or an upscale. The engine runs either behind the same queue, events and
/// cancellation.
// One per job, moved once into it: the larger variant's size costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    Generate(Request),
    Upscale(crate::upscale::job::UpscaleJob),
}

impl Work {
    /// Progress steps the job reports (`started.total`).
    pub fn steps_to_run(&self) -> usize {
        match self {
            Work::Generate(r) => r.steps_to_run(),
            Work::Upscale(u) => u.steps(),
        }
    }

    /// The seed of its first image (0 for an upscale, which draws no noise).
    pub fn seed(&self) -> u64 {
        match self {
            Work::Generate(r) => r.seed,
            Work::Upscale(_) => 0,
        }
    }

    /// The diffusion request, if it is one.
    pub fn generation(&self) -> Option<&Request> {
        match self {
            Work::Generate(r) => Some(r),
            Work::Upscale(_) => None,
        }
    }

    /// Runs it on `model` (an upscale needs none of it).
    pub fn run(
        &self,
        model: &crate::model::LoadedModel,
        observer: &mut dyn Observer,
    ) -> anyhow::Result<Outcome> {
        match self {
            Work::Generate(r) => generate::run(model, r, observer),
            Work::Upscale(u) => crate::upscale::job::run(u, observer),
        }
    }
}

/// The decoders of a job, validated against what the worker loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoding {
    /// The previews' decoder.
    pub preview: sd_worker_sdk::PreviewMethod,
    /// The final images' decoder (`tiny` only with TAESD loaded).
    pub vae: sd_worker_sdk::VaeChoice,
    /// Tiled VAE decode and encode.
    pub tiling: sd_worker_sdk::VaeTiling,
}

impl Default for Decoding {
    fn default() -> Self {
        Self {
            preview: sd_worker_sdk::PreviewMethod::Vae,
            vae: sd_worker_sdk::VaeChoice::Full,
            tiling: sd_worker_sdk::VaeTiling::Auto,
        }
    }
}

/// One LoRA of a job, validated: the file exists, is a LoRA for the loaded
/// model's family (or one its keys do not tell), and its weights are in range.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraChoice {
    /// The name the request used (the catalog's name for the file).
    pub name: String,
    pub path: std::path::PathBuf,
    /// Identifies the file's version (to cache merged weights by).
    pub stamp: crate::catalog::Stamp,
    /// A1111's short hash (`Lora hashes:` in the PNG parameters).
    pub hash: String,
    /// The layout of its tensors.
    pub format: crate::catalog::lora::LoraFormat,
    /// Weight on the denoiser's layers, -4..=4.
    pub unet_weight: f64,
    /// Weight on the text encoders' layers, -4..=4.
    pub text_encoder_weight: f64,
}

/// One textual-inversion embedding a job's prompts use.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingChoice {
    /// The word in the prompt that stands for it.
    pub name: String,
    pub path: std::path::PathBuf,
    pub stamp: crate::catalog::Stamp,
    /// A1111's short hash (`TI hashes:` in the PNG parameters).
    pub hash: String,
    /// Token vectors it stands for.
    pub vectors: usize,
}

/// One ControlNet applied to a job, validated.
#[derive(Debug, Clone)]
pub struct ControlUnit {
    /// The ControlNet, loaded when the job runs.
    pub net: crate::controlnet::ControlNetHandle,
    /// The control image at the output size (before its preprocessor).
    pub image: RgbImage,
    /// How `image` becomes the control map (run when the job runs).
    pub preprocess: sd_worker_sdk::PreprocessParams,
    /// The worker's preprocessors (`preprocess` names one of them).
    pub preprocessors: std::sync::Arc<crate::preprocess::Preprocessors>,
    /// Weight of the residuals, 0..=2.
    pub conditioning_scale: f64,
    /// Fractions of the job's steps between which the unit acts.
    pub guidance_start: f64,
    pub guidance_end: f64,
}

impl PartialEq for ControlUnit {
    /// Everything the request said (the worker's preprocessors aside).
    fn eq(&self, o: &Self) -> bool {
        self.net == o.net
            && self.image == o.image
            && self.preprocess == o.preprocess
            && self.conditioning_scale == o.conditioning_scale
            && self.guidance_start == o.guidance_start
            && self.guidance_end == o.guidance_end
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct InitImage {
    pub image: RgbImage,
    /// 0 returns the input; 1 starts from pure noise.
    pub strength: f64,
    /// Inpainting: what to repaint.
    pub mask: Option<InpaintMask>,
}

impl Request {
    /// Denoising steps this request actually runs: image to image starts
    /// `steps - floor(steps * strength)` steps in, as diffusers does; a
    /// hires fix adds its second pass's.
    pub fn steps_to_run(&self) -> usize {
        self.first_pass_steps() + self.hires.as_ref().map_or(0, |h| h.steps_to_run())
    }

    /// Steps of the first (or only) pass.
    pub fn first_pass_steps(&self) -> usize {
        self.steps - self.start_step()
    }

    /// Index of the first timestep run.
    pub fn start_step(&self) -> usize {
        match &self.init {
            None => 0,
            Some(init) => {
                let run = ((self.steps as f64 * init.strength).floor() as usize).min(self.steps);
                self.steps - run
            }
        }
    }
}

/// Receives what happens during a run. Called on the generation thread.
pub trait Observer {
    fn warning(&mut self, code: &str, message: &str);
    /// After step `step` (1-based) of `total`. Return `false` to stop the run.
    fn step(&mut self, step: usize, total: usize) -> bool;
    /// Whether step `step` (1-based) should be previewed; when true,
    /// [`Observer::preview`] follows with that step's estimate.
    fn wants_preview(&self, _step: usize) -> bool {
        false
    }
    /// The scheduler's estimate of the clean latents after step `step`
    /// (diffusers' `pred_original_sample`): [batch, channels, h, w] in the
    /// denoiser's latent space (scaled and shifted as the denoiser sees them).
    fn preview(&mut self, _step: usize, _clean_latents: &Tensor) {}
    /// The pass the following steps and previews belong to (multi-pass jobs).
    fn set_phase(&mut self, _phase: sd_worker_sdk::Phase) {}
}

/// One output image, encoded.
#[derive(Debug, Clone)]
pub struct Image {
    pub bytes: Vec<u8>,
    pub format: ImageFormat,
    pub seed: u64,
    pub width: u32,
    pub height: u32,
}

/// Wall-clock time per stage, for logs and the benchmark.
#[derive(Debug, Clone, Default)]
pub struct StageTimings {
    pub text_encoder_ms: f64,
    pub denoise_ms: f64,
    pub unet_steps: usize,
    pub vae_decode_ms: f64,
    pub encode_ms: f64,
}

pub enum Outcome {
    Completed {
        images: Vec<Image>,
        timings: StageTimings,
        /// The job's LoRAs and how much of each matched the model.
        loras: Vec<sd_worker_sdk::LoraApplied>,
    },
    Cancelled,
}
