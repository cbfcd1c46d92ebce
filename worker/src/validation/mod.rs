//! Request body -> validated pipeline request. Every rejection names the field
//! at fault; nothing here can panic on any input.

mod control;
pub mod hires;
pub mod lora;
pub mod upscale;

use image::DynamicImage;
use rand::Rng;
use sd_worker_sdk::{
    ApiError, ErrorCode, GenerationParams, ImageFormat, Limits, Operation, OperationFields,
    ResizeMode,
};
use serde_json::Value;

use crate::images;
use crate::pipeline::{InitImage, Request, Work};
use crate::profile::Profile;
use crate::scheduler::SchedulerKind;

/// A request that passed validation.
#[derive(Debug, Clone)]
pub struct Validated {
    pub operation: Operation,
    pub request: Work,
    pub preview_every: u32,
}

/// Parses and validates a `POST /v1/jobs` body. Decodes input images, so call
/// it off the async runtime.
pub fn validate_body(body: &[u8], profile: &Profile) -> Result<Validated, ApiError> {
    let (operation, map) = parse(body)?;
    if operation == Operation::ImageUpscale {
        return Ok(Validated {
            operation,
            request: Work::Upscale(upscale::upscale(typed(map)?, profile)?),
            preview_every: 0,
        });
    }
    // The shared parameters and the image fields are read from the same object,
    // each without flattening, so an error path names the exact field.
    let params: GenerationParams = typed(map.clone())?;
    let input: OperationFields = typed(map)?;
    let image = match operation {
        Operation::ImageGeneration => {
            for (field, present) in [
                ("image", input.image.is_some()),
                ("mask", input.mask.is_some()),
                ("strength", input.strength.is_some()),
                ("mask_blur", input.mask_blur.is_some()),
                // Text to image resizes only control images.
                (
                    "resize_mode",
                    input.resize_mode.is_some() && params.controlnets.is_none(),
                ),
            ] {
                if present {
                    return Err(invalid(field, format!("`{field}` belongs to image_transform and image_inpaint, not image_generation")));
                }
            }
            None
        }
        // Image to image and inpainting.
        _ => {
            if input.hires.is_some() {
                return Err(invalid(
                    "hires",
                    "`hires` belongs to image_generation (image_transform runs at the size you ask)",
                ));
            }
            let b64 = input.image.as_deref().ok_or_else(|| {
                ApiError::new(
                    ErrorCode::MissingField,
                    "`image` is required (base64 PNG, JPEG or WebP)",
                )
                .with_field("image")
            })?;
            Some(images::decode(
                "image",
                b64,
                profile.info.limits.max_input_pixels,
            )?)
        }
    };
    let default_size = image.as_ref().map(|img| (img.width(), img.height()));
    let mut request = validate_params(&params, profile, default_size)?;
    let resolved = lora::resolve(
        params.loras.as_deref(),
        &request.prompt,
        request.negative_prompt.as_deref(),
        &profile.info.model.family,
        &profile.catalogs,
        &profile.lora_targets,
    )?;
    request.prompt = resolved.prompt;
    request.negative_prompt = resolved.negative_prompt;
    request.loras = resolved.loras;
    request.embeddings = resolved.embeddings;
    if let Some(image) = image {
        request.init = Some(init_image(operation, &input, image, &request, profile)?);
    }
    if let Some(units) = &params.controlnets {
        request.controls = control::control_units(
            units,
            (request.width, request.height),
            input.resize_mode.unwrap_or(ResizeMode::Stretch),
            profile,
        )?;
    }
    if let Some(h) = &input.hires {
        request.hires = Some(hires::hires(h, &request, profile)?);
    }
    Ok(Validated {
        operation,
        request: Work::Generate(request),
        preview_every: params.preview_every.unwrap_or(0),
    })
}

/// Reads a JSON object body as the contract's `T`, `null` fields as absent,
/// refusals naming the field as [`validate_body`]'s do.
pub fn read_object<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(mut map) = value else {
        return Err(ApiError::new(
            ErrorCode::InvalidJson,
            "the body must be a JSON object",
        ));
    };
    map.retain(|_, v| !v.is_null());
    typed(Value::Object(map))
}

/// The body's `operation` and the rest of its object (`null` fields removed).
fn parse(body: &[u8]) -> Result<(Operation, Value), ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(mut map) = value else {
        return Err(ApiError::new(
            ErrorCode::InvalidJson,
            "the body must be a JSON object",
        ));
    };
    // A field set to `null` is an absent field, whatever the field: a required
    // one is then missing, an optional one takes its default.
    map.retain(|_, v| !v.is_null());
    let valid = Operation::ALL
        .iter()
        .map(|o| o.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let operation = match map.remove("operation") {
        None => {
            return Err(ApiError::new(
                ErrorCode::MissingField,
                format!("`operation` is required; one of: {valid}"),
            )
            .with_field("operation"))
        }
        Some(Value::String(s)) => Operation::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidValue,
                    format!("unknown operation `{s}`; one of: {valid}"),
                )
                .with_field("operation")
            })?,
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::InvalidValue,
                format!("`operation` must be a string, one of: {valid}"),
            )
            .with_field("operation"))
        }
    };
    Ok((operation, Value::Object(map)))
}

/// Reads the contract type `T` from the body's object. A missing required
/// field is `missing_field`; a field given under two of its names
/// `invalid_request`; any other refusal (a wrong type, a fraction or a
/// number out of range in an integer field, an unknown enum value) is
/// `invalid_value`: each names the field.
fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // Inside an object of the body (a ControlNet unit), the field's path.
        let within = |field: String| match path.as_str() {
            "." | "" => field,
            // Inside a nested object the path already ends at the field.
            at if at == field || at.ends_with(&format!(".{field}")) => at.to_string(),
            at => format!("{at}.{field}"),
        };
        if let Some(field) = missing_field(&inner).map(within) {
            ApiError::new(ErrorCode::MissingField, format!("`{field}` is required"))
                .with_field(field)
        } else if let Some(field) = unknown_field(&inner).map(within) {
            // Only objects that refuse unknown fields say so (a ControlNet
            // unit, a LoRA choice): a misspelling there is not ignored.
            let expected = inner
                .split_once(", expected ")
                .map(|(_, e)| format!("; expected {e}"))
                .unwrap_or_default();
            ApiError::new(
                ErrorCode::InvalidValue,
                format!("`{field}` is not a field here{expected}"),
            )
            .with_field(field)
        } else if let Some(field) = duplicate_field(&inner) {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("`{field}` is given twice (under two of its names)"),
            )
            .with_field(field)
        } else {
            ApiError::new(ErrorCode::InvalidValue, format!("`{path}`: {inner}")).with_field(path)
        }
    })
}

fn duplicate_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("duplicate field `")?;
    Some(rest.split('`').next()?.to_string())
}

fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_string())
}

fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}

pub(crate) fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidValue, message).with_field(field)
}

/// `default_size`: the input image's size, for image to image and inpainting.
fn validate_params(
    p: &GenerationParams,
    profile: &Profile,
    default_size: Option<(u32, u32)>,
) -> Result<Request, ApiError> {
    let info = &profile.info;
    let limits = &info.limits;
    let defaults = &info.defaults;

    if let Some(model) = &p.model {
        let m = &info.model;
        let matches = model == &m.id
            || model == &m.source
            || crate::model::source::resolve_alias(model) == m.id;
        if !matches {
            return Err(ApiError::new(
                ErrorCode::ModelMismatch,
                format!("this worker serves `{}`, not `{model}`", m.id),
            )
            .with_field("model"));
        }
    }

    if p.prompt.trim().is_empty() {
        return Err(invalid("prompt", "`prompt` must not be empty"));
    }
    for (field, text) in [
        ("prompt", Some(&p.prompt)),
        ("negative_prompt", p.negative_prompt.as_ref()),
    ] {
        if let Some(text) = text {
            if text.chars().count() > limits.max_prompt_chars as usize {
                return Err(invalid(
                    field,
                    format!(
                        "`{field}` is longer than {} characters",
                        limits.max_prompt_chars
                    ),
                ));
            }
        }
    }

    let steps = p.steps.unwrap_or(defaults.steps);
    if !(1..=limits.max_steps).contains(&steps) {
        return Err(invalid(
            "steps",
            format!("`steps` must be between 1 and {}", limits.max_steps),
        ));
    }
    let guidance_scale = p.guidance_scale.unwrap_or(defaults.guidance_scale);
    if !guidance_scale.is_finite()
        || guidance_scale < limits.min_guidance_scale
        || guidance_scale > limits.max_guidance_scale
    {
        return Err(invalid(
            "guidance_scale",
            format!(
                "`guidance_scale` must be between {} and {}",
                limits.min_guidance_scale, limits.max_guidance_scale
            ),
        ));
    }
    let num_images = p.num_images.unwrap_or(defaults.num_images);
    if !(1..=limits.max_images).contains(&num_images) {
        return Err(invalid(
            "num_images",
            format!("`num_images` must be between 1 and {}", limits.max_images),
        ));
    }
    let seed = match p.seed {
        // Image i uses seed + i: every image's seed must stay exact in JavaScript.
        Some(s) if s.saturating_add(u64::from(num_images) - 1) > limits.max_seed => {
            return Err(invalid(
                "seed",
                format!(
                    "`seed` must be at most {} (2^53 - 1, exact in JavaScript)",
                    limits.max_seed
                ),
            ))
        }
        Some(s) => s,
        // Leaves room for `seed + i` of every image to stay in range.
        None => rand::rng().random_range(0..=limits.max_seed - u64::from(limits.max_images)),
    };
    let (width, height) = match default_size {
        None => (
            p.width.unwrap_or(defaults.width),
            p.height.unwrap_or(defaults.height),
        ),
        Some((iw, ih)) => size_from_input(iw, ih, p.width, p.height, limits),
    };
    // The range first: a side below the minimum is told the minimum
    // ("between 32 and …"), not the multiple.
    for (field, v) in [("width", width), ("height", height)] {
        if v < limits.min_size || v > limits.max_size {
            return Err(invalid(
                field,
                format!(
                    "`{field}` must be between {} and {}",
                    limits.min_size, limits.max_size
                ),
            ));
        }
        if v % limits.size_multiple != 0 {
            return Err(invalid(
                field,
                format!("`{field}` must be a multiple of {}", limits.size_multiple),
            ));
        }
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(invalid(
            "width",
            format!(
                "width x height must be at most {} pixels",
                limits.max_pixels
            ),
        ));
    }
    let scheduler = match &p.scheduler {
        None => profile.default_scheduler,
        Some(name) => {
            // Any spelling of the contract's table (wire name, label, A1111
            // name), which may name one scheduler per family ("Euler").
            let mut named = SchedulerKind::candidates(name).peekable();
            if named.peek().is_none() {
                return Err(invalid(
                    "scheduler",
                    format!(
                        "unknown scheduler `{name}`; one of: {}",
                        info.schedulers.join(", ")
                    ),
                ));
            }
            // Known but not for this model (flow_euler on a diffusion model, or the reverse).
            named
                .find(|kind| info.schedulers.iter().any(|s| s == kind.name()))
                .ok_or_else(|| {
                    invalid(
                        "scheduler",
                        format!(
                            "scheduler `{name}` does not apply to this model; one of: {}",
                            info.schedulers.join(", ")
                        ),
                    )
                })?
        }
    };
    if scheduler == SchedulerKind::Lcm && steps > profile.lcm_max_steps {
        return Err(invalid(
            "steps",
            format!(
                "the lcm scheduler takes 1 to {} steps on this model (its original_inference_steps)",
                profile.lcm_max_steps
            ),
        ));
    }
    Ok(Request {
        prompt: p.prompt.clone(),
        negative_prompt: p.negative_prompt.clone(),
        steps: steps as usize,
        guidance_scale,
        seed,
        width,
        height,
        scheduler,
        num_images: num_images as usize,
        output_format: p.output_format.unwrap_or(ImageFormat::Png),
        rng: p.rng.unwrap_or_default(),
        init: None,
        controls: Vec::new(),
        loras: Vec::new(),
        embeddings: Vec::new(),
        hires: None,
        decoding: decoding(p, info.taesd)?,
        prompt_as_written: p.prompt.clone(),
        negative_prompt_as_written: p.negative_prompt.clone(),
    })
}

/// The job's decoders: TAESD previews by default when it is loaded; TAESD
/// asked for without it, a 422 naming the field.
fn decoding(p: &GenerationParams, taesd: bool) -> Result<crate::pipeline::Decoding, ApiError> {
    use sd_worker_sdk::{PreviewMethod, VaeChoice};
    let missing = |field: &str| {
        invalid(
            field,
            format!("`{field}` asks for TAESD, which this worker has not loaded (start it with --taesd)"),
        )
    };
    let preview = match p.preview_method {
        Some(PreviewMethod::Taesd) if !taesd => return Err(missing("preview_method")),
        Some(m) => m,
        None if taesd => PreviewMethod::Taesd,
        None => PreviewMethod::Vae,
    };
    let vae = p.vae.unwrap_or_default();
    if vae == VaeChoice::Tiny && !taesd {
        return Err(missing("vae"));
    }
    Ok(crate::pipeline::Decoding {
        preview,
        vae,
        tiling: p.vae_tiling.unwrap_or_default(),
    })
}

/// The output size of an image input: the sizes given, else the input's, the
/// missing side following the input's aspect ratio; scaled down into the
/// limits when needed and rounded to the size multiple.
fn size_from_input(
    iw: u32,
    ih: u32,
    width: Option<u32>,
    height: Option<u32>,
    limits: &Limits,
) -> (u32, u32) {
    let aspect = iw as f64 / ih.max(1) as f64;
    let (w, h) = match (width, height) {
        (Some(w), Some(h)) => return (w, h),
        (Some(w), None) => (w as f64, w as f64 / aspect),
        (None, Some(h)) => (h as f64 * aspect, h as f64),
        (None, None) => (iw as f64, ih as f64),
    };
    let max = limits.max_size as f64;
    let shrink = [
        1.0,
        max / w,
        max / h,
        (limits.max_pixels as f64 / (w * h)).sqrt(),
    ]
    .into_iter()
    .fold(f64::INFINITY, f64::min);
    let m = limits.size_multiple as f64;
    let fit = |v: f64, given: Option<u32>| {
        given.unwrap_or_else(|| {
            ((v * shrink / m).floor() * m).clamp(limits.min_size as f64, max) as u32
        })
    };
    (fit(w, width), fit(h, height))
}

/// The input image (and mask) of image to image and inpainting, at the output size.
fn init_image(
    op: Operation,
    input: &OperationFields,
    image: DynamicImage,
    req: &Request,
    profile: &Profile,
) -> Result<InitImage, ApiError> {
    let inpaint = op == Operation::ImageInpaint;
    if !inpaint {
        for (field, present) in [
            ("mask", input.mask.is_some()),
            ("mask_blur", input.mask_blur.is_some()),
        ] {
            if present {
                return Err(invalid(
                    field,
                    format!("`{field}` belongs to image_inpaint"),
                ));
            }
        }
    }
    let strength = input.strength.unwrap_or(if inpaint { 1.0 } else { 0.8 });
    if !(0.0..=1.0).contains(&strength) {
        return Err(invalid("strength", "`strength` must be between 0 and 1"));
    }
    let blur = input.mask_blur.unwrap_or(0);
    if blur > 64 {
        return Err(invalid(
            "mask_blur",
            "`mask_blur` must be at most 64 pixels",
        ));
    }
    let mode = input.resize_mode.unwrap_or(ResizeMode::Stretch);
    let (w, h) = (req.width, req.height);
    // The decoded input is consumed here, before the mask is decoded, so the
    // two input-sized images are never alive at once.
    let (resized, uncovered, transparent) = images::image_to_size(image, w, h, mode);
    let mask = if inpaint {
        let mask_img = match &input.mask {
            Some(b64) => Some(images::decode("mask", b64, profile.info.limits.max_input_pixels)?),
            None if transparent => None,
            None => {
                return Err(ApiError::new(
                    ErrorCode::MissingField,
                    "`mask` is required for image_inpaint (white = repaint), unless `image` has transparent pixels to repaint",
                )
                .with_field("mask"))
            }
        };
        let mask_img = mask_img.map(|m| images::mask_to_size(m, w, h, mode));
        Some(images::inpaint_mask(
            mask_img.as_ref(),
            &images::alpha_of(&resized),
            &uncovered,
            blur,
        ))
    } else {
        None
    };
    Ok(InitImage {
        image: images::rgb_of(&resized),
        strength,
        mask,
    })
}
