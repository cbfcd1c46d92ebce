//! Bearer-token authentication. With `--api-token` set, every route but
//! `/health` and `/ready` requires `Authorization: Bearer <token>`, compared in
//! constant time so response timing reveals nothing about the token.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
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
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let ok = presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(token.0.as_bytes())));
    if ok {
        return next.run(req).await;
    }
    let message = if presented.is_some() {
        "the bearer token is not valid"
    } else {
        "this worker requires `Authorization: Bearer <token>`"
    };
    let mut res = HttpError::new(ErrorCode::Unauthorized, message).into_response();
    res.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    res
}
