//! AUTOMATIC1111's API (`/sdapi/v1/...`) as a thin adapter at the HTTP edge:
//! `txt2img` and `img2img` turn A1111's request into our contract's
//! `POST /v1/jobs` body, submit it through the same validation, queue and
//! engine ([`super::jobs::validate_and_submit`]), wait for the job
//! ([`super::adapter::wait_for_images`]: a client that hangs up cancels it)
//! and answer A1111's `{images, parameters, info}`. The job stays visible at
//! `/v1/jobs/{id}` (its id is `job_id` in `info` and the `X-Job-Id` header).
//! [`misc`] holds the other routes (samplers, models, options, progress,
//! interrupt, png-info); [`error`] gives every refusal A1111's error shape.

pub mod callers;
pub mod controlnet;
pub mod controlnet_routes;
pub mod error;
pub mod extras;
pub mod memory;
pub mod misc;
pub mod networks;
pub mod numbers;
pub mod request;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use sd_worker_sdk::{GeneratedImage, Operation};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;

use super::adapter::wait_for_images;
use super::error::HttpError;
use super::jobs::{admit, count_rejection, discard, read_body, require_json, validate_and_submit};
use super::AppState;
use crate::engine::job::Job;
use crate::pipeline::encode::{controlnet_infotext, read_png_parameters};
use request::SdRequest;

/// A1111 shows a live preview every 10 steps by default
/// (`show_progress_every_n_steps`); `GET /sdapi/v1/progress` answers the latest.
pub const PREVIEW_EVERY: u32 = 10;

/// A1111's `TextToImageResponse` / `ImageToImageResponse`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SdResponse {
    /// Base64 PNGs (with our A1111 `parameters` chunk); empty with `send_images: false`.
    pub images: Vec<String>,
    /// The request as understood, in A1111's field names, with the values used
    /// (the drawn seed, the sampler and schedule run); `init_images` and `mask` null.
    #[schema(value_type = Object)]
    pub parameters: Value,
    /// A JSON object as a string, as A1111 sends it: `seed`, `all_seeds`,
    /// `infotexts`, `prompt`, ... plus `job_id` and `warnings` (what was ignored).
    pub info: String,
}

/// `POST /sdapi/v1/txt2img`: text to image, synchronous.
#[utoipa::path(post, path = "/sdapi/v1/txt2img", tag = "a1111", request_body = SdRequest, responses(
    (status = 200, body = SdResponse),
    (status = 401, description = "Missing or wrong token (Basic with any user, or Bearer)", body = error::SdErrorBody),
    (status = 409, description = "The job was cancelled (interrupt, skip or DELETE /v1/jobs/{id})", body = error::SdErrorBody),
    (status = 413, description = "Body too large", body = error::SdErrorBody),
    (status = 415, description = "Not `Content-Type: application/json`", body = error::SdErrorBody),
    (status = 422, description = "A field of the wrong type, or a value the worker refuses", body = error::SdErrorBody),
    (status = 429, description = "Queue full; see Retry-After", body = error::SdErrorBody),
    (status = 503, description = "Model loading or worker stopping", body = error::SdErrorBody)))]
pub async fn txt2img(State(state): State<AppState>, req: Request) -> Result<Response, HttpError> {
    run(state, req, false).await
}

/// `POST /sdapi/v1/img2img`: image to image (`init_images[0]`), or inpainting with `mask`.
#[utoipa::path(post, path = "/sdapi/v1/img2img", tag = "a1111", request_body = SdRequest, responses(
    (status = 200, body = SdResponse),
    (status = 400, description = "An input image that cannot be decoded", body = error::SdErrorBody),
    (status = 401, description = "Missing or wrong token (Basic with any user, or Bearer)", body = error::SdErrorBody),
    (status = 409, description = "The job was cancelled (interrupt, skip or DELETE /v1/jobs/{id})", body = error::SdErrorBody),
    (status = 413, description = "Body or input image too large", body = error::SdErrorBody),
    (status = 415, description = "Not `Content-Type: application/json`", body = error::SdErrorBody),
    (status = 422, description = "A field of the wrong type, no `init_images`, or a value the worker refuses", body = error::SdErrorBody),
    (status = 429, description = "Queue full or every decoding slot taken; see Retry-After", body = error::SdErrorBody),
    (status = 503, description = "Model loading or worker stopping", body = error::SdErrorBody)))]
pub async fn img2img(State(state): State<AppState>, req: Request) -> Result<Response, HttpError> {
    run(state, req, true).await
}

async fn run(state: AppState, req: Request, img2img: bool) -> Result<Response, HttpError> {
    let (job, sd, plan) = match submit(&state, req, img2img).await {
        Ok(ok) => ok,
        Err(e) => {
            count_rejection(&state, &e);
            return Err(e);
        }
    };
    let images = wait_for_images(&state, job.clone()).await?;
    Ok(respond(&state, &job, &sd, &plan, images))
}

async fn submit(
    state: &AppState,
    req: Request,
    img2img: bool,
) -> Result<(Arc<Job>, SdRequest, controlnet::Plan), HttpError> {
    let (parts, body) = req.into_parts();
    let caller = callers::Caller::of(&parts);
    if let Err(e) = require_json(&parts.headers).and_then(|()| admit(state)) {
        discard(body, state.max_body_bytes).await;
        return Err(e);
    }
    let bytes = read_body(Request::from_parts(parts, body)).await?;
    let sd = SdRequest::parse(&bytes)?;
    let available = misc::model_schedulers(state)?;
    let profile = state.ready_profile()?;
    let default = profile.default_scheduler.wire();
    let nets: Vec<String> = profile
        .info
        .controlnets
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let plan = controlnet::Plan::read(
        sd.alwayson_scripts.as_ref(),
        img2img.then_some(sd.resize_mode.unwrap_or(0)),
        &nets,
        &profile.preprocessors.names(),
    )?;
    let mut job_body = sd.to_job_body(img2img, &available, default)?;
    plan.apply(&mut job_body);
    job_body.insert("preview_every".into(), json!(PREVIEW_EVERY));
    // A body with ControlNet units decodes images, as img2img's does.
    let decodes = img2img || !plan.is_empty();
    let (job, _) = validate_and_submit(state, decodes, move |_| {
        request::invert_mask_if_asked(&mut job_body)?;
        Ok(serde_json::to_vec(&Value::Object(job_body))
            .unwrap_or_default()
            .into())
    })
    .await
    .map_err(|e| plan.rename(e).unwrap_or_else(error::renamed))?;
    if let Some(caller) = caller {
        state.a1111_callers.record(caller, &job.id);
    }
    Ok((job, sd, plan))
}

/// The PNG's `parameters` text (A1111's infotext), if it carries one.
fn infotext(image: &GeneratedImage) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&image.image)
        .ok()?;
    read_png_parameters(&bytes)
}

/// A1111's answer for a finished job.
fn respond(
    state: &AppState,
    job: &Job,
    sd: &SdRequest,
    plan: &controlnet::Plan,
    images: Vec<GeneratedImage>,
) -> Response {
    // A1111's routes queue diffusion jobs only.
    let Some(r) = job.request.as_ref().and_then(|w| w.generation()) else {
        return crate::http::error::HttpError::from(sd_worker_sdk::ApiError::new(
            sd_worker_sdk::ErrorCode::Internal,
            "an A1111 route answered for a job that is not a generation",
        ))
        .into_response();
    };
    let spec = r.scheduler.wire().spec();
    let n = images.len();
    let seeds: Vec<u64> = images.iter().map(|i| i.seed).collect();
    let infotexts: Vec<String> = images.iter().filter_map(infotext).collect();
    let strength = r
        .init
        .as_ref()
        .map(|i| i.strength)
        .or(r.hires.as_ref().map(|h| h.strength));
    let negative = r.negative_prompt.clone().unwrap_or_default();
    let model = state
        .profile
        .get()
        .map(|p| p.info.model.id.clone())
        .unwrap_or_default();
    let (batch_size, n_iter) = sd.batch();
    let mut warnings = sd.ignored();
    warnings.extend(plan.warnings((r.width, r.height)));
    warnings.extend(job.snapshot().warnings);
    // As the extension writes its units into A1111's infotext.
    let mut extra: Map<String, Value> = r
        .controls
        .iter()
        .enumerate()
        .map(|(i, unit)| (format!("ControlNet {i}"), json!(controlnet_infotext(unit))))
        .collect();
    // As A1111 lists the hires fix's parameters.
    if let Some(h) = &r.hires {
        match h.infotext.scale {
            Some(scale) => extra.insert("Hires upscale".into(), json!(scale)),
            None => extra.insert(
                "Hires resize".into(),
                json!(format!("{}x{}", h.width, h.height)),
            ),
        };
        if let Some(steps) = h.infotext.steps {
            extra.insert("Hires steps".into(), json!(steps));
        }
        extra.insert("Hires upscaler".into(), json!(h.infotext.upscaler));
    }
    let info = json!({
        "prompt": r.prompt,
        "all_prompts": vec![&r.prompt; n],
        "negative_prompt": negative,
        "all_negative_prompts": vec![&negative; n],
        "seed": r.seed,
        "all_seeds": seeds,
        "subseed": r.seed,
        "all_subseeds": seeds,
        "subseed_strength": 0,
        "width": r.width,
        "height": r.height,
        "sampler_name": spec.a1111_sampler,
        "scheduler": spec.a1111_schedule.unwrap_or("Automatic"),
        "cfg_scale": r.guidance_scale,
        "steps": r.steps,
        "batch_size": batch_size,
        "n_iter": n_iter,
        "restore_faces": false,
        "sd_model_name": model,
        "sd_model_hash": Value::Null,
        "denoising_strength": strength,
        "extra_generation_params": extra,
        "index_of_first_image": 0,
        "infotexts": infotexts,
        "styles": [],
        "clip_skip": 1,
        "is_using_inpainting_conditioning": job.operation == Operation::ImageInpaint,
        "version": concat!("sd-worker ", env!("CARGO_PKG_VERSION")),
        "job_id": job.id,
        "warnings": warnings,
    });
    let mut parameters = sd.raw.clone();
    let understood: Map<String, Value> = json!({
        "prompt": r.prompt,
        "negative_prompt": negative,
        "steps": r.steps,
        "cfg_scale": r.guidance_scale,
        "width": r.width,
        "height": r.height,
        "seed": r.seed,
        "sampler_name": spec.a1111_sampler,
        "scheduler": spec.a1111_schedule.unwrap_or("Automatic"),
        "batch_size": batch_size,
        "n_iter": n_iter,
        "denoising_strength": strength,
        "init_images": Value::Null,
        "mask": Value::Null,
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    parameters.extend(understood);
    let body = SdResponse {
        images: if sd.send_images.unwrap_or(true) {
            images.into_iter().map(|i| i.image).collect()
        } else {
            Vec::new()
        },
        parameters: Value::Object(parameters),
        info: info.to_string(),
    };
    let mut res = Json(body).into_response();
    if let Ok(v) = HeaderValue::from_str(&job.id) {
        res.headers_mut().insert("x-job-id", v);
    }
    res
}
