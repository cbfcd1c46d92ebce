// The hires fix's latent upscalers (sdk-wasm/src/hires.rs, generated into
// latent-upscalers.ts). Pixel upscalers are the worker's: `Client.upscalers()`.

import type { LatentUpscaler } from '../wasm/sd_worker_sdk.js';
import { DEFAULT_HIRES_SCALE, DEFAULT_HIRES_STRENGTH, LATENT_UPSCALERS, MAX_HIRES_SCALE } from './latent-upscalers.js';

export { DEFAULT_HIRES_SCALE, DEFAULT_HIRES_STRENGTH, LATENT_UPSCALERS, MAX_HIRES_SCALE };

/**
 * The latent upscaler a spelling names, as the worker reads `hires.upscaler`:
 * its wire name (`latent-nearest`) or AUTOMATIC1111's (`Latent (nearest)`,
 * what a PNG's `Hires upscaler` says), in any case; undefined for any other
 * name (a pixel upscaler, or none).
 */
export function latentUpscaler(name: string): LatentUpscaler | undefined {
  const n = name.trim().toLowerCase();
  return LATENT_UPSCALERS.find((u) => u.name === n || u.a1111.toLowerCase() === n);
}
