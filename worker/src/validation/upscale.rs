//! `image_upscale`: the image decoded, the upscaler known, the factor, the
//! output size and the tiles in range. Refusals name the field.

use sd_worker_sdk::upscale::{
    DEFAULT_BUILTIN_SCALE, DEFAULT_TILE_OVERLAP, DEFAULT_TILE_SIZE, DEFAULT_UPSCALER,
    MAX_TILE_SIZE, MAX_UPSCALE, MIN_TILE_SIZE,
};
use sd_worker_sdk::{ApiError, ImageFormat, UpscaleRequest};

use super::invalid;
use crate::images;
use crate::profile::Profile;
use crate::upscale::job::UpscaleJob;
use crate::upscale::registry::UpscalerChoice;

/// Validates an `image_upscale` body (decodes the image: call it off the
/// async runtime).
pub fn upscale(r: UpscaleRequest, profile: &Profile) -> Result<UpscaleJob, ApiError> {
    let limits = &profile.info.limits;
    let name = r.upscaler.as_deref().unwrap_or(DEFAULT_UPSCALER);
    let upscaler = profile
        .upscalers
        .resolve(name)
        .map_err(|reason| invalid("upscaler", reason))?;
    let native = match &upscaler {
        UpscalerChoice::Builtin(_) => DEFAULT_BUILTIN_SCALE,
        UpscalerChoice::Model(m) => m.scale as f64,
    };
    let scale = r.scale.unwrap_or(native);
    if !scale.is_finite() || scale <= 0.0 || scale > MAX_UPSCALE {
        return Err(invalid(
            "scale",
            format!("`scale` must be above 0 and at most {MAX_UPSCALE}"),
        ));
    }
    let tile_size = r.tile_size.unwrap_or(DEFAULT_TILE_SIZE);
    if tile_size != 0 && !(MIN_TILE_SIZE..=MAX_TILE_SIZE).contains(&tile_size) {
        return Err(invalid(
            "tile_size",
            format!("`tile_size` must be 0 (untiled) or {MIN_TILE_SIZE} to {MAX_TILE_SIZE}"),
        ));
    }
    let tile_overlap = r.tile_overlap.unwrap_or(DEFAULT_TILE_OVERLAP);
    if tile_size != 0 && tile_overlap * 2 >= tile_size {
        return Err(invalid(
            "tile_overlap",
            format!("`tile_overlap` must be below half of `tile_size` ({tile_size})"),
        ));
    }
    let bytes = images::base64_bytes("image", &r.image)?;
    let image = images::decode_bytes("image", &bytes, limits.max_input_pixels)?.to_rgb8();
    // How a generated PNG was made, kept in the upscaled one.
    let source_parameters = crate::pipeline::encode::read_png_parameters(&bytes);
    let (w, h) = image.dimensions();
    let out = |v: u32| ((v as f64 * scale).round() as u64).max(1);
    let (ow, oh) = (out(w), out(h));
    if ow * oh > limits.max_input_pixels {
        return Err(invalid(
            "scale",
            format!(
                "{w}x{h} x {scale} is {ow}x{oh}, over this worker's {} pixels (--max-input-pixels)",
                limits.max_input_pixels
            ),
        ));
    }
    // A model's own output before the resize is held too.
    if let UpscalerChoice::Model(m) = &upscaler {
        let s = m.scale as u64;
        if u64::from(w) * u64::from(h) * s * s > limits.max_input_pixels.saturating_mul(4) {
            return Err(invalid(
                "image",
                format!(
                    "`{}` makes {}x{} before resizing, over 4 x --max-input-pixels; send a smaller image",
                    m.name,
                    u64::from(w) * s,
                    u64::from(h) * s
                ),
            ));
        }
    }
    Ok(UpscaleJob {
        image,
        upscaler_name: display_name(name, &upscaler),
        upscaler,
        scale,
        width: ow as u32,
        height: oh as u32,
        tile_size: tile_size as usize,
        tile_overlap: tile_overlap as usize,
        output_format: r.output_format.unwrap_or(ImageFormat::Png),
        source_parameters,
    })
}

/// How PNGs name an upscaler: A1111's names for the built-in resamplers
/// (`Lanczos`, `Nearest`), a model by its file's name.
pub fn display_name(requested: &str, choice: &UpscalerChoice) -> String {
    match choice {
        UpscalerChoice::Model(m) => m.name.clone(),
        UpscalerChoice::Builtin(_) => {
            let mut name = requested.to_ascii_lowercase();
            if let Some(first) = name.get_mut(..1) {
                first.make_ascii_uppercase();
            }
            name
        }
    }
}
