//! Training noise schedule: betas -> alphas_cumprod, as diffusers builds it in
//! every scheduler's `__init__`. Computed in f64 (diffusers uses f32 tensors;
//! the difference is ~1e-7 relative and only makes ours more exact).

use anyhow::{bail, Result};
use std::f64::consts::FRAC_PI_2;

use super::SchedulerConfig;

/// The cap diffusers' `betas_for_alpha_bar` puts on each beta, so the last
/// cosine-schedule step (where alpha_bar reaches ~0) does not divide by zero.
const MAX_BETA: f64 = 0.999;

/// beta_i for i in 0..num_train_timesteps.
pub fn betas(cfg: &SchedulerConfig) -> Result<Vec<f64>> {
    let n = cfg.num_train_timesteps;
    if n == 0 {
        bail!("scheduler config: num_train_timesteps must be at least 1, got 0");
    }
    let betas = if let Some(trained) = &cfg.trained_betas {
        if trained.len() != n {
            bail!(
                "scheduler config: trained_betas has {} values but num_train_timesteps is {n}",
                trained.len()
            );
        }
        trained.clone()
    } else {
        match cfg.beta_schedule.as_str() {
            "linear" => linspace(cfg.beta_start, cfg.beta_end, n),
            // Linear in sqrt(beta), then squared: the schedule Stable Diffusion was trained with.
            "scaled_linear" => linspace(cfg.beta_start.sqrt(), cfg.beta_end.sqrt(), n)
                .into_iter()
                .map(|b| b * b)
                .collect(),
            "squaredcos_cap_v2" => cosine(n),
            other => bail!(
                "scheduler config: unknown beta_schedule `{other}` (expected linear, scaled_linear or squaredcos_cap_v2)"
            ),
        }
    };
    // Every later formula divides by sqrt(acp) or sqrt(1 - acp): a beta of 0 or
    // >= 1 (or NaN from a negative beta_start under sqrt) would poison them.
    if let Some((i, b)) = betas
        .iter()
        .enumerate()
        .find(|(_, b)| !(b.is_finite() && **b > 0.0 && **b < 1.0))
    {
        bail!("scheduler config: beta[{i}] = {b} is outside (0, 1)");
    }
    Ok(betas)
}

/// alphas_cumprod[t] = prod_{i <= t} (1 - beta_i): the signal fraction
/// remaining at training timestep t (x_t = sqrt(acp) x0 + sqrt(1 - acp) eps).
/// With `rescale_betas_zero_snr` the result is rescaled to zero terminal SNR.
pub fn alphas_cumprod(cfg: &SchedulerConfig) -> Result<Vec<f64>> {
    let mut acc = 1.0;
    let acp: Vec<f64> = betas(cfg)?
        .into_iter()
        .map(|b| {
            acc *= 1.0 - b;
            acc
        })
        .collect();
    Ok(if cfg.rescale_betas_zero_snr {
        rescale_zero_terminal_snr(&acp)
    } else {
        acp
    })
}

/// diffusers' `rescale_zero_terminal_snr` (Lin et al. 2023, algorithm 1),
/// applied to alphas_cumprod directly: sqrt(acp) is shifted so its last value
/// is 0 and scaled so its first is unchanged. (diffusers goes back to betas and
/// takes the cumulative product again, which gives these values.)
fn rescale_zero_terminal_snr(acp: &[f64]) -> Vec<f64> {
    let first = acp[0].sqrt();
    let last = acp[acp.len() - 1].sqrt();
    if first <= last {
        // One training step: nothing to rescale (diffusers would divide by zero).
        return acp.to_vec();
    }
    let scale = first / (first - last);
    acp.iter()
        .map(|a| ((a.sqrt() - last) * scale).powi(2))
        .collect()
}

/// The sigma-space schedulers (Euler, DPM++, UniPC) need sigma = sqrt((1 -
/// acp) / acp) finite: as diffusers, a zero-SNR schedule's final
/// alphas_cumprod of 0 becomes 2^-24 (f16's smallest subnormal) there.
pub fn with_finite_sigmas(acp: &[f64]) -> Vec<f64> {
    let mut acp = acp.to_vec();
    if let Some(last) = acp.last_mut() {
        if *last <= 0.0 {
            *last = 2f64.powi(-24);
        }
    }
    acp
}

/// diffusers' `betas_for_alpha_bar` with the cosine alpha_bar of Nichol &
/// Dhariwal (improved DDPM): alpha_bar(t) = cos((t + 0.008) / 1.008 * pi/2)^2,
/// beta_i = min(1 - alpha_bar((i+1)/n) / alpha_bar(i/n), 0.999). The divisions
/// are in floating point -- Candle's integer `i / n` is what yields NaN.
fn cosine(n: usize) -> Vec<f64> {
    let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * FRAC_PI_2).cos().powi(2);
    let n_f = n as f64;
    (0..n)
        .map(|i| {
            let (t1, t2) = (i as f64 / n_f, (i + 1) as f64 / n_f);
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(MAX_BETA)
        })
        .collect()
}

/// numpy's `linspace(start, end, n)`: n evenly spaced values, both ends included
/// (the last is exactly `end`, as numpy guarantees).
pub fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (end - start) / (n - 1) as f64;
            (0..n)
                .map(|i| {
                    if i == n - 1 {
                        end
                    } else {
                        start + step * i as f64
                    }
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::test_util::sd15;

    #[test]
    fn linspace_like_numpy() {
        // np.linspace(0, 999, 5) -> [0, 249.75, 499.5, 749.25, 999]
        assert_eq!(
            linspace(0.0, 999.0, 5),
            vec![0.0, 249.75, 499.5, 749.25, 999.0]
        );
        assert_eq!(linspace(2.0, 3.0, 1), vec![2.0]);
        assert!(linspace(2.0, 3.0, 0).is_empty());
    }

    #[test]
    fn linear_default_schedule() {
        // diffusers' defaults: linspace(0.0001, 0.02, 1000).
        let b = betas(&SchedulerConfig::from_json_str("{}").unwrap()).unwrap();
        assert_eq!(b.len(), 1000);
        assert_eq!((b[0], b[999]), (0.0001, 0.02));
        // step = (0.02 - 0.0001) / 999; beta_1 = 0.0001 + 0.0199 / 999 = 0.000119920...
        assert!((b[1] - (0.0001 + 0.0199 / 999.0)).abs() < 1e-15);
    }

    #[test]
    fn scaled_linear_matches_sd15() {
        let acp = alphas_cumprod(&sd15()).unwrap();
        assert_eq!(acp.len(), 1000);
        // beta_0 = sqrt(0.00085)^2 = 0.00085 -> acp_0 = 0.99915.
        assert!((acp[0] - 0.99915).abs() < 1e-12);
        // numpy float64: b = np.linspace(0.00085**0.5, 0.012**0.5, 1000)**2;
        // np.cumprod(1 - b) -> [951] 0.0081550045674304, [999] 0.0046600985130772384.
        assert!(
            (acp[951] - 0.0081550045674304).abs() < 1e-13,
            "{}",
            acp[951]
        );
        assert!(
            (acp[999] - 0.004660098513077238).abs() < 1e-13,
            "{}",
            acp[999]
        );
        assert!(acp.windows(2).all(|w| w[1] < w[0]));
    }

    /// Regression for Candle's squaredcos_cap_v2, which divides integers and gets NaN.
    #[test]
    fn squaredcos_is_finite_and_capped() {
        let mut cfg = sd15();
        cfg.beta_schedule = "squaredcos_cap_v2".into();
        let b = betas(&cfg).unwrap();
        assert!(b.iter().all(|b| b.is_finite() && *b > 0.0 && *b <= 0.999));
        // numpy float64, alpha_bar(t) = cos((t + 0.008) / 1.008 * pi / 2)**2:
        // beta_0 = 1 - alpha_bar(0.001) / alpha_bar(0) = 4.128422482196914e-05;
        // beta_998 = 0.74999939290111661; beta_999 hits the cap (alpha_bar(1) ~ 0),
        // and it is the only one that does.
        assert!((b[0] - 4.128422482196914e-05).abs() < 1e-14, "{}", b[0]);
        assert!((b[998] - 0.7499993929011166).abs() < 1e-12, "{}", b[998]);
        assert_eq!(b[999], 0.999);
        assert_eq!(b.iter().filter(|b| **b >= 0.999).count(), 1);
        // np.cumprod(1 - betas)[-1] = 2.428766907e-09: tiny but positive.
        let acp = alphas_cumprod(&cfg).unwrap();
        assert!(
            (acp[999] / 2.428766907e-09 - 1.0).abs() < 1e-8,
            "{}",
            acp[999]
        );
    }

    #[test]
    fn trained_betas_override_the_schedule() {
        let cfg = SchedulerConfig::from_json_str(
            r#"{"num_train_timesteps": 3, "beta_schedule": "ignored", "trained_betas": [0.1, 0.2, 0.5]}"#,
        )
        .unwrap();
        // cumprod(1 - b) = [0.9, 0.9 * 0.8, 0.9 * 0.8 * 0.5]
        let acp = alphas_cumprod(&cfg).unwrap();
        let want = [0.9, 0.72, 0.36];
        for (a, w) in acp.iter().zip(want) {
            assert!((a - w).abs() < 1e-15);
        }
        let mut short = cfg.clone();
        short.num_train_timesteps = 4;
        assert!(betas(&short).unwrap_err().to_string().contains("3 values"));
    }

    #[test]
    fn zero_terminal_snr_rescale() {
        let mut cfg = sd15();
        cfg.rescale_betas_zero_snr = true;
        let acp = alphas_cumprod(&cfg).unwrap();
        // diffusers 0.31 (float32 torch): DDPMScheduler(beta_start=0.00085, beta_end=0.012,
        // beta_schedule="scaled_linear", rescale_betas_zero_snr=True).alphas_cumprod
        // [0] 0.99915, [500] 0.24101864, [998] 1.96796e-07, [999] 0.0; numpy float64 on
        // the same formula: [500] 0.24101878275731575, [998] 1.9678880566212916e-07.
        assert!((acp[0] - 0.99915).abs() < 1e-12, "{}", acp[0]);
        assert!(
            (acp[500] - 0.24101878275731575).abs() < 1e-12,
            "{}",
            acp[500]
        );
        assert!(
            (acp[998] / 1.9678880566212916e-07 - 1.0).abs() < 1e-9,
            "{}",
            acp[998]
        );
        assert!((acp[500] - 0.24101864).abs() < 3e-7, "f32 diffusers");
        assert_eq!(acp[999], 0.0);
        let safe = with_finite_sigmas(&acp);
        assert_eq!(safe[999], 2f64.powi(-24));
        assert_eq!(safe[..999], acp[..999]);
    }

    #[test]
    fn invalid_schedules_are_errors() {
        let mut cfg = sd15();
        cfg.beta_schedule = "cubic".into();
        assert!(betas(&cfg).unwrap_err().to_string().contains("`cubic`"));
        let mut cfg = sd15();
        cfg.beta_start = -0.1; // sqrt -> NaN under scaled_linear
        assert!(betas(&cfg).unwrap_err().to_string().contains("beta[0]"));
        let cfg = SchedulerConfig::from_json_str(
            r#"{"num_train_timesteps": 3, "trained_betas": [0.1, 1.5, 0.2]}"#,
        )
        .unwrap();
        assert!(betas(&cfg)
            .unwrap_err()
            .to_string()
            .contains("beta[1] = 1.5"));
        let mut cfg = sd15();
        cfg.num_train_timesteps = 0;
        assert!(betas(&cfg).is_err());
    }
}
