import type { LoraInfo, WorkerInfo } from '@sd-worker/sdk';
import { describe, expect, it } from 'vitest';
import {
  appendWords,
  buildLoras,
  chosenOfRefs,
  familyMismatch,
  normalizeLoraField,
  parseLoraHashes,
  parseLoraTags,
  removeTags,
  restoreChosen,
  restoreLoras,
  restoreNote,
  searchLoras,
  withoutLoraErrors,
} from '../src/loras.js';
import { INFO } from './fixtures.js';

const SD15 = { ...INFO, model: { ...INFO.model, family: 'stable-diffusion-1' } } as WorkerInfo;

const lora = (name: string, patch: Partial<LoraInfo> = {}): LoraInfo => ({
  name,
  size_bytes: 1000,
  family: 'stable-diffusion-1',
  format: 'kohya',
  hash: `${name.padEnd(12, '0').slice(0, 12)}`,
  trigger_words: [],
  metadata: {},
  ...patch,
});

const AVAILABLE = [
  lora('style', { hash: 'aaaaaaaaaaaa', trigger_words: ['oil painting', 'sks'] }),
  lora('detail', { hash: 'bbbbbbbbbbbb' }),
  lora('xl-thing', { family: 'stable-diffusion-xl', trigger_words: ['glossy'] }),
];

describe('buildLoras', () => {
  it('sends nothing without chosen LoRAs', () => {
    expect(buildLoras([])).toEqual({ errors: {} });
  });

  it('turns typed weights into numbers, the split weights only when set', () => {
    expect(
      buildLoras([
        { name: 'style', weight: '0.8' },
        { name: 'detail', weight: '1', unet_weight: '0.5', text_encoder_weight: '-1.25' },
      ]),
    ).toEqual({
      loras: [
        { name: 'style', weight: 0.8 },
        { name: 'detail', weight: 1, unet_weight: 0.5, text_encoder_weight: -1.25 },
      ],
      errors: {},
    });
  });

  it('accepts -4..4 and names the field of a weight out of range or not a number', () => {
    expect(buildLoras([{ name: 'a', weight: '-4' }]).errors).toEqual({});
    expect(buildLoras([{ name: 'a', weight: '4' }]).errors).toEqual({});
    expect(buildLoras([{ name: 'a', weight: '1' }, { name: 'b', weight: '4.5' }]).errors).toEqual({
      'loras[1].weight': 'Enter a number from -4 to 4.',
    });
    expect(buildLoras([{ name: 'a', weight: '' }]).errors).toEqual({ 'loras[0].weight': 'Enter a number.' });
    expect(buildLoras([{ name: 'a', weight: '1', unet_weight: 'x', text_encoder_weight: '1' }]).errors).toEqual({
      'loras[0].unet_weight': 'Enter a number.',
    });
  });

  it('refuses more than 16', () => {
    const many = Array.from({ length: 17 }, (_, i) => ({ name: `l${i}`, weight: '1' }));
    expect(buildLoras(many).errors.loras).toBe('At most 16 LoRAs.');
  });
});

describe('fields', () => {
  it("normalizes the worker's field names and drops the LoRAs' errors", () => {
    expect(normalizeLoraField('loras.2.weight')).toBe('loras[2].weight');
    expect(normalizeLoraField('loras[2].name')).toBe('loras[2].name');
    expect(normalizeLoraField('prompt')).toBe('prompt');
    expect(withoutLoraErrors({ 'loras[0].weight': 'x', loras: 'y', prompt: 'z' })).toEqual({ prompt: 'z' });
  });
});

describe('parseLoraTags', () => {
  it('reads the tags as A1111 does: name, te and unet weights, positional or named, lyco too', () => {
    expect(
      parseLoraTags('a cat <lora:style> <lora:detail:0.8>, <LORA:x:0.8:0.5> <lyco:y:te=0.3:unet=-1> <lora:z:unet=2>'),
    ).toEqual([
      { raw: '<lora:style>', name: 'style', te: 1, unet: 1 },
      { raw: '<lora:detail:0.8>', name: 'detail', te: 0.8, unet: 0.8 },
      { raw: '<LORA:x:0.8:0.5>', name: 'x', te: 0.8, unet: 0.5 },
      { raw: '<lyco:y:te=0.3:unet=-1>', name: 'y', te: 0.3, unet: -1 },
      { raw: '<lora:z:unet=2>', name: 'z', te: 1, unet: 2 },
    ]);
  });

  it('leaves out malformed tags and other kinds', () => {
    expect(parseLoraTags('<lora:a:heavy> <lora:> <hypernet:b:1> <lora:c:dyn=3> <lora:d:1>')).toEqual([
      { raw: '<lora:d:1>', name: 'd', te: 1, unet: 1 },
    ]);
  });

  it('removes tags and tidies the commas and spaces left', () => {
    const text = '<lora:a:1>, a cat,  <lora:b>, sitting <lora:c:0.5>';
    expect(removeTags(text, parseLoraTags(text))).toBe('a cat, sitting');
  });
});

describe('restoreLoras', () => {
  it("turns a PNG prompt's tags into chosen LoRAs and reports those this worker lacks", () => {
    const r = restoreLoras('a cat <lora:style:0.7>, <lora:gone:1>', 'blurry <lora:detail:0.8:0.4>', AVAILABLE);
    expect(r.prompt).toBe('a cat');
    expect(r.negative_prompt).toBe('blurry');
    expect(r.chosen).toEqual([
      { name: 'style', weight: '0.7' },
      { name: 'detail', weight: '0.8', unet_weight: '0.4', text_encoder_weight: '0.8' },
    ]);
    expect(r.missing).toEqual(['gone']);
    expect(restoreNote(r)).toBe('Not on this worker: “gone”.');
  });

  it('chooses the LoRAs of `Lora hashes` without a tag at weight 1, and notes a changed file', () => {
    const r = restoreLoras('a cat <lora:style:0.5>', '', AVAILABLE, 'style: aaaaaaaaaaaa, detail: 123456789abc, gone: 1');
    expect(r.chosen).toEqual([
      { name: 'style', weight: '0.5' },
      { name: 'detail', weight: '1' },
    ]);
    expect(r.unweighted).toEqual(['detail']);
    expect(r.changed).toEqual(['detail']);
    expect(r.missing).toEqual(['gone']);
    expect(restoreNote(r)).toContain('The PNG does not give the weight of “detail”: set to 1.');
  });

  it('leaves a prompt without tags as written', () => {
    const r = restoreLoras('a <b> cat', '', AVAILABLE);
    expect(r).toMatchObject({ prompt: 'a <b> cat', chosen: [], missing: [] });
    expect(restoreNote(r)).toBe('');
  });

  it('reads `Lora hashes`', () => {
    expect(parseLoraHashes('a: 1, b c: 2')).toEqual([
      ['a', '1'],
      ['b c', '2'],
    ]);
    expect(parseLoraHashes(undefined)).toEqual([]);
  });
});

describe('lists', () => {
  it("disables an item of another family than the model's, with the reason", () => {
    expect(familyMismatch(AVAILABLE[0]!, SD15)).toBeNull();
    expect(familyMismatch({ family: 'unknown' }, SD15)).toBeNull();
    expect(familyMismatch(AVAILABLE[2]!, SD15)).toBe('Made for stable-diffusion-xl; the model is stable-diffusion-1.');
  });

  it('searches names, trigger words and families', () => {
    expect(searchLoras(AVAILABLE, '').map((l) => l.name)).toEqual(['style', 'detail', 'xl-thing']);
    expect(searchLoras(AVAILABLE, 'OIL').map((l) => l.name)).toEqual(['style']);
    expect(searchLoras(AVAILABLE, 'xl glossy').map((l) => l.name)).toEqual(['xl-thing']);
    expect(searchLoras(AVAILABLE, 'nothing')).toEqual([]);
  });

  it('appends words to a prompt after a comma', () => {
    expect(appendWords('', 'sks')).toBe('sks');
    expect(appendWords('a cat ', 'sks')).toBe('a cat, sks');
    expect(appendWords('a cat,', 'sks')).toBe('a cat, sks');
  });

  it('restores stored choices this worker still has, each once, and a request’s `loras`', () => {
    expect(
      restoreChosen(
        [{ name: 'style', weight: '0.3' }, { name: 'gone', weight: '1' }, { name: 'style', weight: '2' }, { weight: '1' }],
        AVAILABLE,
      ),
    ).toEqual([{ name: 'style', weight: '0.3' }]);
    expect(restoreChosen('junk', AVAILABLE)).toEqual([]);
    expect(chosenOfRefs([{ name: 'a' }, { name: 'b', weight: 0.5, unet_weight: 1 }])).toEqual([
      { name: 'a', weight: '1' },
      { name: 'b', weight: '0.5', unet_weight: '1' },
    ]);
  });
});
