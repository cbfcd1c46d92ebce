//! An `image_upscale` job: the input through the chosen upscaler (a model in
//! tiles, one progress step each, cancellable between them; or a built-in
//! resampler in one step), then Lanczos to the requested factor, encoded
//! as A1111's Extras writes PNGs: the input's `parameters` kept, and
//! `Postprocess upscale by` / `Postprocess upscaler` in a `postprocessing` chunk.

use anyhow::Result;
use image::RgbImage;
use sd_worker_sdk::{ImageFormat, Phase};
use std::time::Instant;

use super::registry::UpscalerChoice;
use super::tile::tile_count;
use crate::pipeline::encode::{encode_jpeg, encode_png_texts};
use crate::pipeline::{Image, Observer, Outcome, StageTimings};

/// A validated `image_upscale` request.
#[derive(Debug, Clone, PartialEq)]
pub struct UpscaleJob {
    pub image: RgbImage,
    pub upscaler: UpscalerChoice,
    /// The name the request used (what the PNG says).
    pub upscaler_name: String,
    /// The factor asked for, and the output size it makes.
    pub scale: f64,
    pub width: u32,
    pub height: u32,
    /// Input pixels a side per model tile (0: whole) and their overlap.
    pub tile_size: usize,
    pub tile_overlap: usize,
    pub output_format: ImageFormat,
    /// The input PNG's `parameters` (how it was made), kept in the output as
    /// A1111's Extras keeps them.
    pub source_parameters: Option<String>,
}

impl UpscaleJob {
    /// Progress steps: a model's tiles, or 1.
    pub fn steps(&self) -> usize {
        match &self.upscaler {
            UpscalerChoice::Builtin(_) => 1,
            UpscalerChoice::Model(m) => tile_count(
                m.multiple,
                self.image.height() as usize,
                self.image.width() as usize,
                self.tile_size,
            ),
        }
    }
}

/// A1111's Extras text (its PNG `postprocessing` chunk).
pub fn postprocessing(job: &UpscaleJob) -> String {
    format!(
        "Postprocess upscale by: {}, Postprocess upscaler: {}",
        job.scale, job.upscaler_name
    )
}

/// Runs the job, reporting each tile to `observer` (`phase: upscale`).
pub fn run(job: &UpscaleJob, observer: &mut dyn Observer) -> Result<Outcome> {
    observer.set_phase(Phase::Upscale);
    let t0 = Instant::now();
    let total = job.steps();
    let (w, h) = (job.width, job.height);
    let mut stopped = false;
    let result = job.upscaler.resize_tiled(
        &job.image,
        w,
        h,
        job.tile_size,
        job.tile_overlap,
        &mut |done, _| {
            if observer.step(done, total) {
                Ok(())
            } else {
                stopped = true;
                anyhow::bail!("cancelled")
            }
        },
    );
    if stopped {
        return Ok(Outcome::Cancelled);
    }
    let out = result?;
    let decode_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let t1 = Instant::now();
    let bytes = match job.output_format {
        ImageFormat::Png => {
            let post = postprocessing(job);
            let mut chunks = Vec::new();
            if let Some(p) = &job.source_parameters {
                chunks.push(("parameters", p.as_str()));
            }
            chunks.push(("postprocessing", post.as_str()));
            encode_png_texts(out.as_raw(), w, h, &chunks)?
        }
        ImageFormat::Jpeg => encode_jpeg(out.as_raw(), w, h, 92)?,
    };
    Ok(Outcome::Completed {
        images: vec![Image {
            bytes,
            format: job.output_format,
            seed: 0,
            width: w,
            height: h,
        }],
        timings: StageTimings {
            vae_decode_ms: decode_ms,
            encode_ms: t1.elapsed().as_secs_f64() * 1000.0,
            ..Default::default()
        },
        loras: Vec::new(),
    })
}
