//! Serves the built studio (`app/dist`) next to the API, so one command and one
//! URL give both. Any GET that is not an API route falls back to the studio's
//! `index.html` (client-side routes), except paths that look like files, which
//! 404 instead of answering a missing script with HTML. The studio needs no
//! token to load: it holds no secret, and it asks for the token itself.
//!
//! Every refusal is the API's JSON error: a path that cannot name a file of the
//! studio (bad percent-encoding, a NUL or other control character, `.` or `..`
//! segments, a backslash, an over-long name) is a 404 without touching the
//! disk, and a file that cannot be read is a 404 too, never an empty 500.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use sd_worker_sdk::ErrorCode;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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

/// Path prefixes that belong to an API (ours, AUTOMATIC1111's, and the
/// `/api/...` other servers use), never to the studio: a client asking for a
/// route the worker lacks (`/sdapi/v1/loras`) gets the JSON 404, not the
/// studio's page.
const API_PREFIXES: &[&str] = &["/v1", "/sdapi", "/api"];

/// Whether `path` is `prefix` itself or below it.
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The router's fallback: API paths get the JSON 404, anything else the studio.
pub async fn serve(State(studio): State<Option<StudioDir>>, req: Request) -> Response {
    let path = req.uri().path();
    let is_read = req.method() == Method::GET || req.method() == Method::HEAD;
    let api_path = API_PREFIXES.iter().any(|p| under(path, p));
    let Some(studio) = studio.filter(|_| is_read && !api_path) else {
        return HttpError::new(ErrorCode::NotFound, "no such route").into_response();
    };
    let Some(decoded) = studio_path(path) else {
        return no_such_file();
    };
    let looks_like_file = decoded.rsplit('/').next().is_some_and(|s| s.contains('.'));
    let immutable = path.starts_with("/assets/");
    let res = if looks_like_file {
        ServeDir::new(studio.path()).try_call(req).await
    } else {
        ServeDir::new(studio.path())
            .fallback(ServeFile::new(studio.path().join("index.html")))
            .try_call(req)
            .await
    };
    let res = match res {
        Ok(res) => res,
        Err(e) => {
            // A name the file system refuses (too long, a loop, not a
            // directory...): for the client, there is no such file.
            tracing::debug!(error = %e, "studio file unreadable");
            return no_such_file();
        }
    };
    match res.status() {
        StatusCode::NOT_FOUND => return no_such_file(),
        // A redirect the file server could not build, or any other failure of its own.
        s if s.is_server_error() => return no_such_file(),
        s if s.is_client_error() => {
            // 412 (a failed precondition) or 416 (a range past the end): keep
            // the status and its headers, with the API's error body.
            let (mut parts, _) = res.into_parts();
            let body = HttpError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "the file cannot be sent as asked ({})",
                    s.canonical_reason().unwrap_or("refused")
                ),
            )
            .into_response();
            let (body_parts, body) = body.into_parts();
            parts.headers.remove(header::CONTENT_LENGTH);
            for (name, value) in &body_parts.headers {
                parts.headers.insert(name, value.clone());
            }
            return Response::from_parts(parts, body);
        }
        _ => {}
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

fn no_such_file() -> Response {
    HttpError::new(ErrorCode::NotFound, "no such file").into_response()
}

/// The longest path, and the longest segment (a file name on most file
/// systems), that can name a file of the studio, in bytes once decoded.
const MAX_PATH_BYTES: usize = 1024;
const MAX_SEGMENT_BYTES: usize = 255;

/// `path` percent-decoded, if it can name a file of the studio: UTF-8, no
/// control character (NUL included), no backslash, no `.` or `..` segment, no
/// over-long name. A `%` not followed by two hex digits stays as it is, as the
/// file server reads it.
fn studio_path(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', hi, lo]) => hex(*hi).zip(hex(*lo)),
            _ => None,
        };
        match escaped {
            Some((hi, lo)) => {
                out.push(u8::try_from(hi * 16 + lo).ok()?);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    let decoded = String::from_utf8(out).ok()?;
    let fine = decoded.len() <= MAX_PATH_BYTES
        && !decoded.chars().any(|c| c.is_control() || c == '\\')
        && decoded
            .split('/')
            .skip(1)
            .all(|seg| seg != "." && seg != ".." && seg.len() <= MAX_SEGMENT_BYTES);
    fine.then_some(decoded)
}

#[cfg(test)]
mod tests {
    use super::studio_path;

    #[test]
    fn paths_that_cannot_name_a_studio_file_are_refused() {
        assert_eq!(studio_path("/").as_deref(), Some("/"));
        assert_eq!(
            studio_path("/assets/app%2D1.js").as_deref(),
            Some("/assets/app-1.js")
        );
        assert_eq!(studio_path("/100%").as_deref(), Some("/100%"));
        assert_eq!(studio_path("/caf%C3%A9").as_deref(), Some("/caf\u{e9}"));
        let long = format!("/{}", "a".repeat(256));
        for bad in [
            "/%00",
            "/index.html%00.js",
            "/a%0Ab",
            "/%FF",
            "/%C3",
            "/..",
            "/assets/%2E%2E/index.html",
            "/assets/./app.js",
            "/a%5Cb",
            long.as_str(),
        ] {
            assert_eq!(studio_path(bad), None, "{bad}");
        }
    }
}
