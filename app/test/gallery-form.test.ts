import { describe, expect, it } from 'vitest';
import { defaultForm, type JobParams } from '../src/form.js';
import { formFromEntry } from '../src/gallery-form.js';
import { INFO } from './fixtures.js';

const batch: JobParams = {
  operation: 'image_generation',
  prompt: 'a red circle',
  negative_prompt: 'blurry',
  steps: 9,
  guidance_scale: 5.5,
  width: 48,
  height: 32,
  scheduler: 'ddim',
  num_images: 4,
};

describe('formFromEntry', () => {
  it('reuses one image of a batch: that image’s seed, one image', () => {
    const f = formFromEntry({ ...defaultForm(INFO), num_images: '2' }, batch, 1235, 'reuse');
    expect(f).toMatchObject({ prompt: 'a red circle', steps: '9', width: '48', height: '32', seedMode: 'fixed', seed: '1235', num_images: '1' });
  });

  it('sends the prompt, seed and settings to image to image, at the input’s size', () => {
    const base = { ...defaultForm(INFO), prompt: 'other', strength: '0.4' };
    const f = formFromEntry(base, batch, 77, 'img2img');
    expect(f).toMatchObject({
      prompt: 'a red circle',
      negative_prompt: 'blurry',
      steps: '9',
      guidance_scale: '5.5',
      scheduler: 'ddim',
      seedMode: 'fixed',
      seed: '77',
      num_images: '1',
      matchInput: true,
      strength: '0.4',
    });
    expect(formFromEntry(base, { ...batch, operation: 'image_transform', strength: 0.6 }, 77, 'inpaint').strength).toBe('0.6');
  });
});
