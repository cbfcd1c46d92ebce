//! diffusers' `scheduler/scheduler_config.json`, shared by every scheduler:
//! each reads the keys it knows, with diffusers' constructor defaults.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::Path;

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
    /// DDIM, DDPM, LCM: clamp the predicted x0 to +-clip_sample_range. Absent:
    /// each scheduler's diffusers default (true for DDIM and DDPM, false for LCM);
    /// SD configs set false.
    #[serde(default)]
    pub clip_sample: Option<bool>,
    #[serde(default = "default_clip_sample_range")]
    pub clip_sample_range: f64,
    /// Zero terminal SNR (Lin et al. 2023, algorithm 1): betas rescaled so that
    /// alphas_cumprod[T-1] = 0 (the sigma-space schedulers then use 2^-24 there,
    /// as diffusers does). Meant for v-prediction models.
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
    /// DDPM: "fixed_small" (default), "fixed_small_log" (the same values) or
    /// "fixed_large". Learned variances need a 2x-channel UNet and are refused.
    #[serde(default)]
    pub variance_type: Option<String>,
    /// DPM++ / UniPC: use Karras et al.'s sigmas (rho = 7). Honoured only when
    /// the config's class is the scheduler's own (`dpmpp_2m_karras` forces it).
    #[serde(default)]
    pub use_karras_sigmas: bool,
    /// DPM++: "midpoint" (default) or "heun"; UniPC: "bh2" (default) or "bh1".
    /// Another scheduler's value maps to the default, as diffusers does.
    #[serde(default)]
    pub solver_type: Option<String>,
    /// DPM++ / UniPC: lower the order on the last steps (needed below 15 steps).
    #[serde(default = "default_true")]
    pub lower_order_final: bool,
    /// DPM++: always take a first-order step last.
    #[serde(default)]
    pub euler_at_final: bool,
    /// DPM++ / UniPC: the sigma after the last step, "zero" or "sigma_min".
    #[serde(default = "default_final_sigmas_type")]
    pub final_sigmas_type: String,
    /// UniPC: steps after which the corrector is skipped.
    #[serde(default)]
    pub disable_corrector: Vec<usize>,
    /// UniPC: predict x0 (true, the default) or eps; only true is implemented.
    #[serde(default = "default_true")]
    pub predict_x0: bool,
    /// LCM: the distillation schedule's length; an LCM run takes at most this many steps.
    #[serde(default = "default_original_inference_steps")]
    pub original_inference_steps: usize,
    /// LCM: t is multiplied by this in the boundary-condition scalings.
    #[serde(default = "default_timestep_scaling")]
    pub timestep_scaling: f64,
    /// Flow matching: sigma -> shift s / (1 + (shift - 1) s); SD 3 uses 3.0.
    #[serde(default = "default_shift")]
    pub shift: f64,
    /// Flow matching: resolution-dependent shift (Flux); not implemented, refused.
    #[serde(default)]
    pub use_dynamic_shifting: bool,
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

    /// Whether the model is trained by flow matching (SD 3): its scheduler class
    /// is one of diffusers' `FlowMatch*` schedulers.
    pub fn is_flow_matching(&self) -> bool {
        self.class_name
            .as_deref()
            .is_some_and(|c| c.starts_with("FlowMatch"))
    }

    /// clip_sample with the scheduler's own default when the key is absent.
    pub(super) fn clip_range(&self, default: bool) -> Result<Option<f64>> {
        if !self.clip_sample.unwrap_or(default) {
            return Ok(None);
        }
        let r = self.clip_sample_range;
        if !(r.is_finite() && r > 0.0) {
            bail!("scheduler config: clip_sample_range must be > 0, got {r}");
        }
        Ok(Some(r))
    }
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
fn default_final_sigmas_type() -> String {
    "zero".into()
}
fn default_original_inference_steps() -> usize {
    50
}
fn default_timestep_scaling() -> f64 {
    10.0
}
fn default_shift() -> f64 {
    1.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::test_util::{sd15, SD15};

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
        assert!(d.set_alpha_to_one && d.clip_sample.is_none());
        assert!(!d.rescale_betas_zero_snr && !d.use_karras_sigmas);
        assert_eq!(d.final_sigmas_type, "zero");
        assert_eq!((d.original_inference_steps, d.timestep_scaling), (50, 10.0));
        assert_eq!(d.shift, 1.0);
        assert_eq!(d.clip_sample_range, 1.0);

        let c = sd15();
        assert_eq!(c.class_name.as_deref(), Some("PNDMScheduler"));
        assert_eq!((c.beta_start, c.beta_end), (0.00085, 0.012));
        assert_eq!(c.beta_schedule, "scaled_linear");
        assert_eq!(c.steps_offset, 1);
        assert!(!c.set_alpha_to_one && c.clip_sample == Some(false));

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
}
