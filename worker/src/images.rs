//! Input images of image-to-image and inpainting: base64 (with or without a
//! `data:` URL prefix) -> decoded PNG/JPEG/WebP -> brought to the output size ->
//! masks. Every failure names the request field it came from.

use base64::Engine as _;
use image::imageops::{self, FilterType};
use image::{DynamicImage, GrayImage, ImageFormat, ImageReader, Luma, RgbImage, RgbaImage};
use sd_worker_sdk::{ApiError, ErrorCode, ResizeMode};
use std::io::Cursor;

/// What is repainted, at the output size.
#[derive(Debug, Clone, PartialEq)]
pub struct InpaintMask {
    /// 255 = repaint, 0 = keep (binarised at 50%).
    pub binary: GrayImage,
    /// Weights of the generated pixels when pasting back: `binary`, feathered
    /// by `mask_blur`. 0 keeps the input pixel exactly.
    pub blend: GrayImage,
}

/// Decodes a base64 image field, refusing anything over `max_pixels`
/// before decoding it.
pub fn decode(field: &str, b64: &str, max_pixels: u64) -> Result<DynamicImage, ApiError> {
    let bad = |msg: String| ApiError::new(ErrorCode::InvalidImage, msg).with_field(field);
    let data = match b64.trim_start().strip_prefix("data:") {
        Some(rest) => rest
            .split_once(',')
            .map(|(_, d)| d)
            .ok_or_else(|| bad(format!("`{field}` is a data URL without data")))?,
        None => b64,
    };
    let cleaned: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let bytes = engines
        .iter()
        .find_map(|e| e.decode(&cleaned).ok())
        .ok_or_else(|| bad(format!("`{field}` is not valid base64")))?;
    let reader = ImageReader::new(Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| bad(format!("`{field}`: {e}")))?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP) => {}
        _ => return Err(bad(format!("`{field}` is not a PNG, JPEG or WebP image"))),
    }
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| bad(format!("`{field}` cannot be read: {e}")))?;
    if u64::from(w) * u64::from(h) > max_pixels {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("`{field}` is {w}x{h}; at most {max_pixels} pixels are accepted"),
        )
        .with_field(field));
    }
    ImageReader::new(Cursor::new(&bytes))
        .with_guessed_format()
        .and_then(|r| r.decode().map_err(std::io::Error::other))
        .map_err(|e| bad(format!("`{field}` cannot be decoded: {e}")))
}

/// Brings `img` to exactly `width` x `height`. Also returns which output pixels
/// came from no input pixel (the borders of `Fit`), 255 there.
pub fn resize(
    img: &RgbaImage,
    width: u32,
    height: u32,
    mode: ResizeMode,
) -> (RgbaImage, GrayImage) {
    let (iw, ih) = img.dimensions();
    let mut uncovered = GrayImage::new(width, height);
    let out = match mode {
        ResizeMode::Stretch => imageops::resize(img, width, height, FilterType::Lanczos3),
        ResizeMode::Crop => {
            let scale = f64::max(width as f64 / iw as f64, height as f64 / ih as f64);
            let (sw, sh) = (
                ((iw as f64 * scale).round() as u32).max(width),
                ((ih as f64 * scale).round() as u32).max(height),
            );
            let scaled = imageops::resize(img, sw, sh, FilterType::Lanczos3);
            imageops::crop_imm(&scaled, (sw - width) / 2, (sh - height) / 2, width, height)
                .to_image()
        }
        ResizeMode::Fit => {
            let scale = f64::min(width as f64 / iw as f64, height as f64 / ih as f64);
            let (sw, sh) = (
                ((iw as f64 * scale).round() as u32).clamp(1, width),
                ((ih as f64 * scale).round() as u32).clamp(1, height),
            );
            let scaled = imageops::resize(img, sw, sh, FilterType::Lanczos3);
            let mut canvas = RgbaImage::from_pixel(width, height, image::Rgba([0, 0, 0, 255]));
            let (x, y) = ((width - sw) / 2, (height - sh) / 2);
            imageops::replace(&mut canvas, &scaled, x as i64, y as i64);
            for (px, py, p) in uncovered.enumerate_pixels_mut() {
                let inside = px >= x && px < x + sw && py >= y && py < y + sh;
                *p = Luma([if inside { 0 } else { 255 }]);
            }
            canvas
        }
    };
    (out, uncovered)
}

/// The repaint mask at the output size: from the `mask` image (its luminance),
/// or from the input's transparency when no mask was sent; binarised at 50%,
/// plus the uncovered borders of `Fit`; feathered by `blur` pixels for pasting back.
pub fn inpaint_mask(
    mask: Option<&GrayImage>,
    input_alpha: &GrayImage,
    uncovered: &GrayImage,
    blur: u32,
) -> InpaintMask {
    let (w, h) = uncovered.dimensions();
    let mut binary = GrayImage::new(w, h);
    for (x, y, p) in binary.enumerate_pixels_mut() {
        let repaint = match mask {
            Some(m) => m.get_pixel(x, y)[0] >= 128,
            None => input_alpha.get_pixel(x, y)[0] < 128,
        };
        *p = Luma([if repaint || uncovered.get_pixel(x, y)[0] > 0 {
            255
        } else {
            0
        }]);
    }
    let blend = if blur == 0 {
        binary.clone()
    } else {
        imageops::blur(&binary, blur as f32 / 2.0)
    };
    InpaintMask { binary, blend }
}

/// Resizes a decoded mask image to the output size (same mode as the image).
pub fn mask_to_size(mask: &DynamicImage, width: u32, height: u32, mode: ResizeMode) -> GrayImage {
    let rgba = DynamicImage::ImageLuma8(mask.to_luma8()).to_rgba8();
    let (resized, _) = resize(&rgba, width, height, mode);
    DynamicImage::ImageRgba8(resized).to_luma8()
}

/// Whether any pixel is transparent.
pub fn has_transparency(img: &DynamicImage) -> bool {
    img.color().has_alpha() && img.to_rgba8().pixels().any(|p| p[3] < 255)
}

pub fn alpha_of(img: &RgbaImage) -> GrayImage {
    GrayImage::from_fn(img.width(), img.height(), |x, y| {
        Luma([img.get_pixel(x, y)[3]])
    })
}

pub fn rgb_of(img: &RgbaImage) -> RgbImage {
    DynamicImage::ImageRgba8(img.clone()).to_rgb8()
}

/// `base + (generated - base) * weight` per pixel, with 0 keeping `base` exactly.
pub fn paste_back(base: &RgbImage, generated: &mut RgbImage, weights: &GrayImage) {
    for ((g, b), w) in generated
        .pixels_mut()
        .zip(base.pixels())
        .zip(weights.pixels())
    {
        let w = u32::from(w[0]);
        for c in 0..3 {
            g[c] = ((u32::from(b[c]) * (255 - w) + u32::from(g[c]) * w + 127) / 255) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_b64(img: &DynamicImage) -> String {
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    #[test]
    fn decodes_plain_and_data_urls_and_names_the_field() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(5, 3, image::Rgb([1, 2, 3])));
        let b64 = png_b64(&img);
        assert_eq!(decode("image", &b64, 100).unwrap().width(), 5);
        assert_eq!(
            decode("image", &format!("data:image/png;base64,{b64}"), 100)
                .unwrap()
                .height(),
            3
        );
        let e = decode("mask", "not base64!!", 100).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::InvalidImage, Some("mask"))
        );
        let e = decode(
            "image",
            &base64::engine::general_purpose::STANDARD.encode(b"GIF89a...."),
            100,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidImage);
        let e = decode("image", &b64, 14).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::PayloadTooLarge, Some("image"))
        );
    }

    #[test]
    fn resize_modes_keep_or_fill_the_frame() {
        let img = RgbaImage::from_pixel(40, 20, image::Rgba([200, 10, 10, 255]));
        for mode in [ResizeMode::Stretch, ResizeMode::Crop, ResizeMode::Fit] {
            let (out, _) = resize(&img, 32, 32, mode);
            assert_eq!(out.dimensions(), (32, 32), "{mode:?}");
        }
        let (fit, uncovered) = resize(&img, 32, 32, ResizeMode::Fit);
        // 40x20 fit into 32x32 -> 32x16 centred: rows 0..8 and 24..32 are border.
        assert_eq!(uncovered.get_pixel(0, 0)[0], 255);
        assert_eq!(uncovered.get_pixel(16, 16)[0], 0);
        assert_eq!(fit.get_pixel(16, 16)[0], 200);
        assert_eq!(fit.get_pixel(16, 2)[0], 0);
    }

    #[test]
    fn masks_from_luma_or_alpha_binarised_and_pasted_back_exactly() {
        let uncovered = GrayImage::new(4, 1);
        let alpha = GrayImage::from_raw(4, 1, vec![255, 255, 0, 10]).unwrap();
        let m = inpaint_mask(None, &alpha, &uncovered, 0);
        assert_eq!(m.binary.into_raw(), vec![0, 0, 255, 255]);
        let luma = GrayImage::from_raw(4, 1, vec![0, 127, 128, 255]).unwrap();
        let m = inpaint_mask(Some(&luma), &alpha, &uncovered, 0);
        assert_eq!(m.binary.as_raw(), &vec![0, 0, 255, 255]);
        let base = RgbImage::from_pixel(4, 1, image::Rgb([10, 20, 30]));
        let mut generated = RgbImage::from_pixel(4, 1, image::Rgb([250, 250, 250]));
        paste_back(&base, &mut generated, &m.blend);
        assert_eq!(generated.get_pixel(0, 0).0, [10, 20, 30]);
        assert_eq!(generated.get_pixel(3, 0).0, [250, 250, 250]);
    }
}
