// Helpers for tests against the real worker: Prometheus counters and PNG checks.

import { inflateSync } from 'node:zlib';

/** The value of one Prometheus sample line (`name{labels} value`), 0 when absent. */
export async function metric(baseUrl: string, sample: string, token?: string): Promise<number> {
  const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  const text = await (await fetch(`${baseUrl}/metrics`, { headers })).text();
  for (const line of text.split('\n')) {
    if (line.startsWith(`${sample} `)) return Number(line.slice(sample.length + 1));
  }
  return 0;
}

export const SUBMITTED_T2I = 'sd_worker_jobs_submitted_total{operation="image_generation"}';
export const STREAM_REQUESTS = 'sd_worker_http_requests_total{method="GET",route="/v1/jobs/{id}/stream",status="200"}';

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/**
 * Parses a PNG far enough to know it decodes: signature, IHDR, and the IDAT data
 * inflating to exactly one filter byte plus one row of pixels per row.
 */
export function decodePng(base64: string): { width: number; height: number; textKeys: string[] } {
  const buf = Buffer.from(base64, 'base64');
  if (!PNG_SIGNATURE.every((b, i) => buf[i] === b)) throw new Error('not a PNG signature');
  let offset = 8;
  let width = 0;
  let height = 0;
  let channels = 0;
  const idat: Buffer[] = [];
  const textKeys: string[] = [];
  while (offset < buf.length) {
    const length = buf.readUInt32BE(offset);
    const type = buf.toString('latin1', offset + 4, offset + 8);
    const data = buf.subarray(offset + 8, offset + 8 + length);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      const bitDepth = data[8];
      const colourType = data[9];
      if (bitDepth !== 8) throw new Error(`unexpected bit depth ${bitDepth}`);
      channels = ({ 0: 1, 2: 3, 4: 2, 6: 4 } as Record<number, number>)[colourType!] ?? 0;
      if (!channels) throw new Error(`unexpected colour type ${colourType}`);
    } else if (type === 'IDAT') {
      idat.push(data);
    } else if (type === 'tEXt' || type === 'iTXt') {
      textKeys.push(data.toString('latin1', 0, data.indexOf(0)));
    } else if (type === 'IEND') {
      break;
    }
    offset += 12 + length;
  }
  const raw = inflateSync(Buffer.concat(idat));
  if (raw.length !== height * (1 + width * channels)) throw new Error('IDAT size does not match IHDR');
  return { width, height, textKeys };
}
