//! The ControlNet extension's own routes (its `scripts/api.py`), which A1111
//! clients call to list models and modules and to preview a control map:
//! `GET /controlnet/version`, `/controlnet/model_list`,
//! `/controlnet/module_list` and `POST /controlnet/detect`. They sit beside
//! `/sdapi/v1/` with its HTTP Basic and its error shape.

use axum::extract::{Request, State};
use axum::Json;
use base64::Engine as _;
use sd_worker_sdk::{ApiError, ErrorCode, PreprocessParams, PreprocessorName};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::controlnet::{canny_thresholds, module_names, module_of, MODULES};
use super::error::SdErrorBody;
use super::numbers;
use super::request::{parse_fields, refuse};
use crate::http::error::HttpError;
use crate::http::extract::ApiQuery;
use crate::http::preprocess::{admit_preprocess, control_map_png};
use crate::http::AppState;

/// The extension's API version this worker answers as
/// (`external_code.get_api_version()`).
pub const API_VERSION: u32 = 3;

/// `GET /controlnet/version`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CnVersion {
    pub version: u32,
}

/// `GET /controlnet/version`: the extension's API version, 3.
#[utoipa::path(get, path = "/controlnet/version", tag = "a1111", responses(
    (status = 200, body = CnVersion), (status = 401, body = SdErrorBody)))]
pub async fn version() -> Json<CnVersion> {
    Json(CnVersion {
        version: API_VERSION,
    })
}

/// `GET /controlnet/model_list`'s query.
#[derive(Debug, Deserialize)]
pub struct ModelListQuery {
    /// The extension rescans its folder with it; the list here is always current.
    #[serde(default)]
    pub update: Option<bool>,
}

/// `GET /controlnet/model_list`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CnModelList {
    /// What a unit's `model` takes: `GET /v1/info`'s `controlnets` names
    /// (without A1111's ` [hash]`: the worker does not hash its weights).
    pub model_list: Vec<String>,
}

/// `GET /controlnet/model_list`: the ControlNets this worker offers for the
/// loaded model.
#[utoipa::path(get, path = "/controlnet/model_list", tag = "a1111", params(
    ("update" = Option<bool>, Query, description = "Accepted; the list is always current")),
    responses((status = 200, body = CnModelList), (status = 401, body = SdErrorBody),
        (status = 503, description = "Model loading or worker stopping", body = SdErrorBody)))]
pub async fn model_list(
    State(state): State<AppState>,
    ApiQuery(_query): ApiQuery<ModelListQuery>,
) -> Result<Json<CnModelList>, HttpError> {
    let profile = state.ready_profile()?;
    Ok(Json(CnModelList {
        model_list: profile
            .info
            .controlnets
            .iter()
            .map(|c| c.name.clone())
            .collect(),
    }))
}

/// `GET /controlnet/module_list`'s query.
#[derive(Debug, Deserialize)]
pub struct ModuleListQuery {
    /// true: the modules' labels ("invert (from white bg & black line)").
    #[serde(default)]
    pub alias_names: Option<bool>,
}

/// `GET /controlnet/module_list`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CnModuleList {
    /// The modules a unit's `module` takes here.
    pub module_list: Vec<String>,
    /// Per module: `{model_free, sliders: [{name, value, min, max, step}]}`,
    /// as the extension describes its sliders.
    #[schema(value_type = Object)]
    pub module_detail: Map<String, Value>,
}

/// The extension's sliders of our modules, as its `PreprocessorParameter.api_json`.
fn sliders(ours: PreprocessorName) -> Value {
    let slider = |name: &str, value: u32, min: u32, max: u32, step: u32| json!({"name": name, "value": value, "min": min, "max": max, "step": step});
    match ours {
        PreprocessorName::None => json!([slider("Resolution", 512, 64, 2048, 8)]),
        PreprocessorName::Canny => json!([
            slider("Resolution", 512, 64, 2048, 8),
            slider("Low Threshold", 100, 1, 255, 1),
            slider("High Threshold", 200, 1, 255, 1),
        ]),
        _ => json!([]),
    }
}

/// `GET /controlnet/module_list`: the extension's modules this worker runs
/// (`none`, `canny`, `invert`, and `depth_anything_v2` with a depth model).
#[utoipa::path(get, path = "/controlnet/module_list", tag = "a1111", params(
    ("alias_names" = Option<bool>, Query, description = "true: the modules' labels")),
    responses((status = 200, body = CnModuleList), (status = 401, body = SdErrorBody),
        (status = 503, description = "Model loading or worker stopping", body = SdErrorBody)))]
pub async fn module_list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ModuleListQuery>,
) -> Result<Json<CnModuleList>, HttpError> {
    let have = state.ready_profile()?.preprocessors.names();
    let labels = query.alias_names.unwrap_or(false);
    let module_detail = MODULES
        .iter()
        .filter(|m| have.contains(&m.2))
        .map(|(name, label, ours)| {
            let key = if labels { label } else { name };
            let detail = json!({"model_free": false, "sliders": sliders(*ours)});
            (key.to_string(), detail)
        })
        .collect();
    Ok(Json(CnModuleList {
        module_list: module_names(&have, labels)
            .into_iter()
            .map(str::to_string)
            .collect(),
        module_detail,
    }))
}

/// `POST /controlnet/detect`'s body, the extension's field names.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct DetectRequest {
    /// A module of `GET /controlnet/module_list` (name or label); `none` when absent.
    #[serde(default)]
    pub controlnet_module: Option<String>,
    /// base64 images (PNG, JPEG or WebP; a `data:` URL prefix is accepted).
    #[serde(default)]
    pub controlnet_input_images: Option<Vec<String>>,
    /// What `webuiapi` 0.9.17 sends for `controlnet_input_images` (used when that is absent or empty).
    #[serde(default)]
    pub controlnet_images: Option<Vec<String>>,
    /// Ignored: the map is computed at the image's own size.
    #[serde(default, deserialize_with = "numbers::opt_f64")]
    pub controlnet_processor_res: Option<f64>,
    /// `canny`: the low threshold, 1..=255 (another value, such as the default -1: 100).
    #[serde(default, deserialize_with = "numbers::opt_f64")]
    pub controlnet_threshold_a: Option<f64>,
    /// `canny`: the high threshold, 1..=255 (another value: 200).
    #[serde(default, deserialize_with = "numbers::opt_f64")]
    pub controlnet_threshold_b: Option<f64>,
    /// Ignored: no module here takes a mask.
    #[serde(default)]
    pub controlnet_masks: Option<Vec<String>>,
    /// Ignored.
    #[serde(default)]
    pub low_vram: Option<bool>,
}

/// `POST /controlnet/detect`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DetectResponse {
    /// One base64 RGB PNG per input image, of that image's size.
    pub images: Vec<String>,
    /// "Success".
    pub info: String,
}

/// `POST /controlnet/detect`: the control map of each image, as a unit with
/// that module computes it (`POST /v1/preprocess`'s work).
#[utoipa::path(post, path = "/controlnet/detect", tag = "a1111", request_body = DetectRequest, responses(
    (status = 200, body = DetectResponse),
    (status = 400, description = "Not a JSON object, or an image that cannot be decoded", body = SdErrorBody),
    (status = 401, body = SdErrorBody),
    (status = 413, description = "Body or input image too large", body = SdErrorBody),
    (status = 415, description = "Not `Content-Type: application/json`", body = SdErrorBody),
    (status = 422, description = "A field of the wrong type, no image, too many images, or a module this worker lacks", body = SdErrorBody),
    (status = 429, description = "Every input-image decoding slot taken; see Retry-After", body = SdErrorBody),
    (status = 503, description = "Model loading or worker stopping", body = SdErrorBody)))]
pub async fn detect(
    State(state): State<AppState>,
    req: Request,
) -> Result<Json<DetectResponse>, HttpError> {
    let (slot, body) = admit_preprocess(&state, req).await?;
    let st = state.clone();
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let profile = st.ready_profile()?;
        let (r, _): (DetectRequest, _) = parse_fields(&body)?;
        let have = profile.preprocessors.names();
        let module = r.controlnet_module.as_deref();
        let (ours, _) = module_of(module, &have).ok_or_else(|| {
            refuse(
                "controlnet_module",
                format!(
                    "module `{}` is not available here; one of: {}",
                    module.unwrap_or_default(),
                    module_names(&have, false).join(", ")
                ),
            )
        })?;
        let (field, images) = match (r.controlnet_input_images, r.controlnet_images) {
            (Some(v), _) if !v.is_empty() => ("controlnet_input_images", v),
            (_, Some(v)) if !v.is_empty() => ("controlnet_images", v),
            _ => {
                return Err(HttpError::from(
                    ApiError::new(
                        ErrorCode::MissingField,
                        "No image selected: `controlnet_input_images` needs at least one image",
                    )
                    .with_field("controlnet_input_images"),
                ))
            }
        };
        let max = profile.info.limits.max_images as usize;
        if images.len() > max {
            return Err(refuse(
                field,
                format!("at most {max} images per call (`max_images`)"),
            ));
        }
        let mut params = PreprocessParams {
            preprocessor: Some(ours),
            ..Default::default()
        };
        if ours == PreprocessorName::Canny {
            let (low, high, _) =
                canny_thresholds(r.controlnet_threshold_a, r.controlnet_threshold_b, "");
            params.low_threshold = Some(low);
            params.high_threshold = Some(high);
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let images = images
            .iter()
            .enumerate()
            .map(|(i, image)| {
                control_map_png(profile, &format!("{field}[{i}]"), image, &params, "")
                    .map(|png| b64.encode(png))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Json(DetectResponse {
            images,
            info: "Success".into(),
        }))
    })
    .await
    .map_err(|e| HttpError::new(ErrorCode::Internal, format!("detect failed: {e}")))?
}
