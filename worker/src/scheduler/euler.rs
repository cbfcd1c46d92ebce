//! Euler discrete sampler (Karras et al. 2022, algorithm 2 without churn; via
//! k-diffusion), following diffusers' `EulerDiscreteScheduler`. It works in
//! sigma space, x = x0 + sigma * eps with sigma = sqrt((1 - acp) / acp), and
//! takes one explicit Euler step of the probability-flow ODE dx/dsigma = (x - x0) / sigma.
//!
//! [`SigmaSchedule`] is shared with the ancestral variant in `euler_ancestral.rs`.

use anyhow::Result;
use candle_core::{Result as CandleResult, Tensor};

use super::spacing::{timesteps, Linspace, Spacing};
use super::{at, like_compute, NoiseSource, Prediction, Scheduler, SchedulerConfig};

/// Timesteps, their sigmas, and the input scaling common to Euler and Euler-a
/// (diffusers' `set_timesteps`, `init_noise_sigma`, `scale_model_input`, `add_noise`).
pub(super) struct SigmaSchedule {
    pub timesteps: Vec<f64>,
    /// sigmas[i] belongs to timesteps[i]; one extra trailing 0.0 is the clean end.
    pub sigmas: Vec<f64>,
    pub init_noise_sigma: f64,
    pub prediction: Prediction,
}

impl SigmaSchedule {
    pub fn new(
        cfg: &SchedulerConfig,
        alphas_cumprod: &[f64],
        prediction: Prediction,
        n: usize,
    ) -> Result<Self> {
        // diffusers' Euler schedulers default to linspace, unlike DDIM.
        let spacing = Spacing::parse(cfg.timestep_spacing.as_deref(), Spacing::Linspace)?;
        let timesteps = timesteps(
            spacing,
            cfg.num_train_timesteps,
            n,
            cfg.steps_offset,
            Linspace::Fractional,
        );
        let train_sigmas: Vec<f64> = super::betas::with_finite_sigmas(alphas_cumprod)
            .iter()
            .map(|a| ((1.0 - a) / a).sqrt())
            .collect();
        // Fractional timesteps get linearly interpolated sigmas (np.interp over 0..T-1).
        let mut sigmas: Vec<f64> = timesteps
            .iter()
            .map(|&t| interp(&train_sigmas, t))
            .collect();
        let max = sigmas.iter().copied().fold(0.0, f64::max);
        sigmas.push(0.0);
        // diffusers' rule: linspace/trailing use sigma_max (k-diffusion's convention);
        // leading keeps the older sqrt(sigma_max^2 + 1), the standard deviation of
        // x0 + sigma * eps for unit-variance x0.
        let init_noise_sigma = match spacing {
            Spacing::Linspace | Spacing::Trailing => max,
            Spacing::Leading => (max * max + 1.0).sqrt(),
        };
        Ok(Self {
            timesteps,
            sigmas,
            init_noise_sigma,
            prediction,
        })
    }

    /// (sigma at step_index, sigma at the next step), errors past the last step.
    pub fn sigma_pair(&self, step_index: usize) -> CandleResult<(f64, f64)> {
        at(&self.timesteps, step_index, "timesteps")?;
        Ok((self.sigmas[step_index], self.sigmas[step_index + 1]))
    }

    /// The UNet was trained on variance-preserving inputs x_t = sqrt(acp) (x0 + sigma eps),
    /// and sqrt(acp) = 1 / sqrt(sigma^2 + 1).
    pub fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> CandleResult<Tensor> {
        let sigma = at(
            &self.sigmas[..self.timesteps.len()],
            step_index,
            "timesteps",
        )?;
        sample.affine(1.0 / (sigma * sigma + 1.0).sqrt(), 0.0)
    }

    /// diffusers' `pred_original_sample` in sigma space; `x` and `out` already in
    /// the compute dtype.
    ///   epsilon: x0 = x - sigma * eps
    ///   v:       x0 = v * (-sigma / sqrt(sigma^2 + 1)) + x / (sigma^2 + 1)
    ///   sample:  x0 = out
    pub fn predict_x0(&self, out: &Tensor, x: &Tensor, sigma: f64) -> CandleResult<Tensor> {
        match self.prediction {
            Prediction::Epsilon => x - (out * sigma)?,
            Prediction::V => {
                let s2 = sigma * sigma + 1.0;
                (out * (-sigma / s2.sqrt()))? + (x * (1.0 / s2))?
            }
            Prediction::Sample => Ok(out.clone()),
        }
    }

    /// x0 + sigma * noise (diffusers' Euler `add_noise`).
    pub fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        step_index: usize,
    ) -> CandleResult<Tensor> {
        let sigma = at(
            &self.sigmas[..self.timesteps.len()],
            step_index,
            "timesteps",
        )?;
        let x = like_compute(original, original)?;
        let n = like_compute(noise, original)?;
        (x + (n * sigma)?)?.to_dtype(original.dtype())
    }
}

/// numpy's `interp(t, arange(len), values)`: piecewise linear, clamped to the
/// end values outside [0, len-1].
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
    values[lo] + (values[lo + 1] - values[lo]) * frac
}

pub struct Euler {
    /// The last step's estimate of the clean sample (`pred_original_sample`).
    pred_original: Option<Tensor>,
    schedule: SigmaSchedule,
}

impl Euler {
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

impl Scheduler for Euler {
    fn timesteps(&self) -> &[f64] {
        &self.schedule.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        self.schedule.init_noise_sigma
    }

    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> CandleResult<Tensor> {
        self.schedule.scale_model_input(sample, step_index)
    }

    /// s_churn = 0 (diffusers' default), so sigma_hat = sigma and no noise is drawn.
    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        _noise: &mut dyn NoiseSource,
    ) -> CandleResult<Tensor> {
        let (sigma, next) = self.schedule.sigma_pair(step_index)?;
        let x = like_compute(sample, sample)?;
        let out = like_compute(model_output, sample)?;
        let x0 = self.schedule.predict_x0(&out, &x, sigma)?;
        // d = (x - x0) / sigma; x_next = x + d * (sigma_next - sigma).
        let derivative = ((&x - &x0)? * (1.0 / sigma))?;
        self.pred_original = Some(x0);
        (x + (derivative * (next - sigma))?)?.to_dtype(sample.dtype())
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
pub(super) mod tests {
    use super::*;
    use crate::scheduler::betas::alphas_cumprod;
    use crate::scheduler::test_util::{assert_close, sd15, tensor, values, ConstNoise};
    use crate::scheduler::{build, SchedulerKind};
    use candle_core::DType;

    pub const X: [f32; 4] = [1.5, -0.5, 0.25, 2.0];
    pub const OUT: [f32; 4] = [0.7, -1.2, 0.1, 0.0];

    pub fn schedule(cfg: &SchedulerConfig, n: usize) -> SigmaSchedule {
        let prediction = Prediction::parse(&cfg.prediction_type).unwrap();
        SigmaSchedule::new(cfg, &alphas_cumprod(cfg).unwrap(), prediction, n).unwrap()
    }

    #[test]
    fn interp_like_numpy() {
        let v = [1.0, 3.0, 7.0];
        assert_eq!(interp(&v, 0.5), 2.0);
        assert_eq!(interp(&v, 1.25), 4.0);
        assert_eq!(interp(&v, 2.0), 7.0);
        assert_eq!(interp(&v, 5.0), 7.0);
        assert_eq!(interp(&v, -1.0), 1.0);
    }

    #[test]
    fn sd15_linspace_timesteps_and_sigmas() {
        let cfg = sd15();
        let s = build(SchedulerKind::Euler, &cfg, 5).unwrap();
        // np.linspace(0, 999, 5)[::-1], not rounded.
        assert_eq!(s.timesteps(), &[999.0, 749.25, 499.5, 249.75, 0.0]);

        let s = schedule(&cfg, 20);
        assert_eq!(s.sigmas.len(), 21);
        assert_eq!(s.sigmas[20], 0.0);
        // numpy float64: sigma = sqrt((1 - acp) / acp) at t = 999 with
        // acp[999] = 0.0046600985130772384 -> 14.61464123 (k-diffusion's SD sigma_max).
        assert!((s.sigmas[0] - 14.61464123).abs() < 1e-7, "{}", s.sigmas[0]);
        // t = 946.42105263 is fractional; np.interp gives 10.74684399.
        assert!((s.sigmas[1] - 10.74684399).abs() < 1e-7, "{}", s.sigmas[1]);
        // t = 0: sqrt(0.00085 / 0.99915) = 0.02916715815.
        assert!(
            (s.sigmas[19] - 0.02916715815).abs() < 1e-10,
            "{}",
            s.sigmas[19]
        );
        // linspace: init_noise_sigma = max sigma.
        assert_eq!(s.init_noise_sigma, s.sigmas[0]);
    }

    #[test]
    fn init_noise_sigma_by_spacing() {
        let mut cfg = sd15();
        cfg.timestep_spacing = Some("leading".into());
        let s = schedule(&cfg, 20);
        // Leading: t0 = 950 + 1 = 951, np.interp -> sigma 11.02833116;
        // init = sqrt(11.02833116^2 + 1) = 11.07357613.
        assert_eq!(s.timesteps[0], 951.0);
        assert!((s.sigmas[0] - 11.02833116).abs() < 1e-7, "{}", s.sigmas[0]);
        assert!((s.init_noise_sigma - 11.07357613).abs() < 1e-7);

        cfg.timestep_spacing = Some("trailing".into());
        let s = schedule(&cfg, 20);
        // Trailing starts at 999 like linspace: init = sigma_max, no +1.
        assert!((s.init_noise_sigma - 14.61464123).abs() < 1e-7);
    }

    /// Expected values: numpy float64 on the SD 1.5 sigmas above with
    /// x = X, o = OUT: x0 per prediction_type, d = (x - x0) / s, prev = x + d * (s_next - s).
    #[test]
    fn one_step_matches_the_formula() {
        let cases = [
            // (prediction, step index, expected prev)
            // i = 0: s = 14.61464123, s_next = 10.74684399
            ("epsilon", 0, [-1.207458068, 4.141356689, -0.136779724, 2.0]),
            // i = 7: t = 630.947368 (fractional), s = 2.557166875, s_next = 2.115660806
            ("epsilon", 7, [1.190945752, 0.029807283, 0.205849393, 2.0]),
            (
                "v_prediction",
                0,
                [0.920047236, -0.051448727, 0.157741787, 1.473162172],
            ),
            (
                "v_prediction",
                7,
                [1.162812585, -0.232167484, 0.196482041, 1.700493605],
            ),
        ];
        for (prediction, i, want) in cases {
            let mut cfg = sd15();
            cfg.prediction_type = prediction.into();
            let mut s = build(SchedulerKind::Euler, &cfg, 20).unwrap();
            let mut noise = ConstNoise::new(3.0);
            let got = s.step(&tensor(&OUT), i, &tensor(&X), &mut noise).unwrap();
            assert_close(
                &values(&got),
                &want,
                5e-6,
                &format!("{prediction} step {i}"),
            );
            assert_eq!(noise.calls, 0, "Euler is deterministic");
        }
    }

    #[test]
    fn sample_prediction_steps_towards_the_prediction() {
        // x0 = o, so prev = x + (x - o) / s * (s_next - s) = o + (x - o) * s_next / s.
        let mut cfg = sd15();
        cfg.prediction_type = "sample".into();
        let sched = schedule(&cfg, 20);
        let (s, n) = (sched.sigmas[0], sched.sigmas[1]);
        let mut e = build(SchedulerKind::Euler, &cfg, 20).unwrap();
        let got = values(
            &e.step(&tensor(&OUT), 0, &tensor(&X), &mut ConstNoise::new(0.0))
                .unwrap(),
        );
        let want: Vec<f64> = X
            .iter()
            .zip(OUT)
            .map(|(&x, o)| o as f64 + (x as f64 - o as f64) * n / s)
            .collect();
        assert_close(&got, &want, 1e-5, "sample");
    }

    #[test]
    fn scale_model_input_and_add_noise_match_the_formula() {
        let s = build(SchedulerKind::Euler, &sd15(), 20).unwrap();
        // x / sqrt(14.61464123^2 + 1), numpy float64.
        let got = values(&s.scale_model_input(&tensor(&X), 0).unwrap());
        let want = [0.102397371, -0.034132457, 0.017066229, 0.136529828];
        assert_close(&got, &want, 1e-7, "scale_model_input");
        // x + 14.61464123 * n with n = [0.3, -0.7, 1.1, 0.05].
        let n = tensor(&[0.3, -0.7, 1.1, 0.05]);
        let got = values(&s.add_noise(&tensor(&X), &n, 0).unwrap());
        let want = [5.884392369, -10.730248861, 16.326105352, 2.730732061];
        assert_close(&got, &want, 1e-5, "add_noise");
    }

    /// With x = x0 + sigma * eps and a model that returns exactly that eps (or
    /// the matching v), every Euler step lands on x0 + sigma_next * eps, ending
    /// at x0 when sigma reaches 0: the round trip that catches sign/scale slips.
    #[test]
    fn a_perfect_model_recovers_the_clean_sample() {
        let x0 = tensor(&[0.5, -0.25, 0.8, -1.0]);
        let eps = tensor(&[1.0, -0.5, 0.3, 2.0]);
        for prediction in ["epsilon", "v_prediction"] {
            for spacing in ["linspace", "leading", "trailing"] {
                let mut cfg = sd15();
                cfg.prediction_type = prediction.into();
                cfg.timestep_spacing = Some(spacing.into());
                let sigmas = schedule(&cfg, 12).sigmas;
                let mut s = build(SchedulerKind::Euler, &cfg, 12).unwrap();
                let mut x = s.add_noise(&x0, &eps, 0).unwrap();
                for (i, &sigma) in sigmas[..12].iter().enumerate() {
                    let out = match prediction {
                        "epsilon" => eps.clone(),
                        // In the scaled (VP) space a = 1/(s^2+1):
                        // v = sqrt(a) eps - sqrt(1-a) x0 = (eps - s x0) / sqrt(s^2+1).
                        _ => ((&eps - (&x0 * sigma).unwrap()).unwrap()
                            * (1.0 / (sigma * sigma + 1.0).sqrt()))
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
    fn half_precision_stays_half() {
        let mut s = build(SchedulerKind::Euler, &sd15(), 20).unwrap();
        // Tolerance: the result is rounded once to 11 (f16) or 8 (bf16) mantissa bits.
        for (dtype, tol) in [(DType::F16, 4e-3), (DType::BF16, 3e-2)] {
            let x = tensor(&X).to_dtype(dtype).unwrap();
            // Model output in f32 while latents are f16: converted, not an error.
            let out = s
                .step(&tensor(&OUT), 0, &x, &mut ConstNoise::new(0.0))
                .unwrap();
            assert_eq!(out.dtype(), dtype);
            let want = [-1.207458068, 4.141356689, -0.136779724, 2.0];
            assert_close(&values(&out), &want, tol, &format!("{dtype:?} step"));
            assert_eq!(s.scale_model_input(&x, 0).unwrap().dtype(), dtype);
            assert_eq!(s.add_noise(&x, &tensor(&OUT), 0).unwrap().dtype(), dtype);
        }
    }
}
