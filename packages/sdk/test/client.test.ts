import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createClient, isSdError, SdError, type Client, type StreamEvent } from '../src/index.js';
import { decodePng } from './worker.js';

let client: Client;

beforeAll(async () => {
  client = await createClient({ baseUrl: inject('workerUrl') });
});
afterAll(() => client.close());

/** A job long enough to act on while it runs (about ten seconds on the debug build). */
const LONG_JOB = { operation: 'image_generation', prompt: 'a long one', steps: 150, width: 128, height: 128 } as const;

describe('createClient', () => {
  it('initialises the wasm once, however many clients are created at once', async () => {
    const clients = await Promise.all([1, 2, 3].map(() => createClient({ baseUrl: inject('workerUrl') })));
    for (const c of clients) {
      expect(await c.health()).toEqual({ status: 'ok' });
      c.close();
    }
  });

  it('reads the worker info', async () => {
    const info = await client.info();
    expect(info.implementation).toBe('sd-worker');
    expect(info.limits.max_seed).toBe(Number.MAX_SAFE_INTEGER);
  });

  it('rejects calls on a closed client with an SdError', async () => {
    const c = await createClient({ baseUrl: inject('workerUrl') });
    c.close();
    await expect(c.health()).rejects.toBeInstanceOf(SdError);
  });
});

describe('submit and stream', () => {
  it('streams a job to its end: one progress event per step, then complete with a decodable PNG', async () => {
    const steps = 6;
    const accepted = await client.submit({ operation: 'image_generation', prompt: 'a red circle', steps, seed: 42 });
    expect(accepted.job_id).toMatch(/^job-/);
    expect(accepted.seed).toBe(42);

    const events: StreamEvent[] = [];
    const ids: number[] = [];
    const result = await client.stream(accepted.job_id, (event, id) => {
      events.push(event);
      ids.push(id);
    });

    const progress = events.filter((e) => e.type === 'progress');
    expect(progress.map((e) => e.step)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(events.find((e) => e.type === 'started')).toMatchObject({ total: steps });
    expect(ids).toEqual(ids.map((_, i) => i + 1));
    expect(result.lastEventId).toBe(ids.at(-1));
    expect(result.terminal.type).toBe('complete');
    expect(events.at(-1)).toEqual(result.terminal);
    if (result.terminal.type !== 'complete') throw new Error('not complete');
    const [image] = result.terminal.images;
    expect(image).toMatchObject({ format: 'png', seed: 42, width: 64, height: 64 });
    const png = decodePng(image!.image);
    expect(png).toMatchObject({ width: 64, height: 64 });
    expect(png.textKeys).toContain('parameters');

    const snapshot = await client.status(accepted.job_id);
    expect(snapshot.status).toBe('completed');
    expect(snapshot.result?.images[0]?.image).toBe(image!.image);
  });

  it('keeps seeds up to 2^53 - 1 exact', async () => {
    const seed = Number.MAX_SAFE_INTEGER - 1;
    const images = await client.generate({ operation: 'image_generation', prompt: 'big seed', steps: 1, seed, num_images: 2 });
    expect(images.map((i) => i.seed)).toEqual([seed, seed + 1]);
  });
});

describe('generate', () => {
  it('resolves the images and calls onProgress once per step', async () => {
    const steps = 5;
    const accepted: string[] = [];
    const progress: unknown[] = [];
    const images = await client.generate(
      { operation: 'image_generation', prompt: 'a blue square', steps, seed: 7, num_images: 2 },
      { onAccepted: (a) => accepted.push(a.job_id), onProgress: (p) => progress.push(p) },
    );
    expect(accepted).toHaveLength(1);
    expect(progress).toHaveLength(steps);
    expect(images.map((i) => i.seed)).toEqual([7, 8]);
    for (const image of images) expect(decodePng(image.image)).toMatchObject({ width: 64, height: 64 });
  });

  it('rejects with SdError code cancelled when the job is cancelled mid-run', async () => {
    let jobId = '';
    let cancelling: Promise<unknown> | undefined;
    const run = client.generate(LONG_JOB, {
      onAccepted: (a) => {
        jobId = a.job_id;
      },
      onProgress: () => {
        cancelling ??= client.cancel(jobId);
      },
    });
    const error = await run.then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(SdError);
    expect(isSdError(error)).toBe(true);
    expect(error).toMatchObject({ code: 'cancelled' });
    expect(await cancelling).toMatchObject({ job_id: jobId, cancel_requested: true });
    const snapshot = await client.status(jobId);
    expect(snapshot.status).toBe('cancelled');
    expect(snapshot.step).toBeLessThan(150);
  });

  it('aborting detaches without cancelling the job', async () => {
    const controller = new AbortController();
    let jobId = '';
    const run = client.generate(
      { operation: 'image_generation', prompt: 'detach me', steps: 20 },
      {
        signal: controller.signal,
        onAccepted: (a) => {
          jobId = a.job_id;
        },
        onProgress: () => controller.abort(),
      },
    );
    await expect(run).rejects.toMatchObject({ name: 'SdError', code: 'aborted' });
    const result = await client.stream(jobId, () => {});
    expect(result.terminal.type).toBe('complete');
  });
});

describe('resume', () => {
  it('reconnecting mid-job with lastEventId delivers every event exactly once', async () => {
    const accepted = await client.submit({ ...LONG_JOB, steps: 40, width: 64, height: 64 });
    const first: number[] = [];
    const controller = new AbortController();
    const detached = await client
      .stream(
        accepted.job_id,
        (event, id) => {
          first.push(id);
          if (event.type === 'progress' && event.step === 3) controller.abort();
        },
        { signal: controller.signal },
      )
      .then(
        () => null,
        (e: unknown) => e,
      );
    expect(detached).toBeInstanceOf(SdError);
    expect(detached).toMatchObject({ code: 'aborted' });
    const lastEventId = first.at(-1)!;

    const second: number[] = [];
    const events: StreamEvent[] = [];
    const result = await client.stream(
      accepted.job_id,
      (event, id) => {
        second.push(id);
        events.push(event);
      },
      { lastEventId },
    );
    expect(result.terminal.type).toBe('complete');
    expect(second[0]).toBe(lastEventId + 1);
    const all = [...first, ...second];
    expect(all).toEqual(all.map((_, i) => i + 1));
    expect(events.filter((e) => e.type === 'progress').length + first.length).toBeGreaterThan(40);
  });
});

describe('errors', () => {
  it('a 422 surfaces as SdError { status 422, code invalid_value, field steps }', async () => {
    const error = await client.submit({ operation: 'image_generation', prompt: 'x', steps: 0 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SdError);
    expect(error).toMatchObject({ status: 422, code: 'invalid_value', field: 'steps' });
  });

  it('an unknown job is 404 not_found', async () => {
    await expect(client.status('job-00000000000000000000000000000000')).rejects.toMatchObject({
      status: 404,
      code: 'not_found',
    });
  });

  it('a wrong token is SdError { status 401, code unauthorized }; the right one works', async () => {
    const wrong = await createClient({ baseUrl: inject('authWorkerUrl'), token: 'wrong-token' });
    const error = await wrong.info().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SdError);
    expect(error).toMatchObject({ status: 401, code: 'unauthorized' });
    wrong.close();

    const right = await createClient({ baseUrl: inject('authWorkerUrl'), token: inject('authToken') });
    const images = await right.generate({ operation: 'image_generation', prompt: 'with a token', steps: 2 });
    expect(images).toHaveLength(1);
    right.close();
  });

  it('an unreachable worker rejects with code network', async () => {
    const gone = await createClient({ baseUrl: 'http://127.0.0.1:9', maxRetries: 0 });
    await expect(gone.health()).rejects.toMatchObject({ name: 'SdError', code: 'network' });
    gone.close();
  });
});
