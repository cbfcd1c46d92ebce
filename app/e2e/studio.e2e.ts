// The studio end to end: Debian's Chromium (headless, through playwright-core)
// against the real worker serving the built app, on the bundled default model.
// Image content is never checked (the model may draw noise); what a person
// sees and what reaches the worker are.

import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { WorkerInfo } from '@sd-worker/sdk';
import { launch, largestSquare, makePng, newPage, screenshot, workerInfo } from './browser.js';
import { startWorker } from './worker.js';

const url = inject('studioUrl');
let browser: Browser;
let info: WorkerInfo;
const tmp = mkdtempSync(join(tmpdir(), 'sd-studio-e2e-'));

beforeAll(async () => {
  browser = await launch();
  info = await workerInfo(url);
});

afterAll(async () => {
  await browser?.close();
});

async function open(phone = false): Promise<Page> {
  const { page } = await newPage(browser, phone);
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(url);
  await page.getByLabel('Prompt', { exact: true }).waitFor();
  return page;
}

/** Parameters of a job that runs for a few seconds: the largest size, several images. */
async function setSlow(page: Page, steps: number, images = Math.min(2, info.limits.max_images)): Promise<void> {
  const side = largestSquare(info);
  await page.locator('#field-steps').fill(String(steps));
  await page.locator('#size-preset').selectOption('custom');
  await page.locator('#field-width').fill(String(side));
  await page.locator('#field-height').fill(String(side));
  await page.locator('#field-num_images').fill(String(images));
}

async function setQuick(page: Page, steps = 4): Promise<void> {
  await page.locator('#field-steps').fill(String(steps));
}

const results = (page: Page) => page.getByTestId('results').locator('img');
const progressText = (page: Page) => page.getByTestId('progress-text');

describe('studio', () => {
  it('generates, showing progress and a live preview, then the image, kept in the gallery', async () => {
    const page = await open();
    // A finished job's stream is read to its end, not aborted by the client
    // (the browser's network panel would show it as a failed request).
    const failedStreams: string[] = [];
    page.on('requestfailed', (r) => {
      if (r.url().includes('/stream')) failedStreams.push(`${r.url()}: ${r.failure()?.errorText}`);
    });
    await screenshot(page, 'text-to-image-empty');
    await page.getByLabel('Prompt', { exact: true }).fill('a red circle on a blue background');
    await page.getByLabel('Negative prompt').fill('blurry');
    await setSlow(page, 20);
    await page.getByTestId('generate').click();
    await expect.poll(() => progressText(page).textContent(), { timeout: 60_000 }).toMatch(/Step \d+ of 20 · \d+% · /);
    await page.getByTestId('preview').waitFor();
    await expect(page.locator('progress').getAttribute('max')).resolves.toBe('20');
    await screenshot(page, 'text-to-image-progress');
    await results(page).first().waitFor({ timeout: 120_000 });
    expect(await results(page).count()).toBe(Math.min(2, info.limits.max_images));
    await expect.poll(() => page.getByTestId('gallery-item').count()).toBe(Math.min(2, info.limits.max_images));
    await page.getByText('Prompt history (1)').waitFor();
    await screenshot(page, 'text-to-image-result');
    expect(failedStreams).toEqual([]);

    // The gallery survives a reload (IndexedDB).
    await page.reload();
    await expect.poll(() => page.getByTestId('gallery-item').count()).toBe(Math.min(2, info.limits.max_images));
    await page.context().close();
  });

  it('shows the queue position, and cancels a queued and a running job', async () => {
    const page = await open();
    await page.getByLabel('Prompt', { exact: true }).fill('a very long job');
    await setSlow(page, info.limits.max_steps, info.limits.max_images);
    await page.getByTestId('generate').click();
    await expect.poll(() => progressText(page).textContent(), { timeout: 60_000 }).toMatch(/Step \d+ of/);

    // Another visitor's job waits behind it.
    const other = await open();
    await other.getByLabel('Prompt', { exact: true }).fill('waiting my turn');
    await other.getByTestId('generate').click();
    await expect.poll(() => progressText(other).textContent()).toBe('Queued: runs next');
    await screenshot(other, 'queued');
    await other.getByRole('button', { name: 'Cancel' }).click();
    await other.getByTestId('cancelled').waitFor();
    await other.context().close();

    await page.getByRole('button', { name: 'Cancel' }).click();
    await page.getByTestId('cancelled').waitFor({ timeout: 60_000 });
    expect(await page.getByTestId('progress').count()).toBe(0);
    await screenshot(page, 'cancelled');
    await page.context().close();
  });

  it('comes back to a running job after a reload and shows it finish', async () => {
    const page = await open();
    await page.getByLabel('Prompt', { exact: true }).fill('survives a reload');
    await setSlow(page, 40);
    await page.getByTestId('generate').click();
    await expect.poll(() => progressText(page).textContent(), { timeout: 60_000 }).toMatch(/Step \d+ of 40/);
    await page.reload();
    // Back on the same job: its progress (replayed by the worker), then its images.
    await expect.poll(() => progressText(page).textContent(), { timeout: 60_000 }).toMatch(/Step \d+ of 40/);
    await expect(page.getByLabel('Prompt', { exact: true }).inputValue()).resolves.toBe('survives a reload');
    await screenshot(page, 'reload-mid-job');
    await results(page).first().waitFor({ timeout: 120_000 });
    await expect.poll(() => page.getByTestId('gallery-item').count()).toBe(Math.min(2, info.limits.max_images));
    await page.context().close();
  });

  it('reuses the parameters and seed of a gallery image, downloads it, and fills the form from a dropped PNG', async () => {
    const page = await open();
    await page.getByLabel('Prompt', { exact: true }).fill('reuse me');
    await setQuick(page, 7);
    await page.getByTestId('generate').click();
    await results(page).first().waitFor();
    const seed = Number(await page.getByTestId('last-seed').textContent());
    expect(seed).toBeGreaterThanOrEqual(0);

    // Change the form, then bring the image's parameters back.
    await page.getByLabel('Prompt', { exact: true }).fill('something else');
    await page.locator('#field-steps').fill('12');
    await page.getByTestId('gallery-item').first().click();
    const dialog = page.getByTestId('lightbox');
    await dialog.getByRole('heading', { name: `Seed ${seed}` }).waitFor();
    await screenshot(page, 'gallery-lightbox');

    // Download: the worker's PNG, its parameters embedded.
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      dialog.getByRole('button', { name: /Download PNG/ }).click(),
    ]);
    const file = join(tmp, 'download.png');
    await download.saveAs(file);
    const text = readFileSync(file).toString('latin1');
    expect(text).toContain('parameters\0reuse me');
    expect(text).toContain(`Seed: ${seed}`);

    await dialog.getByRole('button', { name: 'Reuse parameters & seed' }).click();
    await expect(page.getByLabel('Prompt', { exact: true }).inputValue()).resolves.toBe('reuse me');
    await expect(page.locator('#field-steps').inputValue()).resolves.toBe('7');
    await expect(page.locator('#field-seed').inputValue()).resolves.toBe(String(seed));
    await screenshot(page, 'reused-parameters');

    // The same seed gives the same image again.
    await page.getByTestId('generate').click();
    await page.getByTestId('results').getByText(`seed ${seed}`).waitFor();

    // A PNG from another tool with the same `parameters` chunk, dropped on the page.
    const png = makePng(
      16,
      16,
      'a dropped lighthouse\nNegative prompt: fog\nSteps: 9, Sampler: Euler a, CFG scale: 5.5, Seed: 777, Size: 48x32, Model: other',
    );
    await page.evaluate(async (bytes) => {
      const file = new File([new Uint8Array(bytes)], 'other-tool.png', { type: 'image/png' });
      const data = new DataTransfer();
      data.items.add(file);
      document.querySelector('.gallery')!.dispatchEvent(new DragEvent('drop', { dataTransfer: data, bubbles: true, cancelable: true }));
    }, [...png]);
    await expect.poll(() => page.getByLabel('Prompt', { exact: true }).inputValue()).toBe('a dropped lighthouse');
    await expect(page.getByLabel('Negative prompt').inputValue()).resolves.toBe('fog');
    await expect(page.locator('#field-steps').inputValue()).resolves.toBe('9');
    await expect(page.locator('#field-guidance_scale').inputValue()).resolves.toBe('5.5');
    await expect(page.locator('#field-seed').inputValue()).resolves.toBe('777');
    await expect(page.locator('#field-width').inputValue()).resolves.toBe('48');
    await expect(page.locator('#field-scheduler').inputValue()).resolves.toBe('euler_a');
    await page.getByTestId('notice').getByText('Parameters read from other-tool.png').waitFor();
    await screenshot(page, 'dropped-png-parameters');
    await page.context().close();
  });

  it('runs image to image on an uploaded file', async () => {
    const page = await open();
    await page.getByRole('button', { name: 'Image to image' }).click();
    const input = join(tmp, 'input.png');
    writeFileSync(input, makePng(info.model.native_width, info.model.native_height));
    await page.locator('#field-image').setInputFiles(input);
    await page.getByAltText('The input image').waitFor();
    await page.getByLabel('Prompt', { exact: true }).fill('a watercolour of the circle');
    await page.getByLabel(/Strength/).fill('0.6');
    await setQuick(page, 10);
    const request = page.waitForRequest((r) => r.method() === 'POST' && r.url().endsWith('/v1/jobs'));
    await page.getByTestId('generate').click();
    const body = JSON.parse((await request).postData() ?? '{}') as Record<string, unknown>;
    expect(body.operation).toBe('image_transform');
    expect(String(body.image)).toMatch(/^data:image\/png;base64,/);
    expect(body.strength).toBe(0.6);
    expect(body.width).toBeUndefined(); // the input's size
    await results(page).first().waitFor();
    await page.getByRole('button', { name: /Open: a watercolour/ }).first().waitFor();
    await screenshot(page, 'image-to-image');
    await page.context().close();
  });

  it('inpaints with a mask drawn in the editor (undo, redo, invert, clear, zoom)', async () => {
    const page = await open();
    await page.getByRole('button', { name: 'Inpainting' }).click();
    const input = join(tmp, 'inpaint.png');
    writeFileSync(input, makePng(info.model.native_width, info.model.native_height));
    await page.locator('#field-image').setInputFiles(input);
    const canvas = page.getByTestId('mask-canvas');
    await canvas.waitFor();
    // The small image fills the editor, centred, not 512 px at its left beside a checkerboard.
    const viewport = (await page.locator('.mask-viewport').boundingBox())!;
    const stage = (await canvas.boundingBox())!;
    expect(Math.abs(stage.x + stage.width / 2 - (viewport.x + viewport.width / 2))).toBeLessThan(2);
    expect(stage.height).toBeLessThanOrEqual(viewport.height);
    expect(Math.max(stage.width / viewport.width, stage.height / viewport.height)).toBeGreaterThan(0.95);
    await page.getByLabel('Prompt', { exact: true }).fill('a blue square');
    await setQuick(page, 6);

    // Nothing painted: the error is shown next to the mask.
    await page.getByTestId('generate').click();
    await page.locator('#error-mask').getByText('Paint over the part').waitFor();

    await page.getByRole('button', { name: 'Zoom in' }).click();
    await page.getByLabel('Zoom').getByText('150%').waitFor();
    await page.getByRole('button', { name: 'Zoom out' }).click();
    const box = (await canvas.boundingBox())!;
    await page.mouse.move(box.x + box.width * 0.3, box.y + box.height * 0.3);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width * 0.7, box.y + box.height * 0.5, { steps: 8 });
    await page.mouse.up();
    await page.getByRole('button', { name: 'Undo' }).click();
    await page.getByRole('button', { name: 'Redo' }).click();
    await page.getByRole('button', { name: 'Invert' }).click();
    await page.getByRole('button', { name: 'Invert' }).click();
    await screenshot(page, 'inpaint-mask');

    const request = page.waitForRequest((r) => r.method() === 'POST' && r.url().endsWith('/v1/jobs'));
    await page.getByTestId('generate').click();
    const body = JSON.parse((await request).postData() ?? '{}') as Record<string, unknown>;
    expect(body.operation).toBe('image_inpaint');
    expect(String(body.mask)).toMatch(/^data:image\/png;base64,/);
    // The mask is black and white, white where painted: decode it in the page.
    const whiteShare = await page.evaluate(async (mask) => {
      const img = new Image();
      img.src = mask;
      await img.decode();
      const c = document.createElement('canvas');
      c.width = img.width;
      c.height = img.height;
      const ctx = c.getContext('2d')!;
      ctx.drawImage(img, 0, 0);
      const d = ctx.getImageData(0, 0, c.width, c.height).data;
      let white = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i]! > 128) white++;
      return white / (d.length / 4);
    }, String(body.mask));
    expect(whiteShare).toBeGreaterThan(0.02);
    expect(whiteShare).toBeLessThan(0.6);
    await results(page).first().waitFor();
    await screenshot(page, 'inpaint-result');

    // Clear empties the mask again.
    await page.getByRole('button', { name: 'Clear' }).click();
    await page.getByTestId('generate').click();
    await page.locator('#error-mask').waitFor();
    await page.context().close();
  });

  it('shows a validation error from the worker next to its field', async () => {
    const page = await open();
    await page.getByLabel('Prompt', { exact: true }).fill('a bad size');
    await page.locator('#size-preset').selectOption('custom');
    const bad = info.limits.min_size + 1; // not a multiple of size_multiple
    await page.locator('#field-width').fill(String(bad));
    await page.getByTestId('generate').click();
    const error = page.locator('#error-width');
    await error.waitFor();
    expect(await error.textContent()).toMatch(/width/i);
    await expect(page.locator('#field-width').getAttribute('aria-describedby')).resolves.toBe('error-width');
    await expect(page.locator('#field-width').getAttribute('aria-invalid')).resolves.toBe('true');
    await expect.poll(() => page.evaluate(() => document.activeElement?.id)).toBe('field-width');
    await screenshot(page, 'validation-error');
    // Editing the width takes the worker's old complaint away at once.
    await page.locator('#field-width').fill(String(bad + 1));
    await expect.poll(() => page.locator('#error-width').count()).toBe(0);

    // A fixed width again, too many steps: the error moves to steps.
    await page.locator('#field-width').fill(String(info.defaults.width));
    await page.locator('#field-steps').fill(String(info.limits.max_steps + 1));
    await page.getByTestId('generate').click();
    await page.locator('#error-steps').waitFor();
    expect(await page.locator('#error-width').count()).toBe(0);
    await page.context().close();
  });

  it('says so when the worker cannot be reached', async () => {
    const { page, context } = await newPage(browser);
    await page.goto(`${url}/?worker=http://127.0.0.1:9`);
    await page.getByTestId('worker-unreachable').getByText('Cannot reach the worker at http://127.0.0.1:9').waitFor();
    await screenshot(page, 'worker-unreachable');
    await context.close();
  });

  it('says the model is loading, then opens the studio by itself when it is ready', async () => {
    // A second worker whose model load is held back (a debug-build test hook).
    const slow = await startWorker({ SD_WORKER_TEST_LOAD_DELAY_MS: '4000' });
    try {
      const { page, context } = await newPage(browser);
      await page.goto(slow.url);
      await page.getByTestId('model-loading').getByText('The model is still loading.').waitFor();
      expect((await fetch(`${slow.url}/ready`)).status).toBe(503);
      await screenshot(page, 'model-loading');
      // No reload: the studio notices the worker is ready and opens.
      await page.getByLabel('Prompt', { exact: true }).waitFor({ timeout: 30_000 });
      expect(await page.getByTestId('model-loading').count()).toBe(0);
      await context.close();
    } finally {
      await slow.stop();
    }
  });

  it('asks for the token of a worker started with --api-token, and says when it refuses one', async () => {
    const guarded = await startWorker({}, ['--api-token', 'the-right-token']);
    try {
      const { page, context } = await newPage(browser);
      await page.goto(guarded.url);
      const token = page.getByLabel('Token', { exact: true });
      await token.waitFor();
      expect(await page.getByTestId('token-refused').count()).toBe(0);
      await token.fill('a-wrong-token');
      await page.getByRole('button', { name: 'Connect' }).click();
      await page.getByTestId('token-refused').getByText('The worker refused this token').waitFor();
      await screenshot(page, 'token-refused');
      await token.fill('the-right-token');
      await page.getByRole('button', { name: 'Connect' }).click();
      await page.getByLabel('Prompt', { exact: true }).waitFor();
      await context.close();
    } finally {
      await guarded.stop();
    }
  });

  it('fits a phone: prompt and result first, parameters in a drawer', async () => {
    const page = await open(true);
    const prompt = page.getByLabel('Prompt', { exact: true });
    const params = page.locator('#params');
    expect(await params.isVisible()).toBe(false);
    const promptBox = (await prompt.boundingBox())!;
    expect(promptBox.width).toBeGreaterThan(300);
    // No horizontal scrolling.
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    await screenshot(page, 'phone');

    // A modal dialog on a phone: Escape closes it and focus goes back to its button.
    const toggle = page.getByRole('button', { name: 'Parameters', exact: true });
    await toggle.click();
    await page.getByRole('dialog', { name: 'Parameters' }).waitFor();
    await page.keyboard.press('Escape');
    await expect.poll(() => params.isVisible()).toBe(false);
    await expect.poll(() => toggle.evaluate((el) => el === document.activeElement)).toBe(true);

    await toggle.click();
    await params.locator('#field-steps').waitFor({ state: 'visible' });
    await screenshot(page, 'phone-parameters');
    await params.locator('#field-steps').fill('5');
    await page.getByRole('button', { name: 'Close parameters' }).first().click();
    await expect.poll(() => params.isVisible()).toBe(false);

    await prompt.fill('a phone picture');
    await page.getByTestId('generate').click();
    await results(page).first().waitFor();
    // The result comes before the parameters and the gallery.
    const resultBox = (await page.getByTestId('result').boundingBox())!;
    const galleryBox = (await page.locator('.gallery').boundingBox())!;
    expect(resultBox.y).toBeGreaterThan(promptBox.y);
    expect(galleryBox.y).toBeGreaterThan(resultBox.y);
    await screenshot(page, 'phone-result');

    // A field error from the worker opens the drawer to show it.
    await page.getByRole('button', { name: 'Parameters', exact: true }).click();
    await params.locator('#field-steps').fill(String(info.limits.max_steps + 1));
    await page.getByRole('button', { name: 'Close parameters' }).first().click();
    await page.getByTestId('generate').click();
    await params.locator('#error-steps').waitFor({ state: 'visible' });
    await screenshot(page, 'phone-validation-error');
    await page.context().close();
  });
});
