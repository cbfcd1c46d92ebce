//! Image encoding. PNGs carry the generation parameters in a `parameters` text
//! chunk in AUTOMATIC1111's format, which other tools (and the studio) read back.

use anyhow::{Context, Result};
use image::codecs::jpeg::JpegEncoder;
use image::ExtendedColorType;

use sd_worker_sdk::Rng;

use crate::scheduler::SchedulerKind;

/// What gets written into a PNG's `parameters` chunk.
pub struct Parameters<'a> {
    pub prompt: &'a str,
    pub negative_prompt: &'a str,
    pub steps: usize,
    /// Written as its A1111 sampler name (`Sampler: Euler a`), from the contract's table.
    pub scheduler: SchedulerKind,
    pub guidance_scale: f64,
    pub seed: u64,
    pub width: u32,
    pub height: u32,
    pub model: &'a str,
    /// Image to image and inpainting.
    pub denoising_strength: Option<f64>,
    /// Written as A1111 names its random sources (`RNG: CPU` for torch's CPU
    /// generator); nothing for ChaCha, which A1111 does not have.
    pub rng: Rng,
    /// Written as A1111's ControlNet extension writes its units.
    pub controlnets: &'a [super::ControlUnit],
    /// (name, A1111 short hash) of the job's LoRAs, as A1111 writes them:
    /// `Lora hashes: "name: hash, …"`.
    pub lora_hashes: Vec<(&'a str, &'a str)>,
    /// The same for the embeddings its prompts use: `TI hashes: "…"`.
    pub ti_hashes: Vec<(&'a str, &'a str)>,
    /// The final images came from TAESD (`vae: tiny`): `VAE: TAESD`.
    pub tiny_vae: bool,
    /// A hires fix (then `width` x `height` is the first pass's size, as
    /// A1111 writes it): `Denoising strength`, `Hires upscale` or `Hires
    /// resize`, `Hires steps`, `Hires upscaler`.
    pub hires: Option<&'a super::hires::Hires>,
}

impl Parameters<'_> {
    /// AUTOMATIC1111's layout: prompt, optional negative prompt line, then a
    /// comma-separated `Key: value` line with A1111's keys in A1111's order
    /// (`create_infotext`: Steps, Sampler, CFG scale, Seed, Size, Model,
    /// Denoising strength, RNG). The sampler is the pre-1.9 single name ("DPM++ 2M
    /// Karras", no `Schedule type`), which every A1111 version reads.
    pub fn to_a1111(&self) -> String {
        let mut text = self.prompt.to_string();
        if !self.negative_prompt.is_empty() {
            text.push_str("\nNegative prompt: ");
            text.push_str(self.negative_prompt);
        }
        text.push_str(&format!(
            "\nSteps: {}, Sampler: {}, CFG scale: {}, Seed: {}, Size: {}x{}, Model: {}",
            self.steps,
            self.scheduler.a1111_name(),
            self.guidance_scale,
            self.seed,
            self.width,
            self.height,
            self.model
        ));
        if let Some(strength) = self.denoising_strength.or(self.hires.map(|h| h.strength)) {
            text.push_str(&format!(", Denoising strength: {strength}"));
        }
        if let Some(h) = self.hires {
            match h.infotext.scale {
                Some(scale) => text.push_str(&format!(", Hires upscale: {scale}")),
                None => text.push_str(&format!(", Hires resize: {}x{}", h.width, h.height)),
            }
            if let Some(steps) = h.infotext.steps {
                text.push_str(&format!(", Hires steps: {steps}"));
            }
            text.push_str(&format!(", Hires upscaler: {}", h.infotext.upscaler));
        }
        if self.tiny_vae {
            text.push_str(", VAE: TAESD");
        }
        match self.rng {
            Rng::Chacha => {}
            Rng::TorchCpu => text.push_str(", RNG: CPU"),
            Rng::Nv => text.push_str(", RNG: NV"),
        }
        for (key, list) in [
            ("Lora hashes", &self.lora_hashes),
            ("TI hashes", &self.ti_hashes),
        ] {
            if !list.is_empty() {
                let items: Vec<String> = list.iter().map(|(n, h)| format!("{n}: {h}")).collect();
                text.push_str(&format!(", {key}: \"{}\"", items.join(", ")));
            }
        }
        for (i, unit) in self.controlnets.iter().enumerate() {
            text.push_str(&format!(
                ", ControlNet {i}: \"{}\"",
                controlnet_infotext(unit)
            ));
        }
        text
    }
}

/// One unit as A1111's ControlNet extension writes it (quoted, inside the
/// parameters line): `Module: canny, Model: name, Weight: 1.0, Guidance
/// Start: 0.0, Guidance End: 1.0`, with canny's thresholds as its
/// `Threshold A`/`Threshold B` and scribble's as `Threshold A`.
pub fn controlnet_infotext(unit: &super::ControlUnit) -> String {
    use sd_worker_sdk::control::{
        DEFAULT_CANNY_HIGH, DEFAULT_CANNY_LOW, DEFAULT_SCRIBBLE_THRESHOLD,
    };
    use sd_worker_sdk::PreprocessorName;
    let p = &unit.preprocess;
    let mut text = format!(
        "Module: {}, Model: {}, Weight: {:?}",
        p.name().as_str(),
        unit.net.name(),
        unit.conditioning_scale
    );
    match p.name() {
        PreprocessorName::Canny => text.push_str(&format!(
            ", Threshold A: {}, Threshold B: {}",
            p.low_threshold.unwrap_or(DEFAULT_CANNY_LOW),
            p.high_threshold.unwrap_or(DEFAULT_CANNY_HIGH)
        )),
        PreprocessorName::Scribble => text.push_str(&format!(
            ", Threshold A: {}",
            p.threshold.unwrap_or(DEFAULT_SCRIBBLE_THRESHOLD)
        )),
        _ => {}
    }
    text.push_str(&format!(
        ", Guidance Start: {:?}, Guidance End: {:?}",
        unit.guidance_start, unit.guidance_end
    ));
    text
}

/// RGB8 pixels to PNG, with `parameters` as tEXt (Latin-1) or iTXt (UTF-8).
pub fn encode_png(
    rgb: &[u8],
    width: u32,
    height: u32,
    parameters: Option<&str>,
) -> Result<Vec<u8>> {
    let chunks: Vec<(&str, &str)> = parameters.map(|p| ("parameters", p)).into_iter().collect();
    encode_png_texts(rgb, width, height, &chunks)
}

/// RGB8 pixels to PNG with text chunks `(keyword, text)`, each tEXt
/// (Latin-1) or iTXt (UTF-8), in order (A1111's `parameters`,
/// `postprocessing`).
pub fn encode_png_texts(
    rgb: &[u8],
    width: u32,
    height: u32,
    chunks: &[(&str, &str)],
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        for (keyword, text) in chunks {
            if text.chars().all(|c| (c as u32) < 256 && c != '\0') {
                encoder.add_text_chunk(keyword.to_string(), text.to_string())?;
            } else {
                encoder.add_itxt_chunk(keyword.to_string(), text.to_string())?;
            }
        }
        let mut writer = encoder.write_header().context("writing PNG header")?;
        writer.write_image_data(rgb).context("writing PNG data")?;
        writer.finish().context("finishing PNG")?;
    }
    Ok(out)
}

pub fn encode_jpeg(rgb: &[u8], width: u32, height: u32, quality: u8) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, quality)
        .encode(rgb, width, height, ExtendedColorType::Rgb8)
        .context("encoding JPEG")?;
    Ok(out)
}

/// Reads the `parameters` text back from a PNG (tEXt, zTXt or iTXt).
pub fn read_png_parameters(png_bytes: &[u8]) -> Option<String> {
    read_png_text(png_bytes, "parameters")
}

/// The text chunk `keyword` of a PNG (tEXt or iTXt); None for other images.
pub fn read_png_text(png_bytes: &[u8], keyword: &str) -> Option<String> {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let reader = decoder.read_info().ok()?;
    let info = reader.info();
    info.uncompressed_latin1_text
        .iter()
        .find(|c| c.keyword == keyword)
        .map(|c| c.text.clone())
        .or_else(|| {
            info.utf8_text
                .iter()
                .find(|c| c.keyword == keyword)
                .and_then(|c| c.get_text().ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(prompt: &str) -> String {
        Parameters {
            prompt,
            negative_prompt: "blurry",
            steps: 20,
            scheduler: SchedulerKind::Euler,
            guidance_scale: 7.5,
            seed: 42,
            width: 64,
            height: 32,
            model: "tiny-sd",
            denoising_strength: None,
            rng: Rng::Chacha,
            controlnets: &[],
            lora_hashes: Vec::new(),
            ti_hashes: Vec::new(),
            hires: None,
            tiny_vae: false,
        }
        .to_a1111()
    }

    #[test]
    fn a1111_layout() {
        assert_eq!(
            params("a cat"),
            "a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler, CFG scale: 7.5, Seed: 42, Size: 64x32, Model: tiny-sd"
        );
    }

    #[test]
    fn a1111_layout_of_image_to_image_ends_with_the_denoising_strength() {
        let text = Parameters {
            prompt: "a cat",
            negative_prompt: "",
            steps: 20,
            scheduler: SchedulerKind::DpmPp2mKarras,
            guidance_scale: 7.0,
            seed: 1,
            width: 64,
            height: 64,
            model: "m",
            denoising_strength: Some(0.75),
            rng: Rng::TorchCpu,
            controlnets: &[],
            lora_hashes: Vec::new(),
            ti_hashes: Vec::new(),
            hires: None,
            tiny_vae: false,
        }
        .to_a1111();
        assert_eq!(
            text,
            "a cat\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1, Size: 64x64, Model: m, Denoising strength: 0.75, RNG: CPU"
        );
    }

    /// The PNGs the studio's tests parse (`app/test/worker-pngs.ts`): one per
    /// scheduler and operation, written by this encoder. The committed file must
    /// be current; `SD_WORKER_WRITE_FIXTURES=1` rewrites it instead of failing.
    #[test]
    fn studio_png_fixture_is_current() {
        use base64::Engine;
        let mut entries = Vec::new();
        for kind in SchedulerKind::ALL {
            for (operation, strength) in
                [("image_generation", None), ("image_transform", Some(0.6))]
            {
                let text = Parameters {
                    prompt: "a red circle, on: blue",
                    negative_prompt: "blurry",
                    steps: 12,
                    scheduler: kind,
                    guidance_scale: 6.5,
                    seed: 9_007_199_254_740_991,
                    width: 48,
                    height: 32,
                    model: "tiny-sd",
                    denoising_strength: strength,
                    rng: Rng::Chacha,
                    controlnets: &[],
                    lora_hashes: Vec::new(),
                    ti_hashes: Vec::new(),
                    hires: None,
                    tiny_vae: false,
                }
                .to_a1111();
                let png = encode_png(&[200u8; 2 * 2 * 3], 2, 2, Some(&text)).unwrap();
                entries.push(serde_json::json!({
                    "scheduler": kind.name(),
                    "flow_matching": kind.is_flow_matching(),
                    "operation": operation,
                    "strength": strength,
                    "png": base64::engine::general_purpose::STANDARD.encode(png),
                }));
            }
        }
        let want = format!(
            "// Generated by worker/src/pipeline/encode.rs (`studio_png_fixture_is_current`): do not edit.\n\
             // `SD_WORKER_WRITE_FIXTURES=1 cargo test -p sd-worker --lib studio_png_fixture` rewrites it.\n\
             \n\
             import type {{ Operation, SchedulerName }} from '@sd-worker/sdk';\n\
             \n\
             /** A PNG the worker's encoder wrote, with what was asked. */\n\
             export interface WorkerPng {{\n  \
             scheduler: SchedulerName;\n  \
             flow_matching: boolean;\n  \
             operation: Operation;\n  \
             strength: number | null;\n  \
             /** base64 */\n  \
             png: string;\n\
             }}\n\
             \n\
             export const WORKER_PNGS: readonly WorkerPng[] = {};\n",
            serde_json::to_string_pretty(&entries).unwrap()
        );
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../app/test/worker-pngs.ts");
        if std::env::var_os("SD_WORKER_WRITE_FIXTURES").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "app/test/worker-pngs.ts is stale: run `SD_WORKER_WRITE_FIXTURES=1 cargo test -p sd-worker --lib studio_png_fixture`"
        );
    }

    #[test]
    fn png_round_trips_parameters_latin1_and_utf8() {
        for prompt in ["a red circle", "un gâteau", "猫の写真 🐱"] {
            let text = params(prompt);
            let png = encode_png(&[128u8; 4 * 2 * 3], 4, 2, Some(&text)).unwrap();
            assert_eq!(read_png_parameters(&png).as_deref(), Some(text.as_str()));
            let img = image::load_from_memory(&png).unwrap();
            assert_eq!((img.width(), img.height()), (4, 2));
        }
    }
}
