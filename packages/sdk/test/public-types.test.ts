// The package's public types: exactly the contract's types of the generated
// module (wasm-bindgen's internals left out), and declarations that an app
// type-checks with `skipLibCheck: false` and the Vite template's `lib`.

import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const here = dirname(fileURLToPath(import.meta.url));
const pkg = join(here, '..');
/** wasm-bindgen's own exports, and `SdError` (a class of src/errors.ts). */
const INTERNAL = new Set(['InitOutput', 'InitInput', 'SyncInitInput', 'SdClient', 'initSync', 'SdError']);

describe('public types', () => {
  it('are every contract type of the generated module, and nothing of its internals', () => {
    const generated = readFileSync(join(pkg, 'wasm/sd_worker_sdk.d.ts'), 'utf8');
    const declared = [...generated.matchAll(/^export (?:declare )?(?:type|interface|class|function) (\w+)/gm)]
      .map((m) => m[1]!)
      .filter((name) => !INTERNAL.has(name));
    const index = readFileSync(join(pkg, 'src/index.ts'), 'utf8');
    const block = /export type \{([^}]*)\} from '\.\.\/wasm\/sd_worker_sdk\.js'/.exec(index)?.[1] ?? '';
    const exported = block
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    expect([...new Set(exported)].sort()).toEqual([...new Set(declared)].sort());
    expect(generated).not.toContain('[Symbol.dispose]');
  });

  it('type-check in an app with skipLibCheck false and lib ES2023', () => {
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
    const run = () =>
      execFileSync(process.execPath, [tsc, '-p', join(here, 'consumer/tsconfig.json')], { encoding: 'utf8' });
    expect(run).not.toThrow();
  });
});
