//! `sd-worker bench`: per-stage timings and peak memory of the real pipeline on
//! a named model shape with random weights (or on a model folder). Random
//! weights cost the same arithmetic as trained ones, so the numbers hold for
//! the real model of that shape.

mod adapters;
mod kernels;
mod ops;
mod vae;

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::Instant;

use crate::device::{device_name, parse_device_for, precision_name, resolve_precision};
use crate::model::generate::{write_model, WeightInit};
use crate::model::shapes::{ModelShape, SHAPE_NAMES};
use crate::model::{source, LoadedModel};
use crate::pipeline::{generate, Observer, Outcome, Request, StageTimings};
use crate::scheduler::SchedulerKind;
use sd_worker_sdk::ImageFormat;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Model shape with random weights: tiny, tiny-sd2, tiny-sdxl, tiny-sd3, sd15, sdxl or sd3-medium (and tiny-inpaint, sd15-inpaint).
    #[arg(long, default_value = "sd15")]
    pub shape: String,
    /// Benchmark this diffusers folder instead of a generated shape.
    #[arg(long)]
    pub model_path: Option<PathBuf>,
    /// Image width (default: the model's native size).
    #[arg(long)]
    pub width: Option<u32>,
    #[arg(long)]
    pub height: Option<u32>,
    #[arg(long, default_value_t = 4)]
    pub steps: usize,
    /// Above 1 runs the unconditional pass too (batch of 2), as real jobs do.
    #[arg(long, default_value_t = 7.5)]
    pub guidance_scale: f64,
    /// Images per job; a list (`1,2,4,8`) also runs each batch size in turn and
    /// prints how the time per image scales with it.
    #[arg(long, default_value = "1", value_delimiter = ',')]
    pub num_images: Vec<usize>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long, value_enum)]
    pub dtype: Option<crate::cli::DTypeArg>,
    /// SD 3 shapes: leave the T5 encoder out.
    #[arg(long)]
    pub no_t5: bool,
    /// Also time the job with one ControlNet unit (a random-weight ControlNet
    /// derived from the model's UNet, as diffusers' `from_unet`), and print
    /// its step time beside the plain one.
    #[arg(long)]
    pub controlnet: bool,
    /// Also time merging and removing a random rank-32 LoRA (every attention
    /// and feed-forward linear of the UNet and text encoders; then also the
    /// resnet convs), and the step time with it merged.
    #[arg(long)]
    pub lora: bool,
    /// Instead of a generation: time the shape's VAE decode alone (random
    /// weights), tiled (diffusers' `enable_tiling`, the VAE's own tile size)
    /// and untiled, at each of --vae-sizes, with the peak RSS each adds.
    #[arg(long)]
    pub vae_tiling: bool,
    /// Square image sides for --vae-tiling.
    #[arg(long, default_value = "1024,2048", value_delimiter = ',')]
    pub vae_sizes: Vec<u32>,
    /// --vae-tiling: run the untiled decodes even when their memory estimate
    /// exceeds the memory available (they are skipped otherwise).
    #[arg(long)]
    pub vae_untiled_anyway: bool,
    /// Instead of a generation: time our CPU kernels against the Candle ops
    /// they replace, on the SD 1.5 UNet's and VAE's convolution shapes.
    #[arg(long)]
    pub kernels: bool,
    /// Also run the job once more timing each kind of operation (convolutions,
    /// group norms, attention, the rest), for the denoiser and the VAE apart.
    #[arg(long)]
    pub ops: bool,
    /// Also print the figures as one JSON line.
    #[arg(long)]
    pub json: bool,
}

struct Quiet;
impl Observer for Quiet {
    fn warning(&mut self, _: &str, _: &str) {}
    fn step(&mut self, _: usize, _: usize) -> bool {
        true
    }
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let device = parse_device_for(&args.device, args.dtype)?;
    let (dtype, quant) = resolve_precision(&device, args.dtype)?;
    if args.vae_tiling {
        return vae::run(args, &device, dtype);
    }
    if args.kernels {
        return kernels::run(3);
    }
    let mut generated = None;
    let (dir, label) = match &args.model_path {
        Some(dir) => (dir.clone(), dir.display().to_string()),
        None => {
            let mut shape = ModelShape::by_name(&args.shape).with_context(|| {
                format!(
                    "unknown shape `{}`; one of: {}",
                    args.shape,
                    SHAPE_NAMES.join(", ")
                )
            })?;
            if args.no_t5 {
                shape.text_encoder_3 = None;
            }
            let tmp = tempdir_in_cache()?;
            let t0 = Instant::now();
            eprintln!(
                "writing a random-weight `{}` model to {} ...",
                shape.name,
                tmp.display()
            );
            write_model(&tmp, &shape, WeightInit::Fast)?;
            eprintln!("  written in {:.1} s", t0.elapsed().as_secs_f64());
            generated = Some(tmp.clone());
            (tmp, format!("{} (random weights)", shape.name))
        }
    };
    let result = measure(args, &dir, &label, &device, (dtype, quant));
    if let Some(tmp) = generated {
        let _ = std::fs::remove_dir_all(tmp);
    }
    result
}

fn measure(
    args: &BenchArgs,
    dir: &std::path::Path,
    label: &str,
    device: &candle_core::Device,
    (dtype, quant): (candle_core::DType, crate::model::quant::WeightQuant),
) -> Result<()> {
    // Generating random weights above used memory the worker never would:
    // restart the high-water mark (Linux >= 4.0) so the peak is the pipeline's.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let t0 = Instant::now();
    let model = LoadedModel::from_files(
        source::local(
            dir,
            source::Wanted {
                half: dtype != candle_core::DType::F32,
                skip_t5: args.no_t5,
            },
        )?,
        device,
        crate::model::LoadOptions {
            dtype,
            skip_t5: args.no_t5,
            quant,
        },
    )?;
    let load_s = t0.elapsed().as_secs_f64();
    let load_peak = rss_mib("VmHWM:");
    let rss_after_load = rss_mib("VmRSS:");
    let _ = std::fs::write("/proc/self/clear_refs", "5");

    // Text encoder alone, warm (second of two calls).
    let conditioner = model.conditioner();
    let tokens = conditioner.tokenize("a photograph of an astronaut riding a horse", "prompt")?;
    let _ = conditioner.encode(&tokens, 1)?;
    let t0 = Instant::now();
    let _ = conditioner.encode(&tokens, 1)?;
    let text_ms = t0.elapsed().as_secs_f64() * 1000.0;

    let req = Request {
        prompt: "a photograph of an astronaut riding a horse".into(),
        negative_prompt: None,
        steps: args.steps,
        guidance_scale: args.guidance_scale,
        seed: 0,
        width: args.width.unwrap_or(model.meta().native_width),
        height: args.height.unwrap_or(model.meta().native_height),
        scheduler: SchedulerKind::Euler,
        num_images: 1,
        output_format: ImageFormat::Png,
        rng: sd_worker_sdk::Rng::Chacha,
        init: None,
        controls: Vec::new(),
        loras: Vec::new(),
        embeddings: Vec::new(),
        hires: None,
        decoding: Default::default(),
        prompt_as_written: "a photograph of an astronaut riding a horse".into(),
        negative_prompt_as_written: None,
    };
    let runs = args
        .num_images
        .iter()
        .map(|&n| {
            time_job(
                &model,
                &Request {
                    num_images: n,
                    ..req.clone()
                },
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let Some((num_images, e2e_ms, timings)) = runs.first().cloned() else {
        anyhow::bail!("--num-images needs at least one batch size");
    };
    let step_ms = timings.denoise_ms / timings.unet_steps.max(1) as f64;
    // The first batch size's request, which the optional measures below share.
    let req = Request { num_images, ..req };
    let controlnet_step_ms = if args.controlnet {
        let req = Request {
            controls: vec![adapters::control_unit(&model, &req, device, dtype)?],
            ..req.clone()
        };
        let timed = time_job(&model, &req);
        let _ = std::fs::remove_dir_all(adapters::controlnet_dir());
        let (_, _, t) = timed?;
        Some(t.denoise_ms / t.unet_steps.max(1) as f64)
    } else {
        None
    };
    let lora = if args.lora {
        Some(adapters::lora_rows(&model, &req)?)
    } else {
        None
    };
    let peak = rss_mib("VmHWM:");
    let ops = if args.ops {
        Some(ops::measure(&model, &req)?)
    } else {
        None
    };
    let guidance_batch = if args.guidance_scale > 1.0 { 2 } else { 1 };
    let batch = num_images * guidance_batch;

    println!("sd-worker bench: {label}");
    println!(
        "  device {} dtype {}  {}x{}  {} steps  denoiser batch {batch}",
        device_name(device),
        precision_name(dtype, quant),
        req.width,
        req.height,
        args.steps
    );
    println!("  load                  {:>10.2} s", load_s);
    println!("  text encoder (1 pass) {:>10.1} ms", text_ms);
    println!("  denoiser step (mean)  {:>10.1} ms", step_ms);
    if let Some(cn) = controlnet_step_ms {
        println!(
            "  step with 1 ControlNet{:>10.1} ms  ({:.2}x the plain step)",
            cn,
            cn / step_ms
        );
    }
    if let Some(l) = &lora {
        l.print(step_ms);
    }
    println!("  VAE decode            {:>10.1} ms", timings.vae_decode_ms);
    println!("  end to end            {:>10.1} ms", e2e_ms);
    println!("  peak RSS loading      {:>10} MiB", fmt_mib(load_peak));
    println!(
        "  RSS after load        {:>10} MiB",
        fmt_mib(rss_after_load)
    );
    println!("  peak RSS generating   {:>10} MiB", fmt_mib(peak));
    if let Some(ops) = &ops {
        ops.print();
    }
    if runs.len() > 1 {
        println!("  batch scaling (time per image relative to {num_images} image(s) per job):");
        println!("    images  denoiser step  VAE decode  end to end  per image  relative");
        let per_image_base = e2e_ms / num_images as f64;
        for (n, e2e, t) in &runs {
            let per_image = e2e / *n as f64;
            println!(
                "    {n:>6}  {:>10.1} ms  {:>7.1} ms  {:>7.0} ms  {:>6.0} ms  {:>7.2}x",
                t.denoise_ms / t.unet_steps.max(1) as f64,
                t.vae_decode_ms,
                e2e,
                per_image,
                per_image / per_image_base
            );
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "model": label, "device": device_name(device), "dtype": precision_name(dtype, quant),
                "width": req.width, "height": req.height, "steps": args.steps, "unet_batch": batch,
                "load_s": load_s, "text_encoder_ms": text_ms, "unet_step_ms": step_ms,
                "vae_decode_ms": timings.vae_decode_ms, "end_to_end_ms": e2e_ms,
                "peak_rss_mib_loading": load_peak, "rss_mib_after_load": rss_after_load,
                "peak_rss_mib_generating": peak,
                "controlnet_step_ms": controlnet_step_ms,
                "lora": lora.as_ref().map(adapters::LoraRows::json),
                "ops": ops.as_ref().map(ops::OpsSplit::json),
                "batch_scaling": runs.iter().map(|(n, e2e, t)| serde_json::json!({
                    "num_images": n, "unet_step_ms": t.denoise_ms / t.unet_steps.max(1) as f64,
                    "vae_decode_ms": t.vae_decode_ms, "end_to_end_ms": e2e,
                })).collect::<Vec<_>>(),
            })
        );
    }
    Ok(())
}

/// Runs one job; returns its batch size, end-to-end time in ms and stage timings.
pub(crate) fn time_job(model: &LoadedModel, req: &Request) -> Result<(usize, f64, StageTimings)> {
    let t0 = Instant::now();
    let Outcome::Completed { timings, .. } = generate::run(model, req, &mut Quiet)? else {
        anyhow::bail!("the benchmark run was cancelled");
    };
    Ok((req.num_images, t0.elapsed().as_secs_f64() * 1000.0, timings))
}

fn tempdir_in_cache() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("sd-worker-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A memory figure of this process from /proc/self/status (`VmHWM:` peak,
/// `VmRSS:` current), in MiB; None where there is no such file.
fn rss_mib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

fn fmt_mib(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "n/a".into())
}
