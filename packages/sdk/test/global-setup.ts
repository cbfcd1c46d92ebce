// Vitest globalSetup shared by the packages' tests: starts the real worker on a
// freshly generated tiny model (random weights, milliseconds per step), twice:
// once open (CORS `*`), once with `--api-token test-token`. Tests read the URLs
// with `inject('workerUrl')` / `inject('authWorkerUrl')`. The open one also has
// a LoRA (`generate-lora`, named `inject('loraName')`) in its `--lora-dir` and an
// embedding (`generate-embedding`, `inject('embeddingName')`) in its
// `--embeddings-dir`; the other has neither.
//
// The binary: $SD_WORKER_BIN, else the first of $CARGO_TARGET_DIR/debug/sd-worker,
// the repository's target/debug/sd-worker and ~/.cache/sd-worker/target/debug/sd-worker
// that exists. Build it first (`cargo build -p sd-worker`).

import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { TestProject } from 'vitest/node';

import type {} from './provided-context.js';

const TOKEN = 'test-token';
const LORA = 'tiny-style';
const EMBEDDING = 'shapey';
const REPO_ROOT = resolve(fileURLToPath(new URL('../../..', import.meta.url)));

export function workerBinary(): string {
  const fromEnv = process.env.SD_WORKER_BIN;
  if (fromEnv) return fromEnv;
  const targets = [
    process.env.CARGO_TARGET_DIR,
    join(REPO_ROOT, 'target'),
    // Where .ci/run puts cargo's target directory when none is set.
    join(homedir(), '.cache', 'sd-worker', 'target'),
  ].filter((t): t is string => Boolean(t));
  const bins = targets.map((t) => join(t, 'debug', 'sd-worker'));
  return bins.find((b) => existsSync(b)) ?? bins[0]!;
}

interface Running {
  url: string;
  child: ChildProcess;
}

async function startWorker(bin: string, modelDir: string, extra: string[]): Promise<Running> {
  const child = spawn(bin, ['--port', '0', '--model-path', modelDir, '--cors-origin', '*', ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' },
  });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4000);
  });
  const url = await new Promise<string>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`sd-worker did not print its address in 30 s\n${stderr}`)), 30_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      fail(new Error(`sd-worker exited with ${code} before listening\n${stderr}`));
    });
    const lines = createInterface({ input: child.stdout! });
    lines.once('line', (line) => {
      clearTimeout(timer);
      const m = /^sd-worker listening on (http:\/\/\S+)$/.exec(line.trim());
      if (m) ok(m[1]!);
      else fail(new Error(`unexpected first line from sd-worker: ${line}`));
    });
  });
  child.stdout?.resume();
  await waitReady(url, () => stderr);
  return { url, child };
}

async function waitReady(url: string, stderr: () => string): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    try {
      const r = await fetch(`${url}/ready`);
      if (r.status === 200) return;
    } catch {
      // not accepting yet
    }
    await new Promise((f) => setTimeout(f, 50));
  }
  throw new Error(`sd-worker at ${url} not ready in 60 s\n${stderr()}`);
}

async function stop(worker: Running | undefined): Promise<void> {
  const child = worker?.child;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((f) => child.once('exit', () => f()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const bin = workerBinary();
  if (!existsSync(bin)) {
    throw new Error(
      `sd-worker binary not found at ${bin}: build it (cargo build -p sd-worker) or set SD_WORKER_BIN`,
    );
  }
  const modelDir = await mkdtemp(join(tmpdir(), 'sd-worker-tiny-'));
  let open: Running | undefined;
  let auth: Running | undefined;
  const teardown = async () => {
    await Promise.all([stop(open), stop(auth)]);
    await rm(modelDir, { recursive: true, force: true });
  };
  try {
    const run = promisify(execFile);
    await run(bin, ['generate-model', '--shape', 'tiny', '--out', join(modelDir, 'model')]);
    const loraDir = join(modelDir, 'loras');
    const embeddingsDir = join(modelDir, 'embeddings');
    await Promise.all([mkdir(loraDir), mkdir(embeddingsDir)]);
    await run(bin, [
      'generate-lora',
      '--model-path',
      join(modelDir, 'model'),
      '--format',
      'kohya',
      '--seed',
      '1',
      '--out',
      join(loraDir, `${LORA}.safetensors`),
    ]);
    // 32: the tiny model's text-encoder width.
    const embedding = join(embeddingsDir, `${EMBEDDING}.safetensors`);
    await run(bin, ['generate-embedding', '--dims', '32', '--seed', '3', '--out', embedding]);
    const model = join(modelDir, 'model');
    [open, auth] = await Promise.all([
      startWorker(bin, model, ['--lora-dir', loraDir, '--embeddings-dir', embeddingsDir]),
      startWorker(bin, model, ['--api-token', TOKEN]),
    ]);
  } catch (e) {
    await teardown();
    throw e;
  }
  project.provide('workerUrl', open.url);
  project.provide('authWorkerUrl', auth.url);
  project.provide('authToken', TOKEN);
  project.provide('loraName', LORA);
  project.provide('embeddingName', EMBEDDING);
  return teardown;
}
