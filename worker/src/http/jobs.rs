//! `/v1/jobs`: submit, inspect, cancel, and fetch a result image.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use sd_worker_sdk::{self as sdk, ErrorCode, JobAccepted, JobSnapshot};
use std::sync::Arc;

use super::error::HttpError;
use super::AppState;
use crate::engine::job::Job;
use crate::engine::queue::PushError;
use crate::engine::registry::Lookup;
use crate::engine::CancelOutcome;
use crate::validation::validate_body;

/// Submits a job; follow it on `sse_url`.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = sdk::JobRequest, responses(
    (status = 202, body = sdk::JobAccepted), (status = 400, description = "Malformed JSON, a wrong type or an undecodable image", body = sdk::ErrorBody), (status = 401, description = "Missing or wrong bearer token", body = sdk::ErrorBody),
    (status = 413, description = "Body or input image too large", body = sdk::ErrorBody),
    (status = 422, description = "A missing field or a value out of range", body = sdk::ErrorBody),
    (status = 429, description = "Queue full; see Retry-After", body = sdk::ErrorBody),
    (status = 503, description = "Model loading or worker stopping", body = sdk::ErrorBody)))]
pub async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<JobAccepted>), HttpError> {
    let result = match require_json(&headers) {
        Ok(()) => accept(&state, body).await,
        Err(e) => Err(e),
    };
    if let Err(e) = &result {
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
    result
}

/// Only JSON bodies: a browser cannot send `application/json` cross-origin
/// without a CORS preflight, so a foreign web page cannot submit jobs.
fn require_json(headers: &HeaderMap) -> Result<(), HttpError> {
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

async fn accept(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<JobAccepted>), HttpError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            HttpError::new(
                ErrorCode::PayloadTooLarge,
                "the request body is larger than the worker accepts",
            )
        } else {
            HttpError::new(ErrorCode::InvalidRequest, rejection.body_text())
        }
    })?;
    state.ready_profile()?;
    // Validation decodes input images: keep it off the async workers.
    let st = state.clone();
    let valid = tokio::task::spawn_blocking(move || {
        validate_body(&body, st.ready_profile()?).map_err(HttpError::from)
    })
    .await
    .map_err(|e| HttpError::new(ErrorCode::Internal, format!("validation failed: {e}")))??;
    let id = format!("job-{}", uuid::Uuid::new_v4().simple());
    let seed = valid.request.seed;
    let (job, position) = state
        .engine
        .submit(id, valid.operation, valid.request, valid.preview_every)
        .map_err(|e| match e {
            PushError::Full => {
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
            PushError::Closed => {
                HttpError::new(ErrorCode::ShuttingDown, "the worker is shutting down")
            }
        })?;
    state
        .engine
        .metrics()
        .jobs_submitted
        .with_label_values(&[job.operation.as_str()])
        .inc();
    tracing::info!(job_id = %job.id, position, "job queued");
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

/// A hint, not a promise: roughly one job's time per waiting job, at least 1 s.
fn retry_after_secs(state: &AppState) -> u64 {
    (state.engine.queue_len() as u64).clamp(1, 60)
}

pub fn find(state: &AppState, id: &str) -> Result<Arc<Job>, HttpError> {
    match state.engine.lookup(id) {
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
    (status = 200, body = sdk::JobSnapshot), (status = 404, body = sdk::ErrorBody), (status = 410, description = "Expired", body = sdk::ErrorBody)))]
pub async fn status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobSnapshot>, HttpError> {
    Ok(Json(find(&state, &id)?.snapshot()))
}

/// Cancels the job: a queued job leaves the queue, a running job stops at its next step.
#[utoipa::path(delete, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "Job id, `job-…`")), responses(
    (status = 200, body = sdk::JobSnapshot), (status = 404, body = sdk::ErrorBody), (status = 409, description = "Already ended", body = sdk::ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobSnapshot>, HttpError> {
    let job = find(&state, &id)?;
    match state.engine.cancel(&job) {
        CancelOutcome::AlreadyEnded => Err(HttpError::new(
            ErrorCode::Conflict,
            format!("job `{id}` already ended ({})", job.status().as_str()),
        )),
        CancelOutcome::Cancelled | CancelOutcome::Requested => {
            tracing::info!(job_id = %id, "cancel requested");
            Ok(Json(job.snapshot()))
        }
    }
}

/// One result image as a file, for clients that prefer bytes over base64.
#[utoipa::path(get, path = "/v1/jobs/{id}/images/{index}", tag = "jobs",
    params(("id" = String, Path, description = "Job id"), ("index" = usize, Path, description = "Image index, from 0")), responses(
    (status = 200, description = "The image", content_type = "image/png"), (status = 404, body = sdk::ErrorBody),
    (status = 409, description = "The job has no images", body = sdk::ErrorBody)))]
pub async fn image(
    State(state): State<AppState>,
    Path((id, index)): Path<(String, usize)>,
) -> Result<Response, HttpError> {
    let job = find(&state, &id)?;
    let images = job.result_images().ok_or_else(|| {
        HttpError::new(
            ErrorCode::Conflict,
            format!("job `{id}` has no images ({})", job.status().as_str()),
        )
    })?;
    let img = images.get(index).ok_or_else(|| {
        HttpError::new(
            ErrorCode::NotFound,
            format!("job `{id}` has {} images", images.len()),
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
