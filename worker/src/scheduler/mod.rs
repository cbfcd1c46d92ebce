//! Noise schedulers, implemented from diffusers' definitions rather than taken
//! from candle_transformers, whose versions give NaN for `squaredcos_cap_v2`
//! (integer division) and fail DDIM with eta > 0 on f16 (f32 noise added to
//! f16 latents). Each job builds a fresh scheduler from the model's
//! `scheduler/scheduler_config.json` with [`build`].
//!
//! Layout: `betas` (training schedule -> alphas_cumprod), `spacing` (which
//! training timesteps an N-step run visits), then one file per sampler.
//! The interface mirrors diffusers' (`timesteps`, `init_noise_sigma`,
//! `scale_model_input`, `step`, `add_noise`) but takes the step *index*
//! rather than the timestep value, so no float equality search is needed.

pub mod betas;
mod ddim;
mod euler;
mod euler_ancestral;
pub mod spacing;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Result as CandleResult, Tensor};
use serde::Deserialize;
use std::path::Path;

/// Where stochastic schedulers get their noise. The pipeline implements this with
/// per-image seeded CPU RNGs, so results are reproducible. Returned tensor: same
/// shape, dtype and device as `like`, standard normal.
pub trait NoiseSource {
    fn sample_like(&mut self, like: &Tensor) -> CandleResult<Tensor>;
}

/// The schedulers this build implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// Wire name "ddim".
    Ddim,
    /// Wire name "euler".
    Euler,
    /// Wire name "euler_a".
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

    /// Parses a wire name, case-insensitively; "euler_ancestral" is an alias of "euler_a".
    pub fn from_name(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "ddim" => Some(SchedulerKind::Ddim),
            "euler" => Some(SchedulerKind::Euler),
            "euler_a" | "euler_ancestral" => Some(SchedulerKind::EulerAncestral),
            _ => None,
        }
    }

    /// Maps diffusers' `_class_name` to a kind; None for classes not implemented
    /// here (PNDMScheduler, LMSDiscreteScheduler, ...).
    pub fn from_diffusers_class(class: &str) -> Option<Self> {
        match class {
            "DDIMScheduler" => Some(SchedulerKind::Ddim),
            "EulerDiscreteScheduler" => Some(SchedulerKind::Euler),
            "EulerAncestralDiscreteScheduler" => Some(SchedulerKind::EulerAncestral),
            _ => None,
        }
    }
}

/// diffusers' `scheduler/scheduler_config.json`. Every field is optional and
/// defaults to diffusers' constructor default; unknown keys are ignored (SD
/// configs carry PNDM/LMS-only keys such as `skip_prk_steps`).
#[derive(Debug, Clone, Deserialize)]
pub struct SchedulerConfig {
    #[serde(rename = "_class_name", default)]
    pub class_name: Option<String>,
    #[serde(default = "default_train_timesteps")]
    pub num_train_timesteps: usize,
    #[serde(default = "default_beta_start")]
    pub beta_start: f64,
    #[serde(default = "default_beta_end")]
    pub beta_end: f64,
    /// "linear" | "scaled_linear" | "squaredcos_cap_v2".
    #[serde(default = "default_beta_schedule")]
    pub beta_schedule: String,
    /// Overrides `beta_schedule` when present (JSON `null` reads as absent).
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    /// "epsilon" | "v_prediction" | "sample".
    #[serde(default = "default_prediction_type")]
    pub prediction_type: String,
    /// "linspace" | "leading" | "trailing". Absent: each scheduler's own
    /// diffusers default (DDIM "leading", Euler and Euler-a "linspace").
    #[serde(default)]
    pub timestep_spacing: Option<String>,
    #[serde(default)]
    pub steps_offset: usize,
    /// DDIM only: the last step lands on alpha = 1 instead of alphas_cumprod[0].
    #[serde(default = "default_true")]
    pub set_alpha_to_one: bool,
    /// DDIM only; true is DDIMScheduler's default, SD configs set false.
    #[serde(default = "default_true")]
    pub clip_sample: bool,
    #[serde(default = "default_clip_sample_range")]
    pub clip_sample_range: f64,
}

impl SchedulerConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_json_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn from_json_str(s: &str) -> Result<Self> {
        serde_json::from_str(s).context("invalid scheduler config")
    }
}

/// What the UNet predicts (diffusers' `prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prediction {
    /// The added noise.
    Epsilon,
    /// v = sqrt(acp) eps - sqrt(1 - acp) x0 (Salimans & Ho, progressive distillation).
    V,
    /// The clean sample x0 itself.
    Sample,
}

impl Prediction {
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::V,
            "sample" => Prediction::Sample,
            other => bail!(
                "scheduler config: unknown prediction_type `{other}` (expected epsilon, v_prediction or sample)"
            ),
        })
    }
}

pub trait Scheduler: Send {
    /// The timesteps fed to the UNet, in order (first = noisiest). Floats:
    /// Euler's linspace timesteps are fractional.
    fn timesteps(&self) -> &[f64];
    /// Multiply the initial standard-normal noise by this.
    fn init_noise_sigma(&self) -> f64;
    /// Scale the latents before the UNet call at `step_index` (index into timesteps()).
    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> CandleResult<Tensor>;
    /// One denoising step from timesteps()[step_index] to the next; returns the
    /// previous (less noisy) sample, in `sample`'s dtype.
    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> CandleResult<Tensor>;
    /// Noise clean latents to the noise level of timesteps()[step_index] (image
    /// to image). DDIM: sqrt(acp) x + sqrt(1 - acp) n; Euler family: x + sigma n.
    fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        step_index: usize,
    ) -> CandleResult<Tensor>;
}

/// Build a fresh scheduler for one job.
pub fn build(
    kind: SchedulerKind,
    config: &SchedulerConfig,
    num_inference_steps: usize,
) -> Result<Box<dyn Scheduler>> {
    let train = config.num_train_timesteps;
    if num_inference_steps == 0 || num_inference_steps > train {
        bail!(
            "num_inference_steps must be between 1 and num_train_timesteps ({train}), got {num_inference_steps}"
        );
    }
    let alphas_cumprod = betas::alphas_cumprod(config)?;
    let prediction = Prediction::parse(&config.prediction_type)?;
    Ok(match kind {
        // build() always runs DDIM deterministically (eta = 0), as diffusers' pipelines do.
        SchedulerKind::Ddim => Box::new(ddim::Ddim::new(
            config,
            alphas_cumprod,
            prediction,
            num_inference_steps,
            0.0,
        )?),
        SchedulerKind::Euler => Box::new(euler::Euler::new(
            config,
            &alphas_cumprod,
            prediction,
            num_inference_steps,
        )?),
        SchedulerKind::EulerAncestral => Box::new(euler_ancestral::EulerAncestral::new(
            config,
            &alphas_cumprod,
            prediction,
            num_inference_steps,
        )?),
    })
}

/// The dtype step maths runs in: half-precision latents are upcast to f32 (as
/// diffusers' Euler schedulers do) because x - sigma * eps at sigma ~ 15
/// cancels most of f16's 11-bit mantissa. Results are cast back to the sample's dtype.
fn compute_dtype(sample: &Tensor) -> DType {
    match sample.dtype() {
        DType::F16 | DType::BF16 => DType::F32,
        other => other,
    }
}

/// `t` in `sample`'s compute dtype and on its device (model outputs and noise
/// may come in another dtype; adding mismatched dtypes is Candle's DDIM bug).
fn like_compute(t: &Tensor, sample: &Tensor) -> CandleResult<Tensor> {
    t.to_dtype(compute_dtype(sample))?
        .to_device(sample.device())
}

/// Bounds-checked schedule lookup: a bad index is a Candle error, never a panic.
fn at(values: &[f64], index: usize, what: &str) -> CandleResult<f64> {
    values.get(index).copied().ok_or_else(|| {
        candle_core::Error::Msg(format!(
            "scheduler: step index {index} out of range for {} {what}",
            values.len()
        ))
    })
}

fn default_train_timesteps() -> usize {
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
fn default_prediction_type() -> String {
    "epsilon".into()
}
fn default_true() -> bool {
    true
}
fn default_clip_sample_range() -> f64 {
    1.0
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::*;
    use candle_core::Device;

    /// Stable Diffusion 1.5's published scheduler_config.json (a PNDM config,
    /// which SD pipelines reuse for every scheduler).
    pub const SD15: &str = r#"{"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0",
        "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "num_train_timesteps": 1000, "set_alpha_to_one": false, "skip_prk_steps": true,
        "steps_offset": 1, "trained_betas": null, "clip_sample": false}"#;

    pub fn sd15() -> SchedulerConfig {
        SchedulerConfig::from_json_str(SD15).unwrap()
    }

    /// Returns `value` everywhere, so stochastic steps are checkable by hand.
    /// Counts calls so tests can see when no noise was drawn.
    pub struct ConstNoise {
        pub value: f64,
        pub calls: usize,
    }

    impl ConstNoise {
        pub fn new(value: f64) -> Self {
            Self { value, calls: 0 }
        }
    }

    impl NoiseSource for ConstNoise {
        fn sample_like(&mut self, like: &Tensor) -> CandleResult<Tensor> {
            self.calls += 1;
            // Deliberately f32, whatever `like` is: schedulers must convert noise
            // to the sample's dtype themselves (Candle's f16 DDIM bug).
            Tensor::full(self.value as f32, like.shape(), like.device())
        }
    }

    /// A 1-D f32 test tensor.
    pub fn tensor(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    /// Flattened values as f64, whatever the dtype.
    pub fn values(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// Element-wise |got - want| <= tol.
    pub fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= tol,
                "{what}[{i}]: got {g}, want {w} (tol {tol})"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;

    #[test]
    fn names_round_trip_and_aliases() {
        for k in SchedulerKind::ALL {
            assert_eq!(SchedulerKind::from_name(k.name()), Some(k));
        }
        assert_eq!(
            SchedulerKind::ALL.map(SchedulerKind::name),
            ["ddim", "euler", "euler_a"]
        );
        assert_eq!(
            SchedulerKind::from_name("Euler_Ancestral"),
            Some(SchedulerKind::EulerAncestral)
        );
        assert_eq!(SchedulerKind::from_name("DDIM"), Some(SchedulerKind::Ddim));
        assert_eq!(SchedulerKind::from_name("pndm"), None);
        assert_eq!(SchedulerKind::from_name(""), None);
    }

    #[test]
    fn diffusers_classes() {
        assert_eq!(
            SchedulerKind::from_diffusers_class("DDIMScheduler"),
            Some(SchedulerKind::Ddim)
        );
        assert_eq!(
            SchedulerKind::from_diffusers_class("EulerDiscreteScheduler"),
            Some(SchedulerKind::Euler)
        );
        assert_eq!(
            SchedulerKind::from_diffusers_class("EulerAncestralDiscreteScheduler"),
            Some(SchedulerKind::EulerAncestral)
        );
        assert_eq!(SchedulerKind::from_diffusers_class("PNDMScheduler"), None);
        assert_eq!(
            SchedulerKind::from_diffusers_class("LMSDiscreteScheduler"),
            None
        );
    }

    #[test]
    fn config_defaults_and_sd15_values() {
        // An empty object takes every diffusers default.
        let d = SchedulerConfig::from_json_str("{}").unwrap();
        assert_eq!(d.class_name, None);
        assert_eq!(d.num_train_timesteps, 1000);
        assert_eq!((d.beta_start, d.beta_end), (0.0001, 0.02));
        assert_eq!(d.beta_schedule, "linear");
        assert_eq!(d.trained_betas, None);
        assert_eq!(d.prediction_type, "epsilon");
        assert_eq!(d.timestep_spacing, None);
        assert_eq!(d.steps_offset, 0);
        assert!(d.set_alpha_to_one && d.clip_sample);
        assert_eq!(d.clip_sample_range, 1.0);

        let c = sd15();
        assert_eq!(c.class_name.as_deref(), Some("PNDMScheduler"));
        assert_eq!((c.beta_start, c.beta_end), (0.00085, 0.012));
        assert_eq!(c.beta_schedule, "scaled_linear");
        assert_eq!(c.steps_offset, 1);
        assert!(!c.set_alpha_to_one && !c.clip_sample);

        // SDXL-style keys this module does not use are ignored.
        let xl = SchedulerConfig::from_json_str(
            r#"{"_class_name": "EulerDiscreteScheduler", "timestep_spacing": "leading",
                "interpolation_type": "linear", "use_karras_sigmas": false, "sample_max_value": 1.0}"#,
        )
        .unwrap();
        assert_eq!(xl.timestep_spacing.as_deref(), Some("leading"));
        assert!(SchedulerConfig::from_json_str("[1, 2]").is_err());
    }

    #[test]
    fn config_from_file() {
        let path = std::env::temp_dir().join(format!("sched-config-{}.json", std::process::id()));
        std::fs::write(&path, SD15).unwrap();
        let c = SchedulerConfig::from_file(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(c.steps_offset, 1);
        let err = SchedulerConfig::from_file(&path).unwrap_err();
        assert!(format!("{err:#}").contains("sched-config"), "{err:#}");
    }

    #[test]
    fn bad_inputs_are_errors_naming_the_value() {
        let cfg = sd15();
        let msg = |r: Result<Box<dyn Scheduler>>| match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => format!("{e:#}"),
        };
        for kind in SchedulerKind::ALL {
            assert!(msg(build(kind, &cfg, 0)).contains("got 0"));
            assert!(msg(build(kind, &cfg, 1001)).contains("got 1001"));
            assert!(build(kind, &cfg, 1000).is_ok());

            let mut bad = cfg.clone();
            bad.beta_schedule = "cubic".into();
            assert!(msg(build(kind, &bad, 10)).contains("cubic"));

            let mut bad = cfg.clone();
            bad.prediction_type = "flow".into();
            assert!(msg(build(kind, &bad, 10)).contains("flow"));

            let mut bad = cfg.clone();
            bad.timestep_spacing = Some("sideways".into());
            assert!(msg(build(kind, &bad, 10)).contains("sideways"));
        }
    }

    #[test]
    fn out_of_range_step_index_is_an_error() {
        let x = tensor(&[1.0, 2.0]);
        for kind in SchedulerKind::ALL {
            let mut s = build(kind, &sd15(), 4).unwrap();
            let mut noise = ConstNoise::new(0.0);
            assert!(s.step(&x, 4, &x, &mut noise).is_err(), "{kind:?}");
            assert!(s.scale_model_input(&x, 9).is_err(), "{kind:?}");
            assert!(s.add_noise(&x, &x, 9).is_err(), "{kind:?}");
        }
    }
}
