//! Liveness, readiness and what the worker serves.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

use super::error::HttpError;
use super::AppState;
use sd_worker_sdk::WorkerInfo;

/// The process is alive (never depends on the model).
pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 once the model is loaded and the worker accepts jobs; 503 before and while stopping.
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let status = if !state.accepting.load(Ordering::SeqCst) {
        "stopping"
    } else if state.profile.get().is_some() {
        "ready"
    } else {
        "loading"
    };
    let code = if status == "ready" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({ "status": status, "queue_length": state.engine.queue_len() })),
    )
}

pub async fn info(State(state): State<AppState>) -> Result<Json<WorkerInfo>, HttpError> {
    Ok(Json(state.ready_profile()?.info.clone()))
}
