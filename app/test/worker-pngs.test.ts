// Every scheduler's PNG, as the worker writes it (worker-pngs.ts is generated
// by the worker's encoder, test `studio_png_fixture_is_current`), read back by
// the studio into the request it came from.

import { SCHEDULERS, type SchedulerName, type WorkerInfo } from '@sd-worker/sdk';
import { describe, expect, it } from 'vitest';
import { buildRequest, defaultForm, formFromParsed, MODE_OF } from '../src/form.js';
import { parseA1111 } from '../src/lib/a1111.js';
import { readPngParameters } from '../src/lib/png-text.js';
import { INFO } from './fixtures.js';
import { WORKER_PNGS as PNGS } from './worker-pngs.js';

/** /v1/info of a model of the family: its schedulers, and a default that is not `not` where it can be. */
function infoFor(flowMatching: boolean, not: SchedulerName): WorkerInfo {
  const schedulers = SCHEDULERS.filter((s) => s.flow_matching === flowMatching).map((s) => s.name);
  const scheduler = schedulers.find((s) => s !== not) ?? schedulers[0]!;
  return { ...INFO, schedulers, defaults: { ...INFO.defaults, scheduler } };
}

describe('a PNG the worker wrote', () => {
  it('exists for every scheduler of the contract, with and without a strength', () => {
    expect(new Set(PNGS.map((p) => p.scheduler))).toEqual(new Set(SCHEDULERS.map((s) => s.name)));
    expect(PNGS.filter((p) => p.strength !== null)).toHaveLength(SCHEDULERS.length);
  });

  it.each(PNGS.map((p) => [`${p.scheduler}, ${p.operation}`, p] as const))(
    '%s: fills the form back into its request',
    async (_, entry) => {
      const text = await readPngParameters(new Uint8Array(Buffer.from(entry.png, 'base64')));
      expect(text).not.toBeNull();
      const info = infoFor(entry.flow_matching, entry.scheduler);
      const parsed = parseA1111(text!, info.schedulers)!;
      expect(parsed.scheduler).toBe(entry.scheduler);
      expect(parsed.strength).toBe(entry.strength ?? undefined);

      const mode = MODE_OF[entry.operation]!;
      const { params, errors } = buildRequest(formFromParsed(defaultForm(info), parsed, info.schedulers), mode, null);
      expect(errors).toEqual({});
      expect(params).toMatchObject({
        operation: entry.operation,
        prompt: 'a red circle, on: blue',
        negative_prompt: 'blurry',
        steps: 12,
        guidance_scale: 6.5,
        seed: Number.MAX_SAFE_INTEGER,
        width: 48,
        height: 32,
        scheduler: entry.scheduler,
      });
      if (entry.strength !== null) expect(params.strength).toBe(entry.strength);
    },
  );
});
