// @sd-worker/sdk: a typed client of the sd-worker job API.
//
// The contract types (JobRequest, StreamEvent, WorkerInfo, GeneratedImage,
// ErrorCode, ...) are generated from the worker's Rust types by tsify and
// re-exported here unchanged.

export type * from '../wasm/sd_worker_sdk.js';
export { Client, createClient } from './client.js';
export type { StreamEventHandler } from './client.js';
export { SdError, isSdError, toSdError } from './errors.js';
export type { SdErrorCode, SdErrorInit } from './errors.js';
export { imageDataUrl, imageMime } from './images.js';
export { initWasm } from './wasm.js';

/** Largest seed the worker accepts: 2^53 - 1, `Number.MAX_SAFE_INTEGER`, so seeds are exact JS numbers. */
export const MAX_SEED = Number.MAX_SAFE_INTEGER;
