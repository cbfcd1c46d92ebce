import { cleanup } from '@testing-library/react';
import { afterEach } from 'vitest';

// Vitest's jsdom environment replaces the global Uint8Array with jsdom's, while
// Node's fetch (which the tests use: jsdom has none) yields chunks of Node's own
// Uint8Array, so `chunk instanceof Uint8Array` fails in the wasm glue. Browsers
// have one realm; put Node's back. Buffer extends Node's Uint8Array.
globalThis.Uint8Array = Object.getPrototypeOf(Buffer.prototype).constructor as Uint8ArrayConstructor;

afterEach(() => {
  cleanup();
  sessionStorage.clear();
  localStorage.clear();
});
