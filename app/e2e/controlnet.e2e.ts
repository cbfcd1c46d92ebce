// ControlNet in the studio end to end: a worker of its own, on the tiny
// random-weight model with a tiny ControlNet of its shape (`sd-worker
// generate-controlnet --shape tiny --seed 1`, loaded with `--controlnet`).
// A person adds a unit, gives it an image, previews its canny map (the
// worker's `POST /v1/preprocess`), and generates with it; what reaches the
// worker and what the page shows are checked, not the picture (random weights).

import { mkdtempSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Locator, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WorkerInfo } from '@sd-worker/sdk';
import { launch, makePng, newPage, screenshot, workerInfo } from './browser.js';
import { generateTinyControlNetWorker, startWorker, type RunningWorker } from './worker.js';

/** The ControlNet's folder name, which /v1/info lists as its name. */
const CONTROLNET = 'tiny-canny';

let worker: RunningWorker | undefined;
let dir = '';
let browser: Browser;
let info: WorkerInfo;
const tmp = mkdtempSync(join(tmpdir(), 'sd-studio-e2e-cn-'));

beforeAll(async () => {
  const made = await generateTinyControlNetWorker(CONTROLNET);
  dir = made.dir;
  worker = await startWorker({}, made.args);
  await worker.ready();
  info = await workerInfo(worker.url);
  browser = await launch();
});

afterAll(async () => {
  await browser?.close();
  await worker?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
  await rm(tmp, { recursive: true, force: true });
});

async function open(): Promise<Page> {
  const { page } = await newPage(browser);
  await page.goto(worker!.url);
  await page.getByLabel('Prompt', { exact: true }).waitFor();
  return page;
}

const unitGroup = (page: Page, n: number) => page.getByRole('group', { name: `ControlNet unit ${n}`, exact: true });
const results = (page: Page) => page.getByTestId('results').locator('img');

/** Share of the image's pixels brighter than mid-grey, and whether every pixel is black or white. */
async function whiteShare(image: Locator): Promise<{ white: number; binary: boolean; width: number }> {
  return image.evaluate(async (img: HTMLImageElement) => {
    await img.decode();
    const c = document.createElement('canvas');
    c.width = img.naturalWidth;
    c.height = img.naturalHeight;
    const ctx = c.getContext('2d')!;
    ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    let white = 0;
    let binary = true;
    for (let i = 0; i < d.length; i += 4) {
      if (d[i]! > 128) white++;
      if (d[i]! !== 0 && d[i]! !== 255) binary = false;
    }
    return { white: white / (d.length / 4), binary, width: c.width };
  });
}

describe('ControlNet', () => {
  it('is listed by the worker with its preprocessors', () => {
    expect(info.controlnets.map((c) => c.name)).toEqual([CONTROLNET]);
    expect(info.preprocessors).toContain('canny');
  });

  it('adds a unit, previews its canny map, and generates with it in text to image, image to image and inpainting', async () => {
    const page = await open();
    const section = page.getByRole('group', { name: 'ControlNet', exact: true });
    await section.waitFor();
    await section.getByRole('button', { name: 'Add ControlNet unit' }).click();
    const unit = unitGroup(page, 1);
    await unit.waitFor();

    const { native_width: width, native_height: height } = info.model;
    const control = join(tmp, 'control.png');
    writeFileSync(control, makePng(width, height));
    await unit.getByLabel('Control image').setInputFiles(control);
    await unit.getByAltText('Control image of unit 1').waitFor();
    await unit.getByLabel('ControlNet model').selectOption(CONTROLNET);
    await unit.getByLabel('Preprocessor').selectOption('canny');
    // Canny's thresholds only now; scribble's not.
    expect(await unit.getByLabel('Threshold', { exact: true }).count()).toBe(0);
    await unit.getByLabel('Low threshold').fill('50');
    await unit.getByLabel('High threshold').fill('150');

    // Preview map: the worker's canny edges of the circle, white on black, at the image's size.
    const preprocess = page.waitForResponse((r) => r.request().method() === 'POST' && r.url().endsWith('/v1/preprocess'));
    await unit.getByRole('button', { name: 'Preview map' }).click();
    const answer = await preprocess;
    expect(answer.status()).toBe(200);
    expect(answer.headers()['content-type']).toMatch(/^image\/png/);
    const sent = JSON.parse(answer.request().postData() ?? '{}') as Record<string, unknown>;
    expect(sent).toMatchObject({ preprocessor: 'canny', low_threshold: 50, high_threshold: 150 });
    expect(String(sent.image)).toMatch(/^data:image\/png;base64,/);
    const map = unit.getByAltText('Control map of unit 1');
    await map.waitFor();
    const edges = await whiteShare(map);
    expect(edges.width).toBe(width);
    expect(edges.binary).toBe(true);
    expect(edges.white).toBeGreaterThan(0.005);
    expect(edges.white).toBeLessThan(0.5);
    await screenshot(page, 'controlnet-map');

    await unit.getByLabel('Control strength').fill('0.8');
    await unit.getByLabel('Start', { exact: true }).fill('0.1');
    await unit.getByLabel('End', { exact: true }).fill('0.9');
    await page.getByLabel('Prompt', { exact: true }).fill('a red circle, with its edges');
    await page.locator('#field-steps').fill('4');

    const job = page.waitForRequest((r) => r.method() === 'POST' && r.url().endsWith('/v1/jobs'));
    await page.getByTestId('generate').click();
    const body = JSON.parse((await job).postData() ?? '{}') as { operation: string; controlnets?: Record<string, unknown>[] };
    expect(body.operation).toBe('image_generation');
    expect(body.controlnets).toHaveLength(1);
    expect(body.controlnets![0]).toEqual({
      model: CONTROLNET,
      image: expect.stringMatching(/^data:image\/png;base64,/),
      conditioning_scale: 0.8,
      guidance_start: 0.1,
      guidance_end: 0.9,
      preprocessor: 'canny',
      low_threshold: 50,
      high_threshold: 150,
    });
    await results(page).first().waitFor({ timeout: 120_000 });
    expect(await page.getByTestId('job-error').count()).toBe(0);
    await screenshot(page, 'controlnet-text-to-image');

    // The same unit goes with image to image.
    await page.getByRole('button', { name: 'Image to image' }).click();
    const input = join(tmp, 'input.png');
    writeFileSync(input, makePng(width, height));
    await page.locator('#field-image').setInputFiles(input);
    await page.getByAltText('The input image').waitFor();
    const img2img = page.waitForRequest((r) => r.method() === 'POST' && r.url().endsWith('/v1/jobs'));
    await page.getByTestId('generate').click();
    const second = JSON.parse((await img2img).postData() ?? '{}') as { operation: string; controlnets?: unknown[] };
    expect(second.operation).toBe('image_transform');
    expect(second.controlnets).toHaveLength(1);
    await results(page).first().waitFor({ timeout: 120_000 });
    expect(await page.getByTestId('job-error').count()).toBe(0);
    await screenshot(page, 'controlnet-image-to-image');

    // And with inpainting, on the same input image and a painted mask.
    await page.getByRole('button', { name: 'Inpainting' }).click();
    const canvas = page.getByTestId('mask-canvas');
    await canvas.waitFor();
    const box = (await canvas.boundingBox())!;
    await page.mouse.move(box.x + box.width * 0.3, box.y + box.height * 0.3);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width * 0.7, box.y + box.height * 0.6, { steps: 8 });
    await page.mouse.up();
    const inpaint = page.waitForRequest((r) => r.method() === 'POST' && r.url().endsWith('/v1/jobs'));
    await page.getByTestId('generate').click();
    const third = JSON.parse((await inpaint).postData() ?? '{}') as { operation: string; controlnets?: unknown[] };
    expect(third.operation).toBe('image_inpaint');
    expect(third.controlnets).toHaveLength(1);
    await results(page).first().waitFor({ timeout: 120_000 });
    expect(await page.getByTestId('job-error').count()).toBe(0);
    await screenshot(page, 'controlnet-inpainting');

    // The unit survives a reload (IndexedDB), image and all.
    await page.reload();
    await unitGroup(page, 1).getByAltText('Control image of unit 1').waitFor();
    await expect(unitGroup(page, 1).getByLabel('Preprocessor').inputValue()).resolves.toBe('canny');
    await page.context().close();
  });

  it('refuses a start after the end before anything is sent, and removes units', async () => {
    const page = await open(); // a new browser context: no unit stored
    await page.getByRole('button', { name: 'Add ControlNet unit' }).click();
    const unit = unitGroup(page, 1);
    const control = join(tmp, 'order.png');
    writeFileSync(control, makePng(info.model.native_width, info.model.native_height));
    await unit.getByLabel('Control image').setInputFiles(control);
    await unit.getByAltText('Control image of unit 1').waitFor();
    await unit.getByLabel('Start', { exact: true }).fill('0.8');
    await unit.getByLabel('End', { exact: true }).fill('0.3');
    const end = unit.getByLabel('End', { exact: true });
    await expect(end.getAttribute('aria-invalid')).resolves.toBe('true');
    const describedBy = (await end.getAttribute('aria-describedby'))!;
    await expect(page.evaluate((id) => document.getElementById(id)?.textContent, describedBy)).resolves.toBe(
      'End must come after start.',
    );
    let submitted = false;
    page.on('request', (r) => {
      if (r.method() === 'POST' && r.url().endsWith('/v1/jobs')) submitted = true;
    });
    await page.getByLabel('Prompt', { exact: true }).fill('never sent');
    await page.getByTestId('generate').click();
    await expect.poll(() => page.evaluate(() => document.activeElement?.id)).toBe('field-controlnets[0].guidance_end');
    expect(submitted).toBe(false);
    await screenshot(page, 'controlnet-order-error');

    // Up to four units, then none.
    const add = page.getByRole('button', { name: 'Add ControlNet unit' });
    for (let i = 0; i < 3; i++) await add.click();
    await expect.poll(() => page.getByTestId('control-unit').count()).toBe(4);
    expect(await add.isDisabled()).toBe(true);
    for (let n = 4; n >= 1; n--) await unitGroup(page, n).getByRole('button', { name: `Remove unit ${n}` }).click();
    expect(await page.getByTestId('control-unit').count()).toBe(0);
    await page.context().close();
  });
});
