import { describe, expect, it } from 'vitest';
import { buildRequest, defaultForm, formFromParams, formFromParsed, restoreForm } from '../src/form.js';
import { fitSize, sizePresets } from '../src/lib/sizes.js';
import { UndoStack } from '../src/lib/undo-stack.js';
import { INFO } from './fixtures.js';


describe('form', () => {
  it('starts from the worker defaults', () => {
    const form = defaultForm(INFO);
    expect(form).toMatchObject({ steps: '20', guidance_scale: '7.5', width: '64', scheduler: 'euler', seedMode: 'random' });
    expect(restoreForm(INFO, { scheduler: 'pndm', prompt: 'kept' })).toMatchObject({ scheduler: 'euler', prompt: 'kept' });
  });

  it('builds the request of each mode', () => {
    const form = { ...defaultForm(INFO), prompt: 'a cat', negative_prompt: 'dog', steps: '30' };
    const t = buildRequest(form, 'txt2img', null);
    expect(t.errors).toEqual({});
    expect(t.params).toMatchObject({ operation: 'image_generation', prompt: 'a cat', negative_prompt: 'dog', steps: 30, width: 64, height: 64, preview_every: 3 });
    expect(t.params.seed).toBeUndefined();
    expect(t.params.strength).toBeUndefined();
    expect(t.params.rng).toBeUndefined();
    expect(buildRequest({ ...form, rng: 'torch-cpu' }, 'txt2img', null).params.rng).toBe('torch-cpu');

    const i = buildRequest(form, 'img2img', null);
    expect(i.params).toMatchObject({ operation: 'image_transform', strength: 0.75 });
    expect(i.params.width).toBeUndefined(); // the input's size

    const p = buildRequest({ ...form, matchInput: false }, 'inpaint', null);
    expect(p.params).toMatchObject({ operation: 'image_inpaint', mask_blur: 4, width: 64 });
  });

  it('says a side below the worker’s minimum size must be at least that', () => {
    const form = { ...defaultForm(INFO), prompt: 'x', width: '30', height: '64' };
    const { errors } = buildRequest(form, 'txt2img', null, INFO.limits.min_size);
    expect(errors).toEqual({ width: 'At least 32 pixels.' });
    expect(buildRequest({ ...form, width: '32' }, 'txt2img', null, INFO.limits.min_size).errors).toEqual({});
  });

  it('handles the three seed modes', () => {
    const form = { ...defaultForm(INFO), prompt: 'x' };
    expect(buildRequest({ ...form, seedMode: 'fixed', seed: '42' }, 'txt2img', null).params.seed).toBe(42);
    expect(buildRequest({ ...form, seedMode: 'last' }, 'txt2img', 7).params.seed).toBe(7);
    expect(buildRequest({ ...form, seedMode: 'last' }, 'txt2img', null).errors.seed).toMatch(/no last seed/);
    expect(buildRequest({ ...form, seedMode: 'fixed', seed: '' }, 'txt2img', null).errors.seed).toBeTruthy();
  });

  it('leaves ranges to the worker but refuses what is not a number', () => {
    const form = { ...defaultForm(INFO), prompt: ' ', steps: '999', width: '1.5', guidance_scale: 'abc' };
    const { params, errors } = buildRequest(form, 'txt2img', null);
    expect(params.steps).toBe(999);
    expect(errors).toMatchObject({ prompt: expect.any(String), width: 'Enter a whole number.', guidance_scale: 'Enter a number.' });
  });

  it('fills the form from a gallery entry and from PNG parameters', () => {
    const base = defaultForm(INFO);
    const f = formFromParams(base, { operation: 'image_generation', prompt: 'p', steps: 9, width: 48, height: 32, scheduler: 'ddim' }, 123, true);
    expect(f).toMatchObject({ prompt: 'p', steps: '9', width: '48', height: '32', scheduler: 'ddim', seedMode: 'fixed', seed: '123', matchInput: false });
    const g = formFromParsed(base, { prompt: 'q', negative_prompt: 'n', scheduler: 'lcm', seed: 5, steps: 3, extra: {} }, INFO.schedulers);
    expect(g).toMatchObject({ prompt: 'q', negative_prompt: 'n', scheduler: 'euler', seed: '5', steps: '3', rng: 'chacha' });
    const cpu = formFromParsed(base, { prompt: 'q', negative_prompt: '', extra: { RNG: 'CPU' } }, INFO.schedulers);
    expect(cpu.rng).toBe('torch-cpu');
    expect(formFromParsed(base, { prompt: 'q', negative_prompt: '', extra: { RNG: 'NV' } }, INFO.schedulers).rng).toBe('nv');
    expect(formFromParsed(cpu, { prompt: 'q', negative_prompt: '', extra: {} }, INFO.schedulers).rng).toBe('chacha');
    expect(formFromParams(cpu, { operation: 'image_generation', prompt: 'p' }, null, false).rng).toBe('chacha');
    expect(formFromParams(base, { operation: 'image_generation', prompt: 'p', rng: 'torch-cpu' }, null, false).rng).toBe('torch-cpu');
  });
});

describe('size presets', () => {
  it('stay on the multiple and within the limits', () => {
    const presets = sizePresets(INFO);
    expect(presets[0]).toMatchObject({ width: 64, height: 64 });
    expect(presets.some((p) => p.width === 128 && p.height === 128)).toBe(true);
    for (const p of presets) {
      expect(p.width % 4).toBe(0);
      expect(p.height % 4).toBe(0);
      expect(p.width * p.height).toBeLessThanOrEqual(16384);
      expect(Math.min(p.width, p.height)).toBeGreaterThanOrEqual(32);
      expect(Math.max(p.width, p.height)).toBeLessThanOrEqual(128);
    }
    expect(fitSize(INFO, 500, 10)).toEqual([128, 32]);
  });
});

describe('UndoStack', () => {
  it('undoes and redoes, and a new change clears redo', () => {
    const s = new UndoStack<number>(2);
    s.push(1);
    s.push(2);
    s.push(3); // 1 falls off
    expect(s.undo(4)).toBe(3);
    expect(s.undo(3)).toBe(2);
    expect(s.undo(2)).toBeUndefined();
    expect(s.redo(2)).toBe(3);
    expect(s.canRedo).toBe(true);
    s.push(9);
    expect(s.canRedo).toBe(false);
  });
});
