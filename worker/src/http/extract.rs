//! Extractors that refuse in the API's shape.
//!
//! axum's own `Path` and `Query` answer a value they cannot read with
//! `400 text/plain`. These wrappers read the same way and answer
//! `400 invalid_request` with the JSON error body instead, naming the path
//! parameter or query parameter at fault in `field`. Handlers use these, never
//! axum's, so every refusal of the API has one shape.

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use sd_worker_sdk::{ApiError, ErrorCode};
use serde::de::DeserializeOwned;

use super::error::HttpError;

/// The longest part of a client's value quoted back in an error message.
const QUOTE_CHARS: usize = 64;

/// Path parameters, as [`axum::extract::Path`] reads them. Deserialise into a
/// struct with named fields, so a refusal can name the parameter.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(path_rejection(rejection)),
        }
    }
}

fn path_rejection(rejection: PathRejection) -> HttpError {
    use axum::extract::path::ErrorKind;
    let PathRejection::FailedToDeserializePathParams(e) = rejection else {
        // No parameters where the route has some: a routing bug, not the client's.
        return HttpError::new(ErrorCode::Internal, rejection.body_text());
    };
    let (field, message) = match e.kind() {
        ErrorKind::ParseErrorAtKey {
            key,
            value,
            expected_type,
        } => (
            Some(key.as_str()),
            format!(
                "path parameter `{key}` must be {}, not `{}`",
                describe(expected_type),
                quote(value)
            ),
        ),
        ErrorKind::DeserializeError {
            key,
            value,
            message,
        } => (
            Some(key.as_str()),
            format!(
                "path parameter `{key}` cannot be `{}`: {message}",
                quote(value)
            ),
        ),
        ErrorKind::InvalidUtf8InPathParam { key } => (
            Some(key.as_str()),
            format!("path parameter `{key}` is not valid UTF-8 once percent-decoded"),
        ),
        ErrorKind::ParseError {
            value,
            expected_type,
        }
        | ErrorKind::ParseErrorAtIndex {
            value,
            expected_type,
            ..
        } => (
            None,
            format!(
                "a path parameter must be {}, not `{}`",
                describe(expected_type),
                quote(value)
            ),
        ),
        // The handler's type does not fit its route: a bug, not the client's.
        ErrorKind::WrongNumberOfParameters { .. } | ErrorKind::UnsupportedType { .. } => {
            return HttpError::new(ErrorCode::Internal, e.body_text())
        }
        _ => (None, e.body_text()),
    };
    let error = ApiError::new(ErrorCode::InvalidRequest, message);
    match field {
        Some(field) => error.with_field(field).into(),
        None => error.into(),
    }
}

/// Query parameters, read as [`axum::extract::Query`] reads them
/// (`application/x-www-form-urlencoded`), with the parameter at fault named.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(Self).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            let error = if field.is_empty() || field == "." {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("the query string cannot be read: {inner}"),
                )
            } else {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("query parameter `{field}`: {inner}"),
                )
                .with_field(field)
            };
            error.into()
        })
    }
}

/// A Rust type name as a client reads it.
fn describe(expected_type: &str) -> &str {
    match expected_type {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number from 0",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "bool" => "`true` or `false`",
        _ => "text",
    }
}

/// A client's value, cut to [`QUOTE_CHARS`] characters, control characters escaped.
pub fn quote(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(QUOTE_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if value.chars().count() > QUOTE_CHARS {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_short_and_escaped() {
        assert_eq!(quote("abc"), "abc");
        assert_eq!(quote("a\u{0}b\n"), "a\\0b\\n");
        let long = "x".repeat(100);
        assert_eq!(quote(&long), format!("{}…", "x".repeat(QUOTE_CHARS)));
    }
}
