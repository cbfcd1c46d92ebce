//! Wire types of the sd-worker job API.
//!
//! This crate is the single source of truth for the contract between the worker,
//! the hive and browser clients: the worker serialises exactly these types, and
//! the browser SDK's TypeScript definitions are generated from them. Nothing here
//! depends on the worker's runtime, so the crate compiles natively and to wasm32.
//!
//! On wasm32 the crate is also the browser client (`src/wasm/`, the `SdClient`
//! class of the `sd_worker_sdk` module); its transport-free parts (the SSE
//! parser and the retry policy) are plain Rust, tested natively.

pub mod control;
pub mod decode;
pub mod error;
pub mod events;
pub mod hires;
pub mod hive;
pub mod info;
pub mod job;
pub mod lora;
pub mod numbers;
pub mod request;
pub mod retry;
pub mod schedulers;
pub mod sse;
#[cfg(test)]
mod ts_modules;
pub mod upscale;
#[cfg(target_arch = "wasm32")]
pub mod wasm;

pub use control::{
    ControlNetInfo, ControlNetUnit, PreprocessParams, PreprocessRequest, PreprocessorName,
};
pub use decode::{PreviewMethod, VaeChoice, VaeTiling};
pub use error::{ApiError, ErrorBody, ErrorCode};
pub use events::{GeneratedImage, StreamEvent, DONE_SENTINEL};
pub use hires::{HiresFix, LatentUpscaler, Phase, LATENT_UPSCALERS};
pub use hive::{Heartbeat, HeartbeatWorker, QueueMode, WorkerStatus};
pub use info::{Defaults, Limits, MemoryEstimate, ModelInfo, WorkerInfo};
pub use job::{JobAccepted, JobResult, JobSnapshot, JobStatus, Timings};
pub use lora::{EmbeddingInfo, LoraApplied, LoraInfo, LoraMetadata, LoraRef};
pub use request::{
    GenerationParams, ImageFormat, ImageToImageRequest, InpaintRequest, JobRequest, Operation,
    OperationFields, ResizeMode, Rng, TextToImageRequest, MAX_SEED,
};
pub use schedulers::{SchedulerName, SchedulerSpec, SCHEDULERS};
pub use upscale::{UpscaleRequest, UpscalerInfo};
