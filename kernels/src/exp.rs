//! `e^x` in f32 as plain arithmetic that the compiler vectorises (no libm call,
//! no branch), for the softmax and SiLU loops: the libm `expf` they called ran
//! one value at a time and took most of an SD 1.5 self-attention's time.
//!
//! Cephes' `expf`: `x = n ln 2 + r` with `n` rounded to nearest and `ln 2`
//! split in two (Cody-Waite), `e^r` by its degree-7 polynomial on
//! `|r| <= ln 2 / 2`, then `2^n` put in the exponent bits. Within 2 ulp of the
//! exact value for `x` in [-87.3, 88]; below, the result is the smallest normal
//! f32 (about 1.2e-38, not 0); above, `e^88`.

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 x 2^23: adding it rounds to an integer kept in the low mantissa bits.
const ROUND: f32 = 12_582_912.0;
const MIN_X: f32 = -87.336_55;
const MAX_X: f32 = 88.0;

/// `e^x` (see the module docs for range and accuracy).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(MIN_X, MAX_X);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    // The integer n sits in t's low mantissa bits.
    let n_bits = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let z = r * r;
    let p = (((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
        * r
        + 1.666_666_5e-1)
        * r
        + 0.5)
        * z
        + r
        + 1.0;
    p * f32::from_bits(((n_bits + 127) << 23) as u32)
}

/// `x <- exp(x - max x) / sum` over `row` (a softmax; an empty row is left
/// alone). Max and sum are kept in 16 lanes, so the loops vectorise.
pub fn softmax_in_place(row: &mut [f32]) {
    const LANES: usize = 16;
    if row.is_empty() {
        return;
    }
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            *m = m.max(v);
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(lanes.iter())
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    let mut sums = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (s, v) in sums.iter_mut().zip(chunk.iter_mut()) {
            *v = exp(*v - max);
            *s += *v;
        }
    }
    let mut sum: f32 = 0.0;
    for v in chunks.into_remainder() {
        *v = exp(*v - max);
        sum += *v;
    }
    let inv = 1.0 / (sum + sums.iter().sum::<f32>());
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// `x * sigmoid(x)` (SiLU).
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_libm_over_its_range() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let (ours, exact) = (exp(x) as f64, (x as f64).exp());
            let ulp = (exact as f32).to_bits().abs_diff((ours as f32).to_bits());
            worst = worst.max(ulp as f64);
            x += 0.001_37;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) > 0.0 && exp(-1000.0) < 1.2e-38);
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn softmax_sums_to_one_and_matches_the_plain_formula() {
        let row: Vec<f32> = (0..37)
            .map(|i| ((i * 7919) % 101) as f32 * 0.37 - 12.0)
            .collect();
        let mut ours = row.clone();
        softmax_in_place(&mut ours);
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
        for (o, &v) in ours.iter().zip(&row) {
            let exact = (v as f64 - max).exp() / sum;
            assert!((*o as f64 - exact).abs() < 1e-7, "{o} vs {exact}");
        }
        assert!((ours.iter().map(|&v| v as f64).sum::<f64>() - 1.0).abs() < 1e-6);
        let mut empty: [f32; 0] = [];
        softmax_in_place(&mut empty);
    }

    #[test]
    fn silu_matches_its_definition() {
        for x in [-90.0f32, -20.0, -1.5, 0.0, 0.3, 4.0, 50.0] {
            let exact = x as f64 / (1.0 + (-x as f64).exp());
            assert!(
                (silu(x) as f64 - exact).abs() <= 1e-6 * exact.abs().max(1e-30),
                "{x}"
            );
        }
    }
}
