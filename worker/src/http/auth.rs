//! Bearer-token authentication. With `--api-token` set, every route but
//! `/health` and `/ready` requires `Authorization: Bearer <token>`, compared in
//! constant time so response timing reveals nothing about the token. On
//! AUTOMATIC1111's routes (`/sdapi/`, and its ControlNet extension's
//! `/controlnet/`), whose clients know only A1111's
//! `--api-auth user:pass`, HTTP Basic with any user name and the token as the
//! password is accepted too.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sd_worker_sdk::ErrorCode;
use std::sync::Arc;
use subtle::ConstantTimeEq;

use super::error::HttpError;

/// Routes a load balancer or the hive probes without credentials.
const OPEN_PATHS: &[&str] = &["/health", "/ready"];

#[derive(Clone)]
pub struct Token(pub Arc<String>);

pub async fn require_token(State(token): State<Token>, req: Request, next: Next) -> Response {
    if OPEN_PATHS.contains(&req.uri().path()) || req.method() == axum::http::Method::OPTIONS {
        return next.run(req).await;
    }
    let a1111 = super::a1111::error::is_a1111(req.uri().path());
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let basic = header
        .filter(|_| a1111)
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .and_then(basic_password);
    let presented = header
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|p| p.trim().to_string())
        .or(basic);
    let presented = presented.as_deref();
    let ok = presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(token.0.as_bytes())));
    if ok {
        return next.run(req).await;
    }
    let message = match (presented.is_some(), a1111) {
        (true, false) => "the bearer token is not valid",
        (true, true) => "the token is not valid",
        (false, false) => "this worker requires `Authorization: Bearer <token>`",
        (false, true) => {
            "this worker requires HTTP Basic (any user, the API token as password) or `Authorization: Bearer <token>`"
        }
    };
    let mut res = HttpError::new(ErrorCode::Unauthorized, message).into_response();
    let challenge = if a1111 {
        "Basic realm=\"sd-worker\", Bearer"
    } else {
        "Bearer"
    };
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    res
}

/// The password of an HTTP Basic credential (`base64(user:password)`).
fn basic_password(encoded: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.split_once(':').map(|(_, p)| p.to_string())
}
