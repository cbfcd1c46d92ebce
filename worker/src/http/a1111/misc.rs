//! A1111's other routes, answered from what the worker has: its one loaded
//! model, its schedulers (the contract's table), the running job.

use axum::extract::{Request, State};
use axum::Json;
use base64::Engine as _;
use sd_worker_sdk::{ErrorCode, JobStatus, SchedulerName, StreamEvent};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::callers::MaybeCaller;
use super::error::SdErrorBody;
use crate::engine::registry::Lookup;
use crate::http::adapter::parse_json;
use crate::http::error::HttpError;
use crate::http::extract::ApiQuery;
use crate::http::jobs::read_body;
use crate::http::AppState;
use crate::pipeline::encode::read_png_parameters;

/// One sampler as A1111 lists it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Sampler {
    /// A1111's name ("Euler a", "DPM++ 2M Karras"): what `sampler_name` takes.
    pub name: String,
    /// Other accepted spellings (our wire name, label, aliases).
    pub aliases: Vec<String>,
    #[schema(value_type = Object)]
    pub options: Map<String, Value>,
}

/// The loaded model's schedulers (wire names), in the contract's order.
pub(super) fn model_schedulers(state: &AppState) -> Result<Vec<SchedulerName>, HttpError> {
    let profile = state.ready_profile()?;
    Ok(SchedulerName::ALL
        .into_iter()
        .filter(|s| profile.info.schedulers.iter().any(|n| n == s.name()))
        .collect())
}

/// `GET /sdapi/v1/samplers`: the loaded model's schedulers by A1111 name.
#[utoipa::path(get, path = "/sdapi/v1/samplers", tag = "a1111", responses(
    (status = 200, body = Vec<Sampler>), (status = 401, body = SdErrorBody), (status = 503, body = SdErrorBody)))]
pub async fn samplers(State(state): State<AppState>) -> Result<Json<Vec<Sampler>>, HttpError> {
    let list = model_schedulers(&state)?
        .into_iter()
        .map(|s| {
            let spec = s.spec();
            let mut aliases: Vec<String> = spec
                .spellings()
                .filter(|a| *a != spec.a1111)
                .map(str::to_string)
                .collect();
            aliases.dedup();
            let mut options = Map::new();
            if let Some(schedule) = spec.a1111_schedule {
                options.insert("scheduler".into(), json!(schedule.to_lowercase()));
            }
            Sampler {
                name: spec.a1111.to_string(),
                aliases,
                options,
            }
        })
        .collect();
    Ok(Json(list))
}

/// One schedule type as A1111 1.9 lists it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Schedule {
    pub name: String,
    pub label: String,
    pub aliases: Option<Vec<String>>,
    pub default_rho: f64,
    pub need_inner_model: bool,
}

/// `GET /sdapi/v1/schedulers`: "Automatic" and each schedule type a sampler
/// of the loaded model has here ("Karras" for "DPM++ 2M").
#[utoipa::path(get, path = "/sdapi/v1/schedulers", tag = "a1111", responses(
    (status = 200, body = Vec<Schedule>), (status = 401, body = SdErrorBody), (status = 503, body = SdErrorBody)))]
pub async fn schedulers(State(state): State<AppState>) -> Result<Json<Vec<Schedule>>, HttpError> {
    let mut labels = vec!["Automatic"];
    for s in model_schedulers(&state)? {
        if let Some(l) = s.spec().a1111_schedule {
            if !labels.contains(&l) {
                labels.push(l);
            }
        }
    }
    Ok(Json(
        labels
            .into_iter()
            .map(|l| Schedule {
                name: l.to_lowercase(),
                label: l.to_string(),
                aliases: None,
                default_rho: if l == "Karras" { 7.0 } else { -1.0 },
                need_inner_model: false,
            })
            .collect(),
    ))
}

/// The loaded model as A1111 lists a checkpoint.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SdModel {
    /// What `sd_model_checkpoint` names: our model id.
    pub title: String,
    pub model_name: String,
    /// Null: the worker does not hash its weights.
    pub hash: Option<String>,
    pub sha256: Option<String>,
    /// Where it was loaded from (a folder or `hf://repo@revision`).
    pub filename: String,
    pub config: Option<String>,
}

fn loaded_model(state: &AppState) -> Result<SdModel, HttpError> {
    let m = &state.ready_profile()?.info.model;
    Ok(SdModel {
        title: m.id.clone(),
        model_name: m.id.clone(),
        hash: None,
        sha256: None,
        filename: m.source.clone(),
        config: None,
    })
}

/// `GET /sdapi/v1/sd-models`: the one loaded model.
#[utoipa::path(get, path = "/sdapi/v1/sd-models", tag = "a1111", responses(
    (status = 200, body = Vec<SdModel>), (status = 401, body = SdErrorBody), (status = 503, body = SdErrorBody)))]
pub async fn sd_models(State(state): State<AppState>) -> Result<Json<Vec<SdModel>>, HttpError> {
    Ok(Json(vec![loaded_model(&state)?]))
}

/// `GET /sdapi/v1/options`: `sd_model_checkpoint` (the loaded model) and the
/// few settings that describe this worker.
#[utoipa::path(get, path = "/sdapi/v1/options", tag = "a1111", responses(
    (status = 200, body = Object), (status = 401, body = SdErrorBody), (status = 503, body = SdErrorBody)))]
pub async fn get_options(State(state): State<AppState>) -> Result<Json<Value>, HttpError> {
    let model = loaded_model(&state)?;
    Ok(Json(json!({
        "sd_model_checkpoint": model.title,
        "samples_format": "png",
        "show_progress_every_n_steps": super::PREVIEW_EVERY,
        "save_images": false,
    })))
}

/// `POST /sdapi/v1/options`: `sd_model_checkpoint` may only name the loaded
/// model (422 otherwise: this worker serves one); other keys are ignored.
#[utoipa::path(post, path = "/sdapi/v1/options", tag = "a1111", request_body = Object, responses(
    (status = 200, body = Object), (status = 401, body = SdErrorBody), (status = 422, body = SdErrorBody), (status = 503, body = SdErrorBody)))]
pub async fn set_options(
    State(state): State<AppState>,
    req: Request,
) -> Result<Json<Value>, HttpError> {
    let model = loaded_model(&state)?;
    let body: Map<String, Value> = parse_json(&read_body(req).await?)?;
    if let Some(v) = body.get("sd_model_checkpoint") {
        let named = v.as_str().unwrap_or_default();
        // A1111 titles carry a hash suffix: "name [abcdef1234]".
        let bare = named.split(" [").next().unwrap_or(named).trim();
        if bare != model.title && named != model.filename {
            return Err(sd_worker_sdk::ApiError::new(
                ErrorCode::ModelMismatch,
                format!(
                    "this worker serves `{}` only; `sd_model_checkpoint` cannot switch models",
                    model.title
                ),
            )
            .with_field("sd_model_checkpoint")
            .into());
        }
    }
    Ok(Json(json!({})))
}

/// `GET /sdapi/v1/cmd-flags`: a minimal answer for clients that probe it:
/// this is an API server (`api`, `nowebui`), with no LoRA, embedding or
/// upscaler folders and no saving to disk.
#[utoipa::path(get, path = "/sdapi/v1/cmd-flags", tag = "a1111", responses(
    (status = 200, body = Object), (status = 401, body = SdErrorBody)))]
pub async fn cmd_flags() -> Json<Value> {
    Json(json!({
        "api": true,
        "nowebui": true,
        "lora_dir": Value::Null,
        "embeddings_dir": Value::Null,
        "hide_ui_dir_config": true,
        "freeze_settings": true,
    }))
}

/// A1111's progress `state`.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ProgressState {
    pub skipped: bool,
    pub interrupted: bool,
    /// The running job's id ("" when idle).
    pub job: String,
    /// Jobs running or waiting.
    pub job_count: u32,
    pub job_timestamp: String,
    pub job_no: u32,
    pub sampling_step: u32,
    pub sampling_steps: u32,
}

/// A1111's `ProgressResponse`.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Progress {
    /// 0..1 of the running job's steps.
    pub progress: f64,
    /// Seconds left, estimated from the time so far.
    pub eta_relative: f64,
    pub state: ProgressState,
    /// Base64 of the running job's latest preview, or null.
    pub current_image: Option<String>,
    pub textinfo: Option<String>,
}

/// `GET /sdapi/v1/progress`'s query.
#[derive(Debug, Deserialize)]
pub struct ProgressQuery {
    /// true: no `current_image`.
    #[serde(default)]
    pub skip_current_image: Option<bool>,
}

/// `GET /sdapi/v1/progress`: the job the caller started last through
/// `txt2img`/`img2img` while it is queued or running (see [`super::callers`]),
/// else the job being generated now (idle: zeros). A queued job reports 0
/// progress and `textinfo` "Waiting...". A query parameter that does not
/// parse is a 400 naming it.
#[utoipa::path(get, path = "/sdapi/v1/progress", tag = "a1111", params(
    ("skip_current_image" = Option<bool>, Query, description = "true: no `current_image`")),
    responses((status = 200, body = Progress), (status = 401, body = SdErrorBody)))]
pub async fn progress(
    State(state): State<AppState>,
    MaybeCaller(caller): MaybeCaller,
    ApiQuery(query): ApiQuery<ProgressQuery>,
) -> Json<Progress> {
    let skip_image = query.skip_current_image.unwrap_or(false);
    // A job that just ended may still be the runner's for a moment: idle then.
    let running = state.engine.current().filter(|j| !j.status().is_terminal());
    let job_count = state.engine.queue_len() as u32 + u32::from(running.is_some());
    let last = caller.and_then(|c| state.a1111_callers.last(&c));
    let mine = match last {
        Some(id) => match state.engine.lookup(&id).await {
            Lookup::Found(job) => Some(job),
            Lookup::Expired | Lookup::Unknown => None,
        },
        None => None,
    }
    .filter(|j| !j.status().is_terminal());
    let Some(job) = mine.or(running) else {
        return Json(Progress {
            state: ProgressState {
                job_count,
                ..Default::default()
            },
            ..Default::default()
        });
    };
    let snap = job.snapshot();
    let queued = snap.status == JobStatus::Queued;
    let total = snap.total_steps.max(1);
    let fraction = f64::from(snap.step.min(total)) / f64::from(total);
    let elapsed = snap
        .timings
        .started_at_ms
        .map(|t| crate::engine::job::unix_ms().saturating_sub(t) as f64 / 1000.0)
        .unwrap_or(0.0);
    let eta = if fraction > 0.0 {
        elapsed / fraction - elapsed
    } else {
        0.0
    };
    let current_image = if skip_image {
        None
    } else {
        job.events_after(0)
            .into_iter()
            .rev()
            .find_map(|(_, e)| match e {
                StreamEvent::Preview { image, .. } => Some(image),
                _ => None,
            })
    };
    Json(Progress {
        progress: fraction,
        eta_relative: eta,
        state: ProgressState {
            skipped: false,
            interrupted: snap.cancel_requested,
            job: job.id.clone(),
            job_count,
            job_timestamp: snap.timings.created_at_ms.to_string(),
            job_no: 0,
            sampling_step: snap.step,
            sampling_steps: snap.total_steps,
        },
        current_image,
        textinfo: queued.then(|| "Waiting...".to_string()),
    })
}

fn cancel_running(state: &AppState) -> Json<Value> {
    if let Some(job) = state.engine.current() {
        tracing::info!(job_id = %job.id, "A1111 interrupt: cancelling the running job");
        state.engine.cancel(&job);
    }
    Json(json!({}))
}

/// `POST /sdapi/v1/interrupt`: cancels the running job (its `txt2img` call answers 409).
#[utoipa::path(post, path = "/sdapi/v1/interrupt", tag = "a1111", responses(
    (status = 200, body = Object), (status = 401, body = SdErrorBody)))]
pub async fn interrupt(State(state): State<AppState>) -> Json<Value> {
    cancel_running(&state)
}

/// `POST /sdapi/v1/skip`: as interrupt (a job here is one batch: there is
/// no next image of it to skip to).
#[utoipa::path(post, path = "/sdapi/v1/skip", tag = "a1111", responses(
    (status = 200, body = Object), (status = 401, body = SdErrorBody)))]
pub async fn skip(State(state): State<AppState>) -> Json<Value> {
    cancel_running(&state)
}

/// `POST /sdapi/v1/png-info` request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PngInfoRequest {
    /// Base64 PNG, with or without a `data:` prefix.
    pub image: String,
}

/// `POST /sdapi/v1/png-info` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PngInfoResponse {
    /// The `parameters` text ("" when none).
    pub info: String,
    /// The text chunks: `{"parameters": ...}`.
    #[schema(value_type = Object)]
    pub items: Map<String, Value>,
    /// The infotext parsed as A1111's `parse_generation_parameters` does.
    #[schema(value_type = Object)]
    pub parameters: Map<String, Value>,
}

/// `POST /sdapi/v1/png-info`: reads and parses a PNG's A1111 infotext (ours or anyone's).
#[utoipa::path(post, path = "/sdapi/v1/png-info", tag = "a1111", request_body = PngInfoRequest, responses(
    (status = 200, body = PngInfoResponse), (status = 400, description = "Not base64", body = SdErrorBody),
    (status = 401, body = SdErrorBody), (status = 413, body = SdErrorBody), (status = 422, body = SdErrorBody)))]
pub async fn png_info(req: Request) -> Result<Json<PngInfoResponse>, HttpError> {
    let body: PngInfoRequest = parse_json(&read_body(req).await?)?;
    let data = body
        .image
        .rsplit_once(',')
        .map_or(body.image.as_str(), |(_, d)| d);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| {
            HttpError::from(
                sd_worker_sdk::ApiError::new(
                    ErrorCode::InvalidImage,
                    format!("`image` is not base64: {e}"),
                )
                .with_field("image"),
            )
        })?;
    let info = read_png_parameters(&bytes).unwrap_or_default();
    let mut items = Map::new();
    if !info.is_empty() {
        items.insert("parameters".into(), json!(info));
    }
    Ok(Json(PngInfoResponse {
        parameters: parse_infotext(&info),
        items,
        info,
    }))
}

/// A1111's infotext parsed as its `parse_generation_parameters`: the prompt
/// lines, `Negative prompt: ` lines, and the last line's `Key: value` pairs
/// (values may be quoted); `Size: WxH` also gives `Size-1` and `Size-2`.
/// Values stay strings, as A1111 leaves them.
pub fn parse_infotext(text: &str) -> Map<String, Value> {
    let mut out = Map::new();
    if text.is_empty() {
        return out;
    }
    let mut lines: Vec<&str> = text.trim().lines().collect();
    let last = lines.last().copied().unwrap_or_default();
    let pairs = key_values(last);
    if pairs.len() >= 3 {
        lines.pop();
    }
    let (mut prompt, mut negative, mut in_negative) = (String::new(), String::new(), false);
    for line in lines {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Negative prompt:") {
            in_negative = true;
            negative.push_str(rest.trim());
        } else if in_negative {
            negative.push('\n');
            negative.push_str(line);
        } else {
            if !prompt.is_empty() {
                prompt.push('\n');
            }
            prompt.push_str(line);
        }
    }
    out.insert("Prompt".into(), json!(prompt));
    out.insert("Negative prompt".into(), json!(negative));
    if pairs.len() >= 3 {
        for (k, v) in pairs {
            if k == "Size" {
                if let Some((w, h)) = v.split_once('x') {
                    out.insert("Size-1".into(), json!(w));
                    out.insert("Size-2".into(), json!(h));
                }
            }
            out.insert(k, json!(v));
        }
    }
    out
}

/// `Key: value, Key: "quoted, value"` pairs of an infotext line.
fn key_values(line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once(": ") else {
            break;
        };
        let key = key.trim().to_string();
        let after = after.trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let mut end = None;
            let mut escaped = false;
            for (i, c) in q.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => {
                        end = Some(i);
                        break;
                    }
                    _ => escaped = false,
                }
            }
            match end {
                Some(i) => (q[..i].replace("\\\"", "\""), &q[i + 1..]),
                None => (q.to_string(), ""),
            }
        } else {
            match after.split_once(',') {
                Some((v, n)) => (v.trim().to_string(), n),
                None => (after.trim().to_string(), ""),
            }
        };
        out.push((key, value));
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_infotext_parses_as_a1111_parses_it() {
        let p = parse_infotext(
            "a cat, blue\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, \
             Seed: 42, Size: 64x32, Model: tiny, Lora hashes: \"a: 1, b: 2\", RNG: CPU",
        );
        assert_eq!(p["Prompt"], json!("a cat, blue"));
        assert_eq!(p["Negative prompt"], json!("blurry"));
        assert_eq!(p["Sampler"], json!("DPM++ 2M Karras"));
        assert_eq!(p["Size-1"], json!("64"));
        assert_eq!(p["Size-2"], json!("32"));
        assert_eq!(p["Lora hashes"], json!("a: 1, b: 2"));
        assert_eq!(p["RNG"], json!("CPU"));
    }
}
