//! Serves the built studio (`app/dist`) next to the API, so one command and one
//! URL give both. Any GET that is not an API route falls back to the studio's
//! `index.html` (client-side routes), except paths that look like files, which
//! 404 instead of answering a missing script with HTML. The studio needs no
//! token to load: it holds no secret, and it asks for the token itself.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use sd_worker_sdk::ErrorCode;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

use super::error::HttpError;

/// The studio's files, checked at start-up to hold an `index.html`.
#[derive(Clone, Debug)]
pub struct StudioDir(Arc<PathBuf>);

impl StudioDir {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let index = dir.join("index.html");
        anyhow::ensure!(
            index.is_file(),
            "the studio folder {} has no index.html; build the studio with `pnpm --filter @sd-worker/studio build` \
             (scripts/run.sh does it), or start with --no-studio",
            dir.display()
        );
        Ok(Self(Arc::new(dir.to_path_buf())))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `app/dist` of the source tree this binary was built from, when it is built.
    pub fn from_source_tree() -> Option<Self> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../app/dist");
        let dir = dir.canonicalize().ok()?;
        Self::open(&dir).ok()
    }
}

/// The router's fallback: API paths get the JSON 404, anything else the studio.
pub async fn serve(State(studio): State<Option<StudioDir>>, req: Request) -> Response {
    let path = req.uri().path();
    let is_read = req.method() == Method::GET || req.method() == Method::HEAD;
    let api_path = path == "/v1" || path.starts_with("/v1/");
    let Some(studio) = studio.filter(|_| is_read && !api_path) else {
        return HttpError::new(ErrorCode::NotFound, "no such route").into_response();
    };
    let looks_like_file = path.rsplit('/').next().is_some_and(|s| s.contains('.'));
    let immutable = path.starts_with("/assets/");
    let files = ServeDir::new(studio.path());
    let res = if looks_like_file {
        files.oneshot(req).await
    } else {
        files
            .fallback(ServeFile::new(studio.path().join("index.html")))
            .oneshot(req)
            .await
    };
    let Ok(res) = res;
    if res.status() == StatusCode::NOT_FOUND {
        return HttpError::new(ErrorCode::NotFound, "no such file").into_response();
    }
    let mut res = res.into_response();
    // Vite names every asset by its content hash: cache those forever, and
    // revalidate the rest (index.html names the current assets).
    let cache = if immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let headers = res.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}
