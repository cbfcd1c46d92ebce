import { describe, expect, it } from 'vitest';
import { parseA1111 } from '../src/lib/a1111.js';

describe('parseA1111', () => {
  it('reads what the worker writes', () => {
    const p = parseA1111(
      'a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler, CFG scale: 7.5, Seed: 42, Size: 64x32, Model: tiny-sd',
    );
    expect(p).toMatchObject({
      prompt: 'a cat',
      negative_prompt: 'blurry',
      steps: 20,
      sampler: 'Euler',
      scheduler: 'euler',
      guidance_scale: 7.5,
      seed: 42,
      width: 64,
      height: 32,
      model: 'tiny-sd',
    });
  });

  it('keeps the RNG the worker writes for torch-cpu, after the denoising strength', () => {
    const p = parseA1111(
      'a cat\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1, Size: 64x64, Model: m, Denoising strength: 0.75, RNG: CPU',
    )!;
    expect(p).toMatchObject({ scheduler: 'dpmpp_2m_karras', seed: 1, strength: 0.75, model: 'm' });
    expect(p.extra.RNG).toBe('CPU');
  });

  it('keeps multi-line prompts, big seeds and the denoising strength', () => {
    const p = parseA1111(
      'line one\nline two, with: a colon\nNegative prompt: bad\nhands\nSteps: 30, Sampler: Euler a, CFG scale: 5, Seed: 9007199254740991, Size: 512x768, Denoising strength: 0.6',
    )!;
    expect(p.prompt).toBe('line one\nline two, with: a colon');
    expect(p.negative_prompt).toBe('bad\nhands');
    expect(p.scheduler).toBe('euler_a');
    expect(p.seed).toBe(Number.MAX_SAFE_INTEGER);
    expect(p.strength).toBe(0.6);
    expect([p.width, p.height]).toEqual([512, 768]);
  });

  it('reads other tools’ lines: quoted values, unknown samplers, no negative prompt', () => {
    const p = parseA1111(
      'a dog\nSteps: 25, Sampler: DPM++ 2M Karras, Schedule type: Karras, CFG scale: 6, Seed: 1, Size: 512x512, Lora hashes: "a: 1, b: 2", Version: v1.10.0',
    )!;
    expect(p.prompt).toBe('a dog');
    expect(p.negative_prompt).toBe('');
    expect(p.sampler).toBe('DPM++ 2M Karras');
    expect(p.scheduler).toBe('dpmpp_2m_karras');
    expect(parseA1111('x\nSteps: 5, Sampler: DPM++ 2M')!.scheduler).toBe('dpmpp_2m');
    expect(p.extra['Lora hashes']).toBe('a: 1, b: 2');
    expect(p.extra.Version).toBe('v1.10.0');
    expect(p.steps).toBe(25);
  });

  it('maps sampler names through the contract: A1111 1.9 schedule types, any case, the model’s family', () => {
    const scheduler = (pairs: string, schedulers?: string[]) => parseA1111(`x\nSteps: 5, ${pairs}`, schedulers)!.scheduler;
    expect(scheduler('Sampler: DPM++ 2M, Schedule type: Karras')).toBe('dpmpp_2m_karras');
    expect(scheduler('Sampler: DPM++ 2M, Schedule type: Automatic')).toBe('dpmpp_2m');
    expect(scheduler('Sampler: Euler a, Schedule type: Automatic')).toBe('euler_a');
    expect(scheduler('Sampler: Euler, Schedule type: Karras')).toBeUndefined(); // no Euler Karras here
    expect(scheduler('Sampler: EULER A')).toBe('euler_a');
    expect(scheduler('Sampler: Flow Euler')).toBe('flow_euler');
    // A1111 and Forge write plain "Euler" for SD 3.
    expect(scheduler('Sampler: Euler', ['flow_euler'])).toBe('flow_euler');
    expect(scheduler('Sampler: Euler', ['ddim', 'euler'])).toBe('euler');
    expect(scheduler('Sampler: Euler a', ['flow_euler'])).toBeUndefined();
    expect(scheduler('Sampler: PLMS')).toBeUndefined();
    expect(scheduler('Sampler: constructor')).toBeUndefined();
  });

  it('takes a prompt alone, and refuses empty text', () => {
    expect(parseA1111('just a prompt')).toMatchObject({ prompt: 'just a prompt', negative_prompt: '' });
    expect(parseA1111('')).toBeNull();
    expect(parseA1111('   \n')).toBeNull();
  });
});
