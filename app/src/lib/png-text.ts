// Reading the text chunks of a PNG (tEXt, zTXt, iTXt), where the worker and
// other Stable Diffusion tools keep the generation `parameters`.

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

export function isPng(bytes: Uint8Array): boolean {
  return bytes.length >= 8 && SIGNATURE.every((b, i) => bytes[i] === b);
}

async function inflate(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Response(data as BodyInit).body!.pipeThrough(new DecompressionStream('deflate'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

const latin1 = new TextDecoder('latin1');
const utf8 = new TextDecoder('utf-8');

/** Every text chunk of the PNG, keyword to text (the first of each keyword). Empty for a non-PNG. */
export async function readPngText(bytes: Uint8Array): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  if (!isPng(bytes)) return out;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let offset = 8;
  while (offset + 8 <= bytes.length) {
    const length = view.getUint32(offset);
    const type = latin1.decode(bytes.subarray(offset + 4, offset + 8));
    const data = bytes.subarray(offset + 8, Math.min(bytes.length, offset + 8 + length));
    offset += 12 + length;
    if (type === 'IEND') break;
    if (type !== 'tEXt' && type !== 'zTXt' && type !== 'iTXt') continue;
    const nul = data.indexOf(0);
    if (nul <= 0) continue;
    const keyword = latin1.decode(data.subarray(0, nul));
    if (keyword in out) continue;
    try {
      if (type === 'tEXt') {
        out[keyword] = latin1.decode(data.subarray(nul + 1));
      } else if (type === 'zTXt') {
        // keyword NUL method(1) compressed
        out[keyword] = latin1.decode(await inflate(data.subarray(nul + 2)));
      } else {
        // keyword NUL compressed-flag method language NUL translated NUL text
        const compressed = data[nul + 1] === 1;
        let p = nul + 3;
        p = data.indexOf(0, p) + 1; // after the language tag
        if (p === 0) continue;
        p = data.indexOf(0, p) + 1; // after the translated keyword
        if (p === 0) continue;
        const text = data.subarray(p);
        out[keyword] = utf8.decode(compressed ? await inflate(text) : text);
      }
    } catch {
      // a damaged chunk: skip it
    }
  }
  return out;
}

/** The `parameters` text of a PNG (AUTOMATIC1111's format), or null. */
export async function readPngParameters(bytes: Uint8Array): Promise<string | null> {
  const text = await readPngText(bytes);
  return text.parameters ?? null;
}
