//! PyTorch's CPU random generator, re-derived: `torch.Generator("cpu")
//! .manual_seed(seed)` followed by `torch.randn(shape, generator=g)` in f32,
//! bit for bit, as diffusers' `randn_tensor` draws latents on the CPU.
//!
//! - The engine is the standard 32-bit Mersenne Twister (MT19937). Torch seeds
//!   it with the low 32 bits of the 64-bit seed (`2^32 + 5` draws as `5`).
//! - A uniform f32 in [0, 1) takes the low 24 bits of one 32-bit draw, times
//!   2^-24; a uniform f64 takes the low 53 bits of a 64-bit draw made of two
//!   32-bit draws (the first one the high half), times 2^-53.
//! - `randn` of 16 values or more (f32, contiguous): every value is first
//!   drawn as a uniform f32; then each block of 16 becomes 16 normals by
//!   Box-Muller, value `j` and value `j + 8` (j < 8) from the pair
//!   (u1 = 1 - data[j], u2 = data[j + 8]): `r = sqrt(-2 ln u1)`, `r cos(2 pi u2)`,
//!   `r sin(2 pi u2)`. When the count is not a multiple of 16, the last 16
//!   values are drawn again (16 new uniforms) and transformed as one block, so
//!   they overwrite the tail of the previous block.
//! - On x86 CPUs with AVX2 (torch's AVX2 and AVX-512 kernels both), the
//!   logarithm, sine and cosine are the Cephes single-precision polynomials of
//!   Julien Pommier's `sse_mathfun` (torch's `avx_mathfun.h`), evaluated in f32
//!   with each product that feeds an addition fused into one multiply-add, as
//!   the compiler of torch's wheels contracts them: [`cephes_log`] and
//!   [`cephes_sincos`] follow the same operations in the same order, so the
//!   results are the same bits (without the fusing, about 1 value in 100
//!   differs in its last bit or two).
//!   (Torch's scalar kernel, used on CPUs without AVX2 such as Apple silicon,
//!   calls the C library instead and differs in the last bit of some values.)
//! - `randn` of fewer than 16 values draws each one in f64 by Box-Muller on
//!   two uniform f64 (`u1`, `u2`): `r = sqrt(-2 ln(1 - u2))`, `r cos(2 pi u1)`
//!   is returned and `r sin(2 pi u1)` kept in the generator for the next such
//!   draw (kept across calls; `manual_seed` clears it); each value is then
//!   rounded to f32.

/// The 32-bit Mersenne Twister (Matsumoto and Nishimura, 1998), seeded as
/// C++'s `std::mt19937(seed)` and torch's `at::mt19937` are.
#[derive(Clone)]
pub struct Mt19937 {
    state: [u32; 624],
    index: usize,
}

impl Mt19937 {
    const N: usize = 624;
    const M: usize = 397;

    /// Seeds with the low 32 bits of `seed`, as torch does.
    pub fn new(seed: u64) -> Self {
        let mut state = [0u32; Self::N];
        state[0] = seed as u32;
        for i in 1..Self::N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Self {
            state,
            index: Self::N,
        }
    }

    fn twist(&mut self) {
        for i in 0..Self::N {
            let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % Self::N] & 0x7fff_ffff);
            let mut next = self.state[(i + Self::M) % Self::N] ^ (y >> 1);
            if y & 1 != 0 {
                next ^= 0x9908_b0df;
            }
            self.state[i] = next;
        }
        self.index = 0;
    }

    /// The next 32-bit output.
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= Self::N {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }
}

/// A `torch.Generator("cpu")` after `manual_seed(seed)`: the engine and the
/// f64 normal torch keeps for the next small draw.
#[derive(Clone)]
pub struct TorchCpuGenerator {
    engine: Mt19937,
    next_double_normal: Option<f64>,
}

impl TorchCpuGenerator {
    pub fn new(seed: u64) -> Self {
        Self {
            engine: Mt19937::new(seed),
            next_double_normal: None,
        }
    }

    fn uniform_f32(&mut self) -> f32 {
        (self.engine.next_u32() & 0x00ff_ffff) as f32 * (1.0 / 16_777_216.0)
    }

    fn uniform_f64(&mut self) -> f64 {
        let high = self.engine.next_u32() as u64;
        let low = self.engine.next_u32() as u64;
        (((high << 32) | low) & ((1u64 << 53) - 1)) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// One standard normal in f64 (torch's `normal_distribution<double>`).
    fn normal_f64(&mut self) -> f64 {
        if let Some(v) = self.next_double_normal.take() {
            return v;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.next_double_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    /// `torch.randn(shape, generator=self)` in f32 for any shape of `count`
    /// values, in row-major order.
    pub fn randn(&mut self, count: usize) -> Vec<f32> {
        if count < 16 {
            return (0..count).map(|_| self.normal_f64() as f32).collect();
        }
        let mut data: Vec<f32> = (0..count).map(|_| self.uniform_f32()).collect();
        for block in data.chunks_exact_mut(16) {
            box_muller_16(block);
        }
        if !count.is_multiple_of(16) {
            let tail = &mut data[count - 16..];
            for v in tail.iter_mut() {
                *v = self.uniform_f32();
            }
            box_muller_16(tail);
        }
        data
    }
}

/// 16 uniforms in [0, 1) to 16 standard normals, in place (see the module doc).
fn box_muller_16(data: &mut [f32]) {
    // (float)(2 * pi): torch rounds the f64 product to f32 once.
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    for j in 0..8 {
        let u1 = 1.0 - data[j];
        let u2 = data[j + 8];
        let radius = (-2.0 * cephes_log(u1)).sqrt();
        let (sin, cos) = cephes_sincos(two_pi * u2);
        data[j] = radius * cos;
        data[j + 8] = radius * sin;
    }
}

/// A Cephes coefficient as C writes it: the decimal read as f64, then rounded
/// to f32 (the coefficients below keep Cephes' published digits).
const fn c(v: f64) -> f32 {
    v as f32
}

/// Natural logarithm of `x` > 0 (Cephes `logf` as in `sse_mathfun`'s
/// `log_ps`): x = m 2^e with m in [sqrt(1/2), sqrt(2)), ln x = e ln 2 + ln m,
/// ln m from a degree-9 polynomial in (m - 1); ln 2 split in two parts.
#[allow(clippy::excessive_precision)]
pub fn cephes_log(x: f32) -> f32 {
    let x = x.max(f32::from_bits(0x0080_0000));
    let bits = x.to_bits();
    let mut e = ((bits >> 23) as i32 - 0x7f) as f32 + 1.0;
    // Mantissa with the exponent of 0.5: [0.5, 1).
    let mut m = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits());
    let small = m < c(std::f64::consts::FRAC_1_SQRT_2);
    let keep = if small { m } else { 0.0 };
    m -= 1.0;
    if small {
        e -= 1.0;
    }
    m += keep;
    let z = m * m;
    let coeffs = [
        c(-1.1514610310E-1),
        c(1.1676998740E-1),
        c(-1.2420140846E-1),
        c(1.4249322787E-1),
        c(-1.6668057665E-1),
        c(2.0000714765E-1),
        c(-2.4999993993E-1),
        c(3.3333331174E-1),
    ];
    let mut y = c(7.0376836292E-2);
    for k in coeffs {
        y = y.mul_add(m, k);
    }
    y *= m;
    y = y.mul_add(z, e * c(-2.12194440e-4));
    y = (-z).mul_add(0.5, y);
    let r = m + y;
    e.mul_add(c(0.693359375), r)
}

/// Sine and cosine of `x` (Cephes `sinf`/`cosf` as in `sse_mathfun`'s
/// `sincos_ps`): reduction by multiples of pi/4 in three parts, then a
/// polynomial for each of sine and cosine on [-pi/4, pi/4].
#[allow(clippy::excessive_precision)]
pub fn cephes_sincos(x: f32) -> (f32, f32) {
    let sign_in = x.to_bits() & 0x8000_0000;
    let mut x = x.abs();
    let j = (((x * c(1.27323954473516)) as i32) + 1) & !1;
    let y = j as f32;
    let swap_sin = ((j & 4) as u32) << 29;
    let cos_poly_for_sin = (j & 2) != 0;
    let sign_cos = ((!(j - 2) & 4) as u32) << 29;
    x = y.mul_add(c(-0.78515625), x);
    x = y.mul_add(c(-2.4187564849853515625e-4), x);
    x = y.mul_add(c(-3.77489497744594108e-8), x);
    let z = x * x;
    let mut yc = c(2.443315711809948E-005);
    yc = yc.mul_add(z, c(-1.388731625493765E-003));
    yc = yc.mul_add(z, c(4.166664568298827E-002));
    yc *= z;
    yc = yc.mul_add(z, -(z * 0.5));
    yc += 1.0;
    let mut ys = c(-1.9515295891E-4);
    ys = ys.mul_add(z, c(8.3321608736E-3));
    ys = ys.mul_add(z, c(-1.6666654611E-1));
    ys *= z;
    ys = ys.mul_add(x, x);
    let (sin, cos) = if cos_poly_for_sin { (yc, ys) } else { (ys, yc) };
    (
        f32::from_bits(sin.to_bits() ^ (sign_in ^ swap_sin)),
        f32::from_bits(cos.to_bits() ^ sign_cos),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// tests/reference/torch_randn_reference.json (how to recompute it: the
    /// `.py` beside it).
    #[derive(Deserialize)]
    struct Reference {
        torch: String,
        cpu_capability: String,
        cases: Vec<Case>,
    }

    #[derive(Deserialize)]
    struct Case {
        seed: u64,
        shapes: Vec<Vec<usize>>,
        index: Vec<usize>,
        bits: Vec<u32>,
    }

    #[test]
    fn randn_is_bit_identical_to_torch_for_every_seed_and_shape() {
        let r: Reference = serde_json::from_str(include_str!(
            "../../../tests/reference/torch_randn_reference.json"
        ))
        .unwrap();
        assert!(r.cases.len() >= 40, "{} cases", r.cases.len());
        let mut failures = Vec::new();
        for case in &r.cases {
            let mut g = TorchCpuGenerator::new(case.seed);
            let values: Vec<f32> = case
                .shapes
                .iter()
                .flat_map(|s| g.randn(s.iter().product()))
                .collect();
            for (&i, &want) in case.index.iter().zip(&case.bits) {
                let got = values[i].to_bits();
                if got != want {
                    failures.push(format!(
                        "seed {} shapes {:?} [{i}]: {} (0x{got:08x}) vs torch {} (0x{want:08x})",
                        case.seed,
                        case.shapes,
                        f32::from_bits(got),
                        f32::from_bits(want)
                    ));
                }
            }
        }
        let total: usize = r.cases.iter().map(|c| c.bits.len()).sum();
        assert!(
            failures.is_empty(),
            "{} of {total} values differ from torch {} ({}), first: {:#?}",
            failures.len(),
            r.torch,
            r.cpu_capability,
            &failures[..failures.len().min(8)]
        );
    }

    #[test]
    fn the_generator_follows_the_reference_mersenne_twister() {
        // The published check value of MT19937: the 10,000th output of
        // std::mt19937 with its default seed 5489 is 4123659995.
        let mut mt = Mt19937::new(5489);
        let v = (0..10_000).map(|_| mt.next_u32()).last().unwrap();
        assert_eq!(v, 4_123_659_995);
    }
}
