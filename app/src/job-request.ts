// The exact request of each operation from the form's record (JobParams):
// the contract's per-operation types take only their operation's fields, so
// the fields of the other operations are left out here, and the input images
// are added.

import type { ControlNetUnit } from '@sd-worker/sdk';
import type { ImageToImageParams, InpaintingParams, TextToImageParams } from '@sd-worker/react';
import type { JobParams } from './form.js';

/** The ControlNet units, when there are any (they go with every operation). */
type Controls = ControlNetUnit[] | undefined;

export function textToImageRequest(params: JobParams, controlnets: Controls): TextToImageParams {
  const { operation: _operation, strength: _strength, mask_blur: _blur, ...rest } = params;
  return controlnets ? { ...rest, controlnets } : rest;
}

export function imageToImageRequest(params: JobParams, controlnets: Controls, image: string): ImageToImageParams {
  const { operation: _operation, mask_blur: _blur, hires: _hires, ...rest } = params;
  return controlnets ? { ...rest, controlnets, image } : { ...rest, image };
}

export function inpaintingRequest(params: JobParams, controlnets: Controls, image: string, mask: string): InpaintingParams {
  const { operation: _operation, hires: _hires, ...rest } = params;
  return controlnets ? { ...rest, controlnets, image, mask } : { ...rest, image, mask };
}
