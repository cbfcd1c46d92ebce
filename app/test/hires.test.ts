import type { UpscalerInfo } from '@sd-worker/sdk';
import { describe, expect, it } from 'vitest';
import { buildRequest, defaultForm, formFromParams, formFromParsed, restoreForm } from '../src/form.js';
import {
  buildHires,
  defaultHires,
  hiresFromParsed,
  hiresFromRequest,
  hiresTarget,
  hiresUpscalerOptions,
  upscalerLabel,
} from '../src/hires.js';
import { parseA1111 } from '../src/lib/a1111.js';
import { defaultUpscaler } from '../src/use-upscale.js';
import { INFO } from './fixtures.js';

const UPSCALERS: UpscalerInfo[] = [
  { name: 'lanczos', kind: 'builtin', label: 'Lanczos (resampling)' },
  { name: 'nearest', kind: 'builtin', label: 'Nearest neighbour (resampling)' },
  { name: 'esrgan-x2', kind: 'model', architecture: 'ESRGAN', scale: 2, parameters: 1000, size_bytes: 4000 },
];

const on = { ...defaultHires(64, 64), enabled: true };

describe('hires fix', () => {
  it('is off by default, with the contract defaults: 2×, Latent, same steps, 0.7', () => {
    expect(defaultHires(64, 48)).toEqual({
      enabled: false,
      sizeMode: 'scale',
      scale: '2',
      width: '128',
      height: '96',
      upscaler: 'latent',
      steps: '0',
      denoising_strength: '0.7',
    });
    expect(buildHires(defaultHires(64, 48), {})).toBeUndefined();
  });

  it('builds `hires` by scale or by size; 0 steps are left out', () => {
    expect(buildHires(on, {})).toEqual({ scale: 2, upscaler: 'latent', denoising_strength: 0.7 });
    expect(buildHires({ ...on, sizeMode: 'size', width: '96', height: '80', steps: '5', upscaler: 'esrgan-x2' }, {})).toEqual({
      width: 96,
      height: 80,
      steps: 5,
      upscaler: 'esrgan-x2',
      denoising_strength: 0.7,
    });
    const errors = {};
    buildHires({ ...on, scale: 'two', steps: '1.5' }, errors);
    expect(errors).toEqual({ 'hires.scale': 'Enter a number.', 'hires.steps': 'Enter a whole number.' });
  });

  it('goes into text to image requests only', () => {
    const form = { ...defaultForm(INFO), prompt: 'a cat', hires: { ...on, scale: '1.5' } };
    expect(buildRequest(form, 'txt2img', null).params.hires).toEqual({ scale: 1.5, upscaler: 'latent', denoising_strength: 0.7 });
    expect(buildRequest(form, 'img2img', null).params.hires).toBeUndefined();
  });

  it('shows the target size as the worker floors it to the size multiple', () => {
    expect(hiresTarget(64, 48, 1.5, 4)).toEqual({ width: 96, height: 72 });
    expect(hiresTarget(60, 44, 1.5, 8)).toEqual({ width: 88, height: 64 });
  });

  it('offers the latent upscalers under A1111’s names, then the worker’s', () => {
    expect(hiresUpscalerOptions(UPSCALERS)).toEqual([
      { value: 'latent', label: 'Latent' },
      { value: 'latent-nearest', label: 'Latent (nearest)' },
      { value: 'latent-bicubic', label: 'Latent (bicubic)' },
      { value: 'lanczos', label: 'Lanczos (resampling)' },
      { value: 'nearest', label: 'Nearest neighbour (resampling)' },
      { value: 'esrgan-x2', label: 'esrgan-x2 (ESRGAN, 2×)' },
    ]);
    expect(upscalerLabel({ name: 'x', kind: 'model' })).toBe('x');
    // A worker from before the labels: the built-in's name.
    expect(upscalerLabel({ name: 'lanczos', kind: 'builtin' })).toBe('lanczos');
    expect(defaultUpscaler(UPSCALERS)).toBe('esrgan-x2');
    expect(defaultUpscaler(UPSCALERS.slice(0, 2))).toBe('lanczos');
    expect(defaultUpscaler([])).toBe('');
  });

  it('comes back from a request (Reuse) as it was built', () => {
    for (const h of [on, { ...on, sizeMode: 'size' as const, width: '100', height: '80', steps: '7', upscaler: 'latent-bicubic' }]) {
      const back = hiresFromRequest(defaultHires(64, 64), buildHires(h, {}));
      expect(buildHires(back, {})).toEqual(buildHires(h, {}));
    }
    expect(hiresFromRequest(on, undefined).enabled).toBe(false);
    // An A1111 spelling in a request is the wire name in the form.
    expect(hiresFromRequest(on, { upscaler: 'Latent (nearest)' }).upscaler).toBe('latent-nearest');
    const form = formFromParams(defaultForm(INFO), { operation: 'image_generation', prompt: 'x', hires: { scale: 3 } }, 1, true);
    expect(form.hires).toMatchObject({ enabled: true, sizeMode: 'scale', scale: '3' });
  });

  it('comes back from a hires PNG’s parameters (its Denoising strength is the second pass’s)', () => {
    const text =
      'a lighthouse\nSteps: 6, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 64x48, Model: tiny-sd, Denoising strength: 0.55, Hires upscale: 1.5, Hires steps: 3, Hires upscaler: Latent (nearest)';
    const parsed = parseA1111(text, INFO.schedulers)!;
    const form = formFromParsed(defaultForm(INFO), parsed, INFO.schedulers, UPSCALERS);
    expect(form.hires).toEqual({ ...defaultHires(64, 64), enabled: true, scale: '1.5', steps: '3', upscaler: 'latent-nearest', denoising_strength: '0.55' });
    expect(form).toMatchObject({ width: '64', height: '48', strength: '0.75' });
    const { params } = buildRequest(form, 'txt2img', null);
    expect(params.hires).toEqual({ scale: 1.5, steps: 3, upscaler: 'latent-nearest', denoising_strength: 0.55 });

    const resized = hiresFromParsed(on, { 'Hires resize': '128x96', 'Hires upscaler': 'esrgan-x2' }, UPSCALERS);
    expect(resized).toEqual({ hires: { ...on, sizeMode: 'size', width: '128', height: '96', upscaler: 'esrgan-x2' } });
    const unknown = hiresFromParsed(on, { 'Hires upscale': '2', 'Hires upscaler': 'R-ESRGAN 4x+' }, UPSCALERS);
    expect(unknown.hires.upscaler).toBe('latent');
    expect(unknown.unknownUpscaler).toBe('R-ESRGAN 4x+');
    // A PNG without hires fields turns it off.
    const plain = parseA1111('a cat\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64', INFO.schedulers)!;
    expect(formFromParsed({ ...defaultForm(INFO), hires: on }, plain, INFO.schedulers).hires.enabled).toBe(false);
  });
});

describe('TAESD choices', () => {
  const TAESD_INFO = { ...INFO, taesd: true };

  it('go into every request, and are dropped on a worker without TAESD', () => {
    const form = { ...defaultForm(TAESD_INFO), prompt: 'x', preview_method: 'vae' as const, fastDecode: true };
    expect(buildRequest(form, 'img2img', null).params).toMatchObject({ preview_method: 'vae', vae: 'tiny' });
    const plain = buildRequest({ ...defaultForm(INFO), prompt: 'x' }, 'txt2img', null).params;
    expect(plain.preview_method).toBeUndefined();
    expect(plain.vae).toBeUndefined();
    expect(restoreForm(TAESD_INFO, form)).toMatchObject({ preview_method: 'vae', fastDecode: true });
    expect(restoreForm(INFO, form)).toMatchObject({ preview_method: '', fastDecode: false });
    // An older saved form gets the hires defaults.
    expect(restoreForm(INFO, { prompt: 'old' }).hires).toEqual(defaultHires(64, 64));
  });
});
