//! A1111's listings of extra networks, over the worker's catalogs:
//! `GET /sdapi/v1/loras` (as A1111's built-in Lora extension answers it) and
//! `GET /sdapi/v1/embeddings` (`{loaded, skipped}`), so A1111 clients can
//! list what `<lora:name:weight>` tags and embedding names may use.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::error::SdErrorBody;
use crate::http::catalog::{list_embeddings, list_loras};
use crate::http::error::HttpError;
use crate::http::AppState;

/// One LoRA as A1111 lists it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SdLora {
    /// What a `<lora:name:weight>` tag says.
    pub name: String,
    /// A1111's alias (its metadata title, else the name).
    pub alias: String,
    /// The file, relative to `--lora-dir`.
    pub path: String,
    /// What the file's metadata says (A1111 returns the whole header's
    /// metadata; here the fields `/v1/loras` reads, with `sshs_model_hash`).
    #[schema(value_type = Object)]
    pub metadata: Value,
}

/// `GET /sdapi/v1/loras`: the LoRAs of `--lora-dir` (`[]` without one).
#[utoipa::path(get, path = "/sdapi/v1/loras", tag = "a1111", responses(
    (status = 200, body = Vec<SdLora>), (status = 401, body = SdErrorBody), (status = 503, body = SdErrorBody)))]
pub async fn loras(State(state): State<AppState>) -> Result<Json<Vec<SdLora>>, HttpError> {
    let list = list_loras(&state).await?;
    Ok(Json(
        list.into_iter()
            .map(|l| {
                let mut metadata = serde_json::to_value(&l.metadata).unwrap_or(Value::Null);
                if let Value::Object(m) = &mut metadata {
                    m.retain(|_, v| !v.is_null());
                    m.insert("sshs_model_hash".into(), json!(l.hash));
                }
                SdLora {
                    alias: l.metadata.title.clone().unwrap_or_else(|| l.name.clone()),
                    path: format!("{}.safetensors", l.name),
                    name: l.name,
                    metadata,
                }
            })
            .collect(),
    ))
}

/// Width of one vector of an embedding of `family`, as A1111's `shape`
/// (SDXL pairs: CLIP-L's + OpenCLIP-G's).
fn width(family: &str) -> Value {
    match family {
        "stable-diffusion-1" => json!(768),
        "stable-diffusion-2" => json!(1024),
        "stable-diffusion-xl" => json!(768 + 1280),
        _ => Value::Null,
    }
}

/// `GET /sdapi/v1/embeddings`: `{"loaded": {name: {step, sd_checkpoint,
/// sd_checkpoint_name, shape, vectors}}, "skipped": {}}`. Embeddings of
/// another family than the model's are listed under `skipped`, as A1111 does.
#[utoipa::path(get, path = "/sdapi/v1/embeddings", tag = "a1111", responses(
    (status = 200, body = Object), (status = 401, body = SdErrorBody), (status = 503, body = SdErrorBody)))]
pub async fn embeddings(State(state): State<AppState>) -> Result<Json<Value>, HttpError> {
    let family = state.ready_profile()?.info.model.family.clone();
    let list = list_embeddings(&state).await?;
    let (mut loaded, mut skipped) = (Map::new(), Map::new());
    for e in list {
        let entry = json!({
            "step": null, "sd_checkpoint": null, "sd_checkpoint_name": null,
            "shape": width(&e.family), "vectors": e.vectors,
        });
        if e.family == family || e.family == "unknown" {
            loaded.insert(e.name, entry);
        } else {
            skipped.insert(e.name, entry);
        }
    }
    Ok(Json(json!({ "loaded": loaded, "skipped": skipped })))
}
