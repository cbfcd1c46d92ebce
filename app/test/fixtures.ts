// A worker's /v1/info, as the bundled tiny model answers it.

import type { WorkerInfo } from '@sd-worker/sdk';

export const INFO = {
  model: { id: 'tiny-sd', native_width: 64, native_height: 64 },
  schedulers: ['ddim', 'euler', 'euler_a'],
  limits: {
    size_multiple: 4,
    min_size: 32,
    max_size: 128,
    max_pixels: 16384,
    max_steps: 150,
    min_guidance_scale: 0,
    max_guidance_scale: 30,
    max_images: 8,
    max_seed: Number.MAX_SAFE_INTEGER,
  },
  defaults: { steps: 20, guidance_scale: 7.5, width: 64, height: 64, scheduler: 'euler', num_images: 1 },
} as unknown as WorkerInfo;

/** The same worker started with one ControlNet (`--controlnet`), as /v1/info lists it. */
export const CN_INFO = {
  ...INFO,
  controlnets: [
    {
      name: 'tiny-canny',
      family: 'sd15',
      loaded: true,
      memory: { weights_bytes: 1_000_000, activations_bytes: 2_000_000, total_bytes: 3_000_000 },
    },
    {
      name: 'tiny-scribble',
      family: 'sd15',
      loaded: false,
      memory: { weights_bytes: 1_000_000, activations_bytes: 2_000_000, total_bytes: 3_000_000 },
    },
  ],
  preprocessors: ['none', 'canny', 'depth', 'invert', 'scribble'],
} as unknown as WorkerInfo;

/** A 1x1 PNG as the studio holds a loaded image. */
export const DOT = {
  url: 'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC',
  width: 1,
  height: 1,
  name: 'dot.png',
};
