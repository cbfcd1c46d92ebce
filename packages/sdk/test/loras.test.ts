// `Client.loras` and `Client.embeddings` (`GET /v1/loras`, `GET /v1/embeddings`)
// against the real worker, and a job with a LoRA: the `complete` event says how
// many of its tensors matched, a refused name is a typed SdError.

import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createClient, SdError, type Client, type StreamEvent } from '../src/index.js';

let client: Client;
let bare: Client;

beforeAll(async () => {
  client = await createClient({ baseUrl: inject('workerUrl') });
  bare = await createClient({ baseUrl: inject('authWorkerUrl'), token: inject('authToken') });
});
afterAll(() => {
  client.close();
  bare.close();
});

describe('loras and embeddings', () => {
  it('lists the LoRA of --lora-dir with its family, format, hash and trigger words', async () => {
    const loras = await client.loras();
    expect(loras).toHaveLength(1);
    const [lora] = loras;
    expect(lora).toMatchObject({ name: inject('loraName'), format: 'kohya' });
    expect(lora!.size_bytes).toBeGreaterThan(0);
    expect(lora!.hash).toMatch(/^[0-9a-f]{12}$/);
    expect(typeof lora!.family).toBe('string');
    expect(Array.isArray(lora!.trigger_words)).toBe(true);
    expect(typeof lora!.metadata).toBe('object');
  });

  it('lists the embedding of --embeddings-dir with its vectors and hash', async () => {
    const embeddings = await client.embeddings();
    expect(embeddings).toEqual([
      expect.objectContaining({ name: inject('embeddingName'), vectors: 2, hash: expect.stringMatching(/^[0-9a-f]{12}$/) }),
    ]);
  });

  it('both lists are empty on a worker without the folders', async () => {
    expect(await bare.loras()).toEqual([]);
    expect(await bare.embeddings()).toEqual([]);
  });

  it('a job with `loras` completes with the per-LoRA match counts', async () => {
    const name = inject('loraName');
    const { job_id } = await client.submit({
      operation: 'image_generation',
      prompt: `a red circle, ${inject('embeddingName')}`,
      steps: 2,
      seed: 5,
      loras: [{ name, weight: 0.8 }],
    });
    const events: StreamEvent[] = [];
    const end = await client.stream(job_id, (e) => events.push(e));
    expect(end.terminal.type).toBe('complete');
    if (end.terminal.type !== 'complete') throw new Error('not complete');
    const [applied] = end.terminal.loras ?? [];
    expect(applied).toMatchObject({ name, unet_weight: 0.8, text_encoder_weight: 0.8 });
    expect(applied!.tensors).toBeGreaterThan(0);
    expect(applied!.matched_tensors).toBe(applied!.tensors);
    expect(events.filter((e) => e.type === 'warning' && e.code.startsWith('lora_'))).toEqual([]);
  });

  it('an unknown LoRA is SdError { status 422, code invalid_value, field loras[0].name }', async () => {
    const error = await client
      .submit({ operation: 'image_generation', prompt: 'x', steps: 1, loras: [{ name: 'no-such-lora' }] })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SdError);
    expect(error).toMatchObject({ status: 422, code: 'invalid_value' });
    expect((error as SdError).field).toMatch(/^loras(\[0\]|\.0)\.name$/);
  });
});
