//! Euler ancestral (k-diffusion's `sample_euler_ancestral`, eta = 1), following
//! diffusers' `EulerAncestralDiscreteScheduler`: same sigmas, timesteps and
//! input scaling as Euler, but each step goes deterministically down to
//! sigma_down and then adds fresh noise of sigma_up, where
//! sigma_down^2 + sigma_up^2 = sigma_next^2, so the marginal noise level is right.

use anyhow::Result;
use candle_core::{Result as CandleResult, Tensor};

use super::euler::SigmaSchedule;
use super::{like_compute, NoiseSource, Prediction, Scheduler, SchedulerConfig};

pub struct EulerAncestral {
    /// The last step's estimate of the clean sample (`pred_original_sample`).
    pred_original: Option<Tensor>,
    schedule: SigmaSchedule,
}

impl EulerAncestral {
    pub fn new(
        cfg: &SchedulerConfig,
        alphas_cumprod: &[f64],
        prediction: Prediction,
        n: usize,
    ) -> Result<Self> {
        Ok(Self {
            pred_original: None,
            schedule: SigmaSchedule::new(cfg, alphas_cumprod, prediction, n)?,
        })
    }
}

/// (sigma_down, sigma_up) for a step from `sigma` to `next`:
/// sigma_up = sqrt(next^2 (sigma^2 - next^2) / sigma^2), sigma_down = sqrt(next^2 - sigma_up^2).
/// The max(0) guards only rounding: sigmas decrease, so both radicands are >= 0.
fn ancestral_sigmas(sigma: f64, next: f64) -> (f64, f64) {
    let up = (next * next * (sigma * sigma - next * next) / (sigma * sigma))
        .max(0.0)
        .sqrt();
    let down = (next * next - up * up).max(0.0).sqrt();
    (down, up)
}

impl Scheduler for EulerAncestral {
    fn timesteps(&self) -> &[f64] {
        &self.schedule.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        self.schedule.init_noise_sigma
    }

    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> CandleResult<Tensor> {
        self.schedule.scale_model_input(sample, step_index)
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> CandleResult<Tensor> {
        let (sigma, next) = self.schedule.sigma_pair(step_index)?;
        let (down, up) = ancestral_sigmas(sigma, next);
        let x = like_compute(sample, sample)?;
        let out = like_compute(model_output, sample)?;
        let x0 = self.schedule.predict_x0(&out, &x, sigma)?;
        // Euler step to sigma_down along d = (x - x0) / sigma ...
        let derivative = ((&x - &x0)? * (1.0 / sigma))?;
        self.pred_original = Some(x0);
        let mut prev = (x + (derivative * (down - sigma))?)?;
        // ... then re-inject noise. The last step (next = 0) has up = 0: draw
        // nothing, so the NoiseSource stream is not consumed for a no-op.
        if up > 0.0 {
            let z = like_compute(&noise.sample_like(&prev)?, &prev)?;
            prev = (prev + (z * up)?)?;
        }
        prev.to_dtype(sample.dtype())
    }

    fn pred_original_sample(&self) -> Option<&Tensor> {
        self.pred_original.as_ref()
    }

    fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        step_index: usize,
    ) -> CandleResult<Tensor> {
        self.schedule.add_noise(original, noise, step_index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::euler::tests::{schedule, OUT, X};
    use crate::scheduler::test_util::{assert_close, sd15, tensor, values, ConstNoise};
    use crate::scheduler::{build, SchedulerKind};
    use candle_core::DType;

    #[test]
    fn shares_euler_timesteps_and_scaling() {
        let cfg = sd15();
        let a = build(SchedulerKind::EulerAncestral, &cfg, 5).unwrap();
        let e = build(SchedulerKind::Euler, &cfg, 5).unwrap();
        assert_eq!(a.timesteps(), &[999.0, 749.25, 499.5, 249.75, 0.0]);
        assert_eq!(a.timesteps(), e.timesteps());
        assert_eq!(a.init_noise_sigma(), e.init_noise_sigma());
        let x = tensor(&X);
        assert_eq!(
            values(&a.scale_model_input(&x, 2).unwrap()),
            values(&e.scale_model_input(&x, 2).unwrap())
        );
    }

    #[test]
    fn ancestral_sigmas_split_the_next_variance() {
        // numpy float64, s = 14.61464123, s_next = 10.74684399 (SD 1.5, 20 linspace steps):
        // up = 7.283027956, down = 7.902667873.
        let s = schedule(&sd15(), 20);
        let (down, up) = ancestral_sigmas(s.sigmas[0], s.sigmas[1]);
        assert!((up - 7.283027956).abs() < 1e-7, "{up}");
        assert!((down - 7.902667873).abs() < 1e-7, "{down}");
        assert!((down * down + up * up - s.sigmas[1].powi(2)).abs() < 1e-9);
        assert_eq!(ancestral_sigmas(0.03, 0.0), (0.0, 0.0));
    }

    /// Expected values: numpy float64, x = X, o = OUT, constant noise 0.5:
    /// prev = x + (x - x0) / s * (down - s) + 0.5 * up, x0 per prediction_type.
    #[test]
    fn one_step_matches_the_formula() {
        let cases = [
            (
                "epsilon",
                [0.443132629, 11.195882005, 3.220316642, 5.641513978],
            ),
            (
                "v_prediction",
                [4.135094236, 3.919906435, 3.731413892, 4.727267122],
            ),
        ];
        for (prediction, want) in cases {
            let mut cfg = sd15();
            cfg.prediction_type = prediction.into();
            let mut s = build(SchedulerKind::EulerAncestral, &cfg, 20).unwrap();
            let mut noise = ConstNoise::new(0.5);
            let got = s.step(&tensor(&OUT), 0, &tensor(&X), &mut noise).unwrap();
            assert_close(&values(&got), &want, 1e-5, prediction);
            assert_eq!(noise.calls, 1);
        }
    }

    /// Last step (sigma 0.02916715815 -> 0): up = 0, down = 0, a plain Euler step
    /// to x0, and no noise drawn. numpy float64 as above.
    #[test]
    fn last_step_draws_no_noise() {
        let cases = [
            ("epsilon", [1.479582989, -0.46499941, 0.247083284, 2.0]),
            (
                "v_prediction",
                [1.478316668, -0.464589289, 0.246872024, 1.9983],
            ),
        ];
        for (prediction, want) in cases {
            let mut cfg = sd15();
            cfg.prediction_type = prediction.into();
            let mut s = build(SchedulerKind::EulerAncestral, &cfg, 20).unwrap();
            let mut noise = ConstNoise::new(0.5);
            let got = s.step(&tensor(&OUT), 19, &tensor(&X), &mut noise).unwrap();
            assert_close(&values(&got), &want, 1e-6, prediction);
            assert_eq!(noise.calls, 0);
        }
    }

    /// With zero noise, x after each step is x0 + sigma_down * eps, and a model
    /// that returns the true noise of that x relative to the scheduler's sigma
    /// makes x0 the exact prediction; the walk must then end on x0 (the last
    /// sigma_down is 0), which checks the derivative's sign and the step size.
    #[test]
    fn a_perfect_model_without_noise_recovers_the_clean_sample() {
        let x0 = tensor(&[0.5, -0.25, 0.8, -1.0]);
        let eps = tensor(&[1.0, -0.5, 0.3, 2.0]);
        let sigmas = schedule(&sd15(), 10).sigmas;
        let mut s = build(SchedulerKind::EulerAncestral, &sd15(), 10).unwrap();
        let mut x = s.add_noise(&x0, &eps, 0).unwrap();
        for (i, &sigma) in sigmas[..10].iter().enumerate() {
            let true_eps = ((&x - &x0).unwrap() * (1.0 / sigma)).unwrap();
            x = s.step(&true_eps, i, &x, &mut ConstNoise::new(0.0)).unwrap();
        }
        assert_close(&values(&x), &values(&x0), 1e-4, "euler_a round trip");
    }

    #[test]
    fn half_precision_stays_half() {
        let mut s = build(SchedulerKind::EulerAncestral, &sd15(), 5).unwrap();
        for dtype in [DType::F16, DType::BF16] {
            let x = tensor(&X).to_dtype(dtype).unwrap();
            let o = tensor(&OUT).to_dtype(dtype).unwrap();
            // ConstNoise hands back f32 noise: it must be converted, not rejected.
            let out = s.step(&o, 0, &x, &mut ConstNoise::new(1.0)).unwrap();
            assert_eq!(out.dtype(), dtype);
            assert!(values(&out).iter().all(|v| v.is_finite()));
            assert_eq!(s.scale_model_input(&x, 0).unwrap().dtype(), dtype);
        }
    }
}
