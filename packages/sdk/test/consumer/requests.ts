// Each operation's request carries exactly the fields the worker accepts for
// it (the contract's per-operation types): the mistakes the worker would
// refuse do not compile. Type-checked by test/public-types.test.ts; every
// `@ts-expect-error` fails the check if its line ever compiles.
import type { JobRequest } from '../../dist/index.js';

const image = 'data:image/png;base64,AAAA';

export const valid: JobRequest[] = [
  { operation: 'image_generation', prompt: 'p', scheduler: 'euler_a', hires: { scale: 2 } },
  { operation: 'image_generation', prompt: 'p', controlnets: [], resize_mode: 'crop' },
  { operation: 'image_transform', prompt: 'p', image, strength: 0.6, resize_mode: 'fit' },
  { operation: 'image_inpaint', prompt: 'p', image, mask: image, mask_blur: 4, strength: 1 },
  // A transparent `image` is its own mask.
  { operation: 'image_inpaint', prompt: 'p', image },
  { operation: 'image_upscale', image, upscaler: 'lanczos', scale: 2 },
];

export const invalid: JobRequest[] = [
  // @ts-expect-error a scheduler's wire name is one of SchedulerName
  { operation: 'image_generation', prompt: 'p', scheduler: 'euler_ancestral' },
  // @ts-expect-error image to image needs its image
  { operation: 'image_transform', prompt: 'p', strength: 0.5 },
  // @ts-expect-error inpainting needs its image
  { operation: 'image_inpaint', prompt: 'p', mask: image },
  // @ts-expect-error a mask belongs to inpainting
  { operation: 'image_transform', prompt: 'p', image, mask: image },
  // @ts-expect-error mask_blur belongs to inpainting
  { operation: 'image_transform', prompt: 'p', image, mask_blur: 4 },
  // @ts-expect-error the hires fix belongs to text to image
  { operation: 'image_transform', prompt: 'p', image, hires: { scale: 2 } },
  // @ts-expect-error the hires fix belongs to text to image
  { operation: 'image_inpaint', prompt: 'p', image, hires: { scale: 2 } },
  // @ts-expect-error text to image takes no input image
  { operation: 'image_generation', prompt: 'p', image },
  // @ts-expect-error text to image takes no strength
  { operation: 'image_generation', prompt: 'p', strength: 0.5 },
  // @ts-expect-error an upscale has no prompt
  { operation: 'image_upscale', image, prompt: 'p' },
  // @ts-expect-error an upscale needs its image
  { operation: 'image_upscale', upscaler: 'lanczos' },
  // @ts-expect-error resize modes are stretch, crop and fit
  { operation: 'image_transform', prompt: 'p', image, resize_mode: 'cover' },
];
