// Turning the wire's base64 images into something an <img> shows.

import type { ImageFormat } from '../wasm/sd_worker_sdk.js';

/** `data:image/png;base64,…` for a complete event's image or a preview. */
export function imageDataUrl(image: { image: string; format: ImageFormat }): string {
  return `data:${imageMime(image.format)};base64,${image.image}`;
}

export function imageMime(format: ImageFormat): string {
  return format === 'jpeg' ? 'image/jpeg' : 'image/png';
}
