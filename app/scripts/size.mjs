// Prints the studio's JavaScript size after gzip and fails over the budget.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const BUDGET = 250 * 1000; // bytes of JavaScript after gzip
const dist = fileURLToPath(new URL('../dist/assets', import.meta.url));

let total = 0;
const lines = [];
for (const name of readdirSync(dist).sort()) {
  if (!name.endsWith('.js')) continue;
  const raw = readFileSync(join(dist, name));
  const gz = gzipSync(raw, { level: 9 }).length;
  total += gz;
  lines.push(`  ${name}: ${(raw.length / 1000).toFixed(1)} kB, ${(gz / 1000).toFixed(1)} kB gzip`);
}
const wasm = readdirSync(dist).filter((n) => n.endsWith('.wasm'));
for (const name of wasm) {
  const gz = gzipSync(readFileSync(join(dist, name)), { level: 9 }).length;
  lines.push(`  ${name}: ${(gz / 1000).toFixed(1)} kB gzip (WebAssembly, not counted)`);
}
console.log(lines.join('\n'));
const summary = `studio JavaScript: ${(total / 1000).toFixed(1)} kB after gzip (budget ${BUDGET / 1000} kB)`;
if (total > BUDGET) {
  console.error(`${summary}: OVER BUDGET`);
  process.exit(1);
}
console.log(summary);
