//! OpenAI's Images API as a thin adapter at the HTTP edge:
//! `POST /v1/images/generations` and `POST /v1/images/edits` turn OpenAI's
//! request into our contract's `POST /v1/jobs` body, submit it through the same
//! validation, queue and engine ([`super::jobs::validate_and_submit`]), wait
//! for the job's terminal event and answer in OpenAI's shape. The job stays
//! visible at `/v1/jobs/{id}`; a client that hangs up while waiting cancels it.
//! `stream: true` answers OpenAI's image events instead ([`stream`]).

pub mod edits;
pub mod error;
pub mod generations;
pub mod stream;

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sd_worker_sdk::{ErrorCode, GeneratedImage};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::sync::Arc;

pub(crate) use super::adapter::{wait_for_images, CancelOnDrop};
use super::error::HttpError;
use crate::engine::job::Job;

/// How the images come back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Base64 in `b64_json` (the default).
    #[default]
    B64Json,
    /// An absolute URL of `GET /v1/jobs/{id}/images/{i}` (bearer token required like the rest).
    Url,
}

/// Encoding of the images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Png,
    Jpeg,
}

/// One image of the answer: `b64_json` or `url`, as asked.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ImageData {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b64_json: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Always null: the prompt is used as sent.
    pub revised_prompt: Option<String>,
}

/// OpenAI's `ImagesResponse`, plus two fields of ours that OpenAI clients keep
/// as extras: the job's id (`/v1/jobs/{job_id}`) and its seed (image `i` used
/// `seed + i`), so a result can be reproduced through `/v1/jobs`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ImagesResponse {
    /// Unix time in seconds.
    pub created: u64,
    pub data: Vec<ImageData>,
    pub job_id: String,
    pub seed: u64,
}

/// `size`: `auto` (or absent) leaves the size to the worker (the model's
/// native size; for an edit, the input image's size); `WxH` in pixels sets
/// width and height, which validation then bounds by the worker's limits.
pub fn apply_size(body: &mut Map<String, Value>, size: Option<&str>) -> Result<(), HttpError> {
    let Some(size) = size
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "auto")
    else {
        return Ok(());
    };
    let parsed = size
        .split_once(['x', 'X'])
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)));
    let (w, h) = parsed.ok_or_else(|| {
        refuse(
            "size",
            format!(
                "`size` must be `auto` or `WIDTHxHEIGHT` in pixels (like `512x512`), not `{}`",
                super::extract::quote(size)
            ),
        )
    })?;
    body.insert("width".into(), json!(w));
    body.insert("height".into(), json!(h));
    Ok(())
}

/// A 4xx `invalid_value` naming `field` (an OpenAI field name).
pub fn refuse(field: &str, message: impl Into<String>) -> HttpError {
    sd_worker_sdk::ApiError::new(ErrorCode::InvalidValue, message)
        .with_field(field)
        .into()
}

/// What an OpenAI request field takes, as a client reads it (for refusals).
/// The whole-number fields take any JSON number without a fractional part
/// (`1.0` as `1`), as `POST /v1/jobs` does ([`sd_worker_sdk::numbers`]).
pub fn expected(param: &str) -> &'static str {
    match param {
        "n" => "a whole number from 1",
        "seed" => "a whole number from 0 to 2^53 - 1 (a negative one: random)",
        "partial_images" => "a whole number from 0 to 3",
        "output_compression" => "a whole number from 0 to 100",
        "stream" => "`true` or `false`",
        "response_format" => "`b64_json` or `url`",
        "output_format" => "`png` or `jpeg`",
        "rng" => "`chacha`, `torch-cpu` or `nv`",
        _ => "text",
    }
}

/// A 4xx `invalid_value` naming `param`, which was sent as `sent` (JSON text,
/// or a form field's text): "`n` must be a whole number from 1, not `1.5`".
pub fn not_of_its_kind(param: &str, sent: &str) -> HttpError {
    refuse(
        param,
        format!(
            "`{param}` must be {}, not `{}`",
            expected(param),
            super::extract::quote(sent)
        ),
    )
}

/// A refusal of the job body in the OpenAI request's terms: our `width` and
/// `height` are the `size` asked (`auto` when absent), our `num_images` is `n`.
/// Other refusals pass unchanged.
pub fn in_openai_terms(mut e: HttpError, size: Option<&str>) -> HttpError {
    match e.error.field.as_deref() {
        Some("width" | "height") => {
            let size = size.map(str::trim).filter(|s| !s.is_empty());
            let said = e
                .error
                .message
                .replace("`width`", "the width")
                .replace("`height`", "the height");
            e.error.message = format!(
                "`size` {}: {said}",
                super::extract::quote(size.unwrap_or("auto"))
            );
        }
        Some("num_images") => {
            e.error.message = e.error.message.replace("`num_images`", "`n`");
        }
        _ => {}
    }
    e
}

/// A submitted job, the answer's format, and with `stream: true` what the stream needs.
pub type Submitted = (Arc<Job>, ResponseFormat, Option<stream::StreamSpec>);

/// `partial_images`: 0..=3 (absent: 0).
pub fn partial_images(n: Option<u64>) -> Result<u32, HttpError> {
    match n {
        None => Ok(0),
        Some(n) if n <= u64::from(stream::MAX_PARTIAL_IMAGES) => Ok(n as u32),
        Some(n) => Err(refuse(
            "partial_images",
            format!(
                "`partial_images` must be 0 to {}, not {n}",
                stream::MAX_PARTIAL_IMAGES
            ),
        )),
    }
}

/// The tail both routes share: a refusal is counted and returned; a streamed
/// job answers its events; otherwise the job is waited for (a client that
/// hangs up cancels it) and its images answered by [`respond`].
pub async fn answer(
    state: super::AppState,
    headers: &HeaderMap,
    submitted: Result<Submitted, HttpError>,
) -> Result<Response, HttpError> {
    let (job, format, stream) = match submitted {
        Ok(ok) => ok,
        Err(e) => {
            super::jobs::count_rejection(&state, &e);
            return Err(e);
        }
    };
    if let Some(spec) = stream {
        return Ok(stream::respond(state, job, spec));
    }
    let images = wait_for_images(&state, job.clone()).await?;
    Ok(respond(headers, &job, images, format))
}

/// The answer: the images as base64 or as absolute URLs on the host the
/// request named (`X-Forwarded-Proto` picks the scheme, `http` otherwise).
pub fn respond(
    headers: &HeaderMap,
    job: &Job,
    images: Vec<GeneratedImage>,
    format: ResponseFormat,
) -> Response {
    let base = match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(host) => {
            let scheme = headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .filter(|p| *p == "https" || *p == "http")
                .unwrap_or("http");
            format!("{scheme}://{host}")
        }
        None => String::new(),
    };
    let data = images
        .into_iter()
        .enumerate()
        .map(|(i, img)| match format {
            ResponseFormat::B64Json => ImageData {
                b64_json: Some(img.image),
                url: None,
                revised_prompt: None,
            },
            ResponseFormat::Url => ImageData {
                b64_json: None,
                url: Some(format!("{base}/v1/jobs/{}/images/{i}", job.id)),
                revised_prompt: None,
            },
        })
        .collect();
    let body = ImagesResponse {
        created: crate::engine::job::unix_ms() / 1000,
        data,
        job_id: job.id.clone(),
        seed: job.seed,
    };
    let mut res = Json(body).into_response();
    if let Ok(v) = HeaderValue::from_str(&job.id) {
        res.headers_mut().insert("x-job-id", v);
    }
    res
}
