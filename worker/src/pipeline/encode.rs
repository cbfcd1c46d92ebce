//! Image encoding. PNGs carry the generation parameters in a `parameters` text
//! chunk in AUTOMATIC1111's format, which other tools (and the studio) read back.

use anyhow::{Context, Result};
use image::codecs::jpeg::JpegEncoder;
use image::ExtendedColorType;

/// What gets written into a PNG's `parameters` chunk.
pub struct Parameters<'a> {
    pub prompt: &'a str,
    pub negative_prompt: &'a str,
    pub steps: usize,
    pub sampler: &'a str,
    pub guidance_scale: f64,
    pub seed: u64,
    pub width: u32,
    pub height: u32,
    pub model: &'a str,
    /// Image to image and inpainting.
    pub denoising_strength: Option<f64>,
}

impl Parameters<'_> {
    /// AUTOMATIC1111's layout: prompt, optional negative prompt line, then a
    /// comma-separated `Key: value` line.
    pub fn to_a1111(&self) -> String {
        let mut text = self.prompt.to_string();
        if !self.negative_prompt.is_empty() {
            text.push_str("\nNegative prompt: ");
            text.push_str(self.negative_prompt);
        }
        text.push_str(&format!(
            "\nSteps: {}, Sampler: {}, CFG scale: {}, Seed: {}, Size: {}x{}, Model: {}",
            self.steps,
            self.sampler,
            self.guidance_scale,
            self.seed,
            self.width,
            self.height,
            self.model
        ));
        text
    }
}

/// RGB8 pixels to PNG, with `parameters` as tEXt (Latin-1) or iTXt (UTF-8).
pub fn encode_png(
    rgb: &[u8],
    width: u32,
    height: u32,
    parameters: Option<&str>,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        if let Some(text) = parameters {
            if text.chars().all(|c| (c as u32) < 256 && c != '\0') {
                encoder.add_text_chunk("parameters".into(), text.into())?;
            } else {
                encoder.add_itxt_chunk("parameters".into(), text.into())?;
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
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let reader = decoder.read_info().ok()?;
    let info = reader.info();
    info.uncompressed_latin1_text
        .iter()
        .find(|c| c.keyword == "parameters")
        .map(|c| c.text.clone())
        .or_else(|| {
            info.utf8_text
                .iter()
                .find(|c| c.keyword == "parameters")
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
            sampler: "Euler",
            guidance_scale: 7.5,
            seed: 42,
            width: 64,
            height: 32,
            model: "tiny-sd",
            denoising_strength: None,
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
