import { describe, expect, it } from 'vitest';
import type { JobParams } from '../src/form.js';
import { imageToImageRequest, inpaintingRequest, textToImageRequest } from '../src/job-request.js';

// A record with every operation's fields, as a reused gallery entry may carry.
const PARAMS: JobParams = {
  operation: 'image_inpaint',
  prompt: 'a cat',
  steps: 4,
  strength: 0.6,
  mask_blur: 3,
  hires: { scale: 2 },
};
const UNITS = [{ model: 'canny', image: 'data:image/png;base64,AA' }];

describe('the request of each operation', () => {
  it('text to image: the hires fix, no strength or mask blur', () => {
    expect(textToImageRequest(PARAMS, undefined)).toEqual({ prompt: 'a cat', steps: 4, hires: { scale: 2 } });
    expect(textToImageRequest(PARAMS, UNITS).controlnets).toBe(UNITS);
  });

  it('image to image: the image and strength, no mask blur or hires fix', () => {
    expect(imageToImageRequest(PARAMS, undefined, 'IMG')).toEqual({ prompt: 'a cat', steps: 4, strength: 0.6, image: 'IMG' });
  });

  it('inpainting: the image, mask, strength and mask blur, no hires fix', () => {
    expect(inpaintingRequest(PARAMS, UNITS, 'IMG', 'MASK')).toEqual({
      prompt: 'a cat',
      steps: 4,
      strength: 0.6,
      mask_blur: 3,
      controlnets: UNITS,
      image: 'IMG',
      mask: 'MASK',
    });
  });
});
