// The gallery and the lightbox end to end, against the real worker: reusing
// one image of a batch, sending an image with its request to image to image,
// stepping through the lightbox, delete with undo, the last result after a
// reload and after a refused submit, dropping files, and the model's example
// prompts.

import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { WorkerInfo } from '@sd-worker/sdk';
import { launch, makePng, newPage, screenshot, workerInfo } from './browser.js';

const url = inject('studioUrl');
let browser: Browser;
let info: WorkerInfo;

beforeAll(async () => {
  browser = await launch();
  info = await workerInfo(url);
});

afterAll(async () => {
  await browser?.close();
});

async function open(phone = false): Promise<Page> {
  const { page } = await newPage(browser, phone);
  await page.goto(url);
  await page.getByLabel('Prompt', { exact: true }).waitFor();
  return page;
}

const prompt = (page: Page) => page.getByLabel('Prompt', { exact: true });

/** Generates a batch of two quick images; their seeds, in order. */
async function generateTwo(page: Page, text: string): Promise<number[]> {
  await prompt(page).fill(text);
  await page.locator('#field-steps').fill('3');
  await page.locator('#field-num_images').fill('2');
  await page.getByTestId('generate').click();
  const items = page.getByTestId('results').locator('li');
  await expect.poll(() => items.count(), { timeout: 120_000 }).toBe(2);
  const seeds = await page.getByTestId('results').locator('li .muted').allTextContents();
  return seeds.map((s) => Number(s.replace('seed ', '')));
}

/** Drag events with a file, as from the desktop. */
async function drag(page: Page, type: 'dragenter' | 'dragleave' | 'drop', png?: Uint8Array, name = 'dropped.png'): Promise<void> {
  await page.evaluate(
    ([eventType, data, fileName]) => {
      const transfer = new DataTransfer();
      transfer.items.add(new File([new Uint8Array((data as number[] | null) ?? [0])], fileName as string, { type: 'image/png' }));
      document.querySelector('.prompt-card')!.dispatchEvent(
        new DragEvent(eventType as string, { dataTransfer: transfer, bubbles: true, cancelable: true }),
      );
    },
    [type, png ? [...png] : null, name] as const,
  );
}

describe('gallery', () => {
  it('reuses one image of a batch as one image with its own seed, and sends an image with its request to image to image', async () => {
    expect(info.limits.max_images).toBeGreaterThanOrEqual(2);
    const page = await open();
    const seeds = await generateTwo(page, 'a batch of two');
    const second = seeds[1]!;
    await page.getByRole('button', { name: `Open: a batch of two (seed ${second})` }).click();
    const dialog = page.getByTestId('lightbox');
    await dialog.getByRole('heading', { name: `Seed ${second}` }).waitFor();
    await dialog.getByRole('button', { name: 'Reuse parameters & seed' }).click();
    await expect(page.locator('#field-num_images').inputValue()).resolves.toBe('1');
    await expect(page.locator('#field-seed').inputValue()).resolves.toBe(String(second));

    // Another prompt and settings; sending the image brings its own back.
    await prompt(page).fill('something else');
    await page.locator('#field-steps').fill('11');
    await page.getByRole('button', { name: `Open: a batch of two (seed ${second})` }).click();
    await dialog.getByRole('button', { name: 'Send to image to image' }).click();
    await page.getByAltText('The input image').waitFor();
    await expect(page.getByRole('button', { name: 'Image to image' }).getAttribute('aria-pressed')).resolves.toBe('true');
    await expect(prompt(page).inputValue()).resolves.toBe('a batch of two');
    await expect(page.locator('#field-steps').inputValue()).resolves.toBe('3');
    await expect(page.locator('#field-seed').inputValue()).resolves.toBe(String(second));
    await expect(page.locator('#field-num_images').inputValue()).resolves.toBe('1');
    await screenshot(page, 'sent-to-image-to-image');
    await page.context().close();
  });

  it('steps through the lightbox (keys, swipe), deletes with undo, and keeps the last result on a reload and a refused submit', async () => {
    const page = await open();
    const seeds = await generateTwo(page, 'step through me');
    const dialog = page.getByTestId('lightbox');
    const heading = () => dialog.getByRole('heading').textContent();
    // Newest first: the batch's second image, then its first.
    await page.getByTestId('gallery-item').first().click();
    await expect.poll(heading).toBe(`Seed ${seeds[1]}`);
    await page.keyboard.press('ArrowRight');
    await expect.poll(heading).toBe(`Seed ${seeds[0]}`);
    await page.keyboard.press('ArrowLeft');
    await expect.poll(heading).toBe(`Seed ${seeds[1]}`);
    // A swipe to the left: the next image.
    await dialog.locator('img.large').evaluate((img) => {
      const r = img.getBoundingClientRect();
      const y = r.top + r.height / 2;
      const at = (type: string, x: number) =>
        img.dispatchEvent(new PointerEvent(type, { pointerType: 'touch', clientX: x, clientY: y, bubbles: true, isPrimary: true }));
      at('pointerdown', r.left + r.width * 0.8);
      at('pointerup', r.left + r.width * 0.2);
    });
    await expect.poll(heading).toBe(`Seed ${seeds[0]}`);
    await screenshot(page, 'lightbox-stepped');

    // Delete, then undo.
    const count = await page.getByTestId('gallery-item').count();
    await dialog.getByRole('button', { name: 'Delete' }).click();
    const toast = page.getByTestId('undo-toast');
    await toast.getByText('Deleted').waitFor();
    await expect.poll(() => page.getByTestId('gallery-item').count()).toBe(count - 1);
    await screenshot(page, 'deleted-undo');
    await toast.getByRole('button', { name: 'Undo' }).click();
    await expect.poll(() => page.getByTestId('gallery-item').count()).toBe(count);
    await expect.poll(() => toast.count()).toBe(0);

    // The studio opened again (a new tab: no job to resume) shows the last result, not nothing.
    const again = await page.context().newPage();
    await again.goto(url);
    await prompt(again).waitFor();
    const last = again.getByTestId('last-result');
    await last.getByText(`seed ${seeds[1]}`).waitFor();
    expect(await last.locator('img').count()).toBe(2);
    expect(await again.getByText('Your images appear here.').count()).toBe(0);

    // A submit the worker refuses (422) keeps it.
    await prompt(again).fill('a bad size');
    await again.locator('#size-preset').selectOption('custom');
    await again.locator('#field-width').fill(String(info.limits.min_size + 1));
    await again.getByTestId('generate').click();
    await again.locator('#error-width').waitFor();
    expect(await last.locator('img').count()).toBe(2);
    await screenshot(again, 'refused-keeps-last-result');

    // A refused submit right after a result keeps that result on screen too.
    await prompt(page).fill('also refused');
    await page.locator('#size-preset').selectOption('custom');
    await page.locator('#field-width').fill(String(info.limits.min_size + 1));
    await page.getByTestId('generate').click();
    await page.locator('#error-width').waitFor();
    await page.getByTestId('last-result').getByText(`seed ${seeds[1]}`).waitFor();
    await page.context().close();
  });

  it('shows a drop overlay while a file is dragged over; in image to image a dropped PNG is read and becomes the input', async () => {
    const page = await open();
    await drag(page, 'dragenter');
    await page.getByTestId('drop-overlay').waitFor();
    await screenshot(page, 'drop-overlay');
    await drag(page, 'dragleave');
    await expect.poll(() => page.getByTestId('drop-overlay').count()).toBe(0);

    await page.getByRole('button', { name: 'Image to image' }).click();
    const png = makePng(
      info.model.native_width,
      info.model.native_height,
      'a dropped circle\nNegative prompt: fog\nSteps: 9, Sampler: Euler a, CFG scale: 5.5, Seed: 777, Size: 64x64',
    );
    await drag(page, 'dragenter', png);
    await drag(page, 'drop', png, 'from-a1111.png');
    await expect.poll(() => prompt(page).inputValue()).toBe('a dropped circle');
    await page.getByAltText('The input image').waitFor();
    await expect(page.locator('#field-seed').inputValue()).resolves.toBe('777');
    expect(await page.getByTestId('drop-overlay').count()).toBe(0);

    // Text to image: read only, no input image taken.
    await page.getByRole('button', { name: 'Text to image' }).click();
    await drag(page, 'drop', makePng(16, 16, 'only read\nSteps: 5, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 64x64'), 'read.png');
    await expect.poll(() => prompt(page).inputValue()).toBe('only read');
    await page.context().close();
  });

  it('offers the model’s example prompts as the placeholder and one-click suggestions', async () => {
    const examples = info.model.example_prompts ?? [];
    expect(examples.length).toBeGreaterThan(0);
    const page = await open();
    await prompt(page).fill('');
    await expect(prompt(page).getAttribute('placeholder')).resolves.toBe(examples[0]);
    const chips = page.getByTestId('example-prompts');
    await chips.getByRole('button', { name: examples[1] ?? examples[0]! }).click();
    await expect(prompt(page).inputValue()).resolves.toBe(examples[1] ?? examples[0]);
    await screenshot(page, 'example-prompts');
    await page.context().close();
  });
});
