//! Latent consistency models (Luo et al. 2023, "Latent Consistency Models"),
//! following diffusers' `LCMScheduler`: the model's x0 prediction passes
//! through the consistency boundary condition,
//! denoised = c_out(t) x0 + c_skip(t) x, where
//! c_skip = sd^2 / ((t s)^2 + sd^2) and c_out = t s / sqrt((t s)^2 + sd^2)
//! (sd = sigma_data = 0.5, s = timestep_scaling), and every step but the last
//! re-noises `denoised` to the next timestep with fresh noise from the job's
//! [`NoiseSource`]. For LCM-distilled UNets and LCM-LoRAs, with 1 to 8 steps
//! and guidance around 1 to 2.

use anyhow::{bail, Result};
use candle_core::{Result as CandleResult, Tensor};

use super::{
    at, like_compute, noise_to_alpha, NoiseSource, Prediction, Scheduler, SchedulerConfig,
};

/// sigma_data of the consistency parameterisation (diffusers' fixed 0.5).
const SIGMA_DATA: f64 = 0.5;

pub struct Lcm {
    /// The last step's estimate of the clean sample (`pred_original_sample`).
    pred_original: Option<Tensor>,
    timesteps: Vec<f64>,
    alphas_cumprod: Vec<f64>,
    prediction: Prediction,
    clip: Option<f64>,
    timestep_scaling: f64,
}

impl Lcm {
    pub fn new(
        cfg: &SchedulerConfig,
        alphas_cumprod: Vec<f64>,
        prediction: Prediction,
        n: usize,
    ) -> Result<Self> {
        let train = cfg.num_train_timesteps;
        let original = cfg.original_inference_steps;
        if original == 0 || original > train || alphas_cumprod.len() != train {
            bail!(
                "scheduler config: original_inference_steps must be between 1 and num_train_timesteps ({train}), got {original}"
            );
        }
        if n == 0 || n > original {
            bail!(
                "lcm: takes 1 to {original} steps (the model's original_inference_steps), got {n}"
            );
        }
        if !cfg.timestep_scaling.is_finite() {
            bail!("scheduler config: timestep_scaling must be finite");
        }
        // The distillation schedule: k - 1, 2k - 1, ..., original * k - 1 with k = T // original,
        // noisiest first; n of them at indices floor(linspace(0, original, n, endpoint=False)).
        let k = train / original;
        let origin: Vec<usize> = (1..=original).rev().map(|i| i * k - 1).collect();
        let timesteps = (0..n).map(|j| origin[j * original / n] as f64).collect();
        Ok(Self {
            pred_original: None,
            timesteps,
            alphas_cumprod,
            prediction,
            // LCMScheduler's clip_sample default is false.
            clip: cfg.clip_range(false)?,
            timestep_scaling: cfg.timestep_scaling,
        })
    }

    /// (c_skip, c_out) at training timestep `t`.
    fn boundary_scalings(&self, t: f64) -> (f64, f64) {
        let st = t * self.timestep_scaling;
        let d = st * st + SIGMA_DATA * SIGMA_DATA;
        (SIGMA_DATA * SIGMA_DATA / d, st / d.sqrt())
    }

    fn alpha_at(&self, t: f64) -> f64 {
        self.alphas_cumprod[(t as usize).min(self.alphas_cumprod.len() - 1)]
    }
}

impl Scheduler for Lcm {
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
        let t = at(&self.timesteps, step_index, "timesteps")?;
        let a_t = self.alpha_at(t);
        let x = like_compute(sample, sample)?;
        let out = like_compute(model_output, sample)?;
        let (sqrt_a, sqrt_b) = (a_t.sqrt(), (1.0 - a_t).sqrt());
        let x0 = match self.prediction {
            Prediction::Epsilon => ((&x - (&out * sqrt_b)?)? / sqrt_a)?,
            Prediction::V => ((&x * sqrt_a)? - (&out * sqrt_b)?)?,
            Prediction::Sample => out,
        };
        let x0 = match self.clip {
            Some(r) => x0.clamp(-r, r)?,
            None => x0,
        };
        let (c_skip, c_out) = self.boundary_scalings(t);
        // LCM's estimate of the clean sample is `denoised` (diffusers' LCMSchedulerOutput.denoised).
        let denoised = ((x0 * c_out)? + (x * c_skip)?)?;
        self.pred_original = Some(denoised.clone());
        let prev = match self.timesteps.get(step_index + 1) {
            // Re-noise to the next timestep: sqrt(a_prev) denoised + sqrt(1 - a_prev) z.
            Some(&t_prev) => {
                let a_prev = self.alpha_at(t_prev);
                let z = like_compute(&noise.sample_like(&denoised)?, &denoised)?;
                ((denoised * a_prev.sqrt())? + (z * (1.0 - a_prev).sqrt())?)?
            }
            None => denoised,
        };
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
        let a = self.alpha_at(at(&self.timesteps, step_index, "timesteps")?);
        noise_to_alpha(original, noise, a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::test_util::{assert_close, sd15, tensor, values, ConstNoise};
    use crate::scheduler::{build, SchedulerKind};
    use candle_core::DType;

    const X: [f32; 4] = [1.5, -0.5, 0.25, 2.0];
    const OUT: [f32; 4] = [0.7, -1.2, 0.1, 0.0];

    #[test]
    fn timesteps_match_diffusers() {
        // diffusers 0.31 LCMScheduler (original_inference_steps 50), set_timesteps(n).
        let cases: [(usize, &[f64]); 4] = [
            (1, &[999.0]),
            (2, &[999.0, 499.0]),
            (4, &[999.0, 759.0, 499.0, 259.0]),
            (8, &[999.0, 879.0, 759.0, 639.0, 499.0, 379.0, 259.0, 139.0]),
        ];
        for (n, want) in cases {
            let s = build(SchedulerKind::Lcm, &sd15(), n).unwrap();
            assert_eq!(s.timesteps(), want, "{n} steps");
            assert_eq!(s.init_noise_sigma(), 1.0);
        }
        // 50 steps: every distillation timestep, 999 down to 19.
        let s = build(SchedulerKind::Lcm, &sd15(), 50).unwrap();
        let want: Vec<f64> = (1..=50).rev().map(|i| (i * 20 - 1) as f64).collect();
        assert_eq!(s.timesteps(), want.as_slice());
        let err = build(SchedulerKind::Lcm, &sd15(), 51).err().unwrap();
        assert!(format!("{err:#}").contains("got 51"), "{err:#}");
    }

    /// Expected values: diffusers 0.31 (float32) `LCMScheduler.from_config(SD 1.5
    /// config, prediction_type=..)`, `set_timesteps(4)`, `set_begin_index(i)`,
    /// `step(OUT, timesteps[i], X)` with the noise replaced by 0.5 everywhere
    /// (`randn_tensor` patched). Formulas: x0 as DDIM's; c_skip = 0.25 / ((10 t)^2 +
    /// 0.25), c_out = 10 t / sqrt((10 t)^2 + 0.25); denoised = c_out x0 + c_skip x;
    /// prev = sqrt(ap) denoised + sqrt(1 - ap) 0.5 with ap at the next timestep.
    #[test]
    fn one_step_matches_diffusers() {
        let cases = [
            (
                "epsilon",
                0,
                [3.17005849, 2.82049513, 0.989644051, 7.18132305],
            ),
            // The last step returns `denoised` and draws no noise.
            (
                "epsilon",
                3,
                [1.34424126, 0.24732022, 0.236029908, 2.46374321],
            ),
            (
                "v_prediction",
                1,
                [0.246459439, 0.980349541, 0.403751761, 0.665764868],
            ),
            (
                "sample",
                2,
                [0.860227704, -0.682140946, 0.373163909, 0.291986644],
            ),
        ];
        for (prediction, i, want) in cases {
            let mut cfg = sd15();
            cfg.prediction_type = prediction.into();
            let mut s = build(SchedulerKind::Lcm, &cfg, 4).unwrap();
            let mut noise = ConstNoise::new(0.5);
            let got = s.step(&tensor(&OUT), i, &tensor(&X), &mut noise).unwrap();
            assert_close(
                &values(&got),
                &want,
                2e-6,
                &format!("{prediction} step {i}"),
            );
            assert_eq!(noise.calls, usize::from(i != 3));
        }
    }

    #[test]
    fn boundary_condition_scalings() {
        let s = Lcm::new(&sd15(), vec![0.5; 1000], Prediction::Epsilon, 4).unwrap();
        // t = 0: c_skip = 1, c_out = 0 (the identity at the boundary).
        assert_eq!(s.boundary_scalings(0.0), (1.0, 0.0));
        // t = 999: (9990)^2 = 99800100; c_skip = 0.25 / 99800100.25, c_out = 9990 / sqrt(99800100.25).
        let (skip, out) = s.boundary_scalings(999.0);
        assert!((skip - 2.5050075037374525e-9).abs() < 1e-20, "{skip}");
        assert!((out - 0.9999999987474963).abs() < 1e-15, "{out}");
    }

    #[test]
    fn add_noise_matches_diffusers() {
        // diffusers 0.31: add_noise(X, n, timesteps[1:2]) at t = 759.
        let s = build(SchedulerKind::Lcm, &sd15(), 4).unwrap();
        let n = tensor(&[0.3, -0.7, 1.1, 0.05]);
        let got = values(&s.add_noise(&tensor(&X), &n, 1).unwrap());
        let want = [0.634815216, -0.795731246, 1.12802327, 0.505680025];
        assert_close(&got, &want, 2e-6, "add_noise");
    }

    #[test]
    fn half_precision_stays_half() {
        let mut s = build(SchedulerKind::Lcm, &sd15(), 4).unwrap();
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
