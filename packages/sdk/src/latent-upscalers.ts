// Generated from sdk-wasm/src/hires.rs (`typescript_module`): do not edit.
// `SD_WORKER_SDK_WRITE_TS=1 cargo test -p sd-worker-sdk hires` rewrites it;
// that test fails while this file is stale.

import type { LatentUpscaler } from '../wasm/sd_worker_sdk.js';

/** The latent upscalers a hires fix's `upscaler` may name besides `GET /v1/upscalers`' (the first is the default). */
export const LATENT_UPSCALERS: readonly LatentUpscaler[] = [
  {
    "name": "latent",
    "a1111": "Latent",
    "mode": "bilinear"
  },
  {
    "name": "latent-nearest",
    "a1111": "Latent (nearest)",
    "mode": "nearest"
  },
  {
    "name": "latent-bicubic",
    "a1111": "Latent (bicubic)",
    "mode": "bicubic"
  }
];

/** `hires.scale` when neither it nor `hires.width`/`hires.height` is given. */
export const DEFAULT_HIRES_SCALE = 2.0;
/** Largest `hires.scale`. */
export const MAX_HIRES_SCALE = 4.0;
/** `hires.denoising_strength` when absent. */
export const DEFAULT_HIRES_STRENGTH = 0.7;
