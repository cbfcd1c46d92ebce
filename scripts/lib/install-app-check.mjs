// scripts/test-install.sh's browser step: opens the app built from the
// tarballs (APP_URL), clicks Generate, and waits for the worker's (WORKER_URL)
// image: an <img> the browser decoded, whose data is a PNG of the worker's
// default size. Fails on a page error, a console error or the app's alert.
//
//   node scripts/lib/install-app-check.mjs APP_URL WORKER_URL

import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const [appUrl, workerUrl] = process.argv.slice(2);
if (!appUrl || !workerUrl) throw new Error('usage: install-app-check.mjs APP_URL WORKER_URL');
// playwright-core from the workspace (the studio's), driving Debian's Chromium.
const repo = join(dirname(fileURLToPath(import.meta.url)), '../..');
const { chromium } = createRequire(join(repo, 'app/package.json'))('playwright-core');

const info = await (await fetch(`${workerUrl}/v1/info`)).json();
const want = { width: info.defaults.width, height: info.defaults.height };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
const problems = [];
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(60_000);
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
  });
  await page.goto(appUrl);
  await page.getByTestId('generate').click();
  const outcome = await Promise.race([
    page.getByTestId('result').first().waitFor({ timeout: 120_000 }).then(() => 'image'),
    page.getByTestId('error').waitFor({ timeout: 120_000 }).then(() => 'error'),
  ]);
  if (outcome === 'error') throw new Error(`the app shows: ${await page.getByTestId('error').textContent()}`);
  const got = await page.getByTestId('result').first().evaluate(async (img) => {
    await img.decode();
    const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
    const view = new DataView(bytes.buffer);
    const signature = [...bytes.slice(0, 8)].join(',');
    return {
      decoded: [img.naturalWidth, img.naturalHeight],
      png: signature === '137,80,78,71,13,10,26,10' && String.fromCharCode(...bytes.slice(12, 16)) === 'IHDR',
      ihdr: [view.getUint32(16), view.getUint32(20)],
    };
  });
  const size = [want.width, want.height];
  if (!got.png) throw new Error('the image is not a PNG');
  if (got.ihdr.join() !== size.join()) throw new Error(`the PNG is ${got.ihdr.join('x')}, not ${size.join('x')}`);
  if (got.decoded.join() !== size.join()) throw new Error(`the browser decoded ${got.decoded.join('x')}, not ${size.join('x')}`);
  if (problems.length) throw new Error(problems.join('\n'));
  console.log(`generated: a ${size.join('x')} PNG, decoded by Chromium (${info.model.id})`);
} finally {
  await browser.close();
}
