//! Noise schedulers, following diffusers' definitions (not Candle's, which give
//! NaN for `squaredcos_cap_v2` and break DDIM with eta > 0 on f16). Each job
//! builds a fresh scheduler from the model's `scheduler/scheduler_config.json`.
//!
//! All share diffusers' interface: `timesteps`, `init_noise_sigma`,
//! `scale_model_input`, `step`, and `add_noise` for image-to-image.

pub mod betas;
mod ddim;
mod euler;
pub mod spacing;

use anyhow::{bail, Context, Result};
use candle_core::{Result as CandleResult, Tensor};
use serde::Deserialize;
use std::path::Path;

/// Where stochastic schedulers get their noise. The pipeline implements it with
/// per-image seeded CPU RNGs, so results are reproducible. The returned tensor
/// has the shape, dtype and device of `like`, standard normal.
pub trait NoiseSource {
    fn sample_like(&mut self, like: &Tensor) -> CandleResult<Tensor>;
}

/// The schedulers this build implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    Ddim,
    Euler,
    EulerAncestral,
}

impl SchedulerKind {
    pub const ALL: [SchedulerKind; 3] = [
        SchedulerKind::Ddim,
        SchedulerKind::Euler,
        SchedulerKind::EulerAncestral,
    ];

    /// The wire name (request `scheduler` field, `/v1/info`).
    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::Ddim => "ddim",
            SchedulerKind::Euler => "euler",
            SchedulerKind::EulerAncestral => "euler_a",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "ddim" => Some(SchedulerKind::Ddim),
            "euler" => Some(SchedulerKind::Euler),
            "euler_a" | "euler_ancestral" | "euler-a" => Some(SchedulerKind::EulerAncestral),
            _ => None,
        }
    }

    /// diffusers' `_class_name`; None for classes not implemented here.
    pub fn from_diffusers_class(class: &str) -> Option<Self> {
        match class {
            "DDIMScheduler" => Some(SchedulerKind::Ddim),
            "EulerDiscreteScheduler" => Some(SchedulerKind::Euler),
            "EulerAncestralDiscreteScheduler" => Some(SchedulerKind::EulerAncestral),
            _ => None,
        }
    }
}

/// diffusers' `scheduler_config.json`; absent fields take diffusers' defaults.
/// Unknown keys are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct SchedulerConfig {
    #[serde(rename = "_class_name", default)]
    pub class_name: Option<String>,
    #[serde(default = "default_train_steps")]
    pub num_train_timesteps: usize,
    #[serde(default = "default_beta_start")]
    pub beta_start: f64,
    #[serde(default = "default_beta_end")]
    pub beta_end: f64,
    #[serde(default = "default_beta_schedule")]
    pub beta_schedule: String,
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    #[serde(default = "default_prediction")]
    pub prediction_type: String,
    /// `linspace`, `leading` or `trailing`; absent: each scheduler's own default.
    #[serde(default)]
    pub timestep_spacing: Option<String>,
    #[serde(default)]
    pub steps_offset: usize,
    #[serde(default = "yes")]
    pub set_alpha_to_one: bool,
    /// Absent: DDIM's default (true).
    #[serde(default)]
    pub clip_sample: Option<bool>,
    #[serde(default = "one")]
    pub clip_sample_range: f64,
}

impl SchedulerConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_json_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn from_json_str(s: &str) -> Result<Self> {
        Ok(serde_json::from_str(s)?)
    }

    fn prediction(&self) -> Result<Prediction> {
        Ok(match self.prediction_type.as_str() {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::V,
            "sample" => Prediction::Sample,
            other => bail!("scheduler config: unknown prediction_type `{other}`"),
        })
    }
}

/// What the UNet predicts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Prediction {
    Epsilon,
    V,
    Sample,
}

pub trait Scheduler: Send {
    /// Timesteps fed to the UNet, noisiest first (fractional for Euler's linspace).
    fn timesteps(&self) -> &[f64];
    /// Multiply the initial standard-normal noise by this.
    fn init_noise_sigma(&self) -> f64;
    /// Scales the latents before the UNet call at `step_index`.
    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> CandleResult<Tensor>;
    /// One step from `timesteps()[step_index]` to the next; returns the new sample.
    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> CandleResult<Tensor>;
    /// Noises clean latents to the level of `timesteps()[step_index]` (image to image).
    fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        step_index: usize,
    ) -> CandleResult<Tensor>;
}

/// A fresh scheduler for one job.
pub fn build(
    kind: SchedulerKind,
    config: &SchedulerConfig,
    num_inference_steps: usize,
) -> Result<Box<dyn Scheduler>> {
    if num_inference_steps == 0 || num_inference_steps > config.num_train_timesteps {
        bail!(
            "steps must be between 1 and the schedule's {} training timesteps, got {num_inference_steps}",
            config.num_train_timesteps
        );
    }
    let alphas_cumprod = betas::alphas_cumprod(config)?;
    let prediction = config.prediction()?;
    Ok(match kind {
        SchedulerKind::Ddim => Box::new(ddim::Ddim::new(
            config,
            alphas_cumprod,
            prediction,
            num_inference_steps,
            0.0,
        )?),
        SchedulerKind::Euler | SchedulerKind::EulerAncestral => Box::new(euler::Euler::new(
            config,
            &alphas_cumprod,
            prediction,
            num_inference_steps,
            kind == SchedulerKind::EulerAncestral,
        )?),
    })
}

fn default_train_steps() -> usize {
    1000
}
fn default_beta_start() -> f64 {
    0.0001
}
fn default_beta_end() -> f64 {
    0.02
}
fn default_beta_schedule() -> String {
    "linear".into()
}
fn default_prediction() -> String {
    "epsilon".into()
}
fn yes() -> bool {
    true
}
fn one() -> f64 {
    1.0
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::*;

    /// Stable Diffusion 1.5's published scheduler config.
    pub const SD15: &str = r#"{"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "beta_start": 0.00085, "num_train_timesteps": 1000, "set_alpha_to_one": false, "skip_prk_steps": true,
        "steps_offset": 1, "trained_betas": null, "clip_sample": false}"#;

    pub fn sd15() -> SchedulerConfig {
        SchedulerConfig::from_json_str(SD15).unwrap()
    }

    /// Returns a fixed tensor, for deterministic ancestral steps.
    pub struct ConstNoise(pub f32);
    impl NoiseSource for ConstNoise {
        fn sample_like(&mut self, like: &Tensor) -> CandleResult<Tensor> {
            (like.ones_like()? * self.0 as f64)?.to_dtype(like.dtype())
        }
    }

    pub fn values(t: &Tensor) -> Vec<f32> {
        t.to_dtype(candle_core::DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_classes() {
        for k in SchedulerKind::ALL {
            assert_eq!(SchedulerKind::from_name(k.name()), Some(k));
        }
        assert_eq!(
            SchedulerKind::from_name("Euler_Ancestral"),
            Some(SchedulerKind::EulerAncestral)
        );
        assert_eq!(SchedulerKind::from_diffusers_class("PNDMScheduler"), None);
        assert_eq!(
            SchedulerKind::from_diffusers_class("DDIMScheduler"),
            Some(SchedulerKind::Ddim)
        );
    }

    #[test]
    fn bad_configs_and_step_counts_are_errors() {
        let cfg = test_util::sd15();
        assert!(build(SchedulerKind::Euler, &cfg, 0).is_err());
        assert!(build(SchedulerKind::Euler, &cfg, 1001).is_err());
        let mut bad = cfg.clone();
        bad.beta_schedule = "cubic".into();
        let err = build(SchedulerKind::Ddim, &bad, 10)
            .err()
            .expect("an error");
        assert!(err.to_string().contains("cubic"), "{err}");
        let mut bad = cfg.clone();
        bad.prediction_type = "flow".into();
        assert!(build(SchedulerKind::Euler, &bad, 10).is_err());
        let mut bad = cfg;
        bad.timestep_spacing = Some("sideways".into());
        assert!(build(SchedulerKind::Euler, &bad, 10).is_err());
    }
}
