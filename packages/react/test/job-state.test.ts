// How stream events change a job's state: the pass of a hires or upscale job.

import { describe, expect, it } from 'vitest';
import { applyEvent, initialJobState } from '../src/job-state.js';

describe('applyEvent', () => {
  it('keeps the phase of progress events, and none for single-pass jobs', () => {
    const started = applyEvent(initialJobState('j'), { type: 'started', total: 6 });
    const base = applyEvent(started, { type: 'progress', step: 4, total: 6, percent: 66, eta_ms: 10, phase: 'base' });
    expect(base.progress).toEqual({ step: 4, total: 6, percent: 66, etaMs: 10, phase: 'base' });
    const hires = applyEvent(base, { type: 'progress', step: 5, total: 6, percent: 83, eta_ms: 5, phase: 'hires' });
    expect(hires.progress?.phase).toBe('hires');
    const plain = applyEvent(started, { type: 'progress', step: 1, total: 6, percent: 16, eta_ms: 50 });
    expect(plain.progress).toEqual({ step: 1, total: 6, percent: 16, etaMs: 50 });
  });
});
