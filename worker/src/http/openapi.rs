//! `GET /openapi.json`: the API described from the same Rust types the worker
//! serialises (the `sd-worker-sdk` contract), so the document cannot drift.

use axum::Json;
use sd_worker_sdk as sdk;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{info, jobs, stream};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sd-worker",
        description = "Stable Diffusion image-generation worker: submit jobs, follow them as Server-Sent Events, fetch images. \
                       With --api-token, every route but /health and /ready needs `Authorization: Bearer <token>`."
    ),
    paths(info::health, info::ready, info::metrics, info::info, spec, jobs::submit, jobs::status, jobs::cancel, jobs::image, stream::stream),
    components(schemas(
        sdk::JobRequest, sdk::TextToImageRequest, sdk::ImageRequest, sdk::GenerationParams, sdk::ImageInput, sdk::ResizeMode,
        sdk::ImageFormat, sdk::Operation, sdk::JobAccepted, sdk::JobSnapshot, sdk::JobStatus, sdk::Timings, sdk::JobResult,
        sdk::GeneratedImage, sdk::StreamEvent, sdk::ErrorBody, sdk::ApiError, sdk::ErrorCode, sdk::WorkerInfo, sdk::ModelInfo, sdk::MemoryEstimate,
        sdk::Limits, sdk::Defaults, sdk::Heartbeat, sdk::HeartbeatWorker, sdk::WorkerStatus
    )),
    modifiers(&BearerAuth),
    tags((name = "jobs", description = "Submit, follow, cancel"), (name = "worker", description = "Health and capabilities"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "worker", responses((status = 200, description = "OpenAPI 3.1 document")))]
pub async fn spec() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
