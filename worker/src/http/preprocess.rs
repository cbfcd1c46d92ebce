//! `POST /v1/preprocess`: the control map a ControlNet unit with the same
//! fields would compute, as a PNG, so a client can show it before
//! generating. Decoding and the preprocessor run off the async runtime under
//! a decoding slot (`--max-concurrent-decodes`), as input images of jobs do.

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use sd_worker_sdk::{self as sdk, ErrorCode, PreprocessParams, PreprocessRequest};
use tokio::sync::OwnedSemaphorePermit;

use super::error::HttpError;
use super::jobs::{decode_slot, discard, read_body, require_json};
use super::AppState;
use crate::images;
use crate::pipeline::encode::encode_png;
use crate::preprocess::control_rgb;
use crate::profile::Profile;
use crate::validation::read_object;

/// The control map of an image, as a PNG of the image's size.
#[utoipa::path(post, path = "/v1/preprocess", tag = "jobs", request_body = sdk::PreprocessRequest, responses(
    (status = 200, description = "The control map (RGB PNG, the input's size)", content_type = "image/png"),
    (status = 400, description = "Not a JSON object, or an undecodable image", body = sdk::ErrorBody),
    (status = 401, description = "Missing or wrong bearer token", body = sdk::ErrorBody),
    (status = 413, description = "Body or input image too large", body = sdk::ErrorBody),
    (status = 415, description = "Not `application/json`", body = sdk::ErrorBody),
    (status = 422, description = "A missing field, a preprocessor this worker lacks, or a parameter out of range or of another preprocessor", body = sdk::ErrorBody),
    (status = 429, description = "Every input-image decoding slot taken; see Retry-After", body = sdk::ErrorBody),
    (status = 503, description = "Model loading or worker stopping", body = sdk::ErrorBody)))]
pub async fn preprocess(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, HttpError> {
    let (slot, body) = admit_preprocess(&state, req).await?;
    let st = state.clone();
    let png = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, HttpError> {
        let _slot = slot;
        let profile = st.ready_profile()?;
        let r: PreprocessRequest = read_object(&body)?;
        control_map_png(profile, "image", &r.image, &r.preprocess(), "")
    })
    .await
    .map_err(|e| HttpError::new(ErrorCode::Internal, format!("preprocessing failed: {e}")))??;
    Ok(([(header::CONTENT_TYPE, "image/png")], png).into_response())
}

/// Admits a preprocessing request: a JSON body (`415` otherwise), a loaded
/// model (`503`) and a free decoding slot (`429`); then reads the body
/// (`413` past the limit). The slot is to be held while decoding and
/// running the preprocessor. Shared by `POST /v1/preprocess` and A1111's
/// `POST /controlnet/detect`.
pub(crate) async fn admit_preprocess(
    state: &AppState,
    req: Request,
) -> Result<(OwnedSemaphorePermit, Bytes), HttpError> {
    let (parts, body) = req.into_parts();
    let admitted = require_json(&parts.headers)
        .and_then(|()| state.ready_profile().map(drop))
        .and_then(|()| decode_slot(state));
    let slot = match admitted {
        Ok(slot) => slot,
        Err(e) => {
            discard(body, state.max_body_bytes).await;
            return Err(e);
        }
    };
    let body = read_body(Request::from_parts(parts, body)).await?;
    Ok((slot, body))
}

/// The control map of the base64 image `b64` (the request field `field`) by
/// `params`, as an RGB PNG of the image's own size, without a `parameters`
/// chunk. Blocking: run it off the async runtime, under a decoding slot.
///
/// # Errors
/// `422` for a preprocessor this worker lacks or a parameter it refuses
/// (the field named with `at` before it: `controlnets[0].`), `400`/`413`
/// for an image that cannot be decoded or is too large (naming `field`),
/// `500` when the preprocessor itself fails (a depth model that cannot load).
pub(crate) fn control_map_png(
    profile: &Profile,
    field: &str,
    b64: &str,
    params: &PreprocessParams,
    at: &str,
) -> Result<Vec<u8>, HttpError> {
    profile.preprocessors.validate(params, at)?;
    let image = images::decode(field, b64, profile.info.limits.max_input_pixels)?;
    let map = profile
        .preprocessors
        .run(&control_rgb(&image), params)
        .map_err(|e| HttpError::new(ErrorCode::Internal, format!("{e:#}")))?;
    let (w, h) = map.dimensions();
    encode_png(map.as_raw(), w, h, None)
        .map_err(|e| HttpError::new(ErrorCode::Internal, format!("encoding the map: {e:#}")))
}
