//! AUTOMATIC1111's "NV" random source, re-derived: the Philox 4x32-10
//! counter-based generator with a Box-Muller transform, which its web UI
//! (`modules/rng_philox.py`) uses to reproduce on any device the values
//! `torch.randn(shape, device="cuda")` draws after `torch.manual_seed(seed)`.
//!
//! - One generator per image, seeded with `seed + i`; every `randn` call is one
//!   draw of a whole tensor and advances the generator's `offset` by one
//!   (A1111: the starting noise is offset 0, each ancestral sampler step's
//!   noise the next offset), whatever the tensor's size.
//! - Value `j` (flat index) of the draw at `offset` is Philox 4x32-10 of the
//!   counter `[offset, 0, j, 0]` with the key `[seed low 32 bits, seed high 32
//!   bits]`; of the four outputs, the first two make one normal, the other two
//!   are discarded. (So the values do not depend on the shape, only on the
//!   flat index: `j` must stay below 2^32.)
//! - Philox round (multipliers `0xD2511F53`, `0xCD9E8D57`): with
//!   `p0 = c0 * M0` and `p2 = c2 * M1` as 64-bit products, the new counter is
//!   `[hi(p2) ^ c1 ^ k0, lo(p2), hi(p0) ^ c3 ^ k1, lo(p0)]`; the key is bumped
//!   by the Weyl constants `0x9E3779B9`, `0xBB67AE85` (wrapping) between rounds,
//!   ten rounds in all.
//! - Box-Muller in f64, as numpy evaluates A1111's expressions (a uint32 array
//!   times a float32 array promotes to float64): `u = x * A + A / 2` and
//!   `v = y * B + B / 2`, where `A = f32(2.3283064e-10)` (about 2^-32) and
//!   `B = f32(2.3283064e-10 * 6.2831855)` (about 2 pi / 2^32), each a float32
//!   widened to f64 (and `A / 2`, `B / 2` halved in f32); the value is
//!   `sqrt(-2 ln u) * sin(v)` rounded to f32.

/// Philox 4x32 multipliers (Salmon et al., "Parallel random numbers: as easy
/// as 1, 2, 3", 2011), as A1111 uses them.
const PHILOX_M: [u32; 2] = [0xD251_1F53, 0xCD9E_8D57];
/// Philox key increments (the golden ratio and sqrt(3) - 1, times 2^32).
const PHILOX_W: [u32; 2] = [0x9E37_79B9, 0xBB67_AE85];
/// Rounds of Philox 4x32-10.
const ROUNDS: usize = 10;

/// 2^-32 as A1111 writes it: the float32 nearest to the f64 `2.3283064e-10`.
fn two_pow32_inv() -> f32 {
    2.328_306_4e-10_f64 as f32
}

/// 2 pi / 2^32 as A1111 writes it: the f64 product `2.3283064e-10 * 6.2831855`
/// rounded to float32.
fn two_pow32_inv_2pi() -> f32 {
    (2.328_306_4e-10_f64 * 6.283_185_5_f64) as f32
}

/// Philox 4x32-10 of `counter` under `key`: four 32-bit outputs.
pub fn philox4x32_10(mut counter: [u32; 4], mut key: [u32; 2]) -> [u32; 4] {
    for round in 0..ROUNDS {
        let p0 = u64::from(counter[0]) * u64::from(PHILOX_M[0]);
        let p2 = u64::from(counter[2]) * u64::from(PHILOX_M[1]);
        counter = [
            (p2 >> 32) as u32 ^ counter[1] ^ key[0],
            p2 as u32,
            (p0 >> 32) as u32 ^ counter[3] ^ key[1],
            p0 as u32,
        ];
        if round + 1 < ROUNDS {
            key[0] = key[0].wrapping_add(PHILOX_W[0]);
            key[1] = key[1].wrapping_add(PHILOX_W[1]);
        }
    }
    counter
}

/// One standard normal from two uniform 32-bit integers, by A1111's
/// Box-Muller (the first of the pair: `r sin(theta)`), in f64, rounded to f32.
pub fn box_muller(x: u32, y: u32) -> f32 {
    let a = two_pow32_inv();
    let b = two_pow32_inv_2pi();
    // No fused multiply-add: numpy rounds the product, then the sum.
    let u = f64::from(x) * f64::from(a) + f64::from(a / 2.0);
    let v = f64::from(y) * f64::from(b) + f64::from(b / 2.0);
    let s = (-2.0 * u.ln()).sqrt();
    (s * v.sin()) as f32
}

/// A1111's NV generator for one seed (`rng_philox.Generator(seed)`).
#[derive(Debug, Clone)]
pub struct PhiloxGenerator {
    key: [u32; 2],
    offset: u32,
}

impl PhiloxGenerator {
    /// The generator for `seed` (all 64 bits are used), at offset 0.
    pub fn new(seed: u64) -> Self {
        Self {
            key: [seed as u32, (seed >> 32) as u32],
            offset: 0,
        }
    }

    /// `count` standard normals in f32: one draw (`Generator.randn` of any
    /// shape holding `count` values), after which the offset moves on by one.
    /// Flat indices wrap at 2^32, as A1111's uint32 counter does.
    pub fn randn(&mut self, count: usize) -> Vec<f32> {
        let offset = self.offset;
        self.offset = self.offset.wrapping_add(1);
        (0..count)
            .map(|j| {
                let out = philox4x32_10([offset, 0, j as u32, 0], self.key);
                box_muller(out[0], out[1])
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in A1111's `rng_philox.py` docstring:
    /// `Generator(seed=0).randn(shape=(3, 4))`, printed to 8 decimals. Those
    /// digits are `torch.randn` on CUDA (which computes Box-Muller in f32),
    /// so NV meets them within 2e-7, not exactly; the exact comparison with
    /// A1111's module is worker/tests/nv_rng.rs.
    #[test]
    fn seed_zero_draws_the_values_a1111_documents() {
        let expected = [
            -0.924_662_59,
            -0.425_344_15,
            -2.643_845_7,
            0.145_183_88,
            -0.120_866_47,
            -0.579_725_64,
            -0.622_851_22,
            -0.328_387_09,
            -1.074_542_31,
            -0.363_144_07,
            -1.671_050_67,
            2.265_504_97,
        ];
        let got = PhiloxGenerator::new(0).randn(12);
        for (g, e) in got.iter().zip(expected) {
            assert!((f64::from(*g) - e).abs() < 1e-6, "{got:?}");
        }
    }

    #[test]
    fn each_draw_moves_the_offset_and_values_depend_only_on_the_flat_index() {
        let mut g = PhiloxGenerator::new(42);
        let first = g.randn(10);
        let second = g.randn(10);
        assert_ne!(first, second);
        assert_eq!(&PhiloxGenerator::new(42).randn(4)[..], &first[..4]);
        // A 64-bit seed keeps its high half: 2^32 + 5 is not 5.
        assert_ne!(
            PhiloxGenerator::new((1 << 32) + 5).randn(4),
            PhiloxGenerator::new(5).randn(4)
        );
    }
}
