// `Client.preprocess` (`POST /v1/preprocess`) against the real worker: the
// control map comes back as a PNG Blob, a refused field as a typed SdError.

import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createClient, SdError, type Client, type PreprocessorName } from '../src/index.js';
import { decodePng } from './worker.js';

let client: Client;
/** A picture of the worker's own (64x64 on the tiny model) to take maps of. */
let picture: string;

beforeAll(async () => {
  client = await createClient({ baseUrl: inject('workerUrl') });
  const [image] = await client.generate({ operation: 'image_generation', prompt: 'a red circle', steps: 2, seed: 3 });
  picture = image!.image;
});
afterAll(() => client.close());

async function base64(blob: Blob): Promise<string> {
  return Buffer.from(await blob.arrayBuffer()).toString('base64');
}

describe('preprocess', () => {
  it('answers the canny map of an image as a PNG Blob of the image’s size', async () => {
    const map = await client.preprocess({ image: picture, preprocessor: 'canny', low_threshold: 50, high_threshold: 150 });
    expect(map).toBeInstanceOf(Blob);
    expect(map.type).toBe('image/png');
    expect(decodePng(await base64(map))).toMatchObject({ width: 64, height: 64 });
  });

  it('takes a data: URL, and every preprocessor /v1/info lists', async () => {
    const info = await client.info();
    expect(info.preprocessors).toContain('canny');
    const dataUrl = `data:image/png;base64,${picture}`;
    // depth needs its estimator's weights, which the tiny worker may not have: the others always work.
    const local = info.preprocessors.filter((p: PreprocessorName) => p !== 'depth');
    for (const preprocessor of local) {
      const map = await client.preprocess({ image: dataUrl, preprocessor });
      expect(map.type, preprocessor).toBe('image/png');
      expect(decodePng(await base64(map)), preprocessor).toMatchObject({ width: 64, height: 64 });
    }
  });

  it('the same request gives the same bytes', async () => {
    const request = { image: picture, preprocessor: 'scribble', threshold: 100 } as const;
    const [a, b] = await Promise.all([client.preprocess(request), client.preprocess(request)]);
    expect(await base64(a)).toBe(await base64(b));
  });

  it('a threshold out of range is SdError { status 422, code invalid_value, field low_threshold }', async () => {
    const error = await client
      .preprocess({ image: picture, preprocessor: 'canny', low_threshold: 256 })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SdError);
    expect(error).toMatchObject({ status: 422, code: 'invalid_value', field: 'low_threshold' });
  });

  it('an unknown preprocessor is a 422 naming the field', async () => {
    const error = await client
      .preprocess({ image: picture, preprocessor: 'sobel' as PreprocessorName })
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ name: 'SdError', status: 422, code: 'invalid_value', field: 'preprocessor' });
  });

  it('an image that is not one is a 400 invalid_image; a request that is not an object never leaves', async () => {
    await expect(client.preprocess({ image: 'bm90IGFuIGltYWdl', preprocessor: 'canny' })).rejects.toMatchObject({
      status: 400,
      code: 'invalid_image',
      field: 'image',
    });
    await expect(client.preprocess('canny' as never)).rejects.toMatchObject({ status: 0, code: 'invalid_request' });
  });

  it('is aborted by its signal', async () => {
    const controller = new AbortController();
    controller.abort();
    await expect(
      client.preprocess({ image: picture, preprocessor: 'canny' }, { signal: controller.signal }),
    ).rejects.toMatchObject({ name: 'SdError', code: 'aborted' });
  });

  it('sends the token: 401 without it, the map with it', async () => {
    const anonymous = await createClient({ baseUrl: inject('authWorkerUrl') });
    await expect(anonymous.preprocess({ image: picture, preprocessor: 'invert' })).rejects.toMatchObject({
      status: 401,
      code: 'unauthorized',
    });
    anonymous.close();
    const authed = await createClient({ baseUrl: inject('authWorkerUrl'), token: inject('authToken') });
    expect((await authed.preprocess({ image: picture, preprocessor: 'invert' })).type).toBe('image/png');
    authed.close();
  });
});
