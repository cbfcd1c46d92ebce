//! Activations to bytes: per-row (linear) and per-column (convolution)
//! scales, `q + 128` in a `u8`, in the layouts the tile kernel reads.
//!
//! Rounding is to nearest, ties to even (as `VCVTPS2DQ` and
//! `torch.round`), done with the `1.5 * 2^23` addition trick so the loops stay
//! plain float arithmetic the compiler vectorises on every target.

use super::weight::BLOCK;

/// `round(v)` clamped to [-127, 127] (NaN to -127), as an i32.
#[inline(always)]
#[allow(clippy::manual_clamp)] // `clamp` keeps NaN, which has no integer
pub(crate) fn round_clamp(v: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: its ulp is 1
    let c = v.max(-127.0).min(127.0);
    (c + MAGIC).to_bits() as i32 - 0x4B40_0000
}

/// Scale and its reciprocal for values whose largest magnitude is `amax`.
#[inline(always)]
fn scale_of(amax: f32) -> (f32, f32) {
    if amax > 0.0 && amax.is_finite() {
        (amax / 127.0, 127.0 / amax)
    } else {
        (0.0, 0.0)
    }
}

/// Rows of `src` (`rows x k`, contiguous) to `dst` (`rows x kp` bytes,
/// `kp >= k`, the tail left as it is) and one scale per row in `scales`.
pub(crate) fn quantize_rows(src: &[f32], k: usize, kp: usize, dst: &mut [u8], scales: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { quantize_rows_avx512(src, k, kp, dst, scales) };
    }
    quantize_rows_impl(src, k, kp, dst, scales)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn quantize_rows_avx512(
    src: &[f32],
    k: usize,
    kp: usize,
    dst: &mut [u8],
    scales: &mut [f32],
) {
    quantize_rows_impl(src, k, kp, dst, scales)
}

#[inline(always)]
fn quantize_rows_impl(src: &[f32], k: usize, kp: usize, dst: &mut [u8], scales: &mut [f32]) {
    if k == 0 {
        return;
    }
    for ((row, out), scale) in src
        .chunks_exact(k)
        .zip(dst.chunks_exact_mut(kp))
        .zip(scales.iter_mut())
    {
        let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let (s, inv) = scale_of(amax);
        *scale = s;
        for (o, &v) in out.iter_mut().zip(row) {
            *o = (round_clamp(v * inv) + 128) as u8;
        }
    }
}

/// Columns `[0, n)` of the `k x n` matrix at `src` (row stride `rs`) as
/// `[ceil(n / 16)][k4][16][4]` bytes in `dst` (four consecutive rows of
/// sixteen columns per 64 bytes; 128, i.e. zero, past `n` and `k`) with one
/// scale per column in `scales` (0 past `n`).
pub(crate) fn pack_columns(
    src: &[f32],
    rs: usize,
    k: usize,
    n: usize,
    dst: &mut [u8],
    scales: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { pack_columns_avx512(src, rs, k, n, dst, scales) };
    }
    pack_columns_impl(src, rs, k, n, dst, scales)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn pack_columns_avx512(
    src: &[f32],
    rs: usize,
    k: usize,
    n: usize,
    dst: &mut [u8],
    scales: &mut [f32],
) {
    pack_columns_impl(src, rs, k, n, dst, scales)
}

#[inline(always)]
fn pack_columns_impl(
    src: &[f32],
    rs: usize,
    k: usize,
    n: usize,
    dst: &mut [u8],
    scales: &mut [f32],
) {
    let k4 = k.div_ceil(4);
    let blocks = n.div_ceil(BLOCK);
    let mut amax = vec![0f32; blocks * BLOCK];
    for kk in 0..k {
        let row = &src[kk * rs..kk * rs + n];
        for (m, v) in amax.iter_mut().zip(row) {
            *m = m.max(v.abs());
        }
    }
    let mut inv = vec![0f32; blocks * BLOCK];
    for ((m, s), i) in amax.iter().zip(scales.iter_mut()).zip(inv.iter_mut()) {
        (*s, *i) = scale_of(*m);
    }
    for blk in 0..blocks {
        let c0 = blk * BLOCK;
        let valid = (n - c0).min(BLOCK);
        let inv: &[f32; BLOCK] = inv[c0..c0 + BLOCK].try_into().expect("16 scales");
        let out = &mut dst[blk * k4 * 64..(blk + 1) * k4 * 64];
        for g in 0..k4 {
            let mut words = [0u32; BLOCK];
            for j in 0..4 {
                let kk = 4 * g + j;
                let mut vals = [0f32; BLOCK];
                if kk < k {
                    vals[..valid].copy_from_slice(&src[kk * rs + c0..kk * rs + c0 + valid]);
                }
                for lane in 0..BLOCK {
                    let q = (round_clamp(vals[lane] * inv[lane]) + 128) as u32;
                    words[lane] |= q << (8 * j);
                }
            }
            for (lane, w) in words.iter().enumerate() {
                out[(g * BLOCK + lane) * 4..(g * BLOCK + lane) * 4 + 4]
                    .copy_from_slice(&w.to_le_bytes());
            }
        }
    }
}
