// A gallery image's request, back in the form: to make that one image again
// (Reuse), or to start from it in image to image or inpainting (Send to…).

import { formFromParams, type FormState, type JobParams } from './form.js';

export type EntryTarget = 'reuse' | 'img2img' | 'inpaint';

/**
 * The form filled from an entry's request and its own seed. One image: an entry
 * of a batch has its own seed, so `num_images` 1 makes exactly that image again.
 * Sent to an image mode, the size is the input's (the image itself), and a
 * strength the request had is kept.
 */
export function formFromEntry(form: FormState, params: JobParams, seed: number, target: EntryTarget): FormState {
  const next = formFromParams(form, params, seed, true);
  next.num_images = '1';
  if (target !== 'reuse') {
    next.matchInput = true;
    next.width = form.width;
    next.height = form.height;
  }
  return next;
}
