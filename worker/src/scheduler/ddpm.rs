//! DDPM (Ho et al. 2020, "Denoising Diffusion Probabilistic Models"),
//! following diffusers' `DDPMScheduler.step`: predict x0, take the mean of the
//! posterior q(x_prev | x_t, x0) (eq. 7 of the paper), and add noise of the
//! posterior's standard deviation ("fixed_small", the default) or sqrt(beta)
//! ("fixed_large"). Stochastic at every step but the last (t = 0), with the
//! noise from the job's seeded [`NoiseSource`].

use anyhow::{bail, Result};
use candle_core::{Result as CandleResult, Tensor};

use super::spacing::{timesteps, Linspace, Spacing};
use super::{
    at, like_compute, noise_to_alpha, NoiseSource, Prediction, Scheduler, SchedulerConfig,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variance {
    /// The posterior variance beta~_t = (1 - a_prev) / (1 - a_t) * beta_t
    /// (also "fixed_small_log", whose exp(0.5 log v) is the same std).
    FixedSmall,
    /// beta_t itself, the upper bound of the reverse variance.
    FixedLarge,
}

pub struct Ddpm {
    /// The last step's estimate of the clean sample (`pred_original_sample`).
    pred_original: Option<Tensor>,
    timesteps: Vec<f64>,
    alphas_cumprod: Vec<f64>,
    prediction: Prediction,
    clip: Option<f64>,
    variance: Variance,
}

impl Ddpm {
    pub fn new(
        cfg: &SchedulerConfig,
        alphas_cumprod: Vec<f64>,
        prediction: Prediction,
        n: usize,
    ) -> Result<Self> {
        let train = cfg.num_train_timesteps;
        if n == 0 || n > train || alphas_cumprod.len() != train {
            bail!("ddpm: {n} steps over {train} training timesteps is not a valid schedule");
        }
        let variance = match cfg.variance_type.as_deref() {
            None | Some("fixed_small") | Some("fixed_small_log") => Variance::FixedSmall,
            Some("fixed_large") => Variance::FixedLarge,
            // fixed_large_log: diffusers takes sqrt(log(beta)) of a negative number (NaN);
            // learned*: the variance comes from extra UNet output channels SD does not have.
            Some(other) => bail!(
                "scheduler config: variance_type `{other}` is not supported by ddpm (expected fixed_small, fixed_small_log or fixed_large)"
            ),
        };
        let spacing = Spacing::parse(cfg.timestep_spacing.as_deref(), Spacing::Leading)?;
        Ok(Self {
            pred_original: None,
            timesteps: timesteps(spacing, train, n, cfg.steps_offset, Linspace::Rounded),
            alphas_cumprod,
            prediction,
            clip: cfg.clip_range(true)?,
            variance,
        })
    }

    /// diffusers' `DDPMScheduler.previous_timestep` for a run of set timesteps:
    /// the next entry of the schedule, or -1 (alpha 1) after the last. Not
    /// `t - T // n`, which is that entry only for `leading` spacing (linspace
    /// over 20 steps: 999 -> 946, where `t - T // n` gives 949).
    fn previous_timestep(&self, step_index: usize) -> i64 {
        self.timesteps.get(step_index + 1).map_or(-1, |&t| t as i64)
    }

    /// alphas_cumprod at `t`; 1 before the start (prev_t < 0), clamped past
    /// T-1 like DDIM's (leading spacing with steps_offset at n = T).
    fn alpha_at(&self, t: i64) -> f64 {
        if t < 0 {
            1.0
        } else {
            let last = self.alphas_cumprod.len() - 1;
            self.alphas_cumprod[(t as usize).min(last)]
        }
    }
}

impl Scheduler for Ddpm {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> CandleResult<Tensor> {
        let t = at(&self.timesteps, step_index, "timesteps")? as i64;
        let a_t = self.alpha_at(t);
        let a_prev = self.alpha_at(self.previous_timestep(step_index));
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let alpha = a_t / a_prev; // this step's alpha_t, and beta_t = 1 - alpha_t
        let beta = 1.0 - alpha;

        let x = like_compute(sample, sample)?;
        let out = like_compute(model_output, sample)?;
        let x0 = match self.prediction {
            Prediction::Epsilon => ((&x - (&out * b_t.sqrt())?)? / a_t.sqrt())?,
            Prediction::V => ((&x * a_t.sqrt())? - (&out * b_t.sqrt())?)?,
            Prediction::Sample => out,
        };
        let x0 = match self.clip {
            Some(r) => x0.clamp(-r, r)?,
            None => x0,
        };
        self.pred_original = Some(x0.clone());
        // Posterior mean (eq. 7): sqrt(a_prev) beta_t / (1 - a_t) x0 + sqrt(alpha_t) (1 - a_prev) / (1 - a_t) x_t.
        let mut prev =
            ((x0 * (a_prev.sqrt() * beta / b_t))? + (x * (alpha.sqrt() * b_prev / b_t))?)?;
        if t > 0 {
            let std = match self.variance {
                // diffusers clamps the variance to >= 1e-20 before the sqrt.
                Variance::FixedSmall => (b_prev / b_t * beta).max(1e-20).sqrt(),
                Variance::FixedLarge => beta.sqrt(),
            };
            let z = like_compute(&noise.sample_like(&prev)?, &prev)?;
            prev = (prev + (z * std)?)?;
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
        let a = self.alpha_at(at(&self.timesteps, step_index, "timesteps")? as i64);
        noise_to_alpha(original, noise, a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::betas::alphas_cumprod;
    use crate::scheduler::test_util::{assert_close, sd15, tensor, values, ConstNoise};
    use crate::scheduler::{build, SchedulerKind};
    use candle_core::DType;

    const X: [f32; 4] = [1.5, -0.5, 0.25, 2.0];
    const OUT: [f32; 4] = [0.7, -1.2, 0.1, 0.0];

    fn step_with(cfg: &SchedulerConfig, n: usize, i: usize, noise: f64) -> (Vec<f64>, usize) {
        let mut s = build(SchedulerKind::Ddpm, cfg, n).unwrap();
        let mut z = ConstNoise::new(noise);
        let got = s.step(&tensor(&OUT), i, &tensor(&X), &mut z).unwrap();
        (values(&got), z.calls)
    }

    #[test]
    fn sd15_timesteps_are_leading_like_ddim() {
        let s = build(SchedulerKind::Ddpm, &sd15(), 20).unwrap();
        let want: Vec<f64> = (0..20).rev().map(|i| (50 * i + 1) as f64).collect();
        assert_eq!(s.timesteps(), want.as_slice());
        assert_eq!(s.init_noise_sigma(), 1.0);
        let x = tensor(&X);
        assert_eq!(values(&s.scale_model_input(&x, 3).unwrap()), values(&x));
    }

    /// Expected values: diffusers 0.31 `DDPMScheduler.from_config(SD 1.5 config)`,
    /// `set_timesteps(20)`, `step(OUT, t, X, generator=g).prev_sample` with the
    /// noise replaced by 0.5 everywhere (`randn_tensor` patched), float32; the
    /// same as numpy float64 on diffusers' formulas:
    ///   x0 = (x - sqrt(1-at) o) / sqrt(at)            (epsilon)
    ///   x0 = sqrt(at) x - sqrt(1-at) o                 (v_prediction)
    ///   mean = sqrt(ap) (1 - at/ap) / (1-at) x0 + sqrt(at/ap) (1-ap) / (1-at) x
    ///   prev = mean + 0.5 sqrt((1-ap)/(1-at) (1 - at/ap))   (fixed_small; t > 0)
    ///   prev = mean + 0.5 sqrt(1 - at/ap)                   (fixed_large)
    #[test]
    fn one_step_matches_diffusers() {
        let cases: [(&str, Option<&str>, usize, [f64; 4]); 5] = [
            // t = 951 -> 901
            (
                "epsilon",
                None,
                0,
                [1.90315998, 0.32652086, 0.594850183, 2.94314051],
            ),
            (
                "v_prediction",
                None,
                0,
                [1.43207657, 0.000215440989, 0.508002937, 1.8483628],
            ),
            (
                "epsilon",
                Some("fixed_large"),
                0,
                [1.90411437, 0.32747525, 0.595804572, 2.9440949],
            ),
            // t = 451 -> 401
            (
                "epsilon",
                None,
                10,
                [1.68510818, -0.0522977412, 0.452332437, 2.41325378],
            ),
            // t = 1 -> -49: a_prev = 1, so prev is x0 plus noise of std 1e-10 (the clamp).
            (
                "epsilon",
                None,
                19,
                [1.47235942, -0.450849146, 0.246081829, 2.00170612],
            ),
        ];
        for (prediction, variance, i, want) in cases {
            let mut cfg = sd15();
            cfg.prediction_type = prediction.into();
            cfg.variance_type = variance.map(Into::into);
            let (got, calls) = step_with(&cfg, 20, i, 0.5);
            assert_close(
                &got,
                &want,
                3e-6,
                &format!("{prediction} {variance:?} step {i}"),
            );
            assert_eq!(calls, 1, "noise while t > 0");
        }
    }

    /// The step lands on the next timestep of the schedule, as diffusers'
    /// `previous_timestep`: with the bundled model's linspace over 20 steps
    /// 999 -> 946, not 999 - 1000 // 20 = 949.
    #[test]
    fn steps_to_the_next_timestep_of_the_schedule() {
        let mut cfg = sd15();
        cfg.timestep_spacing = Some("linspace".into());
        let acp = alphas_cumprod(&cfg).unwrap();
        let s = build(SchedulerKind::Ddpm, &cfg, 20).unwrap();
        assert_eq!(&s.timesteps()[..2], &[999.0, 946.0]);
        let (a, p) = (acp[999], acp[946]);
        let (got, _) = step_with(&cfg, 20, 0, 0.0);
        let want: Vec<f64> = X
            .iter()
            .zip(OUT)
            .map(|(&x, o)| {
                let (x, o) = (x as f64, o as f64);
                let x0 = (x - (1.0 - a).sqrt() * o) / a.sqrt();
                p.sqrt() * (1.0 - a / p) / (1.0 - a) * x0
                    + (a / p).sqrt() * (1.0 - p) / (1.0 - a) * x
            })
            .collect();
        assert_close(&got, &want, 1e-5, "999 -> 946");
    }

    /// With linspace spacing the run ends at t = 0, where no noise is drawn.
    #[test]
    fn no_noise_at_t_zero() {
        let mut cfg = sd15();
        cfg.timestep_spacing = Some("linspace".into());
        let s = build(SchedulerKind::Ddpm, &cfg, 5).unwrap();
        assert_eq!(s.timesteps(), &[999.0, 749.0, 500.0, 250.0, 0.0]);
        let (_, calls) = step_with(&cfg, 5, 4, 0.5);
        assert_eq!(calls, 0);
    }

    /// clip_sample (DDPMScheduler's default when the key is absent) clamps x0.
    #[test]
    fn clip_sample_defaults_on_and_clamps_x0() {
        let mut cfg = sd15();
        cfg.clip_sample = None;
        let acp = alphas_cumprod(&cfg).unwrap();
        let (a, p) = (acp[1], 1.0);
        let (got, _) = step_with(&cfg, 20, 19, 0.0);
        // Last step: prev = x0 clamped to [-1, 1].
        let want: Vec<f64> = X
            .iter()
            .zip(OUT)
            .map(|(&x, o)| {
                let x0 = (x as f64 - (1.0 - a).sqrt() * o as f64) / a.sqrt();
                x0.clamp(-1.0, 1.0) * p
            })
            .collect();
        assert_close(&got, &want, 1e-6, "clipped");
        assert_eq!(got[0], 1.0);
    }

    #[test]
    fn add_noise_matches_ddim() {
        let d = build(SchedulerKind::Ddpm, &sd15(), 20).unwrap();
        let e = build(SchedulerKind::Ddim, &sd15(), 20).unwrap();
        let n = tensor(&[0.3, -0.7, 1.1, 0.05]);
        assert_eq!(
            values(&d.add_noise(&tensor(&X), &n, 4).unwrap()),
            values(&e.add_noise(&tensor(&X), &n, 4).unwrap())
        );
    }

    #[test]
    fn unsupported_variance_types_are_errors() {
        for v in ["learned", "learned_range", "fixed_large_log", "wide"] {
            let mut cfg = sd15();
            cfg.variance_type = Some(v.into());
            let err = build(SchedulerKind::Ddpm, &cfg, 10).err().unwrap();
            assert!(format!("{err:#}").contains(v), "{err:#}");
        }
    }

    #[test]
    fn half_precision_stays_half() {
        let mut s = build(SchedulerKind::Ddpm, &sd15(), 10).unwrap();
        for dtype in [DType::F16, DType::BF16] {
            let x = tensor(&X).to_dtype(dtype).unwrap();
            let out = s
                .step(&tensor(&OUT), 0, &x, &mut ConstNoise::new(1.0))
                .unwrap();
            assert_eq!(out.dtype(), dtype);
            assert!(values(&out).iter().all(|v| v.is_finite()));
        }
    }
}
