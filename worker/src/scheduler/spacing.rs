//! Which training timesteps a run of N steps visits, per diffusers'
//! `timestep_spacing` (see "Common Diffusion Noise Schedules and Sample Steps
//! are Flawed", table 2). numpy rounds half to even; so do we.

use anyhow::{bail, Result};

use super::betas::linspace;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spacing {
    Linspace,
    Leading,
    Trailing,
}

impl Spacing {
    pub fn parse(s: Option<&str>, default: Spacing) -> Result<Self> {
        Ok(match s {
            None => default,
            Some("linspace") => Spacing::Linspace,
            Some("leading") => Spacing::Leading,
            Some("trailing") => Spacing::Trailing,
            Some(other) => bail!("scheduler config: unknown timestep_spacing `{other}` (linspace, leading, trailing)"),
        })
    }
}

/// Timesteps, noisiest first. `round` is applied to linspace (DDIM's integer
/// timesteps) or not (Euler's fractional ones).
pub fn timesteps(
    spacing: Spacing,
    train: usize,
    n: usize,
    steps_offset: usize,
    round_linspace: bool,
) -> Vec<f64> {
    let mut ts: Vec<f64> = match spacing {
        Spacing::Linspace => {
            let v = linspace(0.0, (train - 1) as f64, n);
            if round_linspace {
                v.into_iter().map(f64::round_ties_even).collect()
            } else {
                v
            }
        }
        Spacing::Leading => {
            let ratio = (train / n) as f64;
            (0..n)
                .map(|i| (i as f64 * ratio).round_ties_even() + steps_offset as f64)
                .collect()
        }
        Spacing::Trailing => {
            let ratio = train as f64 / n as f64;
            // arange(train, 0, -ratio), rounded, minus one; ascending after the reverse below.
            let mut v: Vec<f64> = (0..n)
                .map(|i| (train as f64 - i as f64 * ratio).round_ties_even() - 1.0)
                .collect();
            v.reverse();
            v
        }
    };
    ts.reverse();
    ts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd15_leading_20_steps() {
        // ratio 1000 // 20 = 50: 0, 50, ..., 950, plus steps_offset 1, noisiest first.
        let ts = timesteps(Spacing::Leading, 1000, 20, 1, true);
        let want: Vec<f64> = (0..20).rev().map(|i| (i * 50 + 1) as f64).collect();
        assert_eq!(ts, want);
        assert_eq!((ts[0], ts[19]), (951.0, 1.0));
    }

    #[test]
    fn linspace_fractional_or_rounded() {
        assert_eq!(
            timesteps(Spacing::Linspace, 1000, 5, 1, false),
            vec![999.0, 749.25, 499.5, 249.75, 0.0]
        );
        // numpy: round(749.25)=749, round(499.5)=500 (half to even), round(249.75)=250.
        assert_eq!(
            timesteps(Spacing::Linspace, 1000, 5, 1, true),
            vec![999.0, 749.0, 500.0, 250.0, 0.0]
        );
    }

    #[test]
    fn trailing_ends_at_the_last_training_step() {
        assert_eq!(
            timesteps(Spacing::Trailing, 1000, 4, 1, true),
            vec![999.0, 749.0, 499.0, 249.0]
        );
        // SD-Turbo's single step starts from pure noise at t = 999.
        assert_eq!(timesteps(Spacing::Trailing, 1000, 1, 0, true), vec![999.0]);
        // 1000/3 = 333.33: round(1000), round(666.67), round(333.33) minus one.
        assert_eq!(
            timesteps(Spacing::Trailing, 1000, 3, 0, true),
            vec![999.0, 666.0, 332.0]
        );
    }
}
