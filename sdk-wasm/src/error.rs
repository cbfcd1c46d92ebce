//! The error body every failing request and failed job carries.

use serde::{Deserialize, Serialize};

/// `{"error": {...}}`, the body of every 4xx/5xx answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct ErrorBody {
    pub error: ApiError,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// The request field at fault, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Machine-readable error codes. Clients switch on these, not on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not JSON, or not a JSON object.
    InvalidJson,
    /// The request cannot be read as the API defines it: a field given under
    /// two of its names, a path or query parameter or a header that does not
    /// parse (`field` names it), a method a route does not take.
    InvalidRequest,
    /// A required field is missing.
    MissingField,
    /// A field has a value outside what the model or the worker accepts: out
    /// of range, of the wrong type, a fraction in an integer field, an unknown
    /// name.
    InvalidValue,
    /// An image field is not base64 of a PNG, JPEG or WebP image.
    InvalidImage,
    /// `model` names a model this worker has not loaded.
    ModelMismatch,
    Unauthorized,
    NotFound,
    /// The job's result was kept for its time to live and is gone.
    Expired,
    /// The job already ended: it cannot be cancelled.
    Conflict,
    PayloadTooLarge,
    /// The body is not sent as `application/json`.
    UnsupportedMediaType,
    /// The queue is full; retry after the `Retry-After` header.
    QueueFull,
    /// The model is still loading or the worker is stopping.
    Unavailable,
    /// Generation failed inside the worker.
    GenerationFailed,
    /// The job ran longer than the worker's `--job-timeout`.
    Timeout,
    /// The worker stopped before the job could run.
    ShuttingDown,
    Internal,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{} (field `{field}`)", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ApiError {}
