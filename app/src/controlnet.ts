// ControlNet units: what a person sets per unit, the `controlnets` array of the
// request they become, and the `POST /v1/preprocess` body of a unit's preview.
// Model names come from /v1/info's `controlnets`, preprocessor names from its
// `preprocessors` (the contract's `PreprocessorName`): none is listed here.

import type {
  ControlNetUnit,
  PreprocessParams,
  PreprocessRequest,
  PreprocessorName,
  WorkerInfo,
} from '@sd-worker/sdk';
import type { FieldErrors } from './form.js';
import type { LoadedImage } from './lib/images.js';

/** Most units in one request (the contract's `MAX_CONTROLNET_UNITS`, sdk-wasm/src/control.rs). */
export const MAX_UNITS = 4;
/** Largest `conditioning_scale` (the contract's `MAX_CONDITIONING_SCALE`). */
export const MAX_CONDITIONING_SCALE = 2;

/** Why a unit's start and end are refused (shown while the sliders cross, and on Generate). */
export const ORDER_ERROR = 'End must come after start.';

export type ThresholdKey = 'low_threshold' | 'high_threshold' | 'threshold';

/**
 * The threshold fields each preprocessor reads, with their defaults (the
 * contract's `DEFAULT_CANNY_LOW/HIGH`, `DEFAULT_SCRIBBLE_THRESHOLD`); the others read none.
 */
export const THRESHOLDS: Partial<Record<PreprocessorName, readonly { key: ThresholdKey; label: string; default: number }[]>> = {
  canny: [
    { key: 'low_threshold', label: 'Low threshold', default: 100 },
    { key: 'high_threshold', label: 'High threshold', default: 200 },
  ],
  scribble: [{ key: 'threshold', label: 'Threshold', default: 128 }],
};

/** One unit as the form keeps it: numbers as typed (strings), the image as a data: URL. */
export interface ControlUnit {
  /** Stable key of the unit (React key, ids of its controls stay by index). */
  key: string;
  model: string;
  preprocessor: PreprocessorName;
  low_threshold: string;
  high_threshold: string;
  threshold: string;
  conditioning_scale: string;
  guidance_start: string;
  guidance_end: string;
  image: LoadedImage | null;
}

/** ControlNets of the worker (none from a worker older than ControlNet support). */
export function controlnetNames(info: WorkerInfo): string[] {
  return (info.controlnets ?? []).map((c) => c.name);
}

export function preprocessorNames(info: WorkerInfo): PreprocessorName[] {
  return info.preprocessors ?? [];
}

function defaultPreprocessor(info: WorkerInfo): PreprocessorName {
  const offered = preprocessorNames(info);
  return offered.includes('none') ? 'none' : (offered[0] ?? 'none');
}

let counter = 0;
function newKey(): string {
  counter += 1;
  return `unit-${Date.now().toString(36)}-${counter}`;
}

export function newUnit(info: WorkerInfo): ControlUnit {
  return {
    key: newKey(),
    model: controlnetNames(info)[0] ?? '',
    preprocessor: defaultPreprocessor(info),
    low_threshold: String(THRESHOLDS.canny![0]!.default),
    high_threshold: String(THRESHOLDS.canny![1]!.default),
    threshold: String(THRESHOLDS.scribble![0]!.default),
    conditioning_scale: '1',
    guidance_start: '0',
    guidance_end: '1',
    image: null,
  };
}

/** Stored units over a fresh unit each, fitted to what this worker offers (at most `MAX_UNITS`). */
export function restoreUnits(info: WorkerInfo, saved: Partial<ControlUnit>[] | null | undefined): ControlUnit[] {
  if (controlnetNames(info).length === 0 || !Array.isArray(saved)) return [];
  return saved.slice(0, MAX_UNITS).map((s) => {
    const unit = { ...newUnit(info), ...s };
    if (!controlnetNames(info).includes(unit.model)) unit.model = controlnetNames(info)[0]!;
    if (!preprocessorNames(info).includes(unit.preprocessor)) unit.preprocessor = defaultPreprocessor(info);
    return unit;
  });
}

/** The name of a unit's field, as the form's ids and errors use it: `controlnets[0].guidance_end`. */
export function unitField(index: number, key: string): string {
  return `controlnets[${index}].${key}`;
}

/** A field the worker named in a unit (`controlnets[1].image`, `controlnets.1.image`) in `unitField`'s form. */
export function normalizeUnitField(field: string): string {
  return field.replace(/^controlnets\.(\d+)(?=\.|$)/, 'controlnets[$1]');
}

/** `errors` without those of unit `index` (of every unit when null): it changed, or units moved. */
export function withoutUnitErrors(errors: FieldErrors, index: number | null): FieldErrors {
  const prefix = index === null ? 'controlnets' : `${unitField(index, '')}`;
  return Object.fromEntries(Object.entries(errors).filter(([k]) => !k.startsWith(prefix)));
}

function parseIn(
  value: string,
  field: string,
  errors: FieldErrors,
  { min, max, integer }: { min: number; max: number; integer: boolean },
): number | undefined {
  const v = value.trim();
  const n = Number(v);
  if (v === '' || !Number.isFinite(n) || (integer && !Number.isInteger(n))) {
    errors[field] = integer ? 'Enter a whole number.' : 'Enter a number.';
    return undefined;
  }
  if (n < min || n > max) {
    errors[field] = `Enter a number from ${min} to ${max}.`;
    return undefined;
  }
  return n;
}

/** The preprocessor and the thresholds it reads (the others are not sent). */
function preprocessParams(unit: ControlUnit, index: number, errors: FieldErrors): PreprocessParams {
  const params: PreprocessParams = {};
  if (unit.preprocessor !== 'none') params.preprocessor = unit.preprocessor;
  for (const t of THRESHOLDS[unit.preprocessor] ?? []) {
    const n = parseIn(unit[t.key], unitField(index, t.key), errors, { min: 0, max: 255, integer: true });
    if (n !== undefined) params[t.key] = n;
  }
  if (
    params.low_threshold !== undefined &&
    params.high_threshold !== undefined &&
    params.high_threshold < params.low_threshold
  ) {
    errors[unitField(index, 'high_threshold')] = 'The high threshold must be at least the low one.';
  }
  return params;
}

/** The `POST /v1/preprocess` body of a unit's preview, or its errors (no image, a bad threshold). */
export function previewRequest(unit: ControlUnit, index: number): { request: PreprocessRequest | null; errors: FieldErrors } {
  const errors: FieldErrors = {};
  const params = preprocessParams(unit, index, errors);
  if (!unit.image) errors[unitField(index, 'image')] = 'Choose a control image first.';
  if (Object.keys(errors).length > 0 || !unit.image) return { request: null, errors };
  return { request: { image: unit.image.url, ...params }, errors };
}

/**
 * The request's `controlnets` (undefined without units), or the errors of the
 * units: no image or model, a number out of its range, start not before end.
 */
export function buildControlNets(units: ControlUnit[]): { controlnets?: ControlNetUnit[]; errors: FieldErrors } {
  const errors: FieldErrors = {};
  if (units.length > MAX_UNITS) errors.controlnets = `At most ${MAX_UNITS} ControlNet units.`;
  const controlnets = units.map((unit, i): ControlNetUnit => {
    if (!unit.image) errors[unitField(i, 'image')] = 'Choose a control image, or remove the unit.';
    if (!unit.model) errors[unitField(i, 'model')] = 'Choose a ControlNet.';
    const scale = parseIn(unit.conditioning_scale, unitField(i, 'conditioning_scale'), errors, {
      min: 0,
      max: MAX_CONDITIONING_SCALE,
      integer: false,
    });
    const start = parseIn(unit.guidance_start, unitField(i, 'guidance_start'), errors, { min: 0, max: 1, integer: false });
    const end = parseIn(unit.guidance_end, unitField(i, 'guidance_end'), errors, { min: 0, max: 1, integer: false });
    if (start !== undefined && end !== undefined && start >= end) {
      errors[unitField(i, 'guidance_end')] = ORDER_ERROR;
    }
    const params = preprocessParams(unit, i, errors);
    return {
      model: unit.model,
      image: unit.image?.url ?? '',
      ...(scale !== undefined && { conditioning_scale: scale }),
      ...(start !== undefined && { guidance_start: start }),
      ...(end !== undefined && { guidance_end: end }),
      ...params,
    };
  });
  return controlnets.length > 0 ? { controlnets, errors } : { errors };
}
