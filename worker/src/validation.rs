//! Request body -> validated pipeline request. Every rejection names the field
//! at fault; nothing here can panic on any input.

use rand::Rng;
use sd_worker_sdk::{ApiError, ErrorCode, GenerationParams, ImageFormat, Operation};
use serde_json::Value;

use crate::pipeline::Request;
use crate::profile::Profile;
use crate::scheduler::SchedulerKind;

/// A request that passed validation.
#[derive(Debug, Clone)]
pub struct Validated {
    pub operation: Operation,
    pub request: Request,
    pub preview_every: u32,
}

/// Parses and validates a `POST /v1/jobs` body.
pub fn validate_body(body: &[u8], profile: &Profile) -> Result<Validated, ApiError> {
    let (operation, params) = parse(body)?;
    let request = validate_params(&params, profile)?;
    Ok(Validated {
        operation,
        request,
        preview_every: params.preview_every.unwrap_or(0),
    })
}

fn parse(body: &[u8]) -> Result<(Operation, GenerationParams), ApiError> {
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
                ErrorCode::InvalidRequest,
                format!("`operation` must be a string, one of: {valid}"),
            )
            .with_field("operation"))
        }
    };
    // Deserialised without the tag so the error path names the exact field.
    let params: GenerationParams =
        serde_path_to_error::deserialize(Value::Object(map)).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            if let Some(field) = missing_field(&inner) {
                ApiError::new(ErrorCode::MissingField, format!("`{field}` is required"))
                    .with_field(field)
            } else {
                ApiError::new(ErrorCode::InvalidRequest, format!("`{path}`: {inner}"))
                    .with_field(path)
            }
        })?;
    Ok((operation, params))
}

fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidValue, message).with_field(field)
}

fn validate_params(p: &GenerationParams, profile: &Profile) -> Result<Request, ApiError> {
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
        Some(s) if s > limits.max_seed => {
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
    let width = p.width.unwrap_or(defaults.width);
    let height = p.height.unwrap_or(defaults.height);
    for (field, v) in [("width", width), ("height", height)] {
        if v % limits.size_multiple != 0 {
            return Err(invalid(
                field,
                format!("`{field}` must be a multiple of {}", limits.size_multiple),
            ));
        }
        if v < limits.min_size || v > limits.max_size {
            return Err(invalid(
                field,
                format!(
                    "`{field}` must be between {} and {}",
                    limits.min_size, limits.max_size
                ),
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
        Some(name) => SchedulerKind::from_name(name).ok_or_else(|| {
            invalid(
                "scheduler",
                format!(
                    "unknown scheduler `{name}`; one of: {}",
                    info.schedulers.join(", ")
                ),
            )
        })?,
    };
    Ok(Request {
        prompt: p.prompt.clone(),
        negative_prompt: p.negative_prompt.clone().unwrap_or_default(),
        steps: steps as usize,
        guidance_scale,
        seed,
        width,
        height,
        scheduler,
        num_images: num_images as usize,
        output_format: p.output_format.unwrap_or(ImageFormat::Png),
    })
}
