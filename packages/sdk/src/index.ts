// @sd-worker/sdk: a typed client of the sd-worker job API.
//
// The contract types (JobRequest, StreamEvent, WorkerInfo, GeneratedImage,
// ErrorCode, SchedulerName, ...) are generated from the worker's Rust types by
// tsify and re-exported here unchanged; the scheduler table and the latent
// upscalers are generated from the same crate (scheduler-table.ts,
// latent-upscalers.ts).

// The contract's types, by name: not `export type *`, which would also export
// wasm-bindgen's internals (`InitOutput`, `InitInput`, the raw `SdClient`).
// test/public-types.test.ts checks this list against the generated module.
export type {
  ApiError,
  ClientOptions,
  ControlNetInfo,
  ControlNetUnit,
  Defaults,
  EmbeddingInfo,
  ErrorBody,
  ErrorCode,
  GenerateOptions,
  GeneratedImage,
  GenerationParams,
  Heartbeat,
  HeartbeatWorker,
  HiresFix,
  ImageFormat,
  ImageToImageRequest,
  InpaintRequest,
  JobAccepted,
  JobRequest,
  JobResult,
  JobSnapshot,
  JobStatus,
  LatentUpscaler,
  Limits,
  LoraApplied,
  LoraInfo,
  LoraMetadata,
  LoraRef,
  MemoryEstimate,
  ModelInfo,
  Operation,
  Phase,
  PreprocessOptions,
  PreprocessParams,
  PreprocessRequest,
  PreprocessorName,
  PreviewMethod,
  QueueMode,
  ResizeMode,
  Rng,
  SchedulerName,
  SchedulerSpec,
  StreamEnd,
  StreamEvent,
  StreamOptions,
  TextToImageRequest,
  Timings,
  UpscaleRequest,
  UpscalerInfo,
  VaeChoice,
  VaeTiling,
  WorkerInfo,
  WorkerStatus,
} from '../wasm/sd_worker_sdk.js';
export { Client, createClient } from './client.js';
export type { StreamEventHandler } from './client.js';
export { SdError, isSdError, toSdError } from './errors.js';
export type { SdErrorCode, SdErrorInit } from './errors.js';
export { imageDataUrl, imageMime } from './images.js';
export { initWasm } from './wasm.js';
export {
  DEFAULT_HIRES_SCALE,
  DEFAULT_HIRES_STRENGTH,
  LATENT_UPSCALERS,
  MAX_HIRES_SCALE,
  latentUpscaler,
} from './upscalers.js';
export {
  SCHEDULERS,
  SCHEDULER_SPELLINGS,
  isSchedulerName,
  parseScheduler,
  schedulerFromA1111,
  schedulerLabel,
  schedulerSpec,
} from './schedulers.js';

/** Largest seed the worker accepts: 2^53 - 1, `Number.MAX_SAFE_INTEGER`, so seeds are exact JS numbers. */
export const MAX_SEED = Number.MAX_SAFE_INTEGER;
