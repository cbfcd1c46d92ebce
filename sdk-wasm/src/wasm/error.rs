//! `SdError`: the one kind of error the client rejects with.
//!
//! A JS `Error` named `"SdError"` with `status` (the HTTP status, 0 when the
//! failure is not an HTTP answer), `code` (the worker's `ErrorCode`, or one of
//! the client's own: `network`, `aborted`, `cancelled`, `invalid_response`,
//! `invalid_request`), `message`, `field` and `retryAfterMs`.

use js_sys::{Error, Reflect, JSON};
use wasm_bindgen::prelude::*;

use super::js;
use crate::retry;

/// The client's own codes, next to the worker's `ErrorCode`s.
pub(crate) const NETWORK: &str = "network";
pub(crate) const ABORTED: &str = "aborted";
pub(crate) const CANCELLED: &str = "cancelled";
pub(crate) const INVALID_RESPONSE: &str = "invalid_response";
pub(crate) const INVALID_REQUEST: &str = "invalid_request";

#[wasm_bindgen(typescript_custom_section)]
const SD_ERROR_TS: &'static str = r#"
/** What every rejection of `SdClient` is: `error.name === "SdError"`. */
export interface SdError extends Error {
  name: "SdError";
  /** The HTTP status of the answer; 0 when the failure is not an answer (network, abort, a job's own failure). */
  status: number;
  /** The worker's error code, or the client's: "network", "aborted", "cancelled", "invalid_response", "invalid_request". */
  code: ErrorCode | "network" | "aborted" | "cancelled" | "invalid_response" | "invalid_request";
  /** The request field at fault, when the worker named one. */
  field?: string;
  /** How long the worker asked to wait (`Retry-After`), in milliseconds, on 429 and 503. */
  retryAfterMs?: number;
}
"#;

#[derive(Debug)]
pub(crate) struct SdError {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub field: Option<String>,
    pub retry_after_ms: Option<u64>,
}

impl SdError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            status: 0,
            code: code.to_owned(),
            message: message.into(),
            field: None,
            retry_after_ms: None,
        }
    }

    pub fn aborted() -> Self {
        Self::new(ABORTED, "stopped listening: the signal was aborted")
    }

    pub fn network(cause: &JsValue) -> Self {
        let detail = cause
            .dyn_ref::<Error>()
            .map(|e| String::from(e.message()))
            .or_else(|| cause.as_string())
            .unwrap_or_default();
        Self::new(
            NETWORK,
            format!(
                "network error: {detail} (is the worker running and reachable at this URL? \
                 A page on another origin needs the worker started with --cors-origin <that origin>)"
            ),
        )
    }

    /// From a failed answer: its status, its `{"error": {...}}` body (read
    /// leniently, so a code added to the worker later still comes through)
    /// and its `Retry-After` header.
    pub fn from_answer(status: u16, body: &str, retry_after: Option<&str>) -> Self {
        let error = JSON::parse(body)
            .ok()
            .map(|body| js::get(&body, "error"))
            .filter(JsValue::is_object);
        let code = error.as_ref().and_then(|e| js::get_string(e, "code"));
        let mut sd_error = match (error, code) {
            (Some(error), Some(code)) => Self {
                status,
                code,
                message: js::get_string(&error, "message").unwrap_or_default(),
                field: js::get_string(&error, "field"),
                retry_after_ms: None,
            },
            _ => Self {
                status,
                ..Self::new(
                    INVALID_RESPONSE,
                    format!("HTTP {status} without an error body"),
                )
            },
        };
        sd_error.retry_after_ms = retry_after.and_then(retry::parse_retry_after);
        sd_error
    }

    pub fn into_js(self) -> JsValue {
        let error = Error::new(&self.message);
        error.set_name("SdError");
        let set = |key: &str, value: JsValue| {
            let _ = Reflect::set(&error, &JsValue::from_str(key), &value);
        };
        set("status", JsValue::from(self.status));
        set("code", JsValue::from(self.code));
        set(
            "field",
            self.field.map_or(JsValue::UNDEFINED, JsValue::from),
        );
        set(
            "retryAfterMs",
            self.retry_after_ms
                .map_or(JsValue::UNDEFINED, |ms| JsValue::from(ms as f64)),
        );
        error.into()
    }
}

impl From<SdError> for JsValue {
    fn from(error: SdError) -> Self {
        error.into_js()
    }
}
