//! Errors in OpenAI's shape on the OpenAI routes: `{"error": {"message",
//! "type", "param", "code"}}`. Handlers (and the middleware before them: the
//! bearer token, the body limit) answer our [`sdk::ErrorBody`]; one middleware
//! rewrites it for these paths, so every refusal there has one shape.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use sd_worker_sdk as sdk;
use serde::{Deserialize, Serialize};

/// The paths whose errors are OpenAI-shaped.
pub const PREFIX: &str = "/v1/images/";

/// An error body as OpenAI's API sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OpenAiErrorBody {
    pub error: OpenAiError,
}

/// One error: `code` is our machine-readable [`sdk::ErrorCode`], `param` the
/// OpenAI request field at fault (ours mapped back: `width`/`height` are
/// `size`, `num_images` is `n`), `type` `invalid_request_error` for a 4xx and
/// `server_error` for a 5xx.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OpenAiError {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

/// Our request field names as the OpenAI request calls them.
pub fn param_of(field: &str) -> String {
    let head = field.split(['.', '[']).next().unwrap_or(field);
    match head {
        "width" | "height" => "size".into(),
        "num_images" => "n".into(),
        _ => head.into(),
    }
}

/// Our error as OpenAI's, with the status OpenAI would use: a value a field
/// cannot take is a 400 there (422 here); other statuses stay.
pub fn to_openai(status: StatusCode, body: sdk::ErrorBody) -> (StatusCode, OpenAiErrorBody) {
    let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    let kind = if status.is_server_error() {
        "server_error"
    } else {
        "invalid_request_error"
    };
    let code = serde_json::to_value(body.error.code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string));
    (
        status,
        OpenAiErrorBody {
            error: OpenAiError {
                message: body.error.message,
                kind: kind.into(),
                param: body.error.field.as_deref().map(param_of),
                code,
            },
        },
    )
}

/// Middleware: on [`PREFIX`] paths, an error response in our shape is
/// rewritten in OpenAI's; its headers (`Retry-After`, `WWW-Authenticate`) stay.
pub async fn reshape(req: Request, next: Next) -> Response {
    let ours = req.uri().path().starts_with(PREFIX);
    let res = next.run(req).await;
    if !ours {
        return res;
    }
    crate::http::adapter::rewrite_error(res, to_openai).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_field_names_become_openai_params_and_422_becomes_400() {
        let body = sdk::ErrorBody {
            error: sdk::ApiError::new(sdk::ErrorCode::InvalidValue, "too wide").with_field("width"),
        };
        let (status, theirs) = to_openai(StatusCode::UNPROCESSABLE_ENTITY, body);
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(theirs.error.param.as_deref(), Some("size"));
        assert_eq!(theirs.error.code.as_deref(), Some("invalid_value"));
        assert_eq!(theirs.error.kind, "invalid_request_error");
        assert_eq!(param_of("num_images"), "n");
        assert_eq!(param_of("prompt"), "prompt");
    }
}
