// Loading the wasm module: once per page or process, whoever asks first.
//
// Node (and jsdom under Vitest) reads the .wasm bytes from disk next to this
// package; browsers let wasm-bindgen's `init` fetch it. `new URL(literal,
// import.meta.url)` is the form bundlers (Vite, webpack 5, Rollup) recognise and
// copy the asset for; they also rewrite it for the page (Vitest's jsdom
// environment too), which is why Node does not use that form.

import init, { type InitInput } from '../wasm/sd_worker_sdk.js';

/** The .wasm file next to this module's package, for Node: a variable, so bundlers leave it alone. */
const WASM_FILE = '../wasm/sd_worker_sdk_bg.wasm';

function browserWasmUrl(): URL {
  return new URL('../wasm/sd_worker_sdk_bg.wasm', import.meta.url);
}

function isNode(): boolean {
  const p = (globalThis as { process?: { versions?: { node?: unknown } } }).process;
  return typeof p?.versions?.node === 'string';
}

let ready: Promise<void> | undefined;

/**
 * Initialises the wasm module. Idempotent and safe to call concurrently: every
 * caller awaits the same promise. `createClient` calls it; call it yourself only
 * to load the module from somewhere else (a CDN URL, bytes, a compiled module).
 * A failed load is forgotten, so the next call tries again.
 */
export function initWasm(input?: InitInput | Promise<InitInput>): Promise<void> {
  ready ??= load(input).catch((e: unknown) => {
    ready = undefined;
    throw e;
  });
  return ready;
}

async function load(input?: InitInput | Promise<InitInput>): Promise<void> {
  let source = input;
  if (source === undefined) {
    const local = new URL(WASM_FILE, import.meta.url);
    source = isNode() && local.protocol === 'file:' ? await readLocal(local) : browserWasmUrl();
  }
  await init({ module_or_path: source });
}

async function readLocal(url: URL): Promise<Uint8Array> {
  // A computed specifier keeps browser bundlers from trying to resolve `node:fs`.
  const specifier = 'node:fs/promises';
  const fs = (await import(/* @vite-ignore */ /* webpackIgnore: true */ specifier)) as {
    readFile(path: URL): Promise<Uint8Array>;
  };
  return fs.readFile(url);
}
