//! The `controlnets` units of a request: each names a ControlNet this worker
//! has for the loaded model's family, carries a control image (decoded and
//! brought to the output size with the job's `resize_mode`), a preprocessor
//! with valid parameters, a weight in 0..=2 and a start before its end.
//! Every refusal names the unit's field (`controlnets[1].guidance_end`).

use sd_worker_sdk::control::{MAX_CONDITIONING_SCALE, MAX_CONTROLNET_UNITS};
use sd_worker_sdk::{ApiError, ControlNetUnit, ErrorCode, ResizeMode};

use super::invalid;
use crate::images;
use crate::pipeline::ControlUnit;
use crate::preprocess;
use crate::profile::Profile;

/// Validates `units` for an output of `width` x `height` pixels.
pub fn control_units(
    units: &[ControlNetUnit],
    (width, height): (u32, u32),
    mode: ResizeMode,
    profile: &Profile,
) -> Result<Vec<ControlUnit>, ApiError> {
    if units.len() > MAX_CONTROLNET_UNITS {
        return Err(invalid(
            "controlnets",
            format!("at most {MAX_CONTROLNET_UNITS} ControlNet units per job"),
        ));
    }
    units
        .iter()
        .enumerate()
        .map(|(i, unit)| control_unit(i, unit, (width, height), mode, profile))
        .collect()
}

fn control_unit(
    i: usize,
    unit: &ControlNetUnit,
    (width, height): (u32, u32),
    mode: ResizeMode,
    profile: &Profile,
) -> Result<ControlUnit, ApiError> {
    let field = |name: &str| format!("controlnets[{i}].{name}");
    let net = profile
        .controlnets
        .resolve(&unit.model)
        .map_err(|message| invalid(&field("model"), message))?;
    let scale = unit
        .conditioning_scale
        .unwrap_or(sd_worker_sdk::control::DEFAULT_CONDITIONING_SCALE);
    if !(0.0..=MAX_CONDITIONING_SCALE).contains(&scale) {
        return Err(invalid(
            &field("conditioning_scale"),
            format!("`conditioning_scale` must be between 0 and {MAX_CONDITIONING_SCALE}"),
        ));
    }
    let start = unit.guidance_start.unwrap_or(0.0);
    let end = unit.guidance_end.unwrap_or(1.0);
    if !(0.0..1.0).contains(&start) {
        return Err(invalid(
            &field("guidance_start"),
            "`guidance_start` must be at least 0 and below 1",
        ));
    }
    if !(end > 0.0 && end <= 1.0) {
        return Err(invalid(
            &field("guidance_end"),
            "`guidance_end` must be above 0 and at most 1",
        ));
    }
    if start >= end {
        return Err(invalid(
            &field("guidance_end"),
            format!("`guidance_end` ({end}) must be above `guidance_start` ({start})"),
        ));
    }
    profile
        .preprocessors
        .validate(&unit.preprocess(), &format!("controlnets[{i}]."))?;
    if unit.image.is_empty() {
        return Err(ApiError::new(
            ErrorCode::MissingField,
            "`image` is required: the control image, base64 PNG, JPEG or WebP",
        )
        .with_field(field("image")));
    }
    let image = images::decode(
        &field("image"),
        &unit.image,
        profile.info.limits.max_input_pixels,
    )?;
    let (resized, _, _) = images::image_to_size(image, width, height, mode);
    Ok(ControlUnit {
        net,
        // Transparent pixels over white, as lllyasviel's annotators read images.
        image: preprocess::control_rgb(&image::DynamicImage::ImageRgba8(resized)),
        preprocess: unit.preprocess(),
        preprocessors: profile.preprocessors.clone(),
        conditioning_scale: scale,
        guidance_start: start,
        guidance_end: end,
    })
}
