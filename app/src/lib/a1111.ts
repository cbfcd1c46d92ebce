// AUTOMATIC1111's `parameters` text, as the worker writes it into its PNGs:
//
//   a red circle on a blue background
//   Negative prompt: blurry
//   Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 64x64, Model: tiny-sd, Denoising strength: 0.75
//
// Sampler names map to schedulers through the contract's table (@sd-worker/sdk).

import { schedulerFromA1111, type SchedulerName } from '@sd-worker/sdk';

export interface ParsedParameters {
  prompt: string;
  negative_prompt: string;
  steps?: number;
  /** The scheduler `Sampler` (and `Schedule type`) name, when the contract has it (`euler_a` for "Euler a"). */
  scheduler?: SchedulerName;
  /** The sampler as written. */
  sampler?: string;
  guidance_scale?: number;
  seed?: number;
  width?: number;
  height?: number;
  model?: string;
  /** `Denoising strength` (image to image, inpainting). */
  strength?: number;
  /** Every `Key: value` pair of the last line. */
  extra: Record<string, string>;
}

// As A1111's own reader: `Key: value` or `Key: "quoted, value"`, separated by commas.
const PAIR = /\s*([\w ./+-]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)/g;

function parsePairs(line: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of line.matchAll(PAIR)) {
    const key = m[1]!.trim();
    let value = m[2]!.trim();
    if (value.startsWith('"') && value.endsWith('"')) {
      try {
        value = JSON.parse(value) as string;
      } catch {
        value = value.slice(1, -1);
      }
    }
    out[key] = value;
  }
  return out;
}

function num(v: string | undefined): number | undefined {
  if (v === undefined || v.trim() === '') return undefined;
  const n = Number(v);
  return Number.isFinite(n) ? n : undefined;
}

/**
 * Parses the text; null when it does not look like generation parameters.
 * `schedulers` (the worker's `/v1/info` list) picks between the schedulers one
 * sampler name may mean: "Euler" is flow Euler on a flow-matching model.
 */
export function parseA1111(text: string, schedulers?: readonly string[]): ParsedParameters | null {
  const lines = text.replace(/\r\n?/g, '\n').trimEnd().split('\n');
  let pairs: Record<string, string> = {};
  const last = lines[lines.length - 1] ?? '';
  if (lines.length > 0 && /(^|,\s*)Steps:\s*\d/.test(last)) {
    pairs = parsePairs(last);
    lines.pop();
  } else if (lines.length <= 1 && !text.trim()) {
    return null;
  }
  const prompt: string[] = [];
  const negative: string[] = [];
  let inNegative = false;
  for (const line of lines) {
    if (!inNegative && line.startsWith('Negative prompt:')) {
      inNegative = true;
      negative.push(line.slice('Negative prompt:'.length).trimStart());
    } else {
      (inNegative ? negative : prompt).push(line);
    }
  }
  const result: ParsedParameters = {
    prompt: prompt.join('\n').trim(),
    negative_prompt: negative.join('\n').trim(),
    extra: pairs,
  };
  if (!result.prompt && Object.keys(pairs).length === 0) return null;
  const steps = num(pairs.Steps);
  if (steps !== undefined) result.steps = steps;
  const cfg = num(pairs['CFG scale']);
  if (cfg !== undefined) result.guidance_scale = cfg;
  const seed = num(pairs.Seed);
  if (seed !== undefined) result.seed = seed;
  const strength = num(pairs['Denoising strength']);
  if (strength !== undefined) result.strength = strength;
  if (pairs.Model) result.model = pairs.Model;
  const size = /^(\d+)\s*x\s*(\d+)$/.exec(pairs.Size ?? '');
  if (size) {
    result.width = Number(size[1]);
    result.height = Number(size[2]);
  }
  if (pairs.Sampler) {
    result.sampler = pairs.Sampler;
    const known = schedulerFromA1111(pairs.Sampler, pairs['Schedule type'], schedulers);
    if (known) result.scheduler = known;
  }
  return result;
}
