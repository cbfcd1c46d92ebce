//! `POST /v1/images/generations`: OpenAI's text to image, as our
//! `image_generation` job.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::OpenAiErrorBody;
use super::stream::{preview_every, StreamSpec};
use super::{apply_size, partial_images, OutputFormat, ResponseFormat, Submitted};
use crate::http::error::HttpError;
use crate::http::jobs::{admit, discard, read_body, require_json, validate_and_submit};
use crate::http::AppState;
use sd_worker_sdk::{self as sdk, numbers};

/// OpenAI's image generation request. `n`, `size`, `output_format` and the
/// prompt are used; `quality`, `style`, `background`, `moderation`,
/// `output_compression`, `model` and `user` are accepted and ignored (this
/// worker serves one model); `seed` and `rng` are ours (the OpenAI SDK sends
/// them with `extra_body`): absent, a random seed is drawn and answered in
/// `seed`. The whole-number fields take `1.0` as `1`, as `/v1/jobs` does.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ImageGenerationRequest {
    pub prompt: String,
    /// Number of images (the worker's `max_images` at most); 1 by default.
    #[serde(default, deserialize_with = "numbers::opt_u32")]
    pub n: Option<u32>,
    /// `auto` (the model's native size) or `WIDTHxHEIGHT`, within the worker's limits.
    #[serde(default)]
    #[schema(pattern = "^(auto|[0-9]+x[0-9]+)$")]
    pub size: Option<String>,
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    #[serde(default)]
    pub output_format: Option<OutputFormat>,
    /// 0..=2^53-1; random when absent or negative (ours, not OpenAI's).
    #[serde(default, deserialize_with = "numbers::opt_seed")]
    pub seed: Option<u64>,
    /// The noise source, as `/v1/jobs`'s `rng` (ours, not OpenAI's):
    /// `torch-cpu` gives diffusers' picture for the seed; `chacha` by default.
    #[serde(default)]
    pub rng: Option<sdk::Rng>,
    /// `true`: answer Server-Sent Events (`image_generation.partial_image`,
    /// then `image_generation.completed` per image) instead of JSON.
    #[serde(default)]
    pub stream: Option<bool>,
    /// With `stream`: how many previews to send as partial images, 0..=3.
    #[serde(default, deserialize_with = "numbers::opt_u32")]
    #[schema(maximum = 3)]
    pub partial_images: Option<u32>,
    /// Ignored.
    #[serde(default)]
    pub quality: Option<String>,
    /// Ignored.
    #[serde(default)]
    pub style: Option<String>,
    /// Ignored.
    #[serde(default)]
    pub background: Option<String>,
    /// Ignored.
    #[serde(default)]
    pub moderation: Option<String>,
    /// Ignored.
    #[serde(default, deserialize_with = "numbers::opt_u32")]
    pub output_compression: Option<u32>,
    /// Ignored: the worker serves one model.
    #[serde(default)]
    pub model: Option<String>,
    /// Ignored.
    #[serde(default)]
    pub user: Option<String>,
}

/// Reads the request: a missing `prompt` is a `missing_field`, a field of
/// the wrong type (or a fraction in a whole-number field) an `invalid_value`
/// saying what the field takes ([`super::expected`]), each naming the field.
pub fn parse(body: &[u8]) -> Result<ImageGenerationRequest, HttpError> {
    let value: Value = crate::http::adapter::parse_json(body)?;
    if !value.is_object() {
        return Err(HttpError::new(
            sdk::ErrorCode::InvalidRequest,
            "the body must be a JSON object",
        ));
    }
    serde_path_to_error::deserialize(&value).map_err(|e| {
        let param = e.path().to_string();
        let inner = e.inner().to_string();
        if let Some(field) = inner
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
        {
            return sdk::ApiError::new(
                sdk::ErrorCode::MissingField,
                format!("`{field}` is required"),
            )
            .with_field(field)
            .into();
        }
        let sent = value.get(&param).map(Value::to_string).unwrap_or_default();
        super::not_of_its_kind(&param, &sent)
    })
}

/// Our contract's `image_generation` body for the request.
pub fn to_job_body(req: &ImageGenerationRequest) -> Result<Map<String, Value>, HttpError> {
    let mut body = Map::new();
    body.insert("operation".into(), json!("image_generation"));
    body.insert("prompt".into(), json!(req.prompt));
    if let Some(n) = req.n {
        body.insert("num_images".into(), json!(n));
    }
    apply_size(&mut body, req.size.as_deref())?;
    if let Some(seed) = req.seed {
        body.insert("seed".into(), json!(seed));
    }
    if let Some(rng) = req.rng {
        body.insert("rng".into(), json!(rng));
    }
    if let Some(f) = req.output_format {
        body.insert("output_format".into(), json!(f));
    }
    Ok(body)
}

/// OpenAI's image generation: waits for the job and answers its images.
#[utoipa::path(post, path = "/v1/images/generations", tag = "openai", request_body = ImageGenerationRequest, responses(
    (status = 200, description = "The images; with `stream: true`, Server-Sent Events", content(
        (super::ImagesResponse = "application/json"),
        (String = "text/event-stream"))),
    (status = 400, description = "A field missing or of the wrong type, a size outside the worker's limits, `partial_images` over 3", body = OpenAiErrorBody),
    (status = 409, description = "The job was cancelled", body = OpenAiErrorBody),
    (status = 413, description = "Body too large", body = OpenAiErrorBody),
    (status = 415, description = "Not `Content-Type: application/json`", body = OpenAiErrorBody),
    (status = 429, description = "Queue full; see Retry-After", body = OpenAiErrorBody),
    (status = 503, description = "Model loading or worker stopping", body = OpenAiErrorBody)))]
pub async fn generations(
    State(state): State<AppState>,
    headers: HeaderMap,
    req: Request,
) -> Result<Response, HttpError> {
    let submitted = submit(&state, req).await;
    super::answer(state, &headers, submitted).await
}

async fn submit(state: &AppState, req: Request) -> Result<Submitted, HttpError> {
    let (parts, body) = req.into_parts();
    if let Err(e) = require_json(&parts.headers).and_then(|()| admit(state)) {
        discard(body, state.max_body_bytes).await;
        return Err(e);
    }
    let bytes = read_body(Request::from_parts(parts, body)).await?;
    let req = parse(&bytes)?;
    let mut job_body = to_job_body(&req)?;
    let partial = partial_images(req.partial_images.map(u64::from))?;
    let stream = (req.stream == Some(true)).then_some(StreamSpec {
        prefix: "image_generation",
        partial_images: partial,
    });
    let previews = stream.is_some();
    let (job, _) = validate_and_submit(state, false, move |profile| {
        if let Some(every) = preview_every(partial, profile, 1.0).filter(|_| previews) {
            job_body.insert("preview_every".into(), json!(every));
        }
        Ok(serde_json::to_vec(&Value::Object(job_body))
            .unwrap_or_default()
            .into())
    })
    .await
    .map_err(|e| super::in_openai_terms(e, req.size.as_deref()))?;
    Ok((job, req.response_format.unwrap_or_default(), stream))
}
