//! `sd-worker bench --kernels`: our CPU kernels (`crate::kernels`) against the
//! Candle op they replace, on the convolutions of an SD 1.5 UNet call at
//! 512x512 (batch 2) and of its VAE decoder, with the GFLOP/s each reaches;
//! and the 8-bit kernels (`crate::kernels::q8`, `--dtype q8`) against the f32
//! ones on the convolutions and linear layers of that UNet call.

use anyhow::Result;
use candle_core::{Device, Tensor};
use std::time::Instant;

use crate::kernels::conv2d::{conv2d, Conv2dParams};
use crate::kernels::q8::{self, Q8Weight};

/// `(label, input [b, c, h, w], c_out, kernel side, stride)`; padding keeps
/// the size (k / 2), as every convolution of these models.
const CONVS: &[(&str, [usize; 4], usize, usize, usize)] = &[
    ("UNet 3x3 320ch 64x64 b2", [2, 320, 64, 64], 320, 3, 1),
    ("UNet 3x3 640ch 32x32 b2", [2, 640, 32, 32], 640, 3, 1),
    ("UNet 3x3 1280ch 16x16 b2", [2, 1280, 16, 16], 1280, 3, 1),
    ("UNet 3x3 s2 320ch 64x64 b2", [2, 320, 64, 64], 320, 3, 2),
    ("UNet 1x1 640->320 64x64 b2", [2, 640, 64, 64], 320, 1, 1),
    ("VAE 3x3 512ch 64x64", [1, 512, 64, 64], 512, 3, 1),
    ("VAE 3x3 512ch 128x128", [1, 512, 128, 128], 512, 3, 1),
    ("VAE 3x3 256ch 256x256", [1, 256, 256, 256], 256, 3, 1),
    ("VAE 3x3 128ch 512x512", [1, 128, 512, 512], 128, 3, 1),
];

/// `(label, tokens, in, out)`: linear layers of an SD 1.5 UNet call at
/// 512x512, batch 2.
const LINEARS: &[(&str, usize, usize, usize)] = &[
    ("attn to_q 320 64x64 b2", 8192, 320, 320),
    ("GEGLU proj 320->2560 64x64 b2", 8192, 320, 2560),
    ("ff out 1280->320 64x64 b2", 8192, 1280, 320),
    ("GEGLU proj 640->5120 32x32 b2", 2048, 640, 5120),
    ("cross-attn to_k 768->320 b2", 154, 768, 320),
];

/// Best wall time of `rounds` calls, in ms.
fn best(rounds: usize, f: &dyn Fn() -> Result<Tensor>) -> Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let t0 = Instant::now();
        let y = f()?;
        best = best.min(t0.elapsed().as_secs_f64() * 1000.0);
        drop(y);
    }
    Ok(best)
}

/// Prints one row per convolution: Candle's time, ours (f32, then 8-bit),
/// the ratios and GFLOP/s; then the linear layers, f32 against 8-bit.
pub(super) fn run(rounds: usize) -> Result<()> {
    println!(
        "sd-worker bench --kernels: conv2d, CPU, best of {rounds} (ms); q8 on {}",
        q8::Isa::detect().name()
    );
    println!(
        "  {:30} {:>10} {:>10} {:>8} {:>12} {:>10} {:>8} {:>12}",
        "convolution", "candle", "ours f32", "ratio", "GFLOP/s", "ours q8", "q8/f32", "GOP/s"
    );
    for &(label, [b, c, h, w], c_out, k, stride) in CONVS {
        let x = Tensor::randn(0f32, 1.0, (b, c, h, w), &Device::Cpu)?;
        let kernel = (Tensor::randn(0f32, 1.0, (c_out, c, k, k), &Device::Cpu)? * 0.02)?;
        let p = Conv2dParams {
            padding: k / 2,
            stride,
            dilation: 1,
        };
        let candle_ms = best(rounds, &|| Ok(x.conv2d(&kernel, p.padding, stride, 1, 1)?))?;
        let ours_ms = best(rounds, &|| Ok(conv2d(&x, &kernel, p, 1)?))?;
        let qk = Q8Weight::quantize(&kernel)?;
        let q8_ms = best(rounds, &|| Ok(q8::conv2d(&x, &qk, None, p)?))?;
        let (oh, ow) = (
            (h + 2 * p.padding - k) / stride + 1,
            (w + 2 * p.padding - k) / stride + 1,
        );
        let gflop = 2.0 * (b * c_out * oh * ow * c * k * k) as f64 / 1e9;
        println!(
            "  {label:30} {candle_ms:>10.1} {ours_ms:>10.1} {:>7.2}x {:>12.1} {q8_ms:>10.1} {:>7.2}x {:>12.1}",
            ours_ms / candle_ms,
            gflop / (ours_ms / 1000.0),
            q8_ms / ours_ms,
            gflop / (q8_ms / 1000.0)
        );
    }
    println!(
        "  (q8 columns: the int8 kernel on each shape; --dtype q8 quantises the UNet only, the VAE stays f32)"
    );
    println!(
        "  {:30} {:>10} {:>10} {:>8} {:>12}",
        "linear", "f32", "q8", "q8/f32", "q8 GOP/s"
    );
    for &(label, m, k, n) in LINEARS {
        let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
        let w = (Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu)? * 0.02)?;
        let qw = Q8Weight::quantize(&w)?;
        let f32_ms = best(rounds, &|| Ok(x.matmul(&w.t()?)?))?;
        let q8_ms = best(rounds, &|| Ok(q8::linear(&x, &qw, None)?))?;
        let gop = 2.0 * (m * k * n) as f64 / 1e9;
        println!(
            "  {label:30} {f32_ms:>10.1} {q8_ms:>10.1} {:>7.2}x {:>12.1}",
            q8_ms / f32_ms,
            gop / (q8_ms / 1000.0)
        );
    }
    Ok(())
}
