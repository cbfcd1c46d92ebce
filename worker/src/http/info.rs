//! Liveness, readiness and what the worker serves.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

use super::error::HttpError;
use super::AppState;
use sd_worker_sdk::{self as sdk, WorkerInfo};

/// The process is alive (never depends on the model).
#[utoipa::path(get, path = "/health", tag = "worker", security(()), responses((status = 200, description = "`{\"status\":\"ok\"}`")))]
pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 once the model is loaded and the worker accepts jobs; 503 before and while stopping.
#[utoipa::path(get, path = "/ready", tag = "worker", security(()), responses(
    (status = 200, description = "`{\"status\":\"ready\",\"queue_length\":0}`"),
    (status = 503, description = "`loading` or `stopping`")))]
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

/// What the worker serves and which requests it accepts.
#[utoipa::path(get, path = "/v1/info", tag = "worker", responses(
    (status = 200, body = sdk::WorkerInfo), (status = 503, description = "The model is loading", body = sdk::ErrorBody)))]
pub async fn info(State(state): State<AppState>) -> Result<Json<WorkerInfo>, HttpError> {
    let profile = state.ready_profile()?;
    let mut info = profile.info.clone();
    // Which ControlNets are in memory changes as jobs load them.
    info.controlnets = profile.controlnets.infos();
    Ok(Json(info))
}

/// Prometheus text exposition; the queue gauges are read at scrape time.
#[utoipa::path(get, path = "/metrics", tag = "worker", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    let m = state.engine.metrics();
    m.queue_size.set(state.engine.queue_len() as i64);
    m.busy.set(i64::from(state.engine.is_busy()));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.render(),
    )
}
