// Starts the real worker on the bundled default model, serving the built
// studio (app/dist) on an ephemeral loopback port; tests read its URL with
// inject('studioUrl'). Builds nothing: build the studio first (pnpm build), and
// the worker (cargo build -p sd-worker; $SD_WORKER_BIN points at it).

import { mkdir, rm } from 'node:fs/promises';
import type { TestProject } from 'vitest/node';
import { SCREENSHOTS } from './paths.js';
import { startWorker } from './worker.js';

declare module 'vitest' {
  export interface ProvidedContext {
    studioUrl: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  await rm(SCREENSHOTS, { recursive: true, force: true });
  await mkdir(SCREENSHOTS, { recursive: true });
  const worker = await startWorker();
  try {
    await worker.ready();
  } catch (e) {
    await worker.stop();
    throw e;
  }
  project.provide('studioUrl', worker.url);
  return worker.stop;
}
