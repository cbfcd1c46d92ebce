//! `/v1/jobs`: submit, inspect, cancel, and fetch a result image.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use futures::StreamExt;
use sd_worker_sdk::{self as sdk, ErrorCode, JobAccepted, JobSnapshot};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;

use super::error::HttpError;
use super::extract::ApiPath;
use super::AppState;
use crate::engine::job::Job;
use crate::engine::queue::PushError;
use crate::engine::registry::Lookup;
use crate::engine::CancelOutcome;
use crate::metrics::Metrics;
use crate::validation::validate_body;

/// Submits a job; follow it on `sse_url`.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = sdk::JobRequest, responses(
    (status = 202, body = sdk::JobAccepted), (status = 400, description = "Not a JSON object, a field given under two of its names, or an undecodable image", body = sdk::ErrorBody), (status = 401, description = "Missing or wrong bearer token", body = sdk::ErrorBody),
    (status = 413, description = "Body or input image too large", body = sdk::ErrorBody),
    (status = 422, description = "A missing field, or a value a field cannot take (wrong type, fraction in an integer field, out of range, unknown name)", body = sdk::ErrorBody),
    (status = 429, description = "Queue full, or every input-image decoding slot taken; see Retry-After", body = sdk::ErrorBody),
    (status = 503, description = "Model loading or worker stopping", body = sdk::ErrorBody)))]
pub async fn submit(
    State(state): State<AppState>,
    req: Request,
) -> Result<(StatusCode, Json<JobAccepted>), HttpError> {
    let result = accept(&state, req).await;
    if let Err(e) = &result {
        count_rejection(&state, e);
    }
    result
}

/// Counts a refused submission in `jobs_rejected`, by its error code.
pub(crate) fn count_rejection(state: &AppState, e: &HttpError) {
    let reason = serde_json::to_value(e.error.code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    state
        .engine
        .metrics()
        .jobs_rejected
        .with_label_values(&[&reason])
        .inc();
}

/// Only JSON bodies: a browser cannot send `application/json` cross-origin
/// without a CORS preflight, so a foreign web page cannot submit jobs.
pub(crate) fn require_json(headers: &HeaderMap) -> Result<(), HttpError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(HttpError::new(
            ErrorCode::UnsupportedMediaType,
            format!("send the job as `Content-Type: application/json` (got `{ct}`)"),
        ))
    }
}

/// Admission, cheapest check first: what the headers and the worker's state
/// decide (content type, loading or stopping, a full queue) before the body is
/// read; then the body; then a decoding slot for a body with input images;
/// then validation, which decodes them; the push checks the queue again (it
/// may have filled meanwhile) and answers the same 429.
async fn accept(
    state: &AppState,
    req: Request,
) -> Result<(StatusCode, Json<JobAccepted>), HttpError> {
    let (parts, body) = req.into_parts();
    if let Err(e) = require_json(&parts.headers).and_then(|()| admit(state)) {
        discard(body, state.max_body_bytes).await;
        return Err(e);
    }
    let body = read_body(Request::from_parts(parts, body)).await?;
    let may_have_images = may_carry_images(&body);
    let (job, position) = validate_and_submit(state, may_have_images, move |_| Ok(body)).await?;
    let seed = job.seed;
    Ok((
        StatusCode::ACCEPTED,
        Json(JobAccepted {
            sse_url: format!("/v1/jobs/{}/stream", job.id),
            status_url: format!("/v1/jobs/{}", job.id),
            job_id: job.id.clone(),
            queue_position: position,
            seed,
        }),
    ))
}

/// The whole body, within `--max-body-bytes` (413 `payload_too_large` past it).
pub(crate) async fn read_body(req: Request) -> Result<Bytes, HttpError> {
    Bytes::from_request(req, &()).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            HttpError::new(
                ErrorCode::PayloadTooLarge,
                "the request body is larger than the worker accepts",
            )
        } else {
            HttpError::new(ErrorCode::InvalidRequest, rejection.body_text())
        }
    })
}

/// The shared tail of every submission (`POST /v1/jobs` and the adapters at
/// the HTTP edge): a decoding slot when the body may carry input images,
/// then, off the async runtime, `prepare` builds the contract's JSON body (it
/// may decode images itself: it runs under the same slot) and
/// [`validate_body`] validates it; then the job is queued. Errors: 429 when
/// every decoding slot is taken or the queue is full, 503 while loading or
/// stopping, and whatever `prepare` or validation refuse.
pub(crate) async fn validate_and_submit<F>(
    state: &AppState,
    may_have_images: bool,
    prepare: F,
) -> Result<(Arc<Job>, u32), HttpError>
where
    F: FnOnce(&crate::profile::Profile) -> Result<Bytes, HttpError> + Send + 'static,
{
    let slot = if may_have_images {
        Some(decode_slot(state)?)
    } else {
        None
    };
    // Validation decodes input images: keep it off the async workers. The slot
    // and the in-flight count go with it, so a client that hangs up does not
    // free the slot while its images are still being decoded.
    let st = state.clone();
    let (valid, body) = tokio::task::spawn_blocking(move || {
        let metrics = st.engine.metrics();
        metrics.validations.inc();
        let _in_flight = slot.map(|permit| InFlight::new(metrics, permit));
        let profile = st.ready_profile()?;
        let body = prepare(profile)?;
        let valid = validate_body(&body, profile).map_err(HttpError::from)?;
        Ok::<_, HttpError>((valid, body))
    })
    .await
    .map_err(|e| HttpError::new(ErrorCode::Internal, format!("validation failed: {e}")))??;
    let id = format!("job-{}", uuid::Uuid::new_v4().simple());
    let (job, position) = state
        .engine
        .submit(id, valid, &body)
        .await
        .map_err(|e| match e {
            PushError::Full => queue_full(state),
            PushError::Closed => {
                HttpError::new(ErrorCode::ShuttingDown, "the worker is shutting down")
            }
            PushError::Unavailable(why) => HttpError::new(ErrorCode::Unavailable, why),
        })?;
    state
        .engine
        .metrics()
        .jobs_submitted
        .with_label_values(&[job.operation.as_str()])
        .inc();
    tracing::info!(job_id = %job.id, position, "job queued");
    Ok((job, position))
}

/// What is known without the body: the model is loading, the worker is
/// stopping (503), or the queue is full (429).
pub(crate) fn admit(state: &AppState) -> Result<(), HttpError> {
    state.ready_profile()?;
    if state.engine.queue_len() >= state.engine.queue_capacity() {
        return Err(queue_full(state));
    }
    Ok(())
}

fn queue_full(state: &AppState) -> HttpError {
    let mut err = HttpError::new(
        ErrorCode::QueueFull,
        format!(
            "the queue is full ({} jobs waiting); retry later",
            state.engine.queue_capacity()
        ),
    );
    err.retry_after_secs = Some(retry_after_secs(state));
    err
}

/// The longest a refused request's body is read (and dropped) for.
const DISCARD_FOR: Duration = Duration::from_secs(2);

/// Reads what the client is still sending of a refused request and drops it,
/// at most `limit` bytes and for at most [`DISCARD_FOR`]: a client still
/// writing its body then reads the refusal, where closing on unread data would
/// reset the connection under it. Nothing is kept or parsed.
pub(crate) async fn discard(body: Body, limit: usize) {
    let mut stream = body.into_data_stream();
    let mut seen = 0usize;
    let _ = tokio::time::timeout(DISCARD_FOR, async {
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len();
            if seen > limit {
                break;
            }
        }
    })
    .await;
}

/// A decoding slot, for a body that may carry input images (one that
/// certainly carries none is validated without one: it is cheap). All slots
/// taken: 429 `queue_full` with `Retry-After: 1`.
pub(crate) fn decode_slot(state: &AppState) -> Result<OwnedSemaphorePermit, HttpError> {
    state
        .decode_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            let mut err = HttpError::new(
                ErrorCode::QueueFull,
                "the worker is decoding as many input images as it allows at once (--max-concurrent-decodes); retry shortly",
            );
            err.retry_after_secs = Some(1);
            err
        })
}

/// False only for a JSON object that certainly has no input image: its image
/// fields (under any of their names, as the contract's [`sdk::OperationFields`]
/// reads them) absent or null. A body this cannot read (not JSON, a field
/// given twice, a wrong type) counts as having one.
fn may_carry_images(body: &[u8]) -> bool {
    /// The image fields, and ControlNet units (each has a control image).
    #[derive(serde::Deserialize)]
    struct Carried {
        #[serde(flatten)]
        input: sdk::OperationFields,
        #[serde(default)]
        controlnets: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Carried>(body).map_or(true, |c| {
        c.input.image.is_some() || c.input.mask.is_some() || c.controlnets.is_some()
    })
}

/// Counts a validation with input images as in flight while it lives, and
/// holds its decoding slot.
struct InFlight<'a> {
    metrics: &'a Metrics,
    _permit: OwnedSemaphorePermit,
}

impl<'a> InFlight<'a> {
    fn new(metrics: &'a Metrics, permit: OwnedSemaphorePermit) -> Self {
        metrics.image_validations_in_flight.inc();
        Self {
            metrics,
            _permit: permit,
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.metrics.image_validations_in_flight.dec();
    }
}

/// A hint, not a promise: roughly one job's time per waiting job, at least 1 s.
fn retry_after_secs(state: &AppState) -> u64 {
    (state.engine.queue_len() as u64).clamp(1, 60)
}

/// The job of this id (NATS mode: on any worker). 404 unknown, 410 expired.
pub async fn find(state: &AppState, id: &str) -> Result<Arc<Job>, HttpError> {
    match state.engine.lookup(id).await {
        Lookup::Found(job) => Ok(job),
        Lookup::Expired => Err(HttpError::new(
            ErrorCode::Expired,
            format!("job `{id}` ended and its result has expired"),
        )),
        Lookup::Unknown => Err(HttpError::new(
            ErrorCode::NotFound,
            format!("no job `{id}`"),
        )),
    }
}

/// A snapshot of the job.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "Job id, `job-…`")), responses(
    (status = 200, body = sdk::JobSnapshot), (status = 400, description = "The id is not valid UTF-8", body = sdk::ErrorBody), (status = 404, body = sdk::ErrorBody), (status = 410, description = "Expired", body = sdk::ErrorBody)))]
pub async fn status(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobSnapshot>, HttpError> {
    Ok(Json(find(&state, &id).await?.snapshot()))
}

/// Cancels the job: a queued job leaves the queue, a running job stops at its next step.
#[utoipa::path(delete, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "Job id, `job-…`")), responses(
    (status = 200, body = sdk::JobSnapshot), (status = 400, description = "The id is not valid UTF-8", body = sdk::ErrorBody), (status = 404, body = sdk::ErrorBody), (status = 409, description = "Already ended", body = sdk::ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobSnapshot>, HttpError> {
    let job = find(&state, &id).await?;
    match state.engine.cancel(&job) {
        CancelOutcome::AlreadyEnded => Err(HttpError::new(
            ErrorCode::Conflict,
            format!("job `{id}` already ended ({})", job.status().as_str()),
        )),
        CancelOutcome::Cancelled => {
            // NATS mode: the `cancelled` event is on its way back to this
            // worker's copy of the job (embedded: already there).
            let mut changes = job.subscribe();
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while !job.status().is_terminal() && changes.changed().await.is_ok() {}
            })
            .await;
            tracing::info!(job_id = %id, "cancelled while waiting");
            Ok(Json(job.snapshot()))
        }
        CancelOutcome::Requested => {
            tracing::info!(job_id = %id, "cancel requested");
            Ok(Json(job.snapshot()))
        }
    }
}

/// The parameters of `/v1/jobs/{id}/images/{index}`, by name so a refusal names them.
#[derive(serde::Deserialize)]
pub struct ImagePath {
    id: String,
    index: usize,
}

/// One result image as a file, for clients that prefer bytes over base64.
#[utoipa::path(get, path = "/v1/jobs/{id}/images/{index}", tag = "jobs",
    params(("id" = String, Path, description = "Job id"), ("index" = usize, Path, description = "Image index, from 0")), responses(
    (status = 200, description = "The image", content_type = "image/png"),
    (status = 400, description = "`index` is not a whole number from 0", body = sdk::ErrorBody), (status = 404, body = sdk::ErrorBody),
    (status = 409, description = "The job has no images", body = sdk::ErrorBody)))]
pub async fn image(
    State(state): State<AppState>,
    ApiPath(ImagePath { id, index }): ApiPath<ImagePath>,
) -> Result<Response, HttpError> {
    let job = find(&state, &id).await?;
    let images = job.result_images().ok_or_else(|| {
        HttpError::new(
            ErrorCode::Conflict,
            format!("job `{id}` has no images ({})", job.status().as_str()),
        )
    })?;
    let img = images.get(index).ok_or_else(|| {
        HttpError::new(
            ErrorCode::NotFound,
            match images.len() {
                1 => format!("job `{id}` has one image: index 0"),
                n => format!("job `{id}` has {n} images: indexes 0 to {}", n - 1),
            },
        )
    })?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&img.image)
        .map_err(|e| HttpError::new(ErrorCode::Internal, e.to_string()))?;
    let ext = match img.format {
        sd_worker_sdk::ImageFormat::Png => "png",
        sd_worker_sdk::ImageFormat::Jpeg => "jpg",
    };
    Ok((
        [
            (header::CONTENT_TYPE, img.format.mime().to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{id}-{index}.{ext}\""),
            ),
            (header::CACHE_CONTROL, "private, max-age=600".to_string()),
        ],
        bytes,
    )
        .into_response())
}
