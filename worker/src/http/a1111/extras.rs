//! A1111's upscaling routes over `image_upscale` and the upscaler registry:
//! `GET /sdapi/v1/upscalers`, `GET /sdapi/v1/latent-upscale-modes` (what
//! `hr_upscaler` may name) and `POST /sdapi/v1/extra-single-image` (the
//! Extras tab's upscale: by a factor, or to a size).

use axum::extract::{Request, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::SdErrorBody;
use super::numbers;
use super::request::{parse_fields, refuse};
use crate::http::adapter::wait_for_images;
use crate::http::catalog::list_upscalers;
use crate::http::error::HttpError;
use crate::http::jobs::{
    admit, count_rejection, discard, read_body, require_json, validate_and_submit,
};
use crate::http::AppState;

/// One upscaler as A1111 lists it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SdUpscaler {
    /// What `upscaler_1` and `hr_upscaler` name.
    pub name: String,
    pub model_name: Option<String>,
    pub model_path: Option<String>,
    pub model_url: Option<String>,
    /// The model's factor (4 for the resamplers, as A1111 says).
    pub scale: f64,
}

/// `GET /sdapi/v1/upscalers`: `None` (A1111's plain Lanczos resize), the
/// built-in resamplers, then `--upscaler-dir`'s models.
#[utoipa::path(get, path = "/sdapi/v1/upscalers", tag = "a1111", responses(
    (status = 200, body = Vec<SdUpscaler>), (status = 401, body = SdErrorBody), (status = 503, body = SdErrorBody)))]
pub async fn upscalers(State(state): State<AppState>) -> Result<Json<Vec<SdUpscaler>>, HttpError> {
    let mut out = vec![SdUpscaler {
        name: "None".into(),
        model_name: None,
        model_path: None,
        model_url: None,
        scale: 4.0,
    }];
    for u in list_upscalers(&state).await? {
        let model = u.kind == "model";
        let mut name = u.name.clone();
        if !model {
            // A1111 capitalises its resamplers ("Lanczos", "Nearest").
            name[..1].make_ascii_uppercase();
        }
        out.push(SdUpscaler {
            model_name: model.then(|| u.name.clone()),
            model_path: model.then(|| u.name.clone()),
            model_url: None,
            scale: u.scale.map_or(4.0, f64::from),
            name,
        });
    }
    Ok(Json(out))
}

/// One latent upscale mode as A1111 lists it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SdLatentMode {
    pub name: String,
}

/// `GET /sdapi/v1/latent-upscale-modes`: the latent `hr_upscaler`s.
#[utoipa::path(get, path = "/sdapi/v1/latent-upscale-modes", tag = "a1111", responses(
    (status = 200, body = Vec<SdLatentMode>), (status = 401, body = SdErrorBody)))]
pub async fn latent_upscale_modes() -> Json<Vec<SdLatentMode>> {
    Json(
        sd_worker_sdk::hires::LATENT_UPSCALERS
            .iter()
            .map(|l| SdLatentMode {
                name: l.a1111.into(),
            })
            .collect(),
    )
}

/// The fields of A1111's `ExtrasSingleImageRequest` this worker reads; face
/// restoration and the second upscaler are refused when asked for.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct ExtrasRequest {
    /// Base64 image.
    #[serde(default)]
    pub image: Option<String>,
    /// 0: by `upscaling_resize`; 1: to `upscaling_resize_w` x `_h`.
    #[serde(default, deserialize_with = "numbers::opt_u32")]
    pub resize_mode: Option<u32>,
    #[serde(default, deserialize_with = "numbers::opt_f64")]
    pub upscaling_resize: Option<f64>,
    #[serde(default, deserialize_with = "numbers::opt_u32")]
    pub upscaling_resize_w: Option<u32>,
    #[serde(default, deserialize_with = "numbers::opt_u32")]
    pub upscaling_resize_h: Option<u32>,
    /// A name of `GET /sdapi/v1/upscalers` ("None": Lanczos).
    #[serde(default)]
    pub upscaler_1: Option<String>,
    #[serde(default)]
    pub upscaler_2: Option<String>,
    #[serde(default, deserialize_with = "numbers::opt_f64")]
    pub extras_upscaler_2_visibility: Option<f64>,
    #[serde(default, deserialize_with = "numbers::opt_f64")]
    pub gfpgan_visibility: Option<f64>,
    #[serde(default, deserialize_with = "numbers::opt_f64")]
    pub codeformer_visibility: Option<f64>,
}

/// A1111's answer: the image and its parameters as HTML.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExtrasResponse {
    pub html_info: String,
    pub image: String,
}

impl ExtrasRequest {
    /// Our `image_upscale` body. Errors: a 422 naming the A1111 field.
    fn to_job_body(&self) -> Result<Value, HttpError> {
        for (field, v) in [
            ("gfpgan_visibility", self.gfpgan_visibility),
            ("codeformer_visibility", self.codeformer_visibility),
            (
                "extras_upscaler_2_visibility",
                self.extras_upscaler_2_visibility,
            ),
        ] {
            if v.is_some_and(|v| v > 0.0) {
                return Err(refuse(field, format!("`{field}` is not supported by this worker (no face restoration, one upscaler)")));
            }
        }
        let image = self
            .image
            .as_ref()
            .ok_or_else(|| refuse("image", "`image` is required"))?;
        let upscaler = match self.upscaler_1.as_deref().map(str::trim) {
            None | Some("") | Some("None") => "lanczos".to_string(),
            Some(name) => name.to_string(),
        };
        let mut body = json!({"operation": "image_upscale", "image": image, "upscaler": upscaler});
        match self.resize_mode.unwrap_or(0) {
            0 => body["scale"] = json!(self.upscaling_resize.unwrap_or(2.0)),
            1 => {
                // To a size: the factor of the width (A1111 then crops to the height).
                let w = self.upscaling_resize_w.ok_or_else(|| {
                    refuse(
                        "upscaling_resize_w",
                        "resize_mode 1 needs `upscaling_resize_w`",
                    )
                })?;
                body["__target_width"] = json!(w);
            }
            m => {
                return Err(refuse(
                    "resize_mode",
                    format!("`resize_mode` must be 0 or 1, not {m}"),
                ))
            }
        }
        Ok(body)
    }
}

/// A refusal of `image_upscale`'s validation under the Extras request's names.
fn extras_field(mut e: HttpError) -> HttpError {
    if let Some(f) = e.error.field.take() {
        e.error.field = Some(
            match f.as_str() {
                "upscaler" => "upscaler_1",
                "scale" => "upscaling_resize",
                other => other,
            }
            .to_string(),
        );
    }
    e
}

/// `POST /sdapi/v1/extra-single-image`: `image` upscaled by `upscaler_1`, as
/// an `image_upscale` job (queued, cancellable like any other).
#[utoipa::path(post, path = "/sdapi/v1/extra-single-image", tag = "a1111", request_body = ExtrasRequest, responses(
    (status = 200, body = ExtrasResponse),
    (status = 400, description = "Not a JSON object, or an image that cannot be decoded", body = SdErrorBody),
    (status = 401, body = SdErrorBody),
    (status = 409, description = "The job was cancelled", body = SdErrorBody),
    (status = 413, description = "Body or input image too large", body = SdErrorBody),
    (status = 415, description = "Not `Content-Type: application/json`", body = SdErrorBody),
    (status = 422, description = "An unknown upscaler, a factor out of range, or face restoration asked for", body = SdErrorBody),
    (status = 429, description = "Queue full or every decoding slot taken; see Retry-After", body = SdErrorBody),
    (status = 503, description = "Model loading or worker stopping", body = SdErrorBody)))]
pub async fn extra_single_image(
    State(state): State<AppState>,
    req: Request,
) -> Result<Json<ExtrasResponse>, HttpError> {
    let submitted = async {
        let (parts, body) = req.into_parts();
        if let Err(e) = require_json(&parts.headers).and_then(|()| admit(&state)) {
            discard(body, state.max_body_bytes).await;
            return Err(e);
        }
        let bytes = read_body(Request::from_parts(parts, body)).await?;
        let (extras, _): (ExtrasRequest, _) = parse_fields(&bytes)?;
        let mut job_body = extras.to_job_body()?;
        let (job, _) = validate_and_submit(&state, true, move |_| {
            if let Some(w) = job_body
                .as_object_mut()
                .and_then(|m| m.remove("__target_width"))
            {
                // The factor that makes the width: the image is decoded here.
                let b64 = job_body["image"].as_str().unwrap_or_default();
                let iw = crate::images::decode("image", b64, u64::MAX)?
                    .width()
                    .max(1);
                job_body["scale"] = json!(w.as_f64().unwrap_or(0.0) / f64::from(iw));
            }
            Ok(serde_json::to_vec(&job_body).unwrap_or_default().into())
        })
        .await
        .map_err(extras_field)?;
        Ok(job)
    }
    .await;
    let job = match submitted {
        Ok(job) => job,
        Err(e) => {
            count_rejection(&state, &e);
            return Err(e);
        }
    };
    let images = wait_for_images(&state, job).await?;
    let first = images.into_iter().next().ok_or_else(|| {
        HttpError::new(
            sd_worker_sdk::ErrorCode::Internal,
            "the upscale made no image",
        )
    })?;
    let info = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(&first.image)
            .ok()
            .and_then(|b| crate::pipeline::encode::read_png_text(&b, "postprocessing"))
            .unwrap_or_default()
    };
    Ok(Json(ExtrasResponse {
        html_info: format!("<p>{info}</p>"),
        image: first.image,
    }))
}
