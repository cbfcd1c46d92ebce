//! `sd-worker bench --vae-tiling`: the VAE decode of a shape alone (random
//! weights, built in memory), tiled and untiled, and TAESD's decode (the
//! published `AutoencoderTiny` shape for the shape's latents, random
//! weights) at square sizes, with the time and the peak RSS each decode adds. Each row restarts the
//! high-water mark (`/proc/self/clear_refs`, Linux >= 4.0) and reports the
//! peak minus the RSS before it, so the figure is that decode's.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKL;
use std::time::Instant;

use super::{fmt_mib, rss_mib, BenchArgs};
use crate::device::{device_name, dtype_name};
use crate::model::generate::{build, WeightInit};
use crate::model::memory::{self, Workload};
use crate::model::shapes::{ModelShape, SHAPE_NAMES};
use crate::model::taesd::{Taesd, TaesdConfig};
use crate::model::vae::Vae;
use crate::model::vae_decoder::VaeDecoder;
use crate::model::vae_encoder::VaeEncoder;
use crate::model::vae_tiling::{Tiling, VaeTiling};

const MIB: f64 = (1u64 << 20) as f64;

/// One timed decode: `None` figures when the row was skipped.
struct Row {
    side: u32,
    /// `tiled`, `untiled` (the VAE) or `taesd`.
    decoder: &'static str,
    estimate_bytes: u64,
    seconds: Option<f64>,
    peak_increase_mib: Option<u64>,
    skipped: Option<String>,
}

pub(super) fn run(args: &BenchArgs, device: &Device, dtype: DType) -> Result<()> {
    if args.model_path.is_some() {
        bail!("--vae-tiling benchmarks a generated shape's VAE (--shape), not --model-path");
    }
    let shape = ModelShape::by_name(&args.shape).with_context(|| {
        format!(
            "unknown shape `{}`; one of: {}",
            args.shape,
            SHAPE_NAMES.join(", ")
        )
    })?;
    // As the loader: an f16 VAE runs in f32 (force_upcast).
    let dtype = if dtype == DType::F16 {
        DType::F32
    } else {
        dtype
    };
    let scale = shape.vae.scale_factor();
    let native_latent = match &shape.transformer {
        Some(t) => t.sample_size,
        None => shape.unet.sample_size.unwrap_or(64),
    };
    let tiling = Tiling::for_config(&shape.vae, native_latent * scale)?;
    let vae = random_vae(&shape, device, dtype, tiling)?;
    let taesd = random_taesd(shape.vae.latent_channels, device, dtype)?;
    let candle_cfg = shape.vae.to_candle()?;

    let mut rows = Vec::new();
    for &side in &args.vae_sizes {
        if side == 0 || !(side as usize).is_multiple_of(scale) {
            bail!("--vae-sizes: {side} is not a positive multiple of {scale}");
        }
        let latent = side as usize / scale;
        let w = Workload {
            latent_height: latent,
            latent_width: latent,
            batch: 1,
            dtype_bytes: dtype.size_in_bytes(),
        };
        let z = Tensor::randn(
            0f32,
            1f32,
            (1, shape.vae.latent_channels, latent, latent),
            device,
        )?
        .to_dtype(dtype)?;
        for decoder in ["tiled", "untiled", "taesd"] {
            let tiled = decoder == "tiled";
            let mode = if tiled { VaeTiling::On } else { VaeTiling::Off };
            let estimate_bytes = if decoder == "taesd" {
                taesd.decode_bytes(side as usize, side as usize)
            } else {
                memory::vae_decode_bytes_with(&candle_cfg, w, scale, &tiling, mode)
            };
            let mut row = Row {
                side,
                decoder,
                estimate_bytes,
                seconds: None,
                peak_increase_mib: None,
                skipped: None,
            };
            let available = available_bytes();
            if decoder == "untiled"
                && !args.vae_untiled_anyway
                && available.is_some_and(|a| estimate_bytes > a)
            {
                row.skipped = Some(format!(
                    "estimated {:.1} GiB > {:.1} GiB available (--vae-untiled-anyway runs it)",
                    estimate_bytes as f64 / (1u64 << 30) as f64,
                    available.unwrap_or(0) as f64 / (1u64 << 30) as f64
                ));
                rows.push(row);
                continue;
            }
            let before = rss_mib("VmRSS:");
            let _ = std::fs::write("/proc/self/clear_refs", "5");
            let t0 = Instant::now();
            let out = if decoder == "taesd" {
                // TAESD takes the denoiser's (scaled) latents.
                taesd.decode(&(&z * shape.vae.scaling_factor)?)?
            } else {
                vae.decode_with(&z, mode)?
            };
            // Wait for the device (a no-op on the CPU).
            let _ = out
                .flatten_all()?
                .max(0)?
                .to_dtype(DType::F32)?
                .to_scalar::<f32>()?;
            row.seconds = Some(t0.elapsed().as_secs_f64());
            drop(out);
            row.peak_increase_mib = rss_mib("VmHWM:")
                .zip(before)
                .map(|(p, b)| p.saturating_sub(b));
            eprintln!(
                "  {side}x{side} {decoder}: {:.1} s, peak RSS +{} MiB",
                row.seconds.unwrap_or(f64::NAN),
                fmt_mib(row.peak_increase_mib)
            );
            rows.push(row);
        }
    }

    println!(
        "sd-worker bench --vae-tiling: {} VAE (random weights), device {} dtype {}, tiles of {} px ({} latents), overlap {}",
        shape.name,
        device_name(device),
        dtype_name(dtype),
        tiling.sample_size,
        tiling.latent_size,
        tiling.overlap_factor
    );
    println!("    size        decode    time (s)  peak RSS added (MiB)  estimate (MiB)");
    for r in &rows {
        let what = r.decoder;
        match &r.skipped {
            Some(why) => println!("  {:>4}x{:<4}  {what:>8}  skipped: {why}", r.side, r.side),
            None => println!(
                "  {:>4}x{:<4}  {what:>8}  {:>9.1}  {:>20}  {:>14.0}",
                r.side,
                r.side,
                r.seconds.unwrap_or(f64::NAN),
                fmt_mib(r.peak_increase_mib),
                r.estimate_bytes as f64 / MIB
            ),
        }
    }
    if args.json {
        let json: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "shape": shape.name, "width": r.side, "height": r.side, "decoder": r.decoder,
                    "decode_s": r.seconds, "peak_rss_added_mib": r.peak_increase_mib,
                    "estimate_mib": r.estimate_bytes as f64 / MIB, "skipped": r.skipped,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(json));
    }
    Ok(())
}

/// The shape's VAE with the generator's fast random weights, built in memory
/// under Candle's own names (decoder and encoder read the same store).
fn random_vae(shape: &ModelShape, device: &Device, dtype: DType, tiling: Tiling) -> Result<Vae> {
    let cfg = shape.vae.to_candle()?;
    let (cin, cout) = (shape.vae.in_channels, shape.vae.out_channels);
    let tensors = build(WeightInit::Fast, 3, |vb| {
        AutoEncoderKL::new(vb, cin, cout, cfg.clone())
            .map(drop)
            .map_err(Into::into)
    })?;
    // Detached: the generator's tensors are variables, and ops on variables
    // keep their whole graph alive (every intermediate of every tile).
    let tensors = tensors
        .into_iter()
        .map(|(name, t)| (name, t.detach()))
        .collect();
    let vb = VarBuilder::from_tensors(tensors, dtype, device);
    let decoder = VaeDecoder::new(vb.clone(), cout, &cfg)?;
    let encoder = VaeEncoder::new(vb, &shape.vae)?;
    Ok(Vae::new(
        decoder,
        encoder,
        dtype,
        shape.vae.scaling_factor,
        shape.vae.shift_factor,
        tiling,
    ))
}

/// TAESD of the published shape over `latent_channels`, random weights,
/// built in memory.
fn random_taesd(latent_channels: usize, device: &Device, dtype: DType) -> Result<Taesd> {
    let cfg = TaesdConfig::published(latent_channels);
    let tensors = build(WeightInit::Fast, 5, |vb| Taesd::new(vb, &cfg).map(drop))?;
    let tensors = tensors
        .into_iter()
        .map(|(name, t)| (name, t.detach()))
        .collect();
    Taesd::new(VarBuilder::from_tensors(tensors, dtype, device), &cfg)
}

/// `MemAvailable` from /proc/meminfo, in bytes; None where there is none.
fn available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
