// Starts the real worker binary on an ephemeral loopback port, serving the
// built studio (app/dist), and waits until its model is ready (or only until
// it listens, for tests of the loading state). Extra arguments pick another
// model or add ControlNets; `generateTinyControlNetWorker` makes both.

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createInterface } from 'node:readline';
import { workerBinary } from '../../packages/sdk/test/global-setup.js';
import { APP_DIR } from './paths.js';

export interface RunningWorker {
  url: string;
  /** Resolves once `/ready` answers 200. */
  ready: () => Promise<void>;
  stop: () => Promise<void>;
}

/** `env` is added to the worker's environment, `args` to its command line (after the studio's). */
export async function startWorker(env: Record<string, string> = {}, args: string[] = []): Promise<RunningWorker> {
  const bin = workerBinary();
  if (!existsSync(bin)) throw new Error(`sd-worker binary not found at ${bin}: cargo build -p sd-worker, or set SD_WORKER_BIN`);
  const dist = join(APP_DIR, 'dist');
  if (!existsSync(join(dist, 'index.html'))) throw new Error(`${dist}/index.html missing: build the studio first (pnpm build)`);

  const child: ChildProcess = spawn(bin, ['--host', '127.0.0.1', '--port', '0', '--studio-dir', dist, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn', ...env },
  });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4000);
  });
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((f) => child.once('exit', () => f()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  };
  try {
    const url = await new Promise<string>((ok, fail) => {
      const timer = setTimeout(() => fail(new Error(`sd-worker did not print its address in 60 s\n${stderr}`)), 60_000);
      child.once('exit', (code) => {
        clearTimeout(timer);
        fail(new Error(`sd-worker exited with ${code} before listening\n${stderr}`));
      });
      createInterface({ input: child.stdout! }).once('line', (line) => {
        clearTimeout(timer);
        const m = /^sd-worker listening on (http:\/\/\S+)$/.exec(line.trim());
        if (m) ok(m[1]!);
        else fail(new Error(`unexpected first line from sd-worker: ${line}`));
      });
    });
    child.stdout?.resume();
    const ready = async () => {
      const deadline = Date.now() + 120_000;
      while (Date.now() < deadline) {
        try {
          if ((await fetch(`${url}/ready`)).status === 200) return;
        } catch {
          // not accepting yet
        }
        await new Promise((f) => setTimeout(f, 100));
      }
      throw new Error(`sd-worker at ${url} not ready in 120 s\n${stderr}`);
    };
    return { url, ready, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

/**
 * Writes the tiny random-weight model (`generate-model --shape tiny`) and a
 * tiny ControlNet of its shape (`generate-controlnet --shape tiny --seed 1`)
 * into a temporary folder, and returns the worker arguments that load them.
 * The ControlNet's folder is `name`: /v1/info lists it under that name.
 */
export async function generateTinyControlNetWorker(name: string): Promise<{ dir: string; args: string[] }> {
  const bin = workerBinary();
  const dir = await mkdtemp(join(tmpdir(), 'sd-studio-e2e-controlnet-'));
  const model = join(dir, 'model');
  const controlnet = join(dir, name);
  const run = promisify(execFile);
  await run(bin, ['generate-model', '--shape', 'tiny', '--out', model]);
  await run(bin, ['generate-controlnet', '--shape', 'tiny', '--seed', '1', '--out', controlnet]);
  return { dir, args: ['--model-path', model, '--controlnet', controlnet] };
}

/** The LoRA that `generateTinyLoraWorker` gives trigger words, and the words. */
export const TRIGGER_WORDS = ['sks style', 'oil painting'];

/**
 * Rewrites a safetensors file's JSON header with `edit` (the tensor data
 * stays), padded with spaces to a multiple of 8 bytes as the writers do.
 */
async function editHeader(file: string, edit: (header: Record<string, unknown>) => Record<string, unknown>): Promise<void> {
  const bytes = await readFile(file);
  const size = Number(bytes.readBigUInt64LE(0));
  const header = edit(JSON.parse(bytes.subarray(8, 8 + size).toString('utf8')) as Record<string, unknown>);
  let text = JSON.stringify(header);
  text += ' '.repeat((8 - (Buffer.byteLength(text) % 8)) % 8);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(Buffer.byteLength(text)));
  await writeFile(file, Buffer.concat([length, Buffer.from(text), bytes.subarray(8 + size)]));
}

/** Adds kohya's `ss_tag_frequency` (caption tags and counts): `/v1/loras` lists the tags as trigger words. */
function addTagFrequency(file: string, tags: string[]): Promise<void> {
  const counts = Object.fromEntries(tags.map((t, i) => [t, tags.length - i]));
  return editHeader(file, (header) => ({
    ...header,
    __metadata__: {
      ...(header.__metadata__ as Record<string, string> | undefined),
      ss_tag_frequency: JSON.stringify({ '1_set': counts }),
    },
  }));
}

/** Renames the tensors of module `from` (a kohya prefix) to `to`: a module the model lacks stays unmatched. */
function renameModule(file: string, from: string, to: string): Promise<void> {
  return editHeader(file, (header) =>
    Object.fromEntries(Object.entries(header).map(([k, v]) => [k.startsWith(`${from}.`) ? to + k.slice(from.length) : k, v])),
  );
}

/**
 * The tiny model (`generate-model --shape tiny`) with a `--lora-dir` holding
 * `loras[0]`, `loras[1]` and `loras[2]` (kohya LoRAs of it, `generate-lora`;
 * the first with `TRIGGER_WORDS`, the third with one module renamed to a layer
 * the model lacks: its 2 tensors stay unmatched) and `xlName`, a LoRA of the tiny SDXL shape (another
 * family), and an `--embeddings-dir` holding `embedding` (2 vectors of the
 * tiny text encoder's width, `generate-embedding`). Returns the worker
 * arguments that load them.
 */
export async function generateTinyLoraWorker(
  loras: [string, string, string],
  xlName: string,
  embedding: string,
): Promise<{ dir: string; args: string[] }> {
  const bin = workerBinary();
  const dir = await mkdtemp(join(tmpdir(), 'sd-studio-e2e-lora-'));
  const model = join(dir, 'model');
  const xl = join(dir, 'xl-model');
  const loraDir = join(dir, 'loras');
  const embeddingsDir = join(dir, 'embeddings');
  await Promise.all([mkdir(loraDir), mkdir(embeddingsDir)]);
  const run = promisify(execFile);
  await run(bin, ['generate-model', '--shape', 'tiny', '--out', model]);
  await run(bin, ['generate-model', '--shape', 'tiny-sdxl', '--out', xl]);
  const lora = (modelDir: string, name: string, seed: number) =>
    run(bin, ['generate-lora', '--model-path', modelDir, '--seed', String(seed), '--out', join(loraDir, `${name}.safetensors`)]);
  await lora(model, loras[0], 1);
  await lora(model, loras[1], 2);
  await lora(model, loras[2], 5);
  await lora(xl, xlName, 3);
  await addTagFrequency(join(loraDir, `${loras[0]}.safetensors`), TRIGGER_WORDS);
  await renameModule(
    join(loraDir, `${loras[2]}.safetensors`),
    'lora_te_text_model_encoder_layers_0_mlp_fc1',
    'lora_te_text_model_encoder_layers_9_mlp_fc1',
  );
  // 32: the tiny model's text-encoder width.
  await run(bin, ['generate-embedding', '--dims', '32', '--seed', '4', '--out', join(embeddingsDir, `${embedding}.safetensors`)]);
  await rm(xl, { recursive: true, force: true });
  return { dir, args: ['--model-path', model, '--lora-dir', loraDir, '--embeddings-dir', embeddingsDir] };
}

/**
 * The tiny model (`generate-model --shape tiny`) with an `--upscaler-dir`
 * holding `upscaler` (a Real-ESRGAN x2 of `generate-upscaler --kind
 * esrgan-x2`) and, with `taesd`, a tiny TAESD of its latents (`generate-taesd
 * --scale-factor 4`: the tiny VAE's 4 pixels per latent). Returns the worker
 * arguments that load them.
 */
export async function generateTinyUpscaleWorker(upscaler: string, taesd: boolean): Promise<{ dir: string; args: string[] }> {
  const bin = workerBinary();
  const dir = await mkdtemp(join(tmpdir(), 'sd-studio-e2e-upscale-'));
  const model = join(dir, 'model');
  const upscalers = join(dir, 'upscalers');
  await mkdir(upscalers);
  const run = promisify(execFile);
  await run(bin, ['generate-model', '--shape', 'tiny', '--out', model]);
  await run(bin, ['generate-upscaler', '--kind', 'esrgan-x2', '--seed', '3', '--out', join(upscalers, `${upscaler}.safetensors`)]);
  const args = ['--model-path', model, '--upscaler-dir', upscalers];
  if (taesd) {
    const t = join(dir, 'taesd');
    await run(bin, ['generate-taesd', '--latent-channels', '4', '--scale-factor', '4', '--seed', '4', '--out', t]);
    args.push('--taesd', t);
  }
  return { dir, args };
}
