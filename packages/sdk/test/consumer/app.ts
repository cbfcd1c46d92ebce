// An app's view of the built package, type-checked as the Vite React
// TypeScript template does (`lib: ES2023`) but with `skipLibCheck: false`,
// so the package's own declarations are checked too (test/public-types.test.ts).
import { createClient, type JobRequest, type StreamEvent, type WorkerInfo } from '../../dist/index.js';
// @ts-expect-error wasm-bindgen's internals are not part of the public types.
import type { InitOutput } from '../../dist/index.js';

export const request: JobRequest = { operation: 'image_generation', prompt: 'a red circle', steps: 4 };

export async function firstEvent(baseUrl: string): Promise<StreamEvent['type'] | WorkerInfo['version']> {
  const client = await createClient({ baseUrl });
  const info = await client.info();
  return info.version;
}

export type Internal = InitOutput;
