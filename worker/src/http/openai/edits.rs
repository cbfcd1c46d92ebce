//! `POST /v1/images/edits`: OpenAI's image edit (multipart form), as our
//! `image_transform` job without a mask (strength [`EDIT_STRENGTH`]) or our
//! `image_inpaint` job with one. OpenAI's mask marks what to repaint with its
//! TRANSPARENT pixels; ours with white, so the mask's alpha is inverted into
//! a white-repaint mask before validation.

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use image::{GrayImage, Luma};
use sd_worker_sdk::{numbers, ApiError, ErrorCode};
use serde_json::{json, Map, Value};
use std::io::Cursor;

use super::error::OpenAiErrorBody;
use super::stream::{preview_every, StreamSpec};
use super::{apply_size, partial_images, refuse, ResponseFormat, Submitted};
use crate::http::error::HttpError;
use crate::http::jobs::{admit, discard, validate_and_submit};
use crate::http::AppState;
use crate::profile::Profile;

/// Strength of an edit without a mask (image to image): how far from the
/// input to go, 0..=1. OpenAI has no such field; 0.75 keeps the input's
/// composition and lets the prompt change its content.
pub const EDIT_STRENGTH: f64 = 0.75;

/// The multipart form of `POST /v1/images/edits` (documentation only; the
/// handler reads the parts as they come). `image[]` is accepted for `image`
/// (the first image is used). `seed` and `rng` are ours; the whole-number
/// fields take `1.0` as `1`, as `/v1/jobs` does; `quality`, `background`,
/// `input_fidelity`, `model`, `user` and any other field are ignored.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ImageEditForm {
    /// PNG, JPEG or WebP.
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
    prompt: String,
    /// A PNG whose transparent pixels mark what to repaint (inpainting);
    /// absent: image to image at strength 0.75.
    #[schema(value_type = Option<String>, format = Binary)]
    mask: Option<Vec<u8>>,
    /// Number of images; 1 by default.
    #[schema(pattern = "^[0-9]+(\\.0+)?$")]
    n: Option<String>,
    /// `auto` (the input's size) or `WIDTHxHEIGHT`.
    #[schema(pattern = "^(auto|[0-9]+x[0-9]+)$")]
    size: Option<String>,
    response_format: Option<ResponseFormat>,
    output_format: Option<super::OutputFormat>,
    /// 0..=2^53-1; random when absent or negative (ours, not OpenAI's).
    #[schema(pattern = "^-?[0-9]+(\\.0+)?$")]
    seed: Option<String>,
    /// The noise source, as `/v1/jobs`'s `rng` (ours, not OpenAI's):
    /// `torch-cpu` gives diffusers' picture for the seed; `chacha` by default.
    rng: Option<sd_worker_sdk::Rng>,
    /// `true`: answer Server-Sent Events (`image_edit.partial_image`, then
    /// `image_edit.completed` per image) instead of JSON.
    #[schema(pattern = "^(true|false)$")]
    stream: Option<String>,
    /// With `stream`: how many previews to send as partial images, 0..=3.
    #[schema(pattern = "^[0-3](\\.0+)?$")]
    partial_images: Option<String>,
}

/// What the form carried.
#[derive(Debug, Default)]
pub struct EditForm {
    pub image: Option<Vec<u8>>,
    pub mask: Option<Vec<u8>>,
    pub text: Map<String, Value>,
}

fn multipart_error(e: impl std::fmt::Display, status: StatusCode) -> HttpError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        HttpError::new(
            ErrorCode::PayloadTooLarge,
            "the request body is larger than the worker accepts",
        )
    } else {
        HttpError::new(
            ErrorCode::InvalidRequest,
            format!("the body is not a valid multipart form: {e}"),
        )
    }
}

/// Reads the form: files by name, every other part as text.
async fn read_form(req: Request) -> Result<EditForm, HttpError> {
    let mut multipart = Multipart::from_request(req, &())
        .await
        .map_err(|r| multipart_error(r.body_text(), r.status()))?;
    let mut form = EditForm::default();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| multipart_error(e.body_text(), e.status()))?
    {
        let name = field.name().unwrap_or("").to_string();
        let bytes = field
            .bytes()
            .await
            .map_err(|e| multipart_error(e.body_text(), e.status()))?;
        match name.as_str() {
            "image" | "image[]" => {
                form.image.get_or_insert(bytes.to_vec());
            }
            "mask" => form.mask = Some(bytes.to_vec()),
            _ => {
                let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
                    refuse(
                        &name,
                        format!("`{}` must be text", crate::http::extract::quote(&name)),
                    )
                })?;
                form.text.insert(name, Value::String(text));
            }
        }
    }
    Ok(form)
}

fn text<'a>(form: &'a EditForm, field: &str) -> Option<&'a str> {
    form.text.get(field).and_then(Value::as_str)
}

/// A whole-number text field, read as `/v1/jobs` reads the JSON number
/// ([`numbers`]): `2.0` is `2`; a negative `seed` is random (`None`).
fn number(form: &EditForm, field: &str) -> Result<Option<u64>, HttpError> {
    let Some(t) = text(form, field).map(str::trim) else {
        return Ok(None);
    };
    let read = |v: Value| match field {
        "seed" => numbers::opt_seed(v),
        _ => numbers::opt_u32(v).map(|n| n.map(u64::from)),
    };
    match serde_json::from_str::<Value>(t)
        .ok()
        .filter(Value::is_number)
        .map(read)
    {
        Some(Ok(n)) => Ok(n),
        _ => Err(super::not_of_its_kind(field, t)),
    }
}

/// Our contract's body without the images, the answer's format, and with
/// `stream=true` what the stream needs.
pub type EditBody = (Map<String, Value>, ResponseFormat, Option<StreamSpec>);

/// The [`EditBody`] of a form.
pub fn to_job_body(form: &EditForm) -> Result<EditBody, HttpError> {
    let stream = match text(form, "stream").map(str::trim) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(refuse("stream", "`stream` must be `true` or `false`")),
    };
    let partial = partial_images(number(form, "partial_images")?)?;
    let stream = stream.then_some(StreamSpec {
        prefix: "image_edit",
        partial_images: partial,
    });
    let prompt = text(form, "prompt").ok_or_else(|| {
        HttpError::from(
            ApiError::new(ErrorCode::MissingField, "`prompt` is required").with_field("prompt"),
        )
    })?;
    if form.image.is_none() {
        return Err(ApiError::new(
            ErrorCode::MissingField,
            "`image` is required (a PNG, JPEG or WebP file)",
        )
        .with_field("image")
        .into());
    }
    let mut body = Map::new();
    let op = if form.mask.is_some() {
        "image_inpaint"
    } else {
        "image_transform"
    };
    body.insert("operation".into(), json!(op));
    body.insert("prompt".into(), json!(prompt));
    if form.mask.is_none() {
        body.insert("strength".into(), json!(EDIT_STRENGTH));
    }
    if let Some(n) = number(form, "n")? {
        body.insert("num_images".into(), json!(n));
    }
    if let Some(seed) = number(form, "seed")? {
        body.insert("seed".into(), json!(seed));
    }
    if let Some(t) = text(form, "rng").map(str::trim) {
        let rng: sd_worker_sdk::Rng =
            serde_json::from_value(json!(t)).map_err(|_| super::not_of_its_kind("rng", t))?;
        body.insert("rng".into(), json!(rng));
    }
    apply_size(&mut body, text(form, "size"))?;
    match text(form, "output_format").map(str::trim) {
        None => {}
        Some(f @ ("png" | "jpeg")) => {
            body.insert("output_format".into(), json!(f));
        }
        Some(_) => {
            return Err(refuse(
                "output_format",
                "`output_format` must be `png` or `jpeg`",
            ))
        }
    }
    let format = match text(form, "response_format").map(str::trim) {
        None | Some("b64_json") => ResponseFormat::B64Json,
        Some("url") => ResponseFormat::Url,
        Some(_) => {
            return Err(refuse(
                "response_format",
                "`response_format` must be `b64_json` or `url`",
            ))
        }
    };
    Ok((body, format, stream))
}

/// OpenAI's mask (transparent = repaint) as ours (white = repaint), a PNG:
/// each pixel's repaint weight is 255 minus its alpha. A mask without an
/// alpha channel marks nothing, as at OpenAI, and is refused.
pub fn openai_mask_to_ours(png: &[u8], profile: &Profile) -> Result<Vec<u8>, HttpError> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(png);
    let mask = crate::images::decode("mask", &b64, profile.info.limits.max_input_pixels)?;
    if !mask.color().has_alpha() {
        return Err(ApiError::new(
            ErrorCode::InvalidImage,
            "`mask` must have an alpha channel: its transparent pixels mark what to repaint",
        )
        .with_field("mask")
        .into());
    }
    let rgba = mask.to_rgba8();
    let ours = GrayImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        Luma([255 - rgba.get_pixel(x, y)[3]])
    });
    let mut out = Vec::new();
    ours.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .map_err(|e| HttpError::new(ErrorCode::Internal, format!("mask: {e}")))?;
    Ok(out)
}

/// OpenAI's image edit: waits for the job and answers its images.
#[utoipa::path(post, path = "/v1/images/edits", tag = "openai",
    request_body(content = ImageEditForm, content_type = "multipart/form-data"), responses(
    (status = 200, description = "The images; with `stream=true`, Server-Sent Events", content(
        (super::ImagesResponse = "application/json"),
        (String = "text/event-stream"))),
    (status = 400, description = "Not a multipart form (JSON, say), a field missing or not of its form, an undecodable image or mask, a size outside the worker's limits, `partial_images` over 3", body = OpenAiErrorBody),
    (status = 409, description = "The job was cancelled", body = OpenAiErrorBody),
    (status = 413, description = "Body or input image too large", body = OpenAiErrorBody),
    (status = 429, description = "Queue full or every decoding slot taken; see Retry-After", body = OpenAiErrorBody),
    (status = 503, description = "Model loading or worker stopping", body = OpenAiErrorBody)))]
pub async fn edits(
    State(state): State<AppState>,
    headers: HeaderMap,
    req: Request,
) -> Result<Response, HttpError> {
    let submitted = submit(&state, req).await;
    super::answer(state, &headers, submitted).await
}

/// Edits are multipart forms, as OpenAI's `images.edit` sends them; anything
/// else (JSON, most often) is a 400 saying so.
fn require_multipart(headers: &HeaderMap) -> Result<(), HttpError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = ct.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("multipart/form-data") {
        return Ok(());
    }
    let sent = if essence.is_empty() {
        "a body without a Content-Type".to_string()
    } else {
        format!("`{}`", crate::http::extract::quote(essence))
    };
    Err(HttpError::new(
        ErrorCode::InvalidRequest,
        format!("send the edit as multipart/form-data (OpenAI's images.edit), not {sent}"),
    ))
}

async fn submit(state: &AppState, req: Request) -> Result<Submitted, HttpError> {
    let (parts, body) = req.into_parts();
    if let Err(e) = require_multipart(&parts.headers).and_then(|()| admit(state)) {
        discard(body, state.max_body_bytes).await;
        return Err(e);
    }
    let mut form = read_form(Request::from_parts(parts, body)).await?;
    let (mut job_body, format, stream) = to_job_body(&form)?;
    let size = text(&form, "size").map(str::to_string);
    let image = form.image.take().unwrap_or_default();
    let mask = form.mask.take();
    let partial = stream.as_ref().map_or(0, |s| s.partial_images);
    let (job, _) = validate_and_submit(state, true, move |profile| {
        let strength = if mask.is_some() { 1.0 } else { EDIT_STRENGTH };
        if let Some(every) = preview_every(partial, profile, strength) {
            job_body.insert("preview_every".into(), json!(every));
        }
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        job_body.insert("image".into(), json!(b64(&image)));
        if let Some(mask) = mask {
            job_body.insert(
                "mask".into(),
                json!(b64(&openai_mask_to_ours(&mask, profile)?)),
            );
        }
        Ok(serde_json::to_vec(&Value::Object(job_body))
            .unwrap_or_default()
            .into())
    })
    .await
    .map_err(|e| super::in_openai_terms(e, size.as_deref()))?;
    Ok((job, format, stream))
}
