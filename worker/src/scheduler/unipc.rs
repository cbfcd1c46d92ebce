//! UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework
//! for Fast Sampling of Diffusion Models"), following diffusers'
//! `UniPCMultistepScheduler` defaults: data prediction (predict_x0), B(h) =
//! e^h - 1 ("bh2"; "bh1" is B(h) = h), solver order 2, lower_order_final.
//! Each step first corrects the sample the previous step produced with the
//! new model output (UniC), then predicts the next one (UniP); both use the
//! exponential-integrator coefficients of the paper in lambda = log(alpha/sigma).
//! Timesteps, sigmas and `add_noise` are DPM-Solver++'s ([`VpSchedule`]).

use anyhow::{bail, Result};
use candle_core::{Result as CandleResult, Tensor};

use super::dpmpp_2m::VpSchedule;
use super::{at, like_compute, NoiseSource, Prediction, Scheduler, SchedulerConfig};

/// The order-2 coefficients of step size h: (h phi_1(-h) = e^-h - 1, B(h), b1, b2)
/// where b_k = (k-1)! h phi_k(-h) / B(h) (diffusers' loop over `factorial_i`).
fn coefficients(h: f64, bh1: bool) -> (f64, f64, f64, f64) {
    let hh = -h;
    let h_phi_1 = hh.exp_m1();
    let b_h = if bh1 { hh } else { hh.exp_m1() };
    let h_phi_2 = h_phi_1 / hh - 1.0;
    let h_phi_3 = h_phi_2 / hh - 0.5;
    (h_phi_1, b_h, h_phi_2 / b_h, h_phi_3 * 2.0 / b_h)
}

pub struct UniPc {
    /// The last step's estimate of the clean sample (`pred_original_sample`).
    pred_original: Option<Tensor>,
    schedule: VpSchedule,
    bh1: bool,
    lower_order_final: bool,
    disable_corrector: Vec<usize>,
    /// x0 predictions of the last (up to) two steps, oldest first, with their indices.
    history: Vec<(usize, Tensor)>,
    /// The previous step: its index, the (corrected) sample it started from, and its order.
    last: Option<(usize, Tensor, usize)>,
    /// Steps taken so far in this run, at most 2 (diffusers' warm-up counter).
    lower_order_nums: usize,
}

impl UniPc {
    pub fn new(
        cfg: &SchedulerConfig,
        alphas_cumprod: &[f64],
        prediction: Prediction,
        n: usize,
        karras: bool,
    ) -> Result<Self> {
        let bh1 = match cfg.solver_type.as_deref() {
            // diffusers maps DPM-Solver's solver types to bh2.
            None | Some("bh2") | Some("midpoint") | Some("heun") | Some("logrho") => false,
            Some("bh1") => true,
            Some(other) => bail!(
                "scheduler config: unknown solver_type `{other}` for unipc (expected bh1 or bh2)"
            ),
        };
        if !cfg.predict_x0 {
            bail!("scheduler config: unipc with predict_x0 = false is not supported");
        }
        Ok(Self {
            pred_original: None,
            schedule: VpSchedule::new(cfg, alphas_cumprod, prediction, n, karras)?,
            bh1,
            lower_order_final: cfg.lower_order_final,
            disable_corrector: cfg.disable_corrector.clone(),
            history: Vec::with_capacity(2),
            last: None,
            lower_order_nums: 0,
        })
    }

    /// x0 prediction of step `index` from the history.
    fn x0_at(&self, index: usize) -> CandleResult<&Tensor> {
        self.history
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, m)| m)
            .ok_or_else(|| {
                candle_core::Error::Msg(format!("unipc: no model output of step {index}"))
            })
    }

    /// UniC: corrects x_i, which step i-1 predicted from `last_sample` with
    /// `order`, using this step's x0 prediction `m_t`.
    fn correct(
        &self,
        m_t: &Tensor,
        last_sample: &Tensor,
        order: usize,
        i: usize,
    ) -> CandleResult<Tensor> {
        let sigmas = &self.schedule.sigmas;
        let (alpha_t, sigma_t) = VpSchedule::alpha_sigma(sigmas[i]);
        let (_, sigma_s0) = VpSchedule::alpha_sigma(sigmas[i - 1]);
        let lambda_s0 = VpSchedule::lambda(sigmas[i - 1]);
        let h = VpSchedule::lambda(sigmas[i]) - lambda_s0;
        let (h_phi_1, b_h, b1, b2) = coefficients(h, self.bh1);
        let m0 = self.x0_at(i - 1)?;
        let x_t = ((last_sample * (sigma_t / sigma_s0))? - (m0 * (alpha_t * h_phi_1))?)?;
        let d1_t = (m_t - m0)?;
        let correction = if order >= 2 {
            // rhos_c solves [[1, 1], [r, 1]] rho = [b1, b2].
            let r = (VpSchedule::lambda(sigmas[i - 2]) - lambda_s0) / h;
            let d1 = ((self.x0_at(i - 2)? - m0)? * (1.0 / r))?;
            let rho0 = (b1 - b2) / (1.0 - r);
            let rho1 = b1 - rho0;
            ((d1 * rho0)? + (d1_t * rho1)?)?
        } else {
            (d1_t * 0.5)?
        };
        x_t - (correction * (alpha_t * b_h))?
    }

    /// UniP: predicts x_{i+1} from x_i (corrected) with the given order.
    fn predict(&self, x: &Tensor, order: usize, i: usize) -> CandleResult<Tensor> {
        let sigmas = &self.schedule.sigmas;
        let (alpha_t, sigma_t) = VpSchedule::alpha_sigma(sigmas[i + 1]);
        let (_, sigma_s0) = VpSchedule::alpha_sigma(sigmas[i]);
        let lambda_s0 = VpSchedule::lambda(sigmas[i]);
        let h = VpSchedule::lambda(sigmas[i + 1]) - lambda_s0;
        let (h_phi_1, b_h, _, _) = coefficients(h, self.bh1);
        let m0 = self.x0_at(i)?;
        // At sigma 0 (h = inf): sigma_t = 0 and h_phi_1 = -1, so this is x0.
        let x_t = ((x * (sigma_t / sigma_s0))? - (m0 * (alpha_t * h_phi_1))?)?;
        if order < 2 {
            return Ok(x_t);
        }
        // rhos_p = [0.5] at order 2.
        let r = (VpSchedule::lambda(sigmas[i - 1]) - lambda_s0) / h;
        let d1 = ((self.x0_at(i - 1)? - m0)? * (1.0 / r))?;
        x_t - (d1 * (alpha_t * b_h * 0.5))?
    }
}

impl Scheduler for UniPc {
    fn timesteps(&self) -> &[f64] {
        &self.schedule.timesteps
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        _noise: &mut dyn NoiseSource,
    ) -> CandleResult<Tensor> {
        let i = step_index;
        let n = self.schedule.len();
        at(&self.schedule.timesteps, i, "timesteps")?;
        // A run that does not continue the previous step (image to image starting
        // later, or a fresh run) starts without history, as diffusers' does.
        let last = match self.last.take() {
            Some(last) if last.0 + 1 == i => Some(last),
            _ => {
                self.history.clear();
                self.lower_order_nums = 0;
                None
            }
        };
        let x = like_compute(sample, sample)?;
        let out = like_compute(model_output, sample)?;
        let m_t = self.schedule.predict_x0(&out, &x, i)?;
        self.pred_original = Some(m_t.clone());
        let x = match &last {
            Some((_, last_sample, order)) if !self.disable_corrector.contains(&(i - 1)) => {
                self.correct(&m_t, last_sample, *order, i)?
            }
            _ => x,
        };
        if self.history.len() == 2 {
            self.history.remove(0);
        }
        self.history.push((i, m_t));
        let mut order = if self.lower_order_final {
            2.min(n - i)
        } else {
            2
        };
        order = order.min(self.lower_order_nums + 1);
        // Ending at sigma 0 the second-order term divides by lambda = inf (NaN in
        // diffusers without lower_order_final); the exact step there is first order.
        if self.schedule.sigmas[i + 1] == 0.0 {
            order = 1;
        }
        let prev = self.predict(&x, order, i)?;
        self.last = Some((i, x, order));
        self.lower_order_nums = (self.lower_order_nums + 1).min(2);
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
    use crate::scheduler::dpmpp_2m::tests::{run, OUT, X};
    use crate::scheduler::test_util::{assert_close, sd15, tensor, values, ConstNoise};
    use crate::scheduler::{build, SchedulerKind};
    use candle_core::DType;

    #[test]
    fn shares_dpm_solver_timesteps() {
        // diffusers 0.31 UniPCMultistepScheduler.from_config(SD 1.5), set_timesteps(10):
        // the same timesteps and sigmas as DPMSolverMultistepScheduler.
        let u = build(SchedulerKind::UniPc, &sd15(), 10).unwrap();
        let d = build(SchedulerKind::DpmPp2m, &sd15(), 10).unwrap();
        assert_eq!(u.timesteps(), d.timesteps());
        assert_eq!(u.init_noise_sigma(), 1.0);
        let n = tensor(&[0.3, -0.7, 1.1, 0.05]);
        assert_eq!(
            values(&u.add_noise(&tensor(&X), &n, 3).unwrap()),
            values(&d.add_noise(&tensor(&X), &n, 3).unwrap())
        );
    }

    /// Expected values: diffusers 0.31 (float32), `UniPCMultistepScheduler.from_config(
    /// SD 1.5 config, prediction_type=.., **options)`, `set_timesteps(n)`,
    /// `set_begin_index(start)`, then four `step(OUT * k, timesteps[start + j], x)` with
    /// k = 1.0, 0.8, 1.3, 0.5, each prev_sample fed back as x, from x = X.
    /// Step 0: order-1 predictor; step 1: order-1 corrector, order-2 predictor;
    /// then order-2 corrector and predictor; order 1 again on the last step.
    #[test]
    fn steps_match_diffusers() {
        // (prediction_type, option, n, start index, sample after each of the 4 steps)
        type Case = (&'static str, &'static str, usize, usize, [[f64; 4]; 4]);
        let cases: [Case; 7] = [
            (
                "epsilon",
                "",
                10,
                0,
                [
                    [2.09916806, 0.0298703611, 0.362440526, 3.50332546],
                    [3.10567498, 0.528126001, 0.54456687, 5.65034246],
                    [4.03751802, 1.82730937, 0.727629244, 8.44708729],
                    [5.67203712, 2.4803896, 1.02070284, 11.7830582],
                ],
            ),
            (
                "v_prediction",
                "",
                10,
                0,
                [
                    [1.46194172, -0.437508315, 0.244515672, 1.99734378],
                    [1.42882609, -0.380301476, 0.239792407, 1.9977659],
                    [1.3085078, -0.175140932, 0.222585142, 1.99670446],
                    [1.33065212, -0.213983864, 0.225733429, 1.99585366],
                ],
            ),
            // Image to image from index 6 on Karras sigmas (UniPC's own config flag).
            (
                "epsilon",
                "karras",
                10,
                6,
                [
                    [1.44216585, -0.24805671, 0.244372442, 2.14753008],
                    [1.41207123, -0.159378111, 0.240712672, 2.18333936],
                    [1.35785568, -0.059829019, 0.233081564, 2.18971992],
                    [1.34822452, -0.0423539467, 0.23172234, 2.19065118],
                ],
            ),
            (
                "epsilon",
                "sigma_min",
                20,
                16,
                [
                    [1.49840868, -0.397805691, 0.251487613, 2.09603643],
                    [1.51184583, -0.335439801, 0.254879653, 2.17849255],
                    [1.4157232, -0.0994252488, 0.24237597, 2.24726892],
                    [1.38645399, 0.00822213665, 0.239185542, 2.30275893],
                ],
            ),
            // disable_corrector = [1]: step 2 skips its corrector.
            (
                "epsilon",
                "no_corrector_1",
                10,
                0,
                [
                    [2.09916806, 0.0298703611, 0.362440526, 3.50332546],
                    [3.10567498, 0.528126001, 0.54456687, 5.65034246],
                    [4.11693144, 1.69117165, 0.738974035, 8.44708729],
                    [5.81031656, 2.24333835, 1.04045713, 11.7830582],
                ],
            ),
            (
                "epsilon",
                "bh1",
                10,
                0,
                [
                    [2.09916806, 0.0298703611, 0.362440526, 3.50332546],
                    [3.12480235, 0.495336354, 0.547299325, 5.65034294],
                    [4.05080223, 1.80453646, 0.729526997, 8.44708824],
                    [5.70923615, 2.4166193, 1.02601719, 11.7830601],
                ],
            ),
            // Four steps of four: the last lands on x0 = OUT * 0.5.
            (
                "sample",
                "",
                4,
                0,
                [
                    [1.58036864, -0.692570746, 0.260536492, 1.94709361],
                    [1.53520024, -0.865515292, 0.24976705, 1.70535135],
                    [1.57834709, -1.51988363, 0.245923936, 1.14496291],
                    [0.349999994, -0.600000024, 0.0500000007, 0.0],
                ],
            ),
        ];
        for (prediction, option, n, start, want) in cases {
            let mut cfg = sd15();
            cfg.prediction_type = prediction.into();
            match option {
                "karras" => {
                    cfg.use_karras_sigmas = true;
                    cfg.class_name = Some("UniPCMultistepScheduler".into());
                }
                "sigma_min" => cfg.final_sigmas_type = "sigma_min".into(),
                "no_corrector_1" => cfg.disable_corrector = vec![1],
                "bh1" => cfg.solver_type = Some("bh1".into()),
                _ => {}
            }
            let got = run(SchedulerKind::UniPc, &cfg, n, start, &[1.0, 0.8, 1.3, 0.5]);
            for (j, w) in want.iter().enumerate() {
                let what = format!("{prediction} {option} n={n} step {}", start + j);
                assert_close(&got[j], w, 2e-6 * (1.0 + w[3].abs()), &what);
            }
        }
    }

    #[test]
    fn coefficients_by_hand() {
        // h = 0.5: e^-0.5 - 1 = -0.39346934; bh2 B = the same; phi_2 term
        // (-0.39346934 / -0.5 - 1) = -0.21306132, b1 = 0.54149408;
        // phi_3 term (-0.21306132 / -0.5 - 0.5) = -0.07387736, b2 = 0.37551775 (python math).
        let (p1, b, b1, b2) = coefficients(0.5, false);
        assert!((p1 + 0.393469340287).abs() < 1e-11);
        assert_eq!(b, p1);
        assert!((b1 - 0.541494082537).abs() < 1e-11, "{b1}");
        assert!((b2 - 0.3755177523896).abs() < 1e-11, "{b2}");
        // bh1: B(h) = -h.
        assert_eq!(coefficients(0.5, true).1, -0.5);
    }

    #[test]
    fn unsupported_options_are_errors() {
        let mut cfg = sd15();
        cfg.predict_x0 = false;
        assert!(build(SchedulerKind::UniPc, &cfg, 10).is_err());
        let mut cfg = sd15();
        cfg.solver_type = Some("bh3".into());
        let err = build(SchedulerKind::UniPc, &cfg, 10).err().unwrap();
        assert!(format!("{err:#}").contains("bh3"));
    }

    #[test]
    fn half_precision_stays_half_and_finite_to_the_end() {
        for dtype in [DType::F16, DType::BF16] {
            let mut s = build(SchedulerKind::UniPc, &sd15(), 5).unwrap();
            let mut x = tensor(&X).to_dtype(dtype).unwrap();
            for i in 0..5 {
                x = s
                    .step(&tensor(&OUT), i, &x, &mut ConstNoise::new(0.0))
                    .unwrap();
                assert_eq!(x.dtype(), dtype);
                assert!(values(&x).iter().all(|v| v.is_finite()), "{dtype:?} {i}");
            }
        }
    }
}
