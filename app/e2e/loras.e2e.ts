// LoRAs and embeddings in the studio end to end: a worker of its own, on the
// tiny random-weight model, with a `--lora-dir` of LoRAs written by
// `sd-worker generate-lora` (two of the tiny model, one of the tiny SDXL shape)
// and an `--embeddings-dir` with one `generate-embedding` file. A person finds
// a LoRA, sets its weight, adds its trigger word and an embedding, generates,
// sees how many of the LoRA's tensors matched, then drops the result's PNG
// (and an A1111 PNG with tags) back and sees the LoRAs restored.

import { rm } from 'node:fs/promises';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LoraInfo } from '@sd-worker/sdk';
import { launch, makePng, newPage, screenshot } from './browser.js';
import { generateTinyLoraWorker, startWorker, TRIGGER_WORDS, type RunningWorker } from './worker.js';

const STYLE = 'style';
const DETAIL = 'detail';
const PARTIAL = 'partial';
const XL = 'xl-only';
const EMBEDDING = 'shapey';

let worker: RunningWorker | undefined;
let dir = '';
let browser: Browser;

beforeAll(async () => {
  const made = await generateTinyLoraWorker([STYLE, DETAIL, PARTIAL], XL, EMBEDDING);
  dir = made.dir;
  worker = await startWorker({}, made.args);
  await worker.ready();
  browser = await launch();
});

afterAll(async () => {
  await browser?.close();
  await worker?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function open(): Promise<Page> {
  const { page } = await newPage(browser);
  await page.goto(worker!.url);
  await page.getByRole('group', { name: 'LoRAs', exact: true }).waitFor();
  return page;
}

/** Drops a PNG's bytes on the page, as a file dragged from the desktop. */
async function drop(page: Page, bytes: Uint8Array, name: string): Promise<void> {
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

const prompt = (page: Page) => page.getByLabel('Prompt', { exact: true });
const chosen = (page: Page) => page.getByTestId('chosen-lora');

describe('LoRAs', () => {
  it('are listed by the worker with their family and trigger words', async () => {
    const loras = (await (await fetch(`${worker!.url}/v1/loras`)).json()) as LoraInfo[];
    expect(loras.map((l) => [l.name, l.family])).toEqual([
      [DETAIL, 'stable-diffusion-1'],
      [PARTIAL, 'stable-diffusion-1'],
      [STYLE, 'stable-diffusion-1'],
      [XL, 'stable-diffusion-xl'],
    ]);
    expect(loras.find((l) => l.name === STYLE)!.trigger_words).toEqual(TRIGGER_WORDS);
  });

  it('picks a LoRA, generates with it, shows its match count, and restores it from the dropped PNG', async () => {
    const page = await open();
    const section = page.getByRole('group', { name: 'LoRAs', exact: true });

    // The SDXL LoRA is disabled, with the reason.
    const xl = section.locator(`[data-testid="lora-option"][data-name="${XL}"]`);
    await expect(xl.getByRole('button', { name: `Add ${XL}` }).isDisabled()).resolves.toBe(true);
    await xl.getByText('Made for stable-diffusion-xl; the model is stable-diffusion-1.').waitFor();

    // Search by trigger word, pick, set the weight, add the trigger word and the embedding.
    await section.getByLabel('Find a LoRA').fill('oil');
    await expect(section.getByTestId('lora-option').count()).resolves.toBe(1);
    await section.getByRole('button', { name: `Add ${STYLE}` }).click();
    await expect(chosen(page).count()).resolves.toBe(1);
    await expect(section.getByRole('button', { name: `Add ${STYLE}` }).isDisabled()).resolves.toBe(true);
    await section.getByLabel('Find a LoRA').fill('');
    await section.getByRole('button', { name: `Add ${DETAIL}` }).click();
    await expect(chosen(page).count()).resolves.toBe(2);
    await chosen(page).first().getByRole('spinbutton').fill('-1.5');
    await chosen(page).nth(1).getByRole('button', { name: `Remove ${DETAIL}` }).click();
    await expect(chosen(page).count()).resolves.toBe(1);
    await chosen(page).getByRole('spinbutton').fill('0.8');
    await expect(chosen(page).getByRole('slider').inputValue()).resolves.toBe('0.8');

    await prompt(page).fill('a red circle');
    await chosen(page).getByRole('button', { name: `Add trigger word ${TRIGGER_WORDS[0]} to the prompt` }).click();
    await expect(prompt(page).inputValue()).resolves.toBe(`a red circle, ${TRIGGER_WORDS[0]}`);
    await page.getByRole('button', { name: `Add ${EMBEDDING} to the negative prompt` }).click();
    await expect(page.getByLabel('Negative prompt', { exact: true }).inputValue()).resolves.toBe(EMBEDDING);
    await page.locator('#field-steps').fill('3');
    await screenshot(page, 'loras-chosen');

    const job = page.waitForRequest((r) => r.method() === 'POST' && r.url().endsWith('/v1/jobs'));
    await page.getByTestId('generate').click();
    const body = JSON.parse((await job).postData() ?? '{}') as { loras?: unknown; prompt: string; negative_prompt: string };
    expect(body.loras).toEqual([{ name: STYLE, weight: 0.8 }]);
    expect(body.prompt).toBe(`a red circle, ${TRIGGER_WORDS[0]}`);
    expect(body.negative_prompt).toBe(EMBEDDING);

    // The complete event's counts: every tensor of the LoRA matched the tiny model.
    const matches = page.getByTestId('lora-matches');
    await matches.waitFor({ timeout: 120_000 });
    const line = (await matches.locator(`[data-name="${STYLE}"]`).textContent()) ?? '';
    const m = /: (\d+) of (\d+) tensors matched/.exec(line);
    expect(m, line).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThan(0);
    expect(m![1]).toBe(m![2]);
    expect(line).toContain('UNet 0.8, text encoders 0.8');
    expect(await page.getByTestId('job-warning').count()).toBe(0);
    expect(await page.getByTestId('job-error').count()).toBe(0);
    await screenshot(page, 'loras-result');

    // The result's PNG: its `parameters` name the LoRA in `Lora hashes`.
    const src = await page.getByTestId('results').locator('img').first().getAttribute('src');
    const png = Buffer.from(src!.replace(/^data:image\/png;base64,/, ''), 'base64');
    expect(png.toString('latin1')).toMatch(/Lora hashes: "style: [0-9a-f]{12}"/);

    // The PNG's prompt carries the choice as a tag, with its weight (as A1111's infotexts do).
    expect(png.toString('latin1')).toContain(`${TRIGGER_WORDS[0]} <lora:${STYLE}:0.8>`);

    // Forget the choice, then drop the PNG back: the LoRA is chosen again, with its weight.
    await chosen(page).getByRole('button', { name: `Remove ${STYLE}` }).click();
    await prompt(page).fill('something else');
    await expect(chosen(page).count()).resolves.toBe(0);
    await drop(page, png, 'result.png');
    await expect.poll(() => prompt(page).inputValue()).toBe(`a red circle, ${TRIGGER_WORDS[0]}`);
    await expect(chosen(page).count()).resolves.toBe(1);
    await expect(chosen(page).getAttribute('data-name')).resolves.toBe(STYLE);
    await expect(chosen(page).getByRole('spinbutton').inputValue()).resolves.toBe('0.8');

    // An A1111 PNG with tags: they become chosen LoRAs with their weights; one this worker lacks is named.
    const a1111 = makePng(
      16,
      16,
      `a lighthouse <lora:${DETAIL}:0.6>, <lora:missing-one:1>\nNegative prompt: fog\nSteps: 5, Sampler: Euler a, CFG scale: 5, Seed: 9, Size: 64x64`,
    );
    await drop(page, a1111, 'a1111.png');
    await expect.poll(() => prompt(page).inputValue()).toBe('a lighthouse');
    await expect(chosen(page).count()).resolves.toBe(1);
    await expect(chosen(page).getAttribute('data-name')).resolves.toBe(DETAIL);
    await expect(chosen(page).getByRole('spinbutton').inputValue()).resolves.toBe('0.6');
    await page.getByTestId('notice').getByText('Not on this worker: “missing-one”.').waitFor();
    await screenshot(page, 'loras-restored');

    // The restored choice goes with the next job.
    const next = page.waitForRequest((r) => r.method() === 'POST' && r.url().endsWith('/v1/jobs'));
    await page.getByTestId('generate').click();
    const again = JSON.parse((await next).postData() ?? '{}') as { loras?: unknown };
    expect(again.loras).toEqual([{ name: DETAIL, weight: 0.6 }]);
    await page.getByTestId('lora-matches').locator(`[data-name="${DETAIL}"]`).waitFor({ timeout: 120_000 });
    await page.context().close();
  });

  it("shows a LoRA's unmatched tensors: the match count and the worker's lora_unmatched warning", async () => {
    const page = await open();
    await page.getByRole('button', { name: `Add ${PARTIAL}` }).click();
    await prompt(page).fill('a blue square');
    await page.locator('#field-steps').fill('2');
    await page.getByTestId('generate').click();
    const line = page.getByTestId('lora-matches').locator(`[data-name="${PARTIAL}"]`);
    await line.waitFor({ timeout: 120_000 });
    const m = /: (\d+) of (\d+) tensors matched/.exec((await line.textContent()) ?? '');
    expect(Number(m![2]) - Number(m![1])).toBe(2);
    await expect(line.getAttribute('class')).resolves.toContain('warn');
    await page.locator('[data-testid="job-warning"][data-code="lora_unmatched"]').waitFor();
    await screenshot(page, 'loras-unmatched');
    await page.context().close();
  });
});
