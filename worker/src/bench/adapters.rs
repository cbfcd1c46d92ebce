//! The bench's adapter rows: a ControlNet unit (`--controlnet`) and LoRA
//! merging (`--lora`), each with random weights derived from the model.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::time_job;
use crate::model::generate::WeightInit;
use crate::model::LoadedModel;
use crate::pipeline::Request;

/// One ControlNet unit for `req`: a random-weight ControlNet derived from the
/// model's UNet (written to a temporary folder, loaded as `--controlnet`
/// would), a gradient control image at the output size, no preprocessor.
pub fn control_unit(
    model: &LoadedModel,
    req: &Request,
    device: &candle_core::Device,
    dtype: candle_core::DType,
) -> Result<crate::pipeline::ControlUnit> {
    use crate::controlnet::{ControlNetOptions, ControlNetRegistry};
    use crate::model::controlnet::{generate::write_controlnet, ControlNetConfig};
    let unet = model
        .unet_config()
        .context("--controlnet needs a UNet model (SD 1.x, 2.x, XL)")?;
    let meta = model.meta();
    let stages = meta.vae_scale_factor.trailing_zeros() as usize + 1;
    let widths: &[usize] = if unet.block_out_channels[0] >= 256 {
        &[16, 32, 96, 256]
    } else {
        &[8, 16, 32, 64]
    };
    let cfg = ControlNetConfig::from_unet(unet, meta.latent_channels, &widths[..stages.min(4)])?;
    let dir = controlnet_dir();
    write_controlnet(&dir, &cfg, WeightInit::Fast)?;
    let opts = ControlNetOptions {
        models: vec![dir.display().to_string()],
        ..Default::default()
    };
    let registry = ControlNetRegistry::build(&opts, meta, Some(unet), device, dtype)?;
    let net = registry
        .resolve("controlnet")
        .map_err(|e| anyhow::anyhow!(e))?;
    let (w, h) = (req.width, req.height);
    Ok(crate::pipeline::ControlUnit {
        net,
        image: image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 128])
        }),
        preprocess: Default::default(),
        preprocessors: Default::default(),
        conditioning_scale: 1.0,
        guidance_start: 0.0,
        guidance_end: 1.0,
    })
}

/// Where `--controlnet` writes its random-weight ControlNet (named `controlnet`).
pub fn controlnet_dir() -> PathBuf {
    std::env::temp_dir()
        .join(format!("sd-worker-bench-cn-{}", std::process::id()))
        .join("controlnet")
}

/// LoRA merge times and the step time with one merged.
pub struct LoraRows {
    /// Rank-32 LoRA on every attention / feed-forward linear (and the text
    /// encoders'): merge, remove, bytes kept to restore.
    pub linear: (Duration, Duration, u64),
    /// The same plus every resnet conv (LoCon).
    pub with_convs: (Duration, Duration, u64),
    /// Denoiser step time with the linear LoRA merged.
    pub step_ms: f64,
}

impl LoraRows {
    pub fn print(&self, plain_step_ms: f64) {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        for (label, (apply, remove, bytes)) in [
            ("LoRA r32 linears", self.linear),
            ("LoRA r32 + convs ", self.with_convs),
        ] {
            println!(
                "  {label}      merge {:>8.1} ms  remove {:>7.1} ms  kept {:>7.1} MiB",
                ms(apply),
                ms(remove),
                mib(bytes)
            );
        }
        println!(
            "  step with LoRA merged {:>10.1} ms  ({:.2}x the plain step)",
            self.step_ms,
            self.step_ms / plain_step_ms
        );
    }

    pub fn json(&self) -> serde_json::Value {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        serde_json::json!({
            "merge_ms": ms(self.linear.0), "remove_ms": ms(self.linear.1), "kept_bytes": self.linear.2,
            "with_convs_merge_ms": ms(self.with_convs.0), "with_convs_remove_ms": ms(self.with_convs.1),
            "with_convs_kept_bytes": self.with_convs.2, "step_ms": self.step_ms,
        })
    }
}

/// Writes two random rank-32 kohya LoRAs for `model` (linears; linears and
/// convs), times merging and removing each, and one job of `req` with the
/// first merged (through the job's `loras`, as a request would).
pub fn lora_rows(model: &LoadedModel, req: &Request) -> Result<LoraRows> {
    use crate::lora::generate::{write_lora, LoraGenOptions};
    use crate::lora::{time_apply_remove, LoraFile, LoraFormat, LoraUse};
    let dir = std::env::temp_dir().join(format!("sd-worker-bench-lora-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| -> Result<LoraRows> {
        let layers = model.unet_config().map(|c| c.layers_per_block);
        let mut timed = Vec::new();
        for (name, convs) in [("linears", false), ("convs", true)] {
            let path = dir.join(format!("{name}.safetensors"));
            let options = LoraGenOptions {
                text_encoders: true,
                convs,
                ..LoraGenOptions::default()
            };
            write_lora(
                &path,
                LoraFormat::Kohya,
                model.weight_tables(),
                layers,
                32,
                7,
                &options,
            )?;
            let set = [LoraUse {
                file: Arc::new(LoraFile::read(&path)?),
                unet_weight: 1.0,
                text_encoder_weight: 1.0,
            }];
            let report = model.apply_loras(&set)?;
            let (apply, remove) = time_apply_remove(model, &set)?;
            timed.push((apply, remove, report.backup_bytes));
        }
        let path = dir.join("linears.safetensors");
        let meta = std::fs::metadata(&path)?;
        let choice = crate::pipeline::LoraChoice {
            name: "linears".into(),
            path: path.clone(),
            stamp: crate::catalog::Stamp {
                size: meta.len(),
                modified: meta.modified().ok(),
            },
            hash: "bench".into(),
            format: crate::catalog::lora::LoraFormat::Kohya,
            unet_weight: 1.0,
            text_encoder_weight: 1.0,
        };
        let with_lora = Request {
            loras: vec![choice],
            ..req.clone()
        };
        // Once to merge, once timed (the same set is reused: no merge).
        time_job(model, &with_lora)?;
        let (_, _, t) = time_job(model, &with_lora)?;
        model.remove_loras()?;
        Ok(LoraRows {
            linear: timed[0],
            with_convs: timed[1],
            step_ms: t.denoise_ms / t.unet_steps.max(1) as f64,
        })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result.context("the LoRA rows")
}
