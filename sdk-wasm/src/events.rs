//! Events of a job's stream (`GET /v1/jobs/{id}/stream`), one JSON object per
//! SSE `data:` line, tagged by `type`.

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::request::ImageFormat;

/// Sent as the last `data:` line after the terminal event.
pub const DONE_SENTINEL: &str = "[DONE]";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// The job waits; `position` 1 runs next. Sent again whenever it moves up.
    Queued { position: u32 },
    /// The job left the queue and the model started on it.
    Started { total: u32 },
    /// Something the client should know but that does not stop the job
    /// (for example a prompt cut to the text encoder's window).
    Warning { code: String, message: String },
    /// One denoising step finished.
    Progress {
        step: u32,
        total: u32,
        percent: f32,
        /// Estimated time to completion, from the mean step time so far.
        eta_ms: u64,
        /// Which pass the step belongs to: hires-fix jobs (`base`, `hires`;
        /// `step` and `total` count both passes) and `image_upscale` (one
        /// step per tile). Absent for single-pass jobs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        phase: Option<crate::Phase>,
    },
    /// The current estimate of the final image, decoded from the clean
    /// latents by the job's `preview_method` (TAESD at full size, or the
    /// model's VAE at a reduced size).
    Preview {
        step: u32,
        image: String,
        format: ImageFormat,
        /// The pass, as in `progress`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        phase: Option<crate::Phase>,
    },
    /// Terminal: the job finished.
    Complete {
        images: Vec<GeneratedImage>,
        elapsed_ms: u64,
        /// The job's LoRAs and how much of each matched the model (absent without LoRAs).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        loras: Vec<crate::LoraApplied>,
    },
    /// Terminal: the job failed.
    Error { code: ErrorCode, message: String },
    /// Terminal: the job was cancelled.
    Cancelled {},
    /// The worker running the job stopped before it ended (it was killed,
    /// or lost its queue connection) and the job went back to the queue:
    /// another worker runs it again from the start, so `started`, `progress`
    /// and `preview` events follow again. `attempt` is the delivery about to
    /// run (2 for the first retry). Only workers sharing a NATS queue
    /// (`--queue nats://…`) send it.
    Requeued { attempt: u32 },
}

impl StreamEvent {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            StreamEvent::Complete { .. } | StreamEvent::Error { .. } | StreamEvent::Cancelled {}
        )
    }
}

/// One output image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct GeneratedImage {
    /// Base64 of the encoded image (no `data:` prefix).
    pub image: String,
    pub format: ImageFormat,
    pub seed: u64,
    pub width: u32,
    pub height: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_field_names() {
        let e = StreamEvent::Progress {
            step: 3,
            total: 20,
            percent: 15.0,
            eta_ms: 1700,
            phase: None,
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"progress","step":3,"total":20,"percent":15.0,"eta_ms":1700}"#
        );
        assert_eq!(
            serde_json::to_string(&StreamEvent::Cancelled {}).unwrap(),
            r#"{"type":"cancelled"}"#
        );
        let back: StreamEvent = serde_json::from_str(r#"{"type":"cancelled"}"#).unwrap();
        assert!(back.is_terminal());
        let err: StreamEvent =
            serde_json::from_str(r#"{"type":"error","code":"generation_failed","message":"m"}"#)
                .unwrap();
        assert!(err.is_terminal());
        let requeued = StreamEvent::Requeued { attempt: 2 };
        assert_eq!(
            serde_json::to_string(&requeued).unwrap(),
            r#"{"type":"requeued","attempt":2}"#
        );
        assert!(!requeued.is_terminal());
    }
}
