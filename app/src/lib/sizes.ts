// Size presets from the worker's limits: common aspect ratios at the model's
// native area, on the size multiple, within min/max size and max pixels.

import type { WorkerInfo } from '@sd-worker/sdk';

export interface SizePreset {
  label: string;
  width: number;
  height: number;
}

const RATIOS: [string, number, number][] = [
  ['Square', 1, 1],
  ['Portrait 3:4', 3, 4],
  ['Landscape 4:3', 4, 3],
  ['Portrait 2:3', 2, 3],
  ['Landscape 3:2', 3, 2],
  ['Tall 9:16', 9, 16],
  ['Wide 16:9', 16, 9],
];

export function fitSize(info: Pick<WorkerInfo, 'limits'>, width: number, height: number): [number, number] {
  const { size_multiple: m, min_size, max_size, max_pixels } = info.limits;
  const clamp = (v: number) => Math.min(Math.floor(max_size / m) * m, Math.max(Math.ceil(min_size / m) * m, v));
  let w = clamp(Math.round(width / m) * m);
  let h = clamp(Math.round(height / m) * m);
  while (w * h > max_pixels && (w > min_size || h > min_size)) {
    if (w >= h && w - m >= min_size) w -= m;
    else if (h - m >= min_size) h -= m;
    else break;
  }
  return [w, h];
}

export function sizePresets(info: Pick<WorkerInfo, 'limits' | 'model'>): SizePreset[] {
  const area = info.model.native_width * info.model.native_height;
  const out: SizePreset[] = [];
  const seen = new Set<string>();
  const add = (label: string, w: number, h: number) => {
    const [fw, fh] = fitSize(info, w, h);
    const key = `${fw}x${fh}`;
    if (seen.has(key)) return;
    seen.add(key);
    out.push({ label: `${label} (${fw}×${fh})`, width: fw, height: fh });
  };
  for (const [label, a, b] of RATIOS) {
    const w = Math.sqrt((area * a) / b);
    add(label, w, (w * b) / a);
  }
  // Larger, when the limits allow.
  const big = Math.sqrt(Math.min(info.limits.max_pixels, area * 4));
  if (big * big > area) add('Large square', big, big);
  return out;
}
