//! Euler discrete and Euler ancestral (Karras et al. 2022, k-diffusion), as
//! diffusers' `EulerDiscreteScheduler` / `EulerAncestralDiscreteScheduler`:
//! sampling in sigma space, x = x0 + sigma * eps.

use anyhow::Result;
use candle_core::{Result as CandleResult, Tensor};

use super::spacing::{timesteps, Spacing};
use super::{NoiseSource, Prediction, Scheduler, SchedulerConfig};

pub struct Euler {
    timesteps: Vec<f64>,
    /// One per timestep, then a final 0.
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
    prediction: Prediction,
    ancestral: bool,
}

impl Euler {
    pub fn new(
        cfg: &SchedulerConfig,
        alphas_cumprod: &[f64],
        prediction: Prediction,
        n: usize,
        ancestral: bool,
    ) -> Result<Self> {
        let spacing = Spacing::parse(cfg.timestep_spacing.as_deref(), Spacing::Linspace)?;
        let timesteps = timesteps(spacing, cfg.num_train_timesteps, n, cfg.steps_offset, false);
        let train_sigmas: Vec<f64> = alphas_cumprod
            .iter()
            .map(|a| ((1.0 - a) / a).sqrt())
            .collect();
        let mut sigmas: Vec<f64> = timesteps
            .iter()
            .map(|&t| interp(&train_sigmas, t))
            .collect();
        let max = sigmas.iter().copied().fold(0.0, f64::max);
        sigmas.push(0.0);
        // diffusers: the noise is already at unit-variance scale for "leading".
        let init_noise_sigma = match spacing {
            Spacing::Linspace | Spacing::Trailing => max,
            Spacing::Leading => (max * max + 1.0).sqrt(),
        };
        Ok(Self {
            timesteps,
            sigmas,
            init_noise_sigma,
            prediction,
            ancestral,
        })
    }

    /// diffusers' `pred_original_sample` in sigma space.
    fn predict_x0(&self, out: &Tensor, x: &Tensor, sigma: f64) -> CandleResult<Tensor> {
        match self.prediction {
            Prediction::Epsilon => x - (out * sigma)?,
            Prediction::V => {
                let s2 = sigma * sigma + 1.0;
                (out * (-sigma / s2.sqrt()))? + (x / s2)?
            }
            Prediction::Sample => Ok(out.clone()),
        }
    }
}

/// numpy's `interp(t, arange(len), values)`: linear, clamped at both ends.
fn interp(values: &[f64], t: f64) -> f64 {
    let last = values.len() - 1;
    if t <= 0.0 {
        return values[0];
    }
    if t >= last as f64 {
        return values[last];
    }
    let lo = t.floor() as usize;
    let frac = t - lo as f64;
    values[lo] * (1.0 - frac) + values[lo + 1] * frac
}

impl Scheduler for Euler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    fn scale_model_input(&self, sample: &Tensor, i: usize) -> CandleResult<Tensor> {
        let sigma = self.sigmas[i];
        sample / (sigma * sigma + 1.0).sqrt()
    }

    fn step(
        &mut self,
        out: &Tensor,
        i: usize,
        x: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> CandleResult<Tensor> {
        let (sigma, next) = (self.sigmas[i], self.sigmas[i + 1]);
        let x0 = self.predict_x0(out, x, sigma)?;
        let derivative = ((x - &x0)? / sigma)?;
        if !self.ancestral {
            return x + (derivative * (next - sigma))?;
        }
        // Step down to sigma_down deterministically, then add fresh noise of sigma_up.
        let up = (next * next * (sigma * sigma - next * next) / (sigma * sigma))
            .max(0.0)
            .sqrt();
        let down = (next * next - up * up).max(0.0).sqrt();
        let prev = (x + (derivative * (down - sigma))?)?;
        if up > 0.0 {
            let n = noise.sample_like(&prev)?;
            prev + (n * up)?
        } else {
            Ok(prev)
        }
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, i: usize) -> CandleResult<Tensor> {
        original + (noise.to_dtype(original.dtype())? * self.sigmas[i])?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::test_util::{sd15, values, ConstNoise};
    use crate::scheduler::{build, SchedulerKind};
    use candle_core::{DType, Device};

    #[test]
    fn sd15_sigmas_and_init_noise() {
        let cfg = sd15();
        let s = Euler::new(
            &cfg,
            &crate::scheduler::betas::alphas_cumprod(&cfg).unwrap(),
            Prediction::Epsilon,
            20,
            false,
        )
        .unwrap();
        // sigma(999) = sqrt((1 - 0.0046811) / 0.0046811) = 14.6146 (k-diffusion's SD sigma_max).
        assert!((s.sigmas[0] - 14.6146).abs() < 1e-3, "{}", s.sigmas[0]);
        assert_eq!(s.sigmas.len(), 21);
        assert_eq!(*s.sigmas.last().unwrap(), 0.0);
        // linspace default: init sigma = sigma_max; t_last = 0 -> sigma = sqrt(0.00085 / 0.99915) = 0.029167.
        assert!((s.init_noise_sigma - s.sigmas[0]).abs() < 1e-12);
        assert!((s.sigmas[19] - 0.029167).abs() < 1e-5, "{}", s.sigmas[19]);
        let mut leading = cfg.clone();
        leading.timestep_spacing = Some("leading".into());
        let s = Euler::new(
            &leading,
            &crate::scheduler::betas::alphas_cumprod(&cfg).unwrap(),
            Prediction::Epsilon,
            20,
            false,
        )
        .unwrap();
        assert!((s.init_noise_sigma - (s.sigmas[0].powi(2) + 1.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn fractional_timesteps_interpolate_sigmas() {
        let v = [1.0, 3.0, 7.0];
        assert_eq!(interp(&v, 0.5), 2.0);
        assert_eq!(interp(&v, 1.25), 4.0);
        assert_eq!(interp(&v, 5.0), 7.0);
    }

    /// A model that always predicts the true noise (or v) leads Euler back to x0.
    #[test]
    fn a_perfect_model_recovers_the_clean_sample() {
        let x0 = Tensor::new(&[0.5f32, -0.25, 0.8, -1.0], &Device::Cpu).unwrap();
        let eps = Tensor::new(&[1.0f32, -0.5, 0.3, 2.0], &Device::Cpu).unwrap();
        for prediction in ["epsilon", "v_prediction"] {
            let mut cfg = sd15();
            cfg.prediction_type = prediction.into();
            let mut s = build(SchedulerKind::Euler, &cfg, 12).unwrap();
            let mut x = s.add_noise(&x0, &eps, 0).unwrap();
            for i in 0..s.timesteps().len() {
                // Current sigma from x = x0 + sigma * eps.
                let sigma = (values(&x)[0] - 0.5) as f64 / 1.0;
                let out = match prediction {
                    "epsilon" => eps.clone(),
                    // Solve x0 = out * (-s / sqrt(s^2+1)) + x / (s^2+1) for out.
                    _ => {
                        let s2 = sigma * sigma + 1.0;
                        (((&x / s2).unwrap() - &x0).unwrap() * (s2.sqrt() / sigma)).unwrap()
                    }
                };
                x = s.step(&out, i, &x, &mut ConstNoise(0.0)).unwrap();
            }
            for (got, want) in values(&x).iter().zip(values(&x0)) {
                assert!((got - want).abs() < 1e-4, "{prediction}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn one_ancestral_step_matches_the_formula() {
        let cfg = sd15();
        let mut s = build(SchedulerKind::EulerAncestral, &cfg, 10).unwrap();
        let acp = crate::scheduler::betas::alphas_cumprod(&cfg).unwrap();
        let sig = |t: f64| {
            let lo = t.floor() as usize;
            let f = t - lo as f64;
            let sg = |i: usize| ((1.0 - acp[i]) / acp[i]).sqrt();
            sg(lo) * (1.0 - f) + sg((lo + 1).min(999)) * f
        };
        let (s0, s1) = (sig(s.timesteps()[0]), sig(s.timesteps()[1]));
        let x = Tensor::new(&[2.0f32], &Device::Cpu).unwrap();
        let e = Tensor::new(&[0.4f32], &Device::Cpu).unwrap();
        let got = values(&s.step(&e, 0, &x, &mut ConstNoise(0.5)).unwrap())[0] as f64;
        let up = (s1 * s1 * (s0 * s0 - s1 * s1) / (s0 * s0)).sqrt();
        let down = (s1 * s1 - up * up).sqrt();
        let want = 2.0 + 0.4 * (down - s0) + 0.5 * up;
        assert!((got - want).abs() < 1e-4, "{got} vs {want}");
    }

    #[test]
    fn half_precision_stays_half() {
        let mut s = build(SchedulerKind::EulerAncestral, &sd15(), 5).unwrap();
        let x = Tensor::new(&[1.0f32, 2.0], &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap();
        let out = s.step(&x, 0, &x, &mut ConstNoise(1.0)).unwrap();
        assert_eq!(out.dtype(), DType::F16);
        let scaled = s.scale_model_input(&x, 0).unwrap();
        assert_eq!(scaled.dtype(), DType::F16);
    }
}
