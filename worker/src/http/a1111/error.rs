//! Errors in AUTOMATIC1111's shape on `/sdapi/v1/`: A1111's API answers
//! `{"error", "detail", "body", "errors"}` (its `api_middleware`), which its
//! clients print. Handlers (and the middleware before them: the token, the
//! body limit) answer our [`sdk::ErrorBody`]; one middleware rewrites it for
//! these paths. Statuses stay ours (422 for a value a field cannot take).

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use sd_worker_sdk as sdk;
use serde::{Deserialize, Serialize};

use crate::http::adapter::rewrite_error;
use crate::http::error::HttpError;

/// The paths whose errors are A1111-shaped: A1111's API and its ControlNet
/// extension's routes (A1111's middleware shapes every route's errors).
pub const PREFIXES: [&str; 2] = ["/sdapi/", "/controlnet/"];

/// Whether `path` is one of A1111's (errors in its shape, HTTP Basic accepted).
pub fn is_a1111(path: &str) -> bool {
    PREFIXES.iter().any(|p| path.starts_with(p))
}

/// An error as A1111's API sends it, plus `field`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SdErrorBody {
    /// Our machine-readable [`sdk::ErrorCode`] (`invalid_value`, `unauthorized`, ...).
    pub error: String,
    /// The message.
    pub detail: String,
    /// The A1111 request field at fault, or "".
    pub body: String,
    /// The message again (A1111 puts `str(exception)` here).
    pub errors: String,
    /// The A1111 request field at fault, if any.
    pub field: Option<String>,
}

/// Our contract's field names as A1111's request calls them.
pub fn field_of(field: &str) -> String {
    // The hires fix's fields are txt2img's `hr_*` ones.
    match field {
        "hires" | "hires.scale" => return "hr_scale".into(),
        "hires.upscaler" => return "hr_upscaler".into(),
        "hires.steps" => return "hr_second_pass_steps".into(),
        "hires.denoising_strength" => return "denoising_strength".into(),
        "hires.width" => return "hr_resize_x".into(),
        "hires.height" => return "hr_resize_y".into(),
        _ => {}
    }
    let head = field.split(['.', '[']).next().unwrap_or(field);
    match head {
        "guidance_scale" => "cfg_scale".into(),
        "num_images" => "batch_size".into(),
        "strength" => "denoising_strength".into(),
        "image" | "input_image" | "init_image" => "init_images".into(),
        "scheduler" => "sampler_name".into(),
        _ => head.into(),
    }
}

/// A refusal of our validation with its field renamed into A1111's.
pub fn renamed(mut e: HttpError) -> HttpError {
    if let Some(f) = e.error.field.take() {
        e.error.field = Some(field_of(&f));
    }
    e
}

/// Our error body as A1111's.
pub fn to_a1111(body: sdk::ErrorBody) -> SdErrorBody {
    let code = serde_json::to_value(body.error.code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    SdErrorBody {
        error: code,
        detail: body.error.message.clone(),
        body: body.error.field.clone().unwrap_or_default(),
        errors: body.error.message,
        field: body.error.field,
    }
}

/// Middleware: on [`PREFIXES`] paths, an error response in our shape is
/// rewritten in A1111's; status and headers (`Retry-After`,
/// `WWW-Authenticate`) stay.
pub async fn reshape(req: Request, next: Next) -> Response {
    let ours = is_a1111(req.uri().path());
    let res = next.run(req).await;
    if !ours {
        return res;
    }
    rewrite_error(res, |status, body| (status, to_a1111(body))).await
}
