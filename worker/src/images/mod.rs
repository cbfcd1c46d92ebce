//! Input images of image-to-image and inpainting: base64 (with or without a
//! `data:` URL prefix) -> decoded PNG/JPEG/WebP, turned upright by its EXIF
//! orientation -> brought to the output size ([`resize`], whose buffers and
//! work are bounded by the input and output sizes) -> masks. Every failure
//! names the request field it came from.

mod resize;

pub use resize::resize;

use base64::Engine as _;
use image::imageops;
use image::{
    DynamicImage, GrayImage, ImageDecoder, ImageFormat, ImageReader, Luma, Rgb, RgbImage, Rgba,
    RgbaImage,
};
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
/// before decoding it, and applies its EXIF orientation (JPEG APP1, PNG
/// `eXIf`, WebP `EXIF`), as A1111 (`ImageOps.exif_transpose`) and diffusers'
/// `load_image` do: a photo stored 64x32 with Orientation 6 comes back 32x64,
/// upright. An unreadable EXIF block counts as no orientation.
pub fn decode(field: &str, b64: &str, max_pixels: u64) -> Result<DynamicImage, ApiError> {
    decode_bytes(field, &base64_bytes(field, b64)?, max_pixels)
}

/// The bytes of a base64 image field (standard or URL-safe alphabet, padded
/// or not, with or without a `data:` URL prefix, whitespace ignored).
/// Errors: a 400 `invalid_image` naming `field`.
pub fn base64_bytes(field: &str, b64: &str) -> Result<Vec<u8>, ApiError> {
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
    engines
        .iter()
        .find_map(|e| e.decode(&cleaned).ok())
        .ok_or_else(|| bad(format!("`{field}` is not valid base64")))
}

/// [`decode`] from the field's bytes ([`base64_bytes`]).
pub fn decode_bytes(field: &str, bytes: &[u8], max_pixels: u64) -> Result<DynamicImage, ApiError> {
    let bad = |msg: String| ApiError::new(ErrorCode::InvalidImage, msg).with_field(field);
    let reader = ImageReader::new(Cursor::new(bytes))
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
    let undecodable = |e: image::ImageError| bad(format!("`{field}` cannot be decoded: {e}"));
    let mut decoder = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad(format!("`{field}`: {e}")))?
        .into_decoder()
        .map_err(undecodable)?;
    // The decoded buffer stays within the image crate's default allocation
    // limit (512 MiB), as `ImageReader::decode` would check it.
    image::Limits::default()
        .reserve(decoder.total_bytes())
        .map_err(undecodable)?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(undecodable)?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// The repaint mask at the output size: from the `mask` image (the grey
/// image of [`mask_channel`]), or from the input's transparency (alpha below
/// 128) when no mask was sent; binarised at 50% (128 and up repaints),
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

/// The grey image a decoded mask stands for, at its own size, following
/// A1111's `create_binary_mask`: a mask with an alpha channel that is not
/// fully opaque is its alpha channel (an editor's transparent background
/// keeps, opaque strokes of any colour repaint); any other mask is its
/// luminance (white repaints). Consumes the mask so that at most one copy of
/// it is alive besides the result.
pub fn mask_channel(mask: DynamicImage) -> GrayImage {
    let alpha = match &mask {
        DynamicImage::ImageLumaA8(m) => Some(channel(m.as_raw(), 2, 1, m.dimensions())),
        DynamicImage::ImageRgba8(m) => Some(channel(m.as_raw(), 4, 3, m.dimensions())),
        m if m.color().has_alpha() => {
            let m = m.to_rgba8();
            Some(channel(m.as_raw(), 4, 3, m.dimensions()))
        }
        _ => None,
    };
    match alpha {
        Some(a) if a.pixels().any(|p| p[0] < 255) => a,
        _ => mask.into_luma8(),
    }
}

/// Channel `k` of interleaved 8-bit pixels of `n` channels.
fn channel(raw: &[u8], n: usize, k: usize, (w, h): (u32, u32)) -> GrayImage {
    let data = raw.chunks_exact(n).map(|p| p[k]).collect();
    GrayImage::from_raw(w, h, data).expect("one byte a pixel")
}

/// Brings a decoded mask to the output size (same mode as the image): its
/// [`mask_channel`], resized as a grey image.
pub fn mask_to_size(mask: DynamicImage, width: u32, height: u32, mode: ResizeMode) -> GrayImage {
    resize(&mask_channel(mask), width, height, mode, Luma([0])).0
}

/// Brings a decoded input image to the output size as RGBA (the borders of
/// `Fit` opaque black); also returns the uncovered mask of [`resize`] and
/// whether any input pixel was transparent. Consumes the image, so the
/// decoded input and its RGBA copy are the only input-sized buffers.
pub fn image_to_size(
    image: DynamicImage,
    width: u32,
    height: u32,
    mode: ResizeMode,
) -> (RgbaImage, GrayImage, bool) {
    let rgba = image.into_rgba8();
    let transparent = rgba.pixels().any(|p| p[3] < 255);
    let (out, uncovered) = resize(&rgba, width, height, mode, Rgba([0, 0, 0, 255]));
    (out, uncovered, transparent)
}

/// The alpha channel of an RGBA image.
pub fn alpha_of(img: &RgbaImage) -> GrayImage {
    channel(img.as_raw(), 4, 3, img.dimensions())
}

/// The colour channels of an RGBA image (alpha dropped, not composited).
pub fn rgb_of(img: &RgbaImage) -> RgbImage {
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        let p = img.get_pixel(x, y);
        Rgb([p[0], p[1], p[2]])
    })
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
    fn masks_use_a_non_opaque_alpha_channel_else_their_luminance() {
        // Transparent background, opaque black stroke: the alpha is the mask.
        let stroke = RgbaImage::from_raw(2, 1, vec![0, 0, 0, 0, 0, 0, 0, 255]).unwrap();
        let m = mask_channel(DynamicImage::ImageRgba8(stroke));
        assert_eq!(m.into_raw(), vec![0, 255]);
        let la = image::GrayAlphaImage::from_raw(2, 1, vec![255, 0, 0, 200]).unwrap();
        assert_eq!(
            mask_channel(DynamicImage::ImageLumaA8(la)).into_raw(),
            vec![0, 200]
        );
        // Fully opaque alpha (or none): luminance, white repaints.
        let opaque = RgbaImage::from_raw(2, 1, vec![255, 255, 255, 255, 0, 0, 0, 255]).unwrap();
        assert_eq!(
            mask_channel(DynamicImage::ImageRgba8(opaque)).into_raw(),
            vec![255, 0]
        );
        let rgb = RgbImage::from_raw(2, 1, vec![0, 0, 0, 255, 255, 255]).unwrap();
        assert_eq!(
            mask_channel(DynamicImage::ImageRgb8(rgb)).into_raw(),
            vec![0, 255]
        );
        // 16-bit RGBA goes through the same rule.
        let deep = image::ImageBuffer::<image::Rgba<u16>, _>::from_raw(
            2,
            1,
            vec![0, 0, 0, 0, 0, 0, 0, 65535],
        )
        .unwrap();
        assert_eq!(
            mask_channel(DynamicImage::ImageRgba16(deep)).into_raw(),
            vec![0, 255]
        );
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
