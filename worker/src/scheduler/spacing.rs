//! Which training timesteps an N-step run visits: diffusers' `timestep_spacing`
//! (table 2 of "Common Diffusion Noise Schedules and Sample Steps are Flawed",
//! Lin et al. 2023). Rounding is numpy's `round`, i.e. half to even.

use anyhow::{bail, Result};

use super::betas::linspace;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spacing {
    /// Evenly from T-1 down to 0, both ends included.
    Linspace,
    /// Multiples of T / n (integer ratio) from 0, shifted by steps_offset; never reaches T-1.
    Leading,
    /// Multiples of T / n (float ratio) counted down from T, minus one; starts at T-1.
    Trailing,
}

impl Spacing {
    /// Parses the config value; `None` (key absent) picks the scheduler's own default.
    pub fn parse(value: Option<&str>, default: Spacing) -> Result<Self> {
        Ok(match value {
            None => default,
            Some("linspace") => Spacing::Linspace,
            Some("leading") => Spacing::Leading,
            Some("trailing") => Spacing::Trailing,
            Some(other) => bail!(
                "scheduler config: unknown timestep_spacing `{other}` (expected linspace, leading or trailing)"
            ),
        })
    }
}

/// How linspace values are kept: DDIM indexes alphas_cumprod with them, so it
/// rounds; Euler interpolates sigmas, so it keeps the fractions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linspace {
    Rounded,
    Fractional,
}

/// The `n` timesteps of a run over `train` training steps, noisiest first.
/// Callers guarantee 1 <= n <= train.
pub fn timesteps(
    spacing: Spacing,
    train: usize,
    n: usize,
    steps_offset: usize,
    linspace_mode: Linspace,
) -> Vec<f64> {
    let mut ascending: Vec<f64> = match spacing {
        // diffusers: linspace(0, T-1, n) (rounded for DDIM); no steps_offset.
        Spacing::Linspace => {
            let v = linspace(0.0, (train - 1) as f64, n);
            match linspace_mode {
                Linspace::Rounded => v.into_iter().map(f64::round_ties_even).collect(),
                Linspace::Fractional => v,
            }
        }
        // diffusers: (arange(n) * (T // n)).round() + steps_offset.
        Spacing::Leading => {
            let ratio = (train / n) as f64;
            (0..n)
                .map(|i| (i as f64 * ratio).round_ties_even() + steps_offset as f64)
                .collect()
        }
        // diffusers: arange(T, 0, -T/n).round() - 1. Element i of that arange is
        // T - i * ratio; we take exactly n of them. (numpy's arange sizes itself by
        // ceil(T / ratio), which float error makes n + 1 for e.g. n = 61, adding a
        // bogus timestep -1; that is a numpy artefact, not the intended schedule.)
        Spacing::Trailing => {
            let ratio = train as f64 / n as f64;
            (0..n)
                .rev()
                .map(|i| (train as f64 - i as f64 * ratio).round_ties_even() - 1.0)
                .collect()
        }
    };
    ascending.reverse();
    ascending
}

/// The timesteps of diffusers' multistep solvers (DPM-Solver++, UniPC): for
/// linspace and leading they space n + 1 points and drop the last (t = 0 or
/// steps_offset), so the final step ends on the appended sigma instead;
/// trailing is the common rule. Always rounded to integers.
pub fn multistep_timesteps(
    spacing: Spacing,
    train: usize,
    n: usize,
    steps_offset: usize,
) -> Vec<f64> {
    match spacing {
        Spacing::Linspace | Spacing::Leading => {
            let mut ts = timesteps(spacing, train, n + 1, steps_offset, Linspace::Rounded);
            ts.pop();
            ts
        }
        Spacing::Trailing => timesteps(spacing, train, n, steps_offset, Linspace::Rounded),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Linspace::{Fractional, Rounded};

    #[test]
    fn sd15_leading_20_steps() {
        // ratio = 1000 // 20 = 50: 0, 50, ..., 950, + steps_offset 1, reversed.
        let ts = timesteps(Spacing::Leading, 1000, 20, 1, Rounded);
        let want: Vec<f64> = (0..20).rev().map(|i| (i * 50 + 1) as f64).collect();
        assert_eq!(ts, want);
        assert_eq!((ts.len(), ts[0], ts[1], ts[19]), (20, 951.0, 901.0, 1.0));
    }

    #[test]
    fn leading_uses_integer_ratio() {
        // 1000 // 3 = 333: [0, 333, 666] reversed, no offset.
        assert_eq!(
            timesteps(Spacing::Leading, 1000, 3, 0, Fractional),
            vec![666.0, 333.0, 0.0]
        );
    }

    #[test]
    fn linspace_fractional_or_rounded() {
        // np.linspace(0, 999, 5)[::-1]; steps_offset does not apply to linspace.
        assert_eq!(
            timesteps(Spacing::Linspace, 1000, 5, 1, Fractional),
            vec![999.0, 749.25, 499.5, 249.75, 0.0]
        );
        // np.round: 749.25 -> 749, 499.5 -> 500 (half to even), 249.75 -> 250.
        assert_eq!(
            timesteps(Spacing::Linspace, 1000, 5, 1, Rounded),
            vec![999.0, 749.0, 500.0, 250.0, 0.0]
        );
    }

    #[test]
    fn trailing_starts_at_the_last_training_step() {
        // ratio 250: round(arange(1000, 0, -250)) - 1 = [999, 749, 499, 249].
        assert_eq!(
            timesteps(Spacing::Trailing, 1000, 4, 1, Rounded),
            vec![999.0, 749.0, 499.0, 249.0]
        );
        // One step (SD-Turbo) starts from pure noise at t = 999.
        assert_eq!(
            timesteps(Spacing::Trailing, 1000, 1, 0, Rounded),
            vec![999.0]
        );
        // ratio 333.33: round(1000, 666.67, 333.33) - 1 = [999, 666, 332].
        assert_eq!(
            timesteps(Spacing::Trailing, 1000, 3, 0, Rounded),
            vec![999.0, 666.0, 332.0]
        );
    }

    #[test]
    fn trailing_always_gives_n_valid_steps() {
        // Where numpy's arange would emit n + 1 values (n = 61) we still give n,
        // all within [0, T-1] and strictly decreasing.
        for n in [1, 7, 61, 103, 500, 999, 1000] {
            let ts = timesteps(Spacing::Trailing, 1000, n, 0, Rounded);
            assert_eq!(ts.len(), n);
            assert_eq!(ts[0], 999.0);
            assert!(ts.iter().all(|t| (0.0..=999.0).contains(t)), "n = {n}");
            assert!(ts.windows(2).all(|w| w[1] < w[0]), "n = {n}");
        }
    }

    #[test]
    fn multistep_spacing_like_dpm_solver() {
        // diffusers 0.31 DPMSolverMultistepScheduler (and UniPC), 10 steps, SD 1.5 config:
        // linspace: np.linspace(0, 999, 11).round()[::-1][:-1]
        assert_eq!(
            multistep_timesteps(Spacing::Linspace, 1000, 10, 1),
            vec![999.0, 899.0, 799.0, 699.0, 599.0, 500.0, 400.0, 300.0, 200.0, 100.0]
        );
        // leading: 1000 // 11 = 90; arange(11) * 90 reversed, last dropped, + 1.
        assert_eq!(
            multistep_timesteps(Spacing::Leading, 1000, 10, 1),
            vec![901.0, 811.0, 721.0, 631.0, 541.0, 451.0, 361.0, 271.0, 181.0, 91.0]
        );
        // trailing: the common rule.
        assert_eq!(
            multistep_timesteps(Spacing::Trailing, 1000, 4, 1),
            vec![999.0, 749.0, 499.0, 249.0]
        );
    }

    #[test]
    fn parse_defaults_and_errors() {
        assert_eq!(
            Spacing::parse(None, Spacing::Leading).unwrap(),
            Spacing::Leading
        );
        assert_eq!(
            Spacing::parse(Some("trailing"), Spacing::Leading).unwrap(),
            Spacing::Trailing
        );
        let err = Spacing::parse(Some("sideways"), Spacing::Linspace).unwrap_err();
        assert!(err.to_string().contains("`sideways`"));
    }
}
