//! Beta schedules -> cumulative alpha products, in f64, as diffusers defines them.

use anyhow::{bail, Result};

use super::SchedulerConfig;

/// `alphas_cumprod[t] = prod_{i <= t} (1 - beta_i)` for t in 0..num_train_timesteps.
pub fn alphas_cumprod(cfg: &SchedulerConfig) -> Result<Vec<f64>> {
    let n = cfg.num_train_timesteps;
    if n < 2 {
        bail!("scheduler config: num_train_timesteps must be at least 2");
    }
    let betas: Vec<f64> = if let Some(trained) = &cfg.trained_betas {
        if trained.len() != n {
            bail!(
                "scheduler config: trained_betas has {} values, expected {n}",
                trained.len()
            );
        }
        trained.clone()
    } else {
        match cfg.beta_schedule.as_str() {
            "linear" => linspace(cfg.beta_start, cfg.beta_end, n),
            // Linear in sqrt(beta): Stable Diffusion's training schedule.
            "scaled_linear" => linspace(cfg.beta_start.sqrt(), cfg.beta_end.sqrt(), n).into_iter().map(|b| b * b).collect(),
            // Cosine alpha-bar (Nichol & Dhariwal), betas capped at 0.999. Plain
            // float division: Candle's integer division here produces NaN.
            "squaredcos_cap_v2" => {
                let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
                (0..n)
                    .map(|i| {
                        let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                        (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999)
                    })
                    .collect()
            }
            other => bail!("scheduler config: unknown beta_schedule `{other}` (linear, scaled_linear, squaredcos_cap_v2)"),
        }
    };
    if betas
        .iter()
        .any(|b| !(b.is_finite() && *b > 0.0 && *b < 1.0))
    {
        bail!("scheduler config: betas must lie in (0, 1)");
    }
    let mut acc = 1.0;
    Ok(betas
        .iter()
        .map(|b| {
            acc *= 1.0 - b;
            acc
        })
        .collect())
}

/// numpy's `linspace(start, end, n)` (end included).
pub fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::test_util::sd15;

    #[test]
    fn scaled_linear_matches_sd() {
        let acp = alphas_cumprod(&sd15()).unwrap();
        // beta_0 = 0.00085 -> acp_0 = 0.99915. The last value, from the product of
        // (1 - (sqrt(0.00085) + (sqrt(0.012) - sqrt(0.00085)) * i / 999)^2) over
        // i = 0..999 in float64: 0.004660098513077234 (sigma_max = 14.614641).
        assert!((acp[0] - 0.99915).abs() < 1e-12);
        assert!(
            (acp[999] - 0.004660098513077234).abs() < 1e-12,
            "{}",
            acp[999]
        );
        assert!(acp.windows(2).all(|w| w[1] < w[0]));
    }

    #[test]
    fn squaredcos_is_finite_and_capped() {
        let mut cfg = sd15();
        cfg.beta_schedule = "squaredcos_cap_v2".into();
        let acp = alphas_cumprod(&cfg).unwrap();
        assert!(acp.iter().all(|a| a.is_finite() && *a > 0.0));
        // beta_999 hits the 0.999 cap: alpha_bar(1) = cos(pi/2)^2 ~ 0.
        assert!((acp[999] / acp[998] - 0.001).abs() < 1e-9);
    }

    #[test]
    fn linspace_like_numpy() {
        assert_eq!(
            linspace(0.0, 999.0, 5),
            vec![0.0, 249.75, 499.5, 749.25, 999.0]
        );
        assert_eq!(linspace(2.0, 2.0, 1), vec![2.0]);
    }
}
