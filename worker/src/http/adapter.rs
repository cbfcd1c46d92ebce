//! What the adapters at the HTTP edge share (OpenAI's Images API in
//! [`super::openai`], AUTOMATIC1111's `/sdapi/v1` in [`super::a1111`]): each
//! builds our contract's job body, submits it through
//! [`super::jobs::validate_and_submit`] like `POST /v1/jobs`, then waits here
//! for the job's end; a client that hangs up meanwhile cancels its job.

use sd_worker_sdk::{ErrorCode, GeneratedImage, JobStatus};
use serde::de::DeserializeOwned;
use std::sync::Arc;

use super::error::HttpError;
use super::AppState;
use crate::engine::job::Job;

/// Cancels the job when dropped before it ended: the handler's future is
/// dropped when its client hangs up.
pub(crate) struct CancelOnDrop {
    pub(crate) state: AppState,
    pub(crate) job: Arc<Job>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.job.status().is_terminal() {
            tracing::info!(job_id = %self.job.id, "client left; cancelling its job");
            self.state.engine.cancel(&self.job);
        }
    }
}

/// Waits for the job's terminal event and returns its images; a failed job
/// is its error, a cancelled one a 409 `conflict`. Dropping the future (the
/// client hung up) cancels the job.
pub async fn wait_for_images(
    state: &AppState,
    job: Arc<Job>,
) -> Result<Vec<GeneratedImage>, HttpError> {
    let guard = CancelOnDrop {
        state: state.clone(),
        job,
    };
    let mut changes = guard.job.subscribe();
    loop {
        changes.borrow_and_update();
        if guard.job.status().is_terminal() {
            break;
        }
        if changes.changed().await.is_err() {
            break;
        }
    }
    let snap = guard.job.snapshot();
    match (snap.status, snap.result, snap.error) {
        (JobStatus::Completed, Some(result), _) => Ok(result.images),
        (_, _, Some(error)) => Err(error.into()),
        (status, _, _) => Err(HttpError::new(
            ErrorCode::Conflict,
            format!(
                "job `{}` ended {} without images",
                guard.job.id,
                status.as_str()
            ),
        )),
    }
}

/// Reads a JSON request body into `T`: a missing field is a 422
/// `missing_field`, a field of the wrong type a 422 `invalid_value`, each
/// naming the field by its path in the request (`init_images[0]`).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, HttpError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        let missing = inner
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
            .map(str::to_string);
        let (code, message, field) = match missing {
            Some(field) => (
                ErrorCode::MissingField,
                format!("`{field}` is required"),
                field,
            ),
            None => (ErrorCode::InvalidValue, format!("`{path}`: {inner}"), path),
        };
        let mut err = sd_worker_sdk::ApiError::new(code, message);
        if !field.is_empty() && field != "." {
            err = err.with_field(field);
        }
        HttpError::from(err)
    })
}

/// Largest error body rewritten by [`rewrite_error`]; ours are a few hundred bytes.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Rewrites an error response in our shape (`{"error": {code, message,
/// field}}`) into another tool's: `convert` gives the status and the body.
/// Success responses, and bodies that are not ours, pass unchanged; headers
/// (`Retry-After`, `WWW-Authenticate`) stay. Each adapter's route layer calls
/// this on its own paths.
pub async fn rewrite_error<B: serde::Serialize>(
    res: axum::response::Response,
    convert: impl FnOnce(
        axum::http::StatusCode,
        sd_worker_sdk::ErrorBody,
    ) -> (axum::http::StatusCode, B),
) -> axum::response::Response {
    use axum::body::{to_bytes, Body};
    use axum::http::{header, HeaderValue};
    use axum::response::Response;
    if !(res.status().is_client_error() || res.status().is_server_error()) {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_ERROR_BODY).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let Ok(ours) = serde_json::from_slice::<sd_worker_sdk::ErrorBody>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let (status, theirs) = convert(parts.status, ours);
    let json = serde_json::to_vec(&theirs).unwrap_or_default();
    parts.status = status;
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(json))
}
