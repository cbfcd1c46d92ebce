//! `hires` of `image_generation`: the target size within the limits, a known
//! upscaler, steps and strength in range. Refusals name `hires.<field>`.

use sd_worker_sdk::hires::{
    latent_upscaler, DEFAULT_HIRES_SCALE, DEFAULT_HIRES_STRENGTH, DEFAULT_HIRES_UPSCALER,
    MAX_HIRES_SCALE,
};
use sd_worker_sdk::{ApiError, HiresFix};

use super::invalid;
use crate::pipeline::hires::{Hires, HiresInfotext, HiresUpscaler};
use crate::pipeline::resize::Interpolation;
use crate::pipeline::Request;
use crate::profile::Profile;

/// Validates `h` against the first pass `req` (already validated).
pub fn hires(h: &HiresFix, req: &Request, profile: &Profile) -> Result<Hires, ApiError> {
    let limits = &profile.info.limits;
    if profile.info.model.inpainting {
        return Err(invalid(
            "hires",
            "the hires fix needs a text-to-image model; this worker serves an inpainting one",
        ));
    }
    if !req.controls.is_empty() {
        return Err(invalid(
            "hires",
            "the hires fix does not take `controlnets` yet: run the second pass as an image_transform with them",
        ));
    }
    let m = limits.size_multiple;
    let floor_to = |v: f64| ((v / m as f64).floor() as u32) * m;
    let (width, height) = match (h.scale, h.width, h.height) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(invalid(
                "hires.scale",
                "give `hires.scale` or `hires.width`/`hires.height`, not both",
            ))
        }
        (scale, None, None) => {
            let s = scale.unwrap_or(DEFAULT_HIRES_SCALE);
            if !s.is_finite() || !(1.0..=MAX_HIRES_SCALE).contains(&s) {
                return Err(invalid(
                    "hires.scale",
                    format!("`hires.scale` must be between 1 and {MAX_HIRES_SCALE}"),
                ));
            }
            (
                floor_to(req.width as f64 * s),
                floor_to(req.height as f64 * s),
            )
        }
        (None, Some(w), Some(h)) => (w, h),
        // One side: the other keeps the first pass's aspect ratio.
        (None, Some(w), None) => (w, floor_to(w as f64 * req.height as f64 / req.width as f64)),
        (None, None, Some(h)) => (floor_to(h as f64 * req.width as f64 / req.height as f64), h),
    };
    let from_scale = h.width.is_none() && h.height.is_none();
    for (field, v) in [("hires.width", width), ("hires.height", height)] {
        // A size the scale made is the scale's fault.
        let field = if from_scale { "hires.scale" } else { field };
        // The range first, as for `width`/`height`.
        if v < limits.min_size || v > limits.max_size {
            return Err(invalid(
                field,
                format!(
                    "the hires size must be between {} and {} a side (got {v})",
                    limits.min_size, limits.max_size
                ),
            ));
        }
        if v % m != 0 {
            return Err(invalid(
                field,
                format!("`{field}` must be a multiple of {m}"),
            ));
        }
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(invalid(
            if from_scale {
                "hires.scale"
            } else {
                "hires.width"
            },
            format!(
                "the hires size {width}x{height} is over this worker's {} pixels (--max-pixels)",
                limits.max_pixels
            ),
        ));
    }
    let name = h.upscaler.as_deref().unwrap_or(DEFAULT_HIRES_UPSCALER);
    let (upscaler, a1111_name) = if let Some(l) = latent_upscaler(name) {
        let mode = Interpolation::from_mode(l.mode)
            .map_err(|e| invalid("hires.upscaler", e.to_string()))?;
        (HiresUpscaler::Latent(mode), l.a1111.to_string())
    } else {
        let choice = profile.upscalers.resolve(name).map_err(|reason| {
            let latent: Vec<&str> = sd_worker_sdk::hires::LATENT_UPSCALERS
                .iter()
                .map(|l| l.name)
                .collect();
            invalid(
                "hires.upscaler",
                format!("{reason}; or a latent one: {}", latent.join(", ")),
            )
        })?;
        let shown = super::upscale::display_name(name, &choice);
        (HiresUpscaler::Pixel(choice), shown)
    };
    let steps = match h.steps {
        None | Some(0) => req.steps,
        Some(s) if s > limits.max_steps => {
            return Err(invalid(
                "hires.steps",
                format!("`hires.steps` must be between 0 and {}", limits.max_steps),
            ))
        }
        Some(s) => s as usize,
    };
    let strength = h.denoising_strength.unwrap_or(DEFAULT_HIRES_STRENGTH);
    if !strength.is_finite() || strength <= 0.0 || strength > 1.0 {
        return Err(invalid(
            "hires.denoising_strength",
            "`hires.denoising_strength` must be above 0 and at most 1",
        ));
    }
    let hires = Hires {
        width,
        height,
        upscaler,
        steps,
        strength,
        infotext: HiresInfotext {
            scale: (h.width.is_none() && h.height.is_none())
                .then(|| h.scale.unwrap_or(DEFAULT_HIRES_SCALE)),
            steps: h.steps.filter(|s| *s > 0),
            upscaler: a1111_name,
        },
    };
    if hires.steps_to_run() == 0 {
        return Err(invalid(
            "hires.denoising_strength",
            format!(
                "`hires.denoising_strength` {strength} of {steps} steps runs no step; raise either"
            ),
        ));
    }
    Ok(hires)
}
