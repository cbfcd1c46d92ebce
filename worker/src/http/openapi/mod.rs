//! `GET /openapi.json`: the API described from the same Rust types the worker
//! serialises (the `sd-worker-sdk` contract), so the document cannot drift.

use axum::extract::State;
use axum::Json;
use sd_worker_sdk as sdk;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{a1111, catalog, info, jobs, openai, preprocess, stream, AppState};

mod truth;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sd-worker",
        description = "Stable Diffusion image-generation worker: submit jobs, follow them as Server-Sent Events, fetch images. \
                       With --api-token, every route but /health and /ready needs `Authorization: Bearer <token>`."
    ),
    paths(info::health, info::ready, info::metrics, info::info, catalog::loras, catalog::embeddings, catalog::upscalers, spec, jobs::submit, preprocess::preprocess, jobs::status, jobs::cancel, jobs::image, stream::stream,
        openai::generations::generations, openai::edits::edits,
        a1111::txt2img, a1111::img2img, a1111::misc::samplers, a1111::misc::schedulers, a1111::misc::sd_models, a1111::networks::loras, a1111::networks::embeddings, a1111::extras::upscalers, a1111::extras::latent_upscale_modes, a1111::extras::extra_single_image,
        a1111::misc::get_options, a1111::misc::set_options, a1111::misc::progress, a1111::misc::cmd_flags, a1111::memory::memory, a1111::misc::interrupt,
        a1111::misc::skip, a1111::misc::png_info, a1111::controlnet_routes::version, a1111::controlnet_routes::model_list,
        a1111::controlnet_routes::module_list, a1111::controlnet_routes::detect),
    components(schemas(
        sdk::JobRequest, sdk::TextToImageRequest, sdk::ImageToImageRequest, sdk::InpaintRequest, sdk::GenerationParams, sdk::ResizeMode, sdk::Rng,
        sdk::ImageFormat, sdk::Operation, sdk::JobAccepted, sdk::JobSnapshot, sdk::JobStatus, sdk::Timings, sdk::JobResult,
        sdk::GeneratedImage, sdk::StreamEvent, sdk::ErrorBody, sdk::ApiError, sdk::ErrorCode, sdk::WorkerInfo, sdk::LoraApplied, sdk::ModelInfo, sdk::MemoryEstimate, sdk::ControlNetInfo, sdk::ControlNetUnit, sdk::PreprocessParams, sdk::PreprocessorName, sdk::PreprocessRequest,
        sdk::LoraRef, sdk::LoraInfo, sdk::LoraMetadata, sdk::EmbeddingInfo, sdk::UpscaleRequest, sdk::UpscalerInfo,
        sdk::HiresFix, sdk::Phase, sdk::PreviewMethod, sdk::VaeChoice, sdk::VaeTiling,
        sdk::Limits, sdk::Defaults, sdk::Heartbeat, sdk::HeartbeatWorker, sdk::WorkerStatus, sdk::QueueMode,
        openai::generations::ImageGenerationRequest, openai::edits::ImageEditForm, openai::ImagesResponse, openai::ImageData,
        openai::ResponseFormat, openai::OutputFormat, openai::error::OpenAiErrorBody, openai::error::OpenAiError,
        a1111::request::SdRequest, a1111::SdResponse, a1111::error::SdErrorBody, a1111::misc::Sampler, a1111::misc::Schedule,
        a1111::misc::SdModel, a1111::networks::SdLora, a1111::extras::SdUpscaler, a1111::extras::SdLatentMode, a1111::extras::ExtrasRequest, a1111::extras::ExtrasResponse, a1111::misc::Progress, a1111::misc::ProgressState, a1111::misc::PngInfoRequest,
        a1111::misc::PngInfoResponse, a1111::controlnet_routes::CnVersion, a1111::controlnet_routes::CnModelList,
        a1111::controlnet_routes::CnModuleList, a1111::controlnet_routes::DetectRequest, a1111::controlnet_routes::DetectResponse
    )),
    modifiers(&BearerAuth),
    tags((name = "jobs", description = "Submit, follow, cancel"), (name = "worker", description = "Health and capabilities"),
        (name = "openai", description = "OpenAI's Images API, an adapter over jobs"),
        (name = "a1111", description = "AUTOMATIC1111's /sdapi/v1 API and its ControlNet extension's /controlnet routes, an adapter over jobs (HTTP Basic with any user and the token as password is accepted too)"))
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

/// This document, with this worker's limits (sizes, steps, images,
/// schedulers of the loaded model) written into the request schema.
#[utoipa::path(get, path = "/openapi.json", tag = "worker", responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn spec(State(state): State<AppState>) -> Json<Value> {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    truth::complete(&mut doc);
    if let Some(profile) = state.profile.get() {
        truth::apply_limits(&mut doc, &profile.info);
    }
    Json(doc)
}
