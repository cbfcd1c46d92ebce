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
