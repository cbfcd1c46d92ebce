//! Flow-matching Euler (rectified flow, as trained for Stable Diffusion 3),
//! following diffusers' `FlowMatchEulerDiscreteScheduler`. The model predicts
//! the velocity v = noise - x0 of the straight path x_s = (1 - s) x0 + s noise,
//! so a step is x + (s_next - s) v. Sigmas are evenly spaced in t and then
//! shifted towards the noisy end, s -> shift s / (1 + (shift - 1) s) (SD 3: 3.0);
//! timesteps are sigma * T. Only valid for flow-matching models.

use anyhow::{bail, Result};
use candle_core::{Result as CandleResult, Tensor};

use super::betas::linspace;
use super::{at, like_compute, NoiseSource, Scheduler, SchedulerConfig};

pub struct FlowEuler {
    /// The last step's estimate of the clean sample (`pred_original_sample`).
    pred_original: Option<Tensor>,
    timesteps: Vec<f64>,
    /// n + 1 values, the last 0 (the clean end).
    sigmas: Vec<f64>,
}

impl FlowEuler {
    pub fn new(cfg: &SchedulerConfig, n: usize) -> Result<Self> {
        let train = cfg.num_train_timesteps as f64;
        let shift = cfg.shift;
        if !(shift.is_finite() && shift > 0.0) {
            bail!("scheduler config: shift must be > 0, got {shift}");
        }
        if cfg.use_dynamic_shifting {
            bail!(
                "scheduler config: use_dynamic_shifting (resolution-dependent shift) is not supported by flow_euler"
            );
        }
        let shifted = |s: f64| shift * s / (1.0 + (shift - 1.0) * s);
        // diffusers' training sigmas are shifted(t / T) for t = T..1, so the run spans
        // shifted(1) = 1 down to shifted(1 / T); that range is spaced evenly and then
        // shifted again (as diffusers' set_timesteps does).
        let (sigma_max, sigma_min) = (shifted(1.0), shifted(1.0 / train));
        let mut sigmas: Vec<f64> = linspace(sigma_max * train, sigma_min * train, n)
            .into_iter()
            .map(|t| shifted(t / train))
            .collect();
        let timesteps = sigmas.iter().map(|s| s * train).collect();
        sigmas.push(0.0);
        Ok(Self {
            timesteps,
            sigmas,
            pred_original: None,
        })
    }

    fn sigma(&self, step_index: usize) -> CandleResult<f64> {
        at(
            &self.sigmas[..self.timesteps.len()],
            step_index,
            "timesteps",
        )
    }
}

impl Scheduler for FlowEuler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        _noise: &mut dyn NoiseSource,
    ) -> CandleResult<Tensor> {
        let sigma = self.sigma(step_index)?;
        let next = self.sigmas[step_index + 1];
        let x = like_compute(sample, sample)?;
        let v = like_compute(model_output, sample)?;
        // x = (1 - s) x0 + s n and v = n - x0, so x0 = x - s v.
        self.pred_original = Some((&x - (&v * sigma)?)?);
        (x + (v * (next - sigma))?)?.to_dtype(sample.dtype())
    }

    /// diffusers' `scale_noise` (image to image): sigma noise + (1 - sigma) x.
    fn pred_original_sample(&self) -> Option<&Tensor> {
        self.pred_original.as_ref()
    }

    fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        step_index: usize,
    ) -> CandleResult<Tensor> {
        let sigma = self.sigma(step_index)?;
        let x = like_compute(original, original)?;
        let n = like_compute(noise, original)?;
        ((n * sigma)? + (x * (1.0 - sigma))?)?.to_dtype(original.dtype())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::test_util::{assert_close, tensor, values, ConstNoise};
    use crate::scheduler::{build, SchedulerKind};
    use candle_core::DType;

    const X: [f32; 4] = [1.5, -0.5, 0.25, 2.0];
    const OUT: [f32; 4] = [0.7, -1.2, 0.1, 0.0];

    /// Stable Diffusion 3's scheduler_config.json.
    fn sd3() -> SchedulerConfig {
        SchedulerConfig::from_json_str(
            r#"{"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.29.0.dev0",
                "num_train_timesteps": 1000, "shift": 3.0}"#,
        )
        .unwrap()
    }

    /// Expected values: diffusers 0.31 (float32) `FlowMatchEulerDiscreteScheduler.from_config(
    /// SD 3 config)`, `set_timesteps(n)`: .timesteps and .sigmas. By hand for n = 4:
    /// shifted(s) = 3 s / (1 + 2 s); sigma_min = shifted(0.001) = 0.003 / 1.002;
    /// linspace(1000, 1000 sigma_min, 4) / 1000 = [1, 0.667665, 0.335329, 0.002994],
    /// shifted again: [1, 0.857692, 0.602151, 0.008929], then 0.
    #[test]
    fn sd3_timesteps_and_sigmas() {
        let s = FlowEuler::new(&sd3(), 4).unwrap();
        let want = [1.0, 0.857692301, 0.602150559, 0.00892857183, 0.0];
        assert_close(&s.sigmas, &want, 1e-7, "sigmas");
        let want = [1000.0, 857.692322, 602.150574, 8.9285717];
        assert_close(&s.timesteps, &want, 5e-5, "timesteps");

        let s = FlowEuler::new(&sd3(), 28).unwrap();
        assert_eq!(s.sigmas.len(), 29);
        assert!((s.sigmas[1] - 0.987380624).abs() < 1e-7);
        assert!((s.sigmas[14] - 0.737055838).abs() < 1e-7);
        assert!((s.sigmas[27] - 0.00892857183).abs() < 1e-8);

        // shift 1 (diffusers' default): plain linspace(1000, 1, n).
        let cfg =
            SchedulerConfig::from_json_str(r#"{"_class_name": "FlowMatchEulerDiscreteScheduler"}"#)
                .unwrap();
        let s = build(SchedulerKind::FlowEuler, &cfg, 4).unwrap();
        assert_close(s.timesteps(), &[1000.0, 667.0, 334.0, 1.0], 1e-9, "shift 1");
        assert_eq!(s.init_noise_sigma(), 1.0);
    }

    /// diffusers 0.31: step(OUT, timesteps[i], X) = X + (sigma_next - sigma) OUT.
    #[test]
    fn one_step_matches_diffusers() {
        let mut s = build(SchedulerKind::FlowEuler, &sd3(), 4).unwrap();
        let mut noise = ConstNoise::new(1.0);
        let got = values(&s.step(&tensor(&OUT), 0, &tensor(&X), &mut noise).unwrap());
        assert_close(
            &got,
            &[1.40038466, -0.329230756, 0.235769227, 2.0],
            1e-6,
            "step 0",
        );
        let got = values(&s.step(&tensor(&OUT), 3, &tensor(&X), &mut noise).unwrap());
        assert_close(
            &got,
            &[1.49374998, -0.489285707, 0.249107137, 2.0],
            1e-6,
            "step 3",
        );
        assert_eq!(noise.calls, 0, "deterministic");
        let x = tensor(&X);
        assert_eq!(values(&s.scale_model_input(&x, 1).unwrap()), values(&x));
    }

    /// diffusers 0.31: `set_begin_index(2)`, `scale_noise(X, timesteps[2:3], n)`.
    #[test]
    fn add_noise_is_scale_noise() {
        let s = build(SchedulerKind::FlowEuler, &sd3(), 4).unwrap();
        let n = tensor(&[0.3, -0.7, 1.1, 0.05]);
        let got = values(&s.add_noise(&tensor(&X), &n, 2).unwrap());
        let want = [0.777419329, -0.620430112, 0.761827946, 0.825806379];
        assert_close(&got, &want, 1e-6, "scale_noise");
    }

    /// A perfect velocity (noise - x0) carries the noise straight to x0.
    #[test]
    fn a_perfect_model_recovers_the_clean_sample() {
        let x0 = tensor(&[0.5, -0.25, 0.8, -1.0]);
        let noise = tensor(&[1.0, -0.5, 0.3, 2.0]);
        let v = (&noise - &x0).unwrap();
        let mut s = build(SchedulerKind::FlowEuler, &sd3(), 7).unwrap();
        let mut x = s.add_noise(&x0, &noise, 0).unwrap();
        assert_eq!(values(&x), values(&noise), "sigma 1 is pure noise");
        for i in 0..7 {
            x = s.step(&v, i, &x, &mut ConstNoise::new(0.0)).unwrap();
        }
        assert_close(&values(&x), &values(&x0), 1e-6, "flow round trip");
    }

    #[test]
    fn invalid_configs_are_errors() {
        let mut cfg = sd3();
        cfg.use_dynamic_shifting = true;
        assert!(FlowEuler::new(&cfg, 4).is_err());
        let mut cfg = sd3();
        cfg.shift = 0.0;
        assert!(FlowEuler::new(&cfg, 4).is_err());
    }

    #[test]
    fn half_precision_stays_half() {
        let mut s = build(SchedulerKind::FlowEuler, &sd3(), 4).unwrap();
        let x = tensor(&X).to_dtype(DType::F16).unwrap();
        let out = s
            .step(&tensor(&OUT), 0, &x, &mut ConstNoise::new(0.0))
            .unwrap();
        assert_eq!(out.dtype(), DType::F16);
    }
}
