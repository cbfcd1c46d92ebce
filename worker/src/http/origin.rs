//! Cross-site form posts. A browser sends a `multipart/form-data`,
//! `application/x-www-form-urlencoded` or `text/plain` POST to any origin
//! without a CORS preflight, so a page on another site could submit work to a
//! worker on `localhost` that runs without a token. The routes that take such
//! bodies (today `POST /v1/images/edits`; `POST /v1/jobs` takes JSON only and
//! is covered by the preflight) refuse a request whose `Origin` is neither the
//! worker's own (same scheme-less host and port as `Host`) nor in the
//! `--cors-origin` allow-list. Clients that are not browsers send no `Origin`
//! and are not affected.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sd_worker_sdk::ErrorCode;
use std::sync::Arc;

use super::error::HttpError;

/// The `--cors-origin` allow-list (`*` allows every origin).
#[derive(Clone, Debug)]
pub struct AllowedOrigins(pub Arc<Vec<String>>);

impl AllowedOrigins {
    /// Whether a browser request from `origin` to the worker reached as
    /// `host` (the `Host` header) may submit a form.
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        let same_origin = origin
            .split_once("://")
            .is_some_and(|(_, authority)| Some(authority) == host);
        same_origin
            || self
                .0
                .iter()
                .any(|o| o == "*" || o.trim_end_matches('/') == origin)
    }
}

/// Middleware: 401 `unauthorized` for a cross-site browser request (see the
/// module docs); everything else passes.
pub async fn refuse_cross_site(
    State(allowed): State<AllowedOrigins>,
    req: Request,
    next: Next,
) -> Response {
    let headers = req.headers();
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match origin {
        Some(origin) if !allowed.allows(origin, host) => HttpError::new(
            ErrorCode::Unauthorized,
            format!(
                "a browser page from `{origin}` may not submit forms to this worker; \
                 allow its origin with --cors-origin"
            ),
        )
        .into_response(),
        _ => next.run(req).await,
    }
}

/// Logs (at debug level, with the origin) every browser request from an
/// origin that is neither the worker's own nor in `--cors-origin`: its page
/// cannot read the answer (a preflight gets no CORS headers), and without
/// this the worker would say nothing while the page sees "Failed to fetch".
pub async fn log_foreign_origin(
    State(allowed): State<AllowedOrigins>,
    req: Request,
    next: Next,
) -> Response {
    let headers = req.headers();
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let Some(origin) = origin.filter(|o| !allowed.allows(o, host)) {
        let preflight = req.method() == axum::http::Method::OPTIONS;
        tracing::debug!(
            origin,
            method = %req.method(),
            path = %req.uri().path(),
            preflight,
            "a browser page from an origin this worker does not allow (add it with --cors-origin)"
        );
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_and_listed_origins_pass_others_do_not() {
        let none = AllowedOrigins(Arc::new(vec![]));
        assert!(none.allows("http://127.0.0.1:8600", Some("127.0.0.1:8600")));
        assert!(!none.allows("http://evil.example", Some("127.0.0.1:8600")));
        assert!(!none.allows("null", Some("127.0.0.1:8600")));
        assert!(!none.allows("http://127.0.0.1:8601", Some("127.0.0.1:8600")));
        let listed = AllowedOrigins(Arc::new(vec!["https://app.example/".into()]));
        assert!(listed.allows("https://app.example", Some("worker:8600")));
        assert!(!listed.allows("https://other.example", Some("worker:8600")));
        let any = AllowedOrigins(Arc::new(vec!["*".into()]));
        assert!(any.allows("http://evil.example", None));
    }
}
