// The hires fix of text to image: its part of the form, the request's `hires`
// it becomes, and filling it back from a request or a PNG's parameters.
// Upscaler names come from the contract (the latent ones, LATENT_UPSCALERS)
// and from the worker (`GET /v1/upscalers`): none is listed here.

import {
  DEFAULT_HIRES_SCALE,
  DEFAULT_HIRES_STRENGTH,
  LATENT_UPSCALERS,
  latentUpscaler,
  type HiresFix,
  type UpscalerInfo,
} from '@sd-worker/sdk';
import type { FieldErrors } from './form.js';

/** Target size by a factor on the base size, or as width × height. */
export type HiresSizeMode = 'scale' | 'size';

/** Numbers kept as typed, as the rest of the form. */
export interface HiresForm {
  enabled: boolean;
  sizeMode: HiresSizeMode;
  scale: string;
  width: string;
  height: string;
  upscaler: string;
  /** 0: the job's steps. */
  steps: string;
  denoising_strength: string;
}

export function defaultHires(baseWidth: number, baseHeight: number): HiresForm {
  return {
    enabled: false,
    sizeMode: 'scale',
    scale: String(DEFAULT_HIRES_SCALE),
    width: String(baseWidth * DEFAULT_HIRES_SCALE),
    height: String(baseHeight * DEFAULT_HIRES_SCALE),
    upscaler: LATENT_UPSCALERS[0]!.name,
    steps: '0',
    denoising_strength: String(DEFAULT_HIRES_STRENGTH),
  };
}

export interface UpscalerOption {
  value: string;
  label: string;
}

/** The hires fix's upscaler choices: the latent ones (A1111's names), then the worker's. */
export function hiresUpscalerOptions(upscalers: readonly UpscalerInfo[]): UpscalerOption[] {
  return [
    ...LATENT_UPSCALERS.map((u) => ({ value: u.name, label: u.a1111 })),
    ...upscalers.map((u) => ({ value: u.name, label: upscalerLabel(u) })),
  ];
}

/** "esrgan-x2 (ESRGAN, 2×)" for a model; a built-in's label from the worker ("Lanczos (resampling)"), else its name. */
export function upscalerLabel(u: UpscalerInfo): string {
  if (u.kind !== 'model') return u.label ?? u.name;
  const details = [u.architecture, u.scale ? `${u.scale}×` : undefined].filter(Boolean).join(', ');
  return details ? `${u.name} (${details})` : u.name;
}

/** The size the worker makes of `scale` times the base size: each side floored to the size multiple. */
export function hiresTarget(
  baseWidth: number,
  baseHeight: number,
  scale: number,
  multiple: number,
): { width: number; height: number } {
  const floorTo = (v: number) => Math.floor(v / multiple) * multiple;
  return { width: floorTo(baseWidth * scale), height: floorTo(baseHeight * scale) };
}

function parse(value: string, field: string, errors: FieldErrors, integer: boolean): number | undefined {
  const v = value.trim();
  if (v === '') return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || (integer && !Number.isInteger(n))) {
    errors[field] = integer ? 'Enter a whole number.' : 'Enter a number.';
    return undefined;
  }
  return n;
}

/**
 * The request's `hires` (undefined when off). Errors are keyed as the worker
 * names the fields (`hires.scale`, ...), so its refusals land on the same controls.
 */
export function buildHires(h: HiresForm, errors: FieldErrors): HiresFix | undefined {
  if (!h.enabled) return undefined;
  const out: HiresFix = {};
  if (h.sizeMode === 'scale') {
    const scale = parse(h.scale, 'hires.scale', errors, false);
    if (scale !== undefined) out.scale = scale;
  } else {
    const width = parse(h.width, 'hires.width', errors, true);
    const height = parse(h.height, 'hires.height', errors, true);
    if (width !== undefined) out.width = width;
    if (height !== undefined) out.height = height;
  }
  if (h.upscaler) out.upscaler = h.upscaler;
  const steps = parse(h.steps, 'hires.steps', errors, true);
  if (steps !== undefined && steps > 0) out.steps = steps;
  const strength = parse(h.denoising_strength, 'hires.denoising_strength', errors, false);
  if (strength !== undefined) out.denoising_strength = strength;
  return out;
}

/** The hires part filled from a request's `hires` (a gallery entry's); off when it had none. */
export function hiresFromRequest(current: HiresForm, h: HiresFix | undefined): HiresForm {
  if (!h) return { ...current, enabled: false };
  const next: HiresForm = { ...current, enabled: true, steps: String(h.steps ?? 0) };
  if (h.width !== undefined || h.height !== undefined) {
    next.sizeMode = 'size';
    if (h.width !== undefined) next.width = String(h.width);
    if (h.height !== undefined) next.height = String(h.height);
  } else {
    next.sizeMode = 'scale';
    next.scale = String(h.scale ?? DEFAULT_HIRES_SCALE);
  }
  next.upscaler = h.upscaler ? (latentUpscaler(h.upscaler)?.name ?? h.upscaler) : LATENT_UPSCALERS[0]!.name;
  next.denoising_strength = String(h.denoising_strength ?? DEFAULT_HIRES_STRENGTH);
  return next;
}

/** Whether a PNG's `Key: value` pairs describe a hires-fix image (A1111's keys). */
export function hasHiresFields(extra: Record<string, string>): boolean {
  return ['Hires upscale', 'Hires resize', 'Hires upscaler', 'Hires steps'].some((k) => k in extra);
}

export interface ParsedHires {
  hires: HiresForm;
  /** The PNG's `Hires upscaler` when this worker has no upscaler of that name (the default is taken). */
  unknownUpscaler?: string;
}

/**
 * The hires part filled from a PNG's parameters (`extra`: its `Key: value`
 * pairs): `Hires upscale: 2` or `Hires resize: WxH`, `Hires steps`, `Hires
 * upscaler` (A1111's latent names, or a name of `upscalers`), `Denoising
 * strength`. Off when the PNG has no hires fields.
 */
export function hiresFromParsed(
  current: HiresForm,
  extra: Record<string, string>,
  upscalers: readonly UpscalerInfo[],
): ParsedHires {
  if (!hasHiresFields(extra)) return { hires: { ...current, enabled: false } };
  const next: HiresForm = { ...current, enabled: true, steps: '0' };
  const resize = /^(\d+)\s*x\s*(\d+)$/.exec(extra['Hires resize'] ?? '');
  const scale = Number(extra['Hires upscale']);
  if (resize) {
    next.sizeMode = 'size';
    next.width = resize[1]!;
    next.height = resize[2]!;
  } else {
    next.sizeMode = 'scale';
    next.scale = String(extra['Hires upscale'] !== undefined && Number.isFinite(scale) ? scale : DEFAULT_HIRES_SCALE);
  }
  const steps = Number(extra['Hires steps']);
  if (Number.isInteger(steps) && steps > 0) next.steps = String(steps);
  const strength = Number(extra['Denoising strength']);
  next.denoising_strength = String(
    extra['Denoising strength'] !== undefined && Number.isFinite(strength) ? strength : DEFAULT_HIRES_STRENGTH,
  );
  const written = extra['Hires upscaler']?.trim();
  let unknownUpscaler: string | undefined;
  if (!written) next.upscaler = LATENT_UPSCALERS[0]!.name;
  else {
    const named =
      latentUpscaler(written)?.name ?? upscalers.find((u) => u.name.toLowerCase() === written.toLowerCase())?.name;
    next.upscaler = named ?? LATENT_UPSCALERS[0]!.name;
    if (!named) unknownUpscaler = written;
  }
  return unknownUpscaler ? { hires: next, unknownUpscaler } : { hires: next };
}
