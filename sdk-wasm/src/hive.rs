//! The worker's heartbeat to the hive: `POST {hive}/v1/worker-heartbeat`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct Heartbeat {
    pub worker: HeartbeatWorker,
    /// RFC 3339, UTC.
    pub timestamp: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct HeartbeatWorker {
    pub id: String,
    /// The loaded model's id (empty while it loads).
    pub model_id: String,
    pub device: String,
    pub port: u16,
    pub status: WorkerStatus,
    /// Always `sd-worker`.
    pub implementation: String,
    pub version: String,
    /// Jobs waiting in the queue.
    #[serde(default)]
    pub queue_length: u32,
    /// Where the worker is reached (`--advertise-url`), when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Where its jobs wait: its own in-memory queue, or a NATS JetStream
    /// queue shared with other workers (then `queue_length` is the shared
    /// backlog of the model).
    #[serde(default)]
    pub queue_mode: QueueMode,
}

/// Where a worker's jobs wait (`--queue`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
#[serde(rename_all = "snake_case")]
pub enum QueueMode {
    /// The worker's own in-memory queue (no `--queue`).
    #[default]
    Embedded,
    /// A NATS JetStream work queue shared by every worker serving the model.
    Nats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
#[serde(rename_all = "snake_case")]
pub enum WorkerStatus {
    /// Loading the model.
    Starting,
    /// Idle, accepting jobs.
    Ready,
    /// Generating, or jobs waiting.
    Busy,
    /// Shutting down: accepts nothing new.
    Stopping,
}
