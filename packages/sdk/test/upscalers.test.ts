// `Client.upscalers` (`GET /v1/upscalers`) against the real worker, and the
// latent upscalers of the hires fix (generated from the Rust contract).

import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createClient, LATENT_UPSCALERS, latentUpscaler, type Client } from '../src/index.js';

let client: Client;

beforeAll(async () => {
  client = await createClient({ baseUrl: inject('workerUrl') });
});
afterAll(() => {
  client.close();
});

describe('upscalers', () => {
  it('lists the built-in resamplers first, with their labels', async () => {
    const upscalers = await client.upscalers();
    expect(upscalers.slice(0, 2)).toEqual([
      { name: 'lanczos', kind: 'builtin', label: 'Lanczos (resampling)' },
      { name: 'nearest', kind: 'builtin', label: 'Nearest neighbour (resampling)' },
    ]);
  });

  it('names the latent upscalers by wire name or A1111 name, the default first', () => {
    expect(LATENT_UPSCALERS[0]!.name).toBe('latent');
    expect(latentUpscaler('Latent (nearest)')?.name).toBe('latent-nearest');
    expect(latentUpscaler('LATENT-BICUBIC')?.a1111).toBe('Latent (bicubic)');
    expect(latentUpscaler('lanczos')).toBeUndefined();
  });
});
