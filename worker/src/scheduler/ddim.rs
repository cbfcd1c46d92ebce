//! DDIM (Song et al. 2020, "Denoising Diffusion Implicit Models"), following
//! diffusers' `DDIMScheduler.step`: from the model output recover x0 and eps,
//! then re-noise x0 to the previous timestep's alpha (eq. 12 of the paper).
//! Deterministic at eta = 0, which is what `build` uses.

use anyhow::{bail, Result};
use candle_core::{Result as CandleResult, Tensor};

use super::spacing::{timesteps, Linspace, Spacing};
use super::{
    at, like_compute, noise_to_alpha, NoiseSource, Prediction, Scheduler, SchedulerConfig,
};

pub struct Ddim {
    /// The last step's estimate of the clean sample (`pred_original_sample`).
    pred_original: Option<Tensor>,
    timesteps: Vec<f64>,
    alphas_cumprod: Vec<f64>,
    /// alpha used when prev_t < 0 (the last step): 1.0 with set_alpha_to_one,
    /// else alphas_cumprod[0].
    final_alpha_cumprod: f64,
    /// diffusers' prev_t = t - T // n, whatever the spacing.
    step_ratio: i64,
    prediction: Prediction,
    /// Some(range) when clip_sample: x0 is clamped to +-range.
    clip: Option<f64>,
    /// 0 = deterministic DDIM, 1 = DDPM-like ancestral noise.
    eta: f64,
}

impl Ddim {
    /// `n` inference steps (1..=T, checked by `build`), `eta` >= 0.
    pub fn new(
        cfg: &SchedulerConfig,
        alphas_cumprod: Vec<f64>,
        prediction: Prediction,
        n: usize,
        eta: f64,
    ) -> Result<Self> {
        let train = cfg.num_train_timesteps;
        if n == 0 || n > train || alphas_cumprod.len() != train {
            bail!("ddim: {n} steps over {train} training timesteps is not a valid schedule");
        }
        if !(eta.is_finite() && eta >= 0.0) {
            bail!("ddim: eta must be a finite value >= 0, got {eta}");
        }
        let clip = cfg.clip_range(true)?;
        let spacing = Spacing::parse(cfg.timestep_spacing.as_deref(), Spacing::Leading)?;
        Ok(Self {
            pred_original: None,
            timesteps: timesteps(spacing, train, n, cfg.steps_offset, Linspace::Rounded),
            final_alpha_cumprod: if cfg.set_alpha_to_one {
                1.0
            } else {
                alphas_cumprod[0]
            },
            alphas_cumprod,
            step_ratio: (train / n) as i64,
            prediction,
            clip,
            eta,
        })
    }

    /// alphas_cumprod at training step `t`; negative t means "past the end".
    /// t above T-1 (leading spacing with steps_offset at n = T) is clamped,
    /// where diffusers would raise an index error.
    fn alpha_at(&self, t: i64) -> f64 {
        if t < 0 {
            self.final_alpha_cumprod
        } else {
            let last = self.alphas_cumprod.len() - 1;
            self.alphas_cumprod[(t as usize).min(last)]
        }
    }

    fn alpha_at_index(&self, step_index: usize) -> CandleResult<f64> {
        Ok(self.alpha_at(at(&self.timesteps, step_index, "timesteps")? as i64))
    }
}

impl Scheduler for Ddim {
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
        let a_prev = self.alpha_at(t - self.step_ratio);
        let (sqrt_a, sqrt_b) = (a_t.sqrt(), (1.0 - a_t).sqrt());

        let x = like_compute(sample, sample)?;
        let out = like_compute(model_output, sample)?;
        // x_t = sqrt(a) x0 + sqrt(1-a) eps; v = sqrt(a) eps - sqrt(1-a) x0.
        let (x0, eps) = match self.prediction {
            Prediction::Epsilon => (((&x - (&out * sqrt_b)?)? / sqrt_a)?, out),
            Prediction::V => (
                ((&x * sqrt_a)? - (&out * sqrt_b)?)?,
                ((&out * sqrt_a)? + (&x * sqrt_b)?)?,
            ),
            Prediction::Sample => {
                let eps = ((&x - (&out * sqrt_a)?)? / sqrt_b)?;
                (out, eps)
            }
        };
        // diffusers clips x0 only; eps stays as predicted (use_clipped_model_output = false).
        let x0 = match self.clip {
            Some(r) => x0.clamp(-r, r)?,
            None => x0,
        };
        // sigma_t of eq. 16: eta * sqrt((1 - a_prev)/(1 - a_t) * (1 - a_t/a_prev)).
        let variance = (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev);
        let std_dev = self.eta * variance.max(0.0).sqrt();
        // "direction pointing to x_t": sqrt(1 - a_prev - sigma_t^2) * eps.
        let direction = (eps * (1.0 - a_prev - std_dev * std_dev).max(0.0).sqrt())?;
        self.pred_original = Some(x0.clone());
        let mut prev = ((x0 * a_prev.sqrt())? + direction)?;
        if std_dev > 0.0 {
            let z = like_compute(&noise.sample_like(&prev)?, &prev)?;
            prev = (prev + (z * std_dev)?)?;
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
        let a = self.alpha_at_index(step_index)?;
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

    fn ddim(cfg: &SchedulerConfig, n: usize, eta: f64) -> Ddim {
        let prediction = Prediction::parse(&cfg.prediction_type).unwrap();
        Ddim::new(cfg, alphas_cumprod(cfg).unwrap(), prediction, n, eta).unwrap()
    }

    fn step(s: &mut Ddim, i: usize) -> Vec<f64> {
        values(
            &s.step(&tensor(&OUT), i, &tensor(&X), &mut ConstNoise::new(0.0))
                .unwrap(),
        )
    }

    #[test]
    fn sd15_timesteps() {
        let cfg = sd15();
        // Default spacing for DDIM is leading: 1000 // 20 = 50, 950 + 1 down to 0 + 1.
        let s = build(SchedulerKind::Ddim, &cfg, 20).unwrap();
        let want: Vec<f64> = (0..20).rev().map(|i| (50 * i + 1) as f64).collect();
        assert_eq!(s.timesteps(), want.as_slice());
        assert_eq!(s.init_noise_sigma(), 1.0);

        let mut trailing = cfg.clone();
        trailing.timestep_spacing = Some("trailing".into());
        let s = build(SchedulerKind::Ddim, &trailing, 4).unwrap();
        assert_eq!(s.timesteps(), &[999.0, 749.0, 499.0, 249.0]);

        let mut lin = cfg;
        lin.timestep_spacing = Some("linspace".into());
        let s = build(SchedulerKind::Ddim, &lin, 5).unwrap();
        // round(linspace(0, 999, 5)) reversed, half to even.
        assert_eq!(s.timesteps(), &[999.0, 749.0, 500.0, 250.0, 0.0]);
    }

    /// Expected values: numpy float64 with acp = cumprod(1 - linspace(sqrt(0.00085),
    /// sqrt(0.012), 1000)**2), x = X, o = OUT, and diffusers' DDIM formulas:
    ///   epsilon: x0 = (x - sqrt(1-at) o)/sqrt(at), e = o
    ///   v:       x0 = sqrt(at) x - sqrt(1-at) o,  e = sqrt(at) o + sqrt(1-at) x
    ///   prev = sqrt(ap) x0 + sqrt(1-ap) e
    #[test]
    fn one_step_matches_the_formula() {
        let mut cfg = sd15();
        // Step 0 of 20: t = 951, prev_t = 901 (at = 0.0081550045674304, ap = 0.014004897893943923).
        let mut s = ddim(&cfg, 20, 0.0);
        let want = [1.747206974, -0.280662044, 0.296403581, 2.620944742];
        assert_close(&step(&mut s, 0), &want, 2e-6, "epsilon, t=951");
        // Step 19: t = 1, prev_t = -49 < 0 -> ap = acp[0] = 0.99915 (set_alpha_to_one false).
        let want = [1.492141972, -0.485643304, 0.248892697, 2.000855247];
        assert_close(&step(&mut s, 19), &want, 2e-6, "epsilon, t=1");

        cfg.prediction_type = "v_prediction".into();
        let mut s = ddim(&cfg, 20, 0.0);
        let want = [1.479672148, -0.465975374, 0.247081829, 1.999205263];
        assert_close(&step(&mut s, 0), &want, 2e-6, "v, t=951");
        let want = [1.491397393, -0.485405115, 0.248768428, 1.999852815];
        assert_close(&step(&mut s, 19), &want, 2e-6, "v, t=1");
    }

    /// diffusers steps to t - T // n whatever the spacing: with linspace over
    /// 10 steps the timesteps are 111 apart but the step lands 100 lower.
    #[test]
    fn prev_timestep_is_t_minus_integer_ratio() {
        let mut cfg = sd15();
        cfg.timestep_spacing = Some("linspace".into());
        let acp = alphas_cumprod(&cfg).unwrap();
        let mut s = ddim(&cfg, 10, 0.0);
        assert_eq!(&s.timesteps[..2], &[999.0, 888.0]);
        // Epsilon prediction with x = 1.5, o = 0.7: at = acp[999], ap = acp[899].
        let (a, p) = (acp[999], acp[899]);
        let got = values(
            &s.step(
                &tensor(&[0.7]),
                0,
                &tensor(&[1.5]),
                &mut ConstNoise::new(0.0),
            )
            .unwrap(),
        );
        let x0 = (1.5 - (1.0 - a).sqrt() * 0.7f32 as f64) / a.sqrt();
        let want = p.sqrt() * x0 + (1.0 - p).sqrt() * 0.7f32 as f64;
        assert_close(&got, &[want], 1e-5, "linspace prev_t");
    }

    #[test]
    fn sample_prediction_and_clipping() {
        let mut cfg = sd15();
        cfg.prediction_type = "sample".into();
        cfg.clip_sample = Some(true);
        cfg.clip_sample_range = 1.0;
        let acp = alphas_cumprod(&cfg).unwrap();
        let (a, p) = (acp[951], acp[901]);
        let mut s = ddim(&cfg, 20, 0.0);
        let x = [3.0f32];
        let o = [1.7f32]; // x0 predicted 1.7, clipped to 1.0; eps from the unclipped x0.
        let got = values(
            &s.step(&tensor(&o), 0, &tensor(&x), &mut ConstNoise::new(0.0))
                .unwrap(),
        );
        let eps = (3.0 - a.sqrt() * 1.7f32 as f64) / (1.0 - a).sqrt();
        let want = p.sqrt() * 1.0 + (1.0 - p).sqrt() * eps;
        assert_close(&got, &[want], 1e-5, "sample + clip");
    }

    /// If the model returns the true eps (or v) of x_t = sqrt(a) x0 + sqrt(1-a) eps
    /// at every step, DDIM lands exactly on x0 when the schedule ends at alpha = 1:
    /// any sign or scale slip breaks this. (Not with linspace spacing: there
    /// diffusers' prev_t = t - T // n is not the next timestep, see below.)
    #[test]
    fn a_perfect_model_recovers_the_clean_sample() {
        let x0 = tensor(&[0.5, -0.25, 0.8, -1.0]);
        let eps = tensor(&[1.0, -0.5, 0.3, 2.0]);
        for prediction in ["epsilon", "v_prediction"] {
            for spacing in ["leading", "trailing"] {
                let mut cfg = sd15();
                cfg.set_alpha_to_one = true;
                cfg.prediction_type = prediction.into();
                cfg.timestep_spacing = Some(spacing.into());
                let acp = alphas_cumprod(&cfg).unwrap();
                let mut s = build(SchedulerKind::Ddim, &cfg, 10).unwrap();
                let mut x = s.add_noise(&x0, &eps, 0).unwrap();
                for i in 0..s.timesteps().len() {
                    let a = acp[s.timesteps()[i] as usize];
                    let out = match prediction {
                        "epsilon" => eps.clone(),
                        _ => ((&eps * a.sqrt()).unwrap() - (&x0 * (1.0 - a).sqrt()).unwrap())
                            .unwrap(),
                    };
                    x = s.step(&out, i, &x, &mut ConstNoise::new(0.0)).unwrap();
                }
                assert_close(
                    &values(&x),
                    &values(&x0),
                    1e-4,
                    &format!("{prediction}/{spacing}"),
                );
            }
        }
    }

    #[test]
    fn add_noise_matches_the_formula() {
        // t = 951: sqrt(acp) x + sqrt(1 - acp) n, numpy float64 with n below.
        let s = build(SchedulerKind::Ddim, &sd15(), 20).unwrap();
        let n = tensor(&[0.3, -0.7, 1.1, 0.05]);
        let got = values(&s.add_noise(&tensor(&X), &n, 0).unwrap());
        let want = [0.434231841, -0.742292437, 1.118081832, 0.230405835];
        assert_close(&got, &want, 2e-6, "add_noise");
    }

    #[test]
    fn eta_adds_scaled_noise() {
        // eta = 1, step 0 (t 951 -> 901), constant noise 0.5:
        // std = sqrt((1-ap)/(1-at) * (1 - at/ap)); prev = sqrt(ap) x0 + sqrt(1-ap-std^2) e + std * 0.5.
        let cfg = sd15();
        let acp = alphas_cumprod(&cfg).unwrap();
        let (a, p) = (acp[951], acp[901]);
        let std = ((1.0 - p) / (1.0 - a) * (1.0 - a / p)).sqrt();
        let mut s = ddim(&cfg, 20, 1.0);
        let mut noise = ConstNoise::new(0.5);
        let got = values(&s.step(&tensor(&OUT), 0, &tensor(&X), &mut noise).unwrap());
        assert_eq!(noise.calls, 1);
        let want: Vec<f64> = X
            .iter()
            .zip(OUT)
            .map(|(&x, o)| {
                let (x, o) = (x as f64, o as f64);
                let x0 = (x - (1.0 - a).sqrt() * o) / a.sqrt();
                p.sqrt() * x0 + (1.0 - p - std * std).sqrt() * o + std * 0.5
            })
            .collect();
        assert_close(&got, &want, 1e-5, "eta = 1");
        // eta = 0 draws no noise at all.
        let mut s = ddim(&cfg, 20, 0.0);
        let mut noise = ConstNoise::new(0.5);
        s.step(&tensor(&OUT), 0, &tensor(&X), &mut noise).unwrap();
        assert_eq!(noise.calls, 0);
    }

    /// Candle's DDIM adds f32 noise to f16 latents and fails; ours keeps f16.
    #[test]
    fn half_precision_stays_half_with_eta() {
        let cfg = sd15();
        for dtype in [DType::F16, DType::BF16] {
            let mut s = ddim(&cfg, 10, 1.0);
            let x = tensor(&X).to_dtype(dtype).unwrap();
            let o = tensor(&OUT).to_dtype(dtype).unwrap();
            let out = s.step(&o, 0, &x, &mut ConstNoise::new(1.0)).unwrap();
            assert_eq!(out.dtype(), dtype);
            assert!(values(&out).iter().all(|v| v.is_finite()));
            let noisy = s.add_noise(&x, &tensor(&OUT), 0).unwrap();
            assert_eq!(noisy.dtype(), dtype);
        }
    }

    #[test]
    fn invalid_parameters_are_errors() {
        let cfg = sd15();
        let acp = alphas_cumprod(&cfg).unwrap();
        assert!(Ddim::new(&cfg, acp.clone(), Prediction::Epsilon, 10, -1.0).is_err());
        assert!(Ddim::new(&cfg, acp.clone(), Prediction::Epsilon, 0, 0.0).is_err());
        let mut clip = cfg.clone();
        clip.clip_sample = Some(true);
        clip.clip_sample_range = 0.0;
        assert!(Ddim::new(&clip, acp, Prediction::Epsilon, 10, 0.0).is_err());
    }
}
