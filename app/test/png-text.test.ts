import { deflateSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { chunk, makePng } from '../e2e/png.js';
import { isPng, readPngParameters, readPngText } from '../src/lib/png-text.js';

function withChunks(...chunks: Buffer[]): Uint8Array {
  const png = makePng(4, 4);
  // Insert after IHDR (8 + 25 bytes).
  return new Uint8Array(Buffer.concat([png.subarray(0, 33), ...chunks, png.subarray(33)]));
}

describe('readPngText', () => {
  it('reads a tEXt parameters chunk (Latin-1)', async () => {
    const png = new Uint8Array(makePng(8, 8, 'a café\nSteps: 3, Seed: 5'));
    expect(isPng(png)).toBe(true);
    expect(await readPngParameters(png)).toBe('a café\nSteps: 3, Seed: 5');
  });

  it('reads iTXt (plain and compressed, UTF-8) and zTXt', async () => {
    const itxt = Buffer.concat([Buffer.from('parameters\0\0\0en\0\0', 'latin1'), Buffer.from('一只猫\nSteps: 4', 'utf8')]);
    expect(await readPngParameters(withChunks(chunk('iTXt', itxt)))).toBe('一只猫\nSteps: 4');

    const compressed = Buffer.concat([
      Buffer.from('parameters\0\x01\0\0\0', 'latin1'),
      deflateSync(Buffer.from('犬\nSteps: 6', 'utf8')),
    ]);
    expect(await readPngParameters(withChunks(chunk('iTXt', compressed)))).toBe('犬\nSteps: 6');

    const ztxt = Buffer.concat([Buffer.from('Comment\0\0', 'latin1'), deflateSync(Buffer.from('hello', 'latin1'))]);
    expect(await readPngText(withChunks(chunk('zTXt', ztxt)))).toEqual({ Comment: 'hello' });
  });

  it('answers nothing for a PNG without text, or a file that is not a PNG', async () => {
    expect(await readPngParameters(new Uint8Array(makePng(2, 2)))).toBeNull();
    expect(await readPngText(new TextEncoder().encode('GIF89a...'))).toEqual({});
  });

  it('skips a damaged compressed chunk and reads the rest', async () => {
    const bad = chunk('zTXt', Buffer.from('parameters\0\0not deflate', 'latin1'));
    const good = chunk('tEXt', Buffer.from('Software\0sd-worker', 'latin1'));
    expect(await readPngText(withChunks(bad, good))).toEqual({ Software: 'sd-worker' });
  });
});
