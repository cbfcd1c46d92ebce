// Playwright helpers: Debian's Chromium through playwright-core (no browser
// download), screenshots, and test images.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import type { WorkerInfo } from '@sd-worker/sdk';
import { SCREENSHOTS } from './paths.js';

export function launch(): Promise<Browser> {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
}

export const DESKTOP = { width: 1280, height: 900 };
export const PHONE = { width: 390, height: 844 };

export async function newPage(browser: Browser, phone = false): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext(
    phone
      ? { viewport: PHONE, deviceScaleFactor: 2, isMobile: true, hasTouch: true, acceptDownloads: true }
      : { viewport: DESKTOP, acceptDownloads: true },
  );
  const page = await context.newPage();
  page.setDefaultTimeout(60_000);
  return { context, page };
}

let shots = 0;

/** Saves a full-page screenshot as app/test-results/screenshots/NN-name.png. */
export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  shots += 1;
  const path = join(SCREENSHOTS, `${String(shots).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path, fullPage: true, animations: 'disabled' });
}

export async function workerInfo(url: string): Promise<WorkerInfo> {
  return (await (await fetch(`${url}/v1/info`)).json()) as WorkerInfo;
}

/** The largest square the worker accepts: the slowest size, for jobs that must still be running. */
export function largestSquare(info: WorkerInfo): number {
  const m = info.limits.size_multiple;
  let side = Math.floor(info.limits.max_size / m) * m;
  while (side * side > info.limits.max_pixels) side -= m;
  return side;
}

/** Drops a PNG's bytes on the page, as a file dragged from the desktop. */
export async function dropPng(page: Page, bytes: Uint8Array, name: string): Promise<void> {
  await page.evaluate(
    async ([data, fileName]) => {
      const file = new File([new Uint8Array(data as number[])], fileName as string, { type: 'image/png' });
      const transfer = new DataTransfer();
      transfer.items.add(file);
      document.body.dispatchEvent(new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true }));
    },
    [[...bytes], name] as const,
  );
}

export { makePng } from './png.js';
