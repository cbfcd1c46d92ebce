//! `GET /v1/loras` and `GET /v1/embeddings`: the files of `--lora-dir` and
//! `--embeddings-dir` as they are now (each listing walks the folder again,
//! so new files appear without a restart). The first listing of a new file
//! hashes it (reads it once), off the async runtime.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use sd_worker_sdk::{self as sdk, EmbeddingInfo, ErrorCode, LoraInfo, UpscalerInfo};

use super::error::HttpError;
use super::AppState;
use crate::catalog::{CatalogKind, Folder};

/// The LoRAs requests may name, sorted by name; `[]` without `--lora-dir`.
#[utoipa::path(get, path = "/v1/loras", tag = "worker", responses(
    (status = 200, description = "The usable LoRAs (pickles and unreadable files are left out, each said once in the log)", body = Vec<sdk::LoraInfo>),
    (status = 503, description = "Model loading or worker stopping", body = sdk::ErrorBody)))]
pub async fn loras(State(state): State<AppState>) -> Result<Json<Vec<LoraInfo>>, HttpError> {
    Ok(Json(list_loras(&state).await?))
}

/// The LoRAs as `GET /v1/loras` lists them (for the A1111 adapter too).
pub(crate) async fn list_loras(state: &AppState) -> Result<Vec<LoraInfo>, HttpError> {
    list(state.ready_profile()?.catalogs.loras.clone(), "LoRAs").await
}

/// The upscalers `image_upscale` and `hires.upscaler` may name: the
/// built-ins (`lanczos`, `nearest`), then `--upscaler-dir`'s models by name
/// (files that are not upscalers are left out, said in the log).
#[utoipa::path(get, path = "/v1/upscalers", tag = "worker", responses(
    (status = 200, description = "The usable upscalers", body = Vec<sdk::UpscalerInfo>),
    (status = 503, description = "Model loading or worker stopping", body = sdk::ErrorBody)))]
pub async fn upscalers(
    State(state): State<AppState>,
) -> Result<Json<Vec<UpscalerInfo>>, HttpError> {
    Ok(Json(list_upscalers(&state).await?))
}

/// The upscalers as `GET /v1/upscalers` lists them (for the A1111 adapter too),
/// off the async runtime: a new file is read once to detect it.
pub(crate) async fn list_upscalers(state: &AppState) -> Result<Vec<UpscalerInfo>, HttpError> {
    let registry = state.ready_profile()?.upscalers.clone();
    tokio::task::spawn_blocking(move || registry.list())
        .await
        .map_err(|e| {
            HttpError::new(
                ErrorCode::Internal,
                format!("listing the upscalers failed: {e}"),
            )
        })
}

/// The textual-inversion embeddings prompts may use, sorted by name; `[]`
/// without `--embeddings-dir`.
#[utoipa::path(get, path = "/v1/embeddings", tag = "worker", responses(
    (status = 200, description = "The usable embeddings (pickles and unreadable files are left out, each said once in the log)", body = Vec<sdk::EmbeddingInfo>),
    (status = 503, description = "Model loading or worker stopping", body = sdk::ErrorBody)))]
pub async fn embeddings(
    State(state): State<AppState>,
) -> Result<Json<Vec<EmbeddingInfo>>, HttpError> {
    Ok(Json(list_embeddings(&state).await?))
}

/// The embeddings as `GET /v1/embeddings` lists them (for the A1111 adapter too).
pub(crate) async fn list_embeddings(state: &AppState) -> Result<Vec<EmbeddingInfo>, HttpError> {
    list(
        state.ready_profile()?.catalogs.embeddings.clone(),
        "embeddings",
    )
    .await
}

/// A catalog's usable files as the worker lists them (`[]` without the
/// folder), off the async runtime: a new file is hashed on its first listing.
async fn list<T: CatalogKind>(
    folder: Option<Arc<Folder<T>>>,
    what: &'static str,
) -> Result<Vec<T::Info>, HttpError> {
    let Some(folder) = folder else {
        return Ok(Vec::new());
    };
    tokio::task::spawn_blocking(move || {
        folder
            .list()
            .into_iter()
            .filter_map(|f| {
                let hash = f.hash.clone().unwrap_or_default();
                f.read.ok().map(|r| r.listed(&f.name, f.stamp.size, &hash))
            })
            .collect()
    })
    .await
    .map_err(|e| {
        HttpError::new(
            ErrorCode::Internal,
            format!("listing the {what} failed: {e}"),
        )
    })
}
