//! The diffusion pipelines. A pipeline takes a validated [`Request`] and a
//! loaded model, reports each step to an [`Observer`], and returns encoded
//! images. It knows nothing of HTTP, queues or jobs.

pub mod encode;
pub mod noise;
pub mod preview;
pub mod prompt;
pub mod text_to_image;

use candle_core::Tensor;
use sd_worker_sdk::ImageFormat;

use crate::scheduler::SchedulerKind;

/// A fully validated text-to-image request: every default resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: usize,
    pub guidance_scale: f64,
    pub seed: u64,
    pub width: u32,
    pub height: u32,
    pub scheduler: SchedulerKind,
    pub num_images: usize,
    pub output_format: ImageFormat,
}

/// Receives what happens during a run. Called on the generation thread.
pub trait Observer {
    fn warning(&mut self, code: &str, message: &str);
    /// After step `step` (1-based) of `total`; `latents` are the current
    /// latents, scaled for display. Return `false` to stop the run.
    fn step(&mut self, step: usize, total: usize, latents: &Tensor) -> bool;
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
    },
    Cancelled,
}

impl SchedulerKind {
    /// The sampler's name as AUTOMATIC1111 writes it into image metadata.
    pub fn a1111_name(self) -> &'static str {
        match self {
            SchedulerKind::Ddim => "DDIM",
            SchedulerKind::Euler => "Euler",
            SchedulerKind::EulerAncestral => "Euler a",
        }
    }
}
