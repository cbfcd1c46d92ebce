// The hires fix, upscaling and TAESD in the studio end to end: a worker of its
// own on the tiny random-weight model, with an `--upscaler-dir` holding a tiny
// Real-ESRGAN x2 (`sd-worker generate-upscaler`) and a tiny TAESD of the
// model's latents (`generate-taesd`). A person turns the hires fix on and gets
// an image of the target size whose PNG restores the section, upscales it 2×
// from the lightbox into the gallery, and picks the preview method and the
// fast decode that only a worker with TAESD offers.

import { rm } from 'node:fs/promises';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { UpscalerInfo, WorkerInfo } from '@sd-worker/sdk';
import { dropPng, launch, newPage, screenshot, workerInfo } from './browser.js';
import { generateTinyUpscaleWorker, startWorker, type RunningWorker } from './worker.js';

const UPSCALER = 'esrgan-x2';
const BASE = { width: 64, height: 48 };

let worker: RunningWorker | undefined;
let dir = '';
let browser: Browser;
let info: WorkerInfo;

beforeAll(async () => {
  const made = await generateTinyUpscaleWorker(UPSCALER, true);
  dir = made.dir;
  // Steps held back 30 ms each: the tiny model is fast enough to finish before
  // the page renders a phase otherwise.
  worker = await startWorker({ SD_WORKER_TEST_STEP_DELAY_MS: '30' }, made.args);
  await worker.ready();
  info = await workerInfo(worker.url);
  browser = await launch();
});

afterAll(async () => {
  await browser?.close();
  await worker?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function open(url = worker!.url): Promise<Page> {
  const { page } = await newPage(browser);
  await page.goto(url);
  await page.getByLabel('Prompt', { exact: true }).waitFor();
  return page;
}

const prompt = (page: Page) => page.getByLabel('Prompt', { exact: true });
const results = (page: Page) => page.getByTestId('results').locator('img');
const enableHires = (page: Page) => page.getByLabel('Upscale and repaint at a larger size');

async function setBase(page: Page, steps: number): Promise<void> {
  await page.locator('#field-steps').fill(String(steps));
  await page.locator('#size-preset').selectOption('custom');
  await page.locator('#field-width').fill(String(BASE.width));
  await page.locator('#field-height').fill(String(BASE.height));
}

/** Records every `data-phase` the progress line shows. */
async function watchPhases(page: Page): Promise<() => Promise<string[]>> {
  await page.evaluate(() => {
    const seen = new Set<string>();
    (window as unknown as { phases: Set<string> }).phases = seen;
    new MutationObserver(() => {
      const phase = document.querySelector<HTMLElement>('[data-testid="progress-text"]')?.dataset.phase;
      if (phase) seen.add(phase);
    }).observe(document.body, { subtree: true, childList: true, attributes: true, characterData: true });
  });
  return () => page.evaluate(() => [...(window as unknown as { phases: Set<string> }).phases]);
}

describe('hires fix and upscaling', () => {
  it('lists the model upscaler after the built-ins', async () => {
    const list = (await (await fetch(`${worker!.url}/v1/upscalers`)).json()) as UpscalerInfo[];
    expect(list.map((u) => [u.name, u.kind, u.label])).toEqual([
      ['lanczos', 'builtin', 'Lanczos (resampling)'],
      ['nearest', 'builtin', 'Nearest neighbour (resampling)'],
      [UPSCALER, 'model', undefined],
    ]);
    expect(info.taesd).toBe(true);
    // The test's sizes fit the tiny model's limits.
    expect(BASE.width * 2).toBeLessThanOrEqual(info.limits.max_size);
    expect(BASE.width * 2 * BASE.height * 2).toBeLessThanOrEqual(info.limits.max_pixels);
  });

  it('generates at the hires target size, shows the passes, and restores the section from the PNG', async () => {
    const page = await open();
    await prompt(page).fill('a lighthouse on a cliff');
    await setBase(page, 10);
    await enableHires(page).check();
    await page.getByText(`Target ${BASE.width * 2}×${BASE.height * 2}`).waitFor();
    await page.getByLabel('Upscaler').selectOption('latent-nearest');
    await page.getByLabel('Hires steps').fill('8');
    await page.locator('[id="field-hires.denoising_strength"]').fill('0.6');
    await screenshot(page, 'hires-section');

    const phases = await watchPhases(page);
    const job = page.waitForRequest((r) => r.method() === 'POST' && r.url().endsWith('/v1/jobs'));
    await page.getByTestId('generate').click();
    const body = JSON.parse((await job).postData() ?? '{}') as { hires?: unknown; width: number; height: number };
    expect(body.hires).toEqual({ scale: 2, upscaler: 'latent-nearest', steps: 8, denoising_strength: 0.6 });
    expect([body.width, body.height]).toEqual([BASE.width, BASE.height]);

    await results(page).first().waitFor({ timeout: 120_000 });
    await expect(results(page).first().getAttribute('width')).resolves.toBe(String(BASE.width * 2));
    await expect(results(page).first().getAttribute('height')).resolves.toBe(String(BASE.height * 2));
    const seen = await phases();
    expect(seen.length).toBeGreaterThan(0);
    for (const p of seen) expect(['base', 'hires']).toContain(p);
    await screenshot(page, 'hires-result');

    // The PNG says how it was made, as A1111 writes it.
    const src = await results(page).first().getAttribute('src');
    const png = Buffer.from(src!.replace(/^data:image\/png;base64,/, ''), 'base64');
    const text = png.toString('latin1');
    expect(text).toContain(`Size: ${BASE.width}x${BASE.height}`);
    expect(text).toContain('Denoising strength: 0.6, Hires upscale: 2, Hires steps: 8, Hires upscaler: Latent (nearest)');

    // Turn the section off and change it, then drop the PNG: it comes back.
    await page.getByLabel('Upscaler').selectOption('latent');
    await enableHires(page).uncheck();
    await prompt(page).fill('something else');
    await dropPng(page, png, 'hires.png');
    await expect.poll(() => prompt(page).inputValue()).toBe('a lighthouse on a cliff');
    await expect(enableHires(page).isChecked()).resolves.toBe(true);
    await expect(page.locator('[id="field-hires.scale"]').inputValue()).resolves.toBe('2');
    await expect(page.getByLabel('Upscaler').inputValue()).resolves.toBe('latent-nearest');
    await expect(page.getByLabel('Hires steps').inputValue()).resolves.toBe('8');
    await expect(page.locator('[id="field-hires.denoising_strength"]').inputValue()).resolves.toBe('0.6');
    await screenshot(page, 'hires-restored');
    await page.context().close();
  });

  it('upscales a gallery image 2× with the model upscaler into the gallery', async () => {
    const page = await open();
    await prompt(page).fill('a small red circle');
    await setBase(page, 3);
    await page.getByTestId('generate').click();
    await results(page).first().waitFor({ timeout: 120_000 });
    await expect.poll(() => page.getByTestId('gallery-item').count()).toBe(1);

    await page.getByTestId('gallery-item').first().click();
    const lightbox = page.getByTestId('lightbox');
    await lightbox.getByTestId('upscale').waitFor();
    await expect(lightbox.getByLabel('Upscaler').inputValue()).resolves.toBe(UPSCALER);
    // The built-ins by the worker's labels, not their wire names.
    const labels = await lightbox.getByLabel('Upscaler').locator('option').allTextContents();
    expect(labels.slice(0, 2)).toEqual(['Lanczos (resampling)', 'Nearest neighbour (resampling)']);
    const job = page.waitForRequest((r) => r.method() === 'POST' && r.url().endsWith('/v1/jobs'));
    await lightbox.getByTestId('upscale-2').click();
    const body = JSON.parse((await job).postData() ?? '{}') as Record<string, unknown>;
    expect(body).toMatchObject({ operation: 'image_upscale', upscaler: UPSCALER, scale: 2 });
    expect(String(body.image)).toMatch(/^data:image\/png;base64,/);

    // The result joins the gallery and opens in the lightbox.
    await expect.poll(() => page.getByTestId('gallery-item').count(), { timeout: 120_000 }).toBe(2);
    await expect
      .poll(() => lightbox.getByTestId('lightbox-size').textContent())
      .toBe(`${BASE.width * 2}×${BASE.height * 2}`);
    await expect(lightbox.getByTestId('lightbox-upscaled').textContent()).resolves.toBe(`2× by ${UPSCALER}`);
    await expect(lightbox.getByTestId('lightbox-prompt').textContent()).resolves.toBe('a small red circle');
    await expect(page.getByTestId('gallery-item').first().textContent()).resolves.toContain('Upscaled');
    await screenshot(page, 'upscaled');
    await page.context().close();
  });

  it('offers the preview method and fast decode with --taesd, and sends them', async () => {
    const page = await open();
    const select = page.getByLabel('Preview method');
    await select.waitFor();
    const options = await select.locator('option').evaluateAll((os) => os.map((o) => (o as HTMLOptionElement).value));
    expect(options).toEqual(['', 'taesd', 'vae']);
    await select.selectOption('vae');
    await page.getByLabel('Fast decode (TAESD)').check();
    await prompt(page).fill('a blue square');
    await setBase(page, 2);
    const job = page.waitForRequest((r) => r.method() === 'POST' && r.url().endsWith('/v1/jobs'));
    await page.getByTestId('generate').click();
    const body = JSON.parse((await job).postData() ?? '{}') as Record<string, unknown>;
    expect(body).toMatchObject({ preview_method: 'vae', vae: 'tiny' });
    await results(page).first().waitFor({ timeout: 120_000 });
    expect(await page.getByTestId('job-error').count()).toBe(0);
    await screenshot(page, 'taesd-choices');
    await page.context().close();

    // The shared worker has no TAESD: neither is offered.
    const plain = await open(inject('studioUrl'));
    await plain.locator('#field-scheduler').waitFor();
    expect(await plain.getByLabel('Preview method').count()).toBe(0);
    expect(await plain.getByLabel('Fast decode (TAESD)').count()).toBe(0);
    await plain.context().close();
  });
});
