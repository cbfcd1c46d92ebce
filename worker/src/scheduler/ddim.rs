//! DDIM (Song et al. 2020), diffusers' `DDIMScheduler`: deterministic at eta = 0.

use anyhow::Result;
use candle_core::{Result as CandleResult, Tensor};

use super::spacing::{timesteps, Spacing};
use super::{NoiseSource, Prediction, Scheduler, SchedulerConfig};

pub struct Ddim {
    timesteps: Vec<f64>,
    alphas_cumprod: Vec<f64>,
    /// alpha_cumprod "before" the first training step, used by the last step.
    final_alpha_cumprod: f64,
    /// Distance between consecutive timesteps, as diffusers computes prev_t.
    step_ratio: usize,
    prediction: Prediction,
    clip_sample: Option<f64>,
    eta: f64,
}

impl Ddim {
    pub fn new(
        cfg: &SchedulerConfig,
        alphas_cumprod: Vec<f64>,
        prediction: Prediction,
        n: usize,
        eta: f64,
    ) -> Result<Self> {
        let spacing = Spacing::parse(cfg.timestep_spacing.as_deref(), Spacing::Leading)?;
        let train = cfg.num_train_timesteps;
        let timesteps = timesteps(spacing, train, n, cfg.steps_offset, true);
        Ok(Self {
            timesteps,
            final_alpha_cumprod: if cfg.set_alpha_to_one {
                1.0
            } else {
                alphas_cumprod[0]
            },
            alphas_cumprod,
            step_ratio: train / n,
            prediction,
            clip_sample: cfg
                .clip_sample
                .unwrap_or(true)
                .then_some(cfg.clip_sample_range),
            eta,
        })
    }

    fn alpha_at(&self, t: i64) -> f64 {
        if t < 0 {
            self.final_alpha_cumprod
        } else {
            self.alphas_cumprod[(t as usize).min(self.alphas_cumprod.len() - 1)]
        }
    }
}

impl Scheduler for Ddim {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn scale_model_input(&self, sample: &Tensor, _: usize) -> CandleResult<Tensor> {
        Ok(sample.clone())
    }

    fn step(
        &mut self,
        out: &Tensor,
        i: usize,
        x: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> CandleResult<Tensor> {
        let t = self.timesteps[i] as i64;
        let a_t = self.alpha_at(t);
        let a_prev = self.alpha_at(t - self.step_ratio as i64);
        let (sa, sb) = (a_t.sqrt(), (1.0 - a_t).sqrt());
        let (mut x0, eps) = match self.prediction {
            Prediction::Epsilon => (((x - (out * sb)?)? / sa)?, out.clone()),
            Prediction::V => (((x * sa)? - (out * sb)?)?, ((out * sa)? + (x * sb)?)?),
            Prediction::Sample => (out.clone(), ((x - (out * sa)?)? / sb)?),
        };
        if let Some(r) = self.clip_sample {
            x0 = x0.clamp(-r, r)?;
        }
        // eq. (16) of the DDIM paper; sigma_t = 0 at eta = 0.
        let variance = (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev);
        let std = self.eta * variance.max(0.0).sqrt();
        let direction = (eps * (1.0 - a_prev - std * std).max(0.0).sqrt())?;
        let prev = ((x0 * a_prev.sqrt())? + direction)?;
        if std > 0.0 {
            let n = noise.sample_like(&prev)?;
            prev + (n * std)?
        } else {
            Ok(prev)
        }
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, i: usize) -> CandleResult<Tensor> {
        let a = self.alpha_at(self.timesteps[i] as i64);
        (original * a.sqrt())? + (noise.to_dtype(original.dtype())? * (1.0 - a).sqrt())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::test_util::{sd15, values, ConstNoise};
    use crate::scheduler::{build, SchedulerKind};
    use candle_core::{DType, Device};

    fn x0() -> Tensor {
        Tensor::new(&[[0.5f32, -0.25], [0.8, -1.0]], &Device::Cpu).unwrap()
    }
    fn eps() -> Tensor {
        Tensor::new(&[[1.0f32, -0.5], [0.3, 2.0]], &Device::Cpu).unwrap()
    }

    /// With the true epsilon (or v) at every step, DDIM recovers x0 exactly when
    /// the schedule ends at alpha = 1: catches any sign or scale slip.
    #[test]
    fn a_perfect_model_recovers_the_clean_sample() {
        for prediction in ["epsilon", "v_prediction"] {
            let mut cfg = sd15();
            cfg.set_alpha_to_one = true;
            cfg.prediction_type = prediction.into();
            let mut s = build(SchedulerKind::Ddim, &cfg, 10).unwrap();
            let acp = crate::scheduler::betas::alphas_cumprod(&cfg).unwrap();
            let mut x = s.add_noise(&x0(), &eps(), 0).unwrap();
            for i in 0..s.timesteps().len() {
                let a = acp[s.timesteps()[i] as usize];
                let out = match prediction {
                    "epsilon" => eps(),
                    // v = sqrt(a) eps - sqrt(1 - a) x0
                    _ => {
                        ((eps() * a.sqrt()).unwrap() - (x0() * (1.0 - a).sqrt()).unwrap()).unwrap()
                    }
                };
                x = s.step(&out, i, &x, &mut ConstNoise(0.0)).unwrap();
            }
            for (got, want) in values(&x).iter().zip(values(&x0())) {
                assert!((got - want).abs() < 1e-4, "{prediction}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn one_step_matches_the_formula() {
        // SD 1.5, 20 steps: t = 951 -> prev 901. a_t = acp[951], a_prev = acp[901].
        let cfg = sd15();
        let acp = crate::scheduler::betas::alphas_cumprod(&cfg).unwrap();
        let mut s = build(SchedulerKind::Ddim, &cfg, 20).unwrap();
        assert_eq!(s.timesteps()[0], 951.0);
        let x = Tensor::new(&[1.5f32], &Device::Cpu).unwrap();
        let e = Tensor::new(&[0.7f32], &Device::Cpu).unwrap();
        let got = values(&s.step(&e, 0, &x, &mut ConstNoise(0.0)).unwrap())[0] as f64;
        let (a, p) = (acp[951], acp[901]);
        let x0 = (1.5 - (1.0 - a).sqrt() * 0.7) / a.sqrt();
        let want = p.sqrt() * x0 + (1.0 - p).sqrt() * 0.7;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn half_precision_stays_half_with_eta() {
        let cfg = sd15();
        let acp = crate::scheduler::betas::alphas_cumprod(&cfg).unwrap();
        let mut s = Ddim::new(&cfg, acp, Prediction::Epsilon, 10, 1.0).unwrap();
        let x = x0().to_dtype(DType::F16).unwrap();
        let out = s
            .step(
                &eps().to_dtype(DType::F16).unwrap(),
                0,
                &x,
                &mut ConstNoise(1.0),
            )
            .unwrap();
        assert_eq!(out.dtype(), DType::F16);
        assert!(values(&out).iter().all(|v| v.is_finite()));
    }
}
