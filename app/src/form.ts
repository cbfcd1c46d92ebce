// The form: what a person sets, the request it becomes, and filling it back
// from a gallery image or a PNG's parameters.

import {
  isSchedulerName,
  type GenerationParams,
  type HiresFix,
  type Operation,
  type PreviewMethod,
  type Rng,
  type UpscalerInfo,
  type WorkerInfo,
} from '@sd-worker/sdk';
import { buildHires, defaultHires, hasHiresFields, hiresFromParsed, hiresFromRequest, type HiresForm } from './hires.js';
import type { ParsedParameters } from './lib/a1111.js';

export type Mode = 'txt2img' | 'img2img' | 'inpaint';
export type SeedMode = 'random' | 'fixed' | 'last';

export const OPERATIONS: Record<Mode, Operation> = {
  txt2img: 'image_generation',
  img2img: 'image_transform',
  inpaint: 'image_inpaint',
};

/** The mode of a generating operation (`image_upscale` has none: it is a gallery action). */
export const MODE_OF: Partial<Record<Operation, Mode>> = {
  image_generation: 'txt2img',
  image_transform: 'img2img',
  image_inpaint: 'inpaint',
};

/** Numbers are kept as typed (strings), so a half-typed value is not lost. */
export interface FormState {
  prompt: string;
  negative_prompt: string;
  steps: string;
  guidance_scale: string;
  width: string;
  height: string;
  /** Image modes: take the input image's size (no width/height sent). */
  matchInput: boolean;
  scheduler: string;
  num_images: string;
  seedMode: SeedMode;
  seed: string;
  strength: string;
  mask_blur: string;
  /** Random source of the noise: the worker's own, or PyTorch's CPU generator (diffusers' pictures). */
  rng: Rng;
  /** Text to image: the hires fix (a second pass at a larger size). */
  hires: HiresForm;
  /** How previews are decoded; '' leaves it to the worker (TAESD when it has one). Needs `info.taesd`. */
  preview_method: PreviewMethod | '';
  /** Final images decoded by TAESD (`vae: "tiny"`): drafts, fast. Needs `info.taesd`. */
  fastDecode: boolean;
}

/**
 * What a gallery entry remembers of its request (no images): the shared
 * parameters and its operation's own fields (job-request.ts makes the exact
 * request of the operation).
 */
export type JobParams = Omit<GenerationParams, 'model' | 'hive_id' | 'worker_id'> & {
  operation: Operation;
  /** Image to image and inpainting. */
  strength?: number;
  /** Inpainting. */
  mask_blur?: number;
  /** Text to image. */
  hires?: HiresFix;
};

export function defaultForm(info: WorkerInfo): FormState {
  const d = info.defaults;
  return {
    prompt: '',
    negative_prompt: '',
    steps: String(d.steps),
    guidance_scale: String(d.guidance_scale),
    width: String(d.width),
    height: String(d.height),
    matchInput: true,
    scheduler: d.scheduler,
    num_images: String(d.num_images),
    seedMode: 'random',
    seed: '',
    strength: '0.75',
    mask_blur: '4',
    rng: 'chacha',
    hires: defaultHires(d.width, d.height),
    preview_method: '',
    fastDecode: false,
  };
}

/** A stored form merged over the defaults (fields the worker does not offer are dropped). */
export function restoreForm(info: WorkerInfo, saved: Partial<FormState> | null): FormState {
  const defaults = defaultForm(info);
  const form = { ...defaults, ...(saved ?? {}) };
  form.hires = { ...defaults.hires, ...(saved?.hires ?? {}) };
  // Without TAESD the worker refuses both.
  if (!info.taesd) {
    form.preview_method = '';
    form.fastDecode = false;
  }
  if (!info.schedulers.includes(form.scheduler)) form.scheduler = info.defaults.scheduler;
  if (form.rng !== 'chacha' && form.rng !== 'torch-cpu' && form.rng !== 'nv') form.rng = 'chacha';
  return form;
}

export type FieldErrors = Partial<Record<string, string>>;

function parseNumber(
  value: string,
  field: string,
  errors: FieldErrors,
  integer: boolean,
): number | undefined {
  const v = value.trim();
  if (v === '') return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || (integer && !Number.isInteger(n))) {
    errors[field] = integer ? 'Enter a whole number.' : 'Enter a number.';
    return undefined;
  }
  return n;
}

export interface BuiltRequest {
  params: JobParams;
  errors: FieldErrors;
}

/**
 * The request of the form (without `image`/`mask`). Only what a browser cannot
 * send is checked here (text in a number field), and a side below `/v1/info`'s
 * `min_size` (`minSize`): "at least 32" says more than the worker's first
 * complaint could. Other ranges are the worker's to judge.
 */
export function buildRequest(form: FormState, mode: Mode, lastSeed: number | null, minSize?: number): BuiltRequest {
  const errors: FieldErrors = {};
  const params: JobParams = { operation: OPERATIONS[mode], prompt: form.prompt };
  if (!form.prompt.trim()) errors.prompt = 'Describe the image to generate.';
  if (form.negative_prompt.trim()) params.negative_prompt = form.negative_prompt;
  const steps = parseNumber(form.steps, 'steps', errors, true);
  if (steps !== undefined) params.steps = steps;
  const guidance = parseNumber(form.guidance_scale, 'guidance_scale', errors, false);
  if (guidance !== undefined) params.guidance_scale = guidance;
  if (mode === 'txt2img' || !form.matchInput) {
    const width = parseNumber(form.width, 'width', errors, true);
    const height = parseNumber(form.height, 'height', errors, true);
    if (width !== undefined) params.width = width;
    if (height !== undefined) params.height = height;
    for (const [field, side] of [['width', width], ['height', height]] as const) {
      if (side !== undefined && minSize !== undefined && side < minSize) errors[field] = `At least ${minSize} pixels.`;
    }
  }
  // The select offers /v1/info's names, all of them the contract's.
  if (isSchedulerName(form.scheduler)) params.scheduler = form.scheduler;
  const n = parseNumber(form.num_images, 'num_images', errors, true);
  if (n !== undefined) params.num_images = n;
  if (form.seedMode === 'fixed') {
    const seed = parseNumber(form.seed, 'seed', errors, true);
    if (seed === undefined && !errors.seed) errors.seed = 'Enter a seed, or choose Random.';
    if (seed !== undefined) params.seed = seed;
  } else if (form.seedMode === 'last') {
    if (lastSeed === null) errors.seed = 'No image generated yet: there is no last seed.';
    else params.seed = lastSeed;
  }
  if (mode !== 'txt2img') {
    const strength = parseNumber(form.strength, 'strength', errors, false);
    if (strength !== undefined) params.strength = strength;
  }
  if (mode === 'inpaint') {
    const blur = parseNumber(form.mask_blur, 'mask_blur', errors, true);
    if (blur !== undefined) params.mask_blur = blur;
  }
  if (form.rng !== 'chacha') params.rng = form.rng;
  if (mode === 'txt2img') {
    const hires = buildHires(form.hires, errors);
    if (hires) params.hires = hires;
  }
  if (form.preview_method) params.preview_method = form.preview_method;
  if (form.fastDecode) params.vae = 'tiny';
  // Live previews: about ten per job.
  params.preview_every = Math.max(1, Math.floor((steps ?? 20) / 10));
  return { params, errors };
}

/** The form filled from a request (a gallery entry's), keeping its seed when `withSeed`. */
export function formFromParams(form: FormState, p: JobParams, seed: number | null, withSeed: boolean): FormState {
  const next: FormState = { ...form, prompt: p.prompt, negative_prompt: p.negative_prompt ?? '' };
  if (p.steps !== undefined) next.steps = String(p.steps);
  if (p.guidance_scale !== undefined) next.guidance_scale = String(p.guidance_scale);
  if (p.width !== undefined && p.height !== undefined) {
    next.width = String(p.width);
    next.height = String(p.height);
    next.matchInput = false;
  }
  if (p.scheduler) next.scheduler = p.scheduler;
  if (p.num_images !== undefined) next.num_images = String(p.num_images);
  if (p.strength !== undefined) next.strength = String(p.strength);
  if (p.mask_blur !== undefined) next.mask_blur = String(p.mask_blur);
  next.rng = p.rng ?? 'chacha';
  if (p.operation === 'image_generation') next.hires = hiresFromRequest(form.hires, p.hires);
  if (withSeed && seed !== null) {
    next.seedMode = 'fixed';
    next.seed = String(seed);
  } else {
    next.seedMode = 'random';
  }
  return next;
}

/**
 * The form filled from a PNG's `parameters` (only the schedulers the worker has
 * are taken; a hires upscaler only when `upscalers` or the latent ones have it).
 */
export function formFromParsed(
  form: FormState,
  p: ParsedParameters,
  schedulers: string[],
  upscalers: readonly UpscalerInfo[] = [],
): FormState {
  const next: FormState = { ...form, prompt: p.prompt, negative_prompt: p.negative_prompt };
  if (p.steps !== undefined) next.steps = String(p.steps);
  if (p.guidance_scale !== undefined) next.guidance_scale = String(p.guidance_scale);
  if (p.width !== undefined && p.height !== undefined) {
    next.width = String(p.width);
    next.height = String(p.height);
    next.matchInput = false;
  }
  if (p.scheduler && schedulers.includes(p.scheduler)) next.scheduler = p.scheduler;
  // A hires image's `Denoising strength` is its second pass's.
  const hires = hasHiresFields(p.extra);
  if (p.strength !== undefined && !hires) next.strength = String(p.strength);
  next.hires = hiresFromParsed(form.hires, p.extra, upscalers).hires;
  if (p.seed !== undefined) {
    next.seedMode = 'fixed';
    next.seed = String(p.seed);
  }
  // AUTOMATIC1111's `RNG: CPU` is PyTorch's CPU generator, `RNG: NV` its Philox source; no `RNG` key: ours
  // (or A1111's default GPU source, which `nv` reproduces but which the text cannot tell from ours).
  next.rng = p.extra.RNG === 'CPU' ? 'torch-cpu' : p.extra.RNG === 'NV' ? 'nv' : 'chacha';
  return next;
}
