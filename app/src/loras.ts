// LoRAs and embeddings in the studio: the LoRAs a person chose (with their
// weights as typed), the request's `loras` they become, which LoRAs suit the
// loaded model, and AUTOMATIC1111's `<lora:name:weight>` tags of a PNG's prompt
// turned back into chosen LoRAs. Names come from `GET /v1/loras` and
// `GET /v1/embeddings`: none is listed here.

import type { EmbeddingInfo, LoraInfo, LoraRef, WorkerInfo } from '@sd-worker/sdk';
import type { FieldErrors } from './form.js';

/** Largest absolute weight (the contract's `MAX_LORA_WEIGHT`, sdk-wasm/src/lora.rs). */
export const MAX_LORA_WEIGHT = 4;
/** Most LoRAs in one job (the contract's `MAX_LORAS`). */
export const MAX_LORAS = 16;
/** The weight slider's range; any weight in ±`MAX_LORA_WEIGHT` can be typed. */
export const SLIDER_MIN = 0;
export const SLIDER_MAX = 2;

/** One chosen LoRA as the form keeps it: weights as typed (strings). */
export interface ChosenLora {
  name: string;
  weight: string;
  /** Set only when a PNG's tag gave the UNet another weight than the text encoders. */
  unet_weight?: string;
  text_encoder_weight?: string;
}

/** The name of a chosen LoRA's field, as ids and errors use it: `loras[0].weight`. */
export function loraField(index: number, key: string): string {
  return `loras[${index}].${key}`;
}

/** A field the worker named (`loras.1.weight`, `loras[1].weight`) in `loraField`'s form. */
export function normalizeLoraField(field: string): string {
  return field.replace(/^loras\.(\d+)(?=\.|$)/, 'loras[$1]');
}

/** `errors` without those of the LoRAs (the list changed). */
export function withoutLoraErrors(errors: FieldErrors): FieldErrors {
  return Object.fromEntries(Object.entries(errors).filter(([k]) => !k.startsWith('loras')));
}

/**
 * Why `item` (a LoRA or an embedding) cannot go with the loaded model, or null
 * when it can: its family is known and not the model's (`unknown` is accepted,
 * as the worker accepts it).
 */
export function familyMismatch(item: Pick<LoraInfo | EmbeddingInfo, 'family'>, info: WorkerInfo): string | null {
  const model = info.model.family;
  if (!item.family || item.family === 'unknown' || item.family === model) return null;
  return `Made for ${item.family}; the model is ${model}.`;
}

function parseWeight(value: string, field: string, errors: FieldErrors): number | undefined {
  const v = value.trim();
  const n = Number(v);
  if (v === '' || !Number.isFinite(n)) {
    errors[field] = 'Enter a number.';
    return undefined;
  }
  if (Math.abs(n) > MAX_LORA_WEIGHT) {
    errors[field] = `Enter a number from -${MAX_LORA_WEIGHT} to ${MAX_LORA_WEIGHT}.`;
    return undefined;
  }
  return n;
}

/** The request's `loras` (undefined when none is chosen), or the errors of the weights. */
export function buildLoras(chosen: ChosenLora[]): { loras?: LoraRef[]; errors: FieldErrors } {
  const errors: FieldErrors = {};
  if (chosen.length > MAX_LORAS) errors.loras = `At most ${MAX_LORAS} LoRAs.`;
  const loras = chosen.map((c, i): LoraRef => {
    const ref: LoraRef = { name: c.name };
    const weight = parseWeight(c.weight, loraField(i, 'weight'), errors);
    if (weight !== undefined) ref.weight = weight;
    for (const key of ['unet_weight', 'text_encoder_weight'] as const) {
      const typed = c[key];
      if (typed === undefined) continue;
      const n = parseWeight(typed, loraField(i, key), errors);
      if (n !== undefined) ref[key] = n;
    }
    return ref;
  });
  return loras.length > 0 ? { loras, errors } : { errors };
}

/** One `<lora:…>` (or `<lyco:…>`) tag of a prompt. */
export interface LoraTag {
  /** The tag as written. */
  raw: string;
  name: string;
  /** Weight on the text encoders (1 when absent). */
  te: number;
  /** Weight on the UNet (`te` when absent). */
  unet: number;
}

const TAG = /<(?:lora|lyco):([^<>]+)>/gi;

/** A tag's arguments as A1111 reads them: `name[:te[:unet]]`, or `te=`/`unet=` by name; null when malformed. */
function parseTag(raw: string, body: string): LoraTag | null {
  const [name, ...args] = body.split(':').map((s) => s.trim());
  if (!name) return null;
  let te: number | undefined;
  let unet: number | undefined;
  let position = 0;
  for (const arg of args) {
    const eq = arg.indexOf('=');
    const key = eq >= 0 ? arg.slice(0, eq).trim() : position === 0 ? 'te' : position === 1 ? 'unet' : '';
    const value = Number(eq >= 0 ? arg.slice(eq + 1) : arg);
    if (eq < 0) position += 1;
    if (arg === '' || !Number.isFinite(value)) return null;
    if (key === 'te') te = value;
    else if (key === 'unet') unet = value;
    else return null;
  }
  const teWeight = te ?? 1;
  return { raw, name, te: teWeight, unet: unet ?? teWeight };
}

/** The LoRA tags of `text`, in order (malformed ones are left out: the worker names them). */
export function parseLoraTags(text: string): LoraTag[] {
  const tags: LoraTag[] = [];
  for (const m of text.matchAll(TAG)) {
    const tag = parseTag(m[0], m[1]!);
    if (tag) tags.push(tag);
  }
  return tags;
}

/** `text` without `tags`, tidied: no doubled spaces or commas, nor a comma at either end. */
export function removeTags(text: string, tags: readonly LoraTag[]): string {
  let out = text;
  for (const tag of tags) out = out.replace(tag.raw, '');
  return out
    .replace(/[ \t]+/g, ' ')
    .replace(/\s*,(\s*,)+/g, ',')
    .replace(/ ,/g, ',')
    .replace(/^[\s,]+|[\s,]+$/g, '');
}

function chosenOf(tag: LoraTag): ChosenLora {
  if (tag.te === tag.unet) return { name: tag.name, weight: String(tag.te) };
  return {
    name: tag.name,
    weight: String(tag.te),
    unet_weight: String(tag.unet),
    text_encoder_weight: String(tag.te),
  };
}

/** What a PNG's parameters become: its LoRAs as chosen ones, and what could not be restored exactly. */
export interface RestoredLoras {
  prompt: string;
  negative_prompt: string;
  chosen: ChosenLora[];
  /** Names of the PNG's LoRAs this worker does not have (their tags are removed too). */
  missing: string[];
  /** LoRAs named only by `Lora hashes` (chosen through the `loras` field): the PNG has no weight, 1 is used. */
  unweighted: string[];
  /** LoRAs whose hash in the PNG is not that of this worker's file of the same name. */
  changed: string[];
}

/** `Lora hashes: "name: hash, name2: hash2"` (A1111's infotext) as [name, hash] pairs. */
export function parseLoraHashes(text: string | undefined): [string, string][] {
  if (!text) return [];
  return text
    .split(',')
    .map((part) => {
      const at = part.lastIndexOf(':');
      return at < 0 ? null : ([part.slice(0, at).trim(), part.slice(at + 1).trim()] as [string, string]);
    })
    .filter((p): p is [string, string] => p !== null && p[0] !== '');
}

/**
 * Restores the LoRAs of a PNG's parameters: the `<lora:…>` tags of its prompts
 * become chosen LoRAs (the first tag of a name wins) and leave the text, so
 * the request's `loras` carries them; the LoRAs of its `Lora hashes` without a
 * tag (a job that chose them in `loras`) are chosen at weight 1. A LoRA not in
 * `available` is reported in `missing`, one whose hash differs in `changed`.
 */
export function restoreLoras(
  prompt: string,
  negative: string,
  available: readonly LoraInfo[],
  loraHashes?: string,
): RestoredLoras {
  const byName = new Map(available.map((l) => [l.name, l]));
  const chosen: ChosenLora[] = [];
  const missing: string[] = [];
  const seen = (name: string) => chosen.some((c) => c.name === name) || missing.includes(name);
  const texts = [prompt, negative].map((text) => {
    const tags = parseLoraTags(text);
    for (const tag of tags) {
      if (seen(tag.name)) continue;
      if (byName.has(tag.name)) chosen.push(chosenOf(tag));
      else missing.push(tag.name);
    }
    return tags.length > 0 ? removeTags(text, tags) : text;
  });
  const unweighted: string[] = [];
  const changed: string[] = [];
  for (const [name, hash] of parseLoraHashes(loraHashes)) {
    const here = byName.get(name);
    if (here && hash && here.hash !== hash && !changed.includes(name)) changed.push(name);
    if (seen(name)) continue;
    if (here) {
      chosen.push({ name, weight: '1' });
      unweighted.push(name);
    } else missing.push(name);
  }
  return { prompt: texts[0]!, negative_prompt: texts[1]!, chosen: chosen.slice(0, MAX_LORAS), missing, unweighted, changed };
}

/** A sentence on what `restoreLoras` could not restore exactly, or '' when all is well. */
export function restoreNote(r: RestoredLoras): string {
  const list = (names: string[]) => names.map((n) => `“${n}”`).join(', ');
  const parts: string[] = [];
  if (r.missing.length > 0) parts.push(`Not on this worker: ${list(r.missing)}.`);
  if (r.unweighted.length > 0) parts.push(`The PNG does not give the weight of ${list(r.unweighted)}: set to 1.`);
  if (r.changed.length > 0) parts.push(`This worker's ${list(r.changed)} is another file than the PNG's (the hash differs).`);
  return parts.join(' ');
}

/** A request's `loras` (a gallery entry's) as chosen LoRAs, weights as text. */
export function chosenOfRefs(refs: readonly LoraRef[]): ChosenLora[] {
  return refs.map((l) => ({
    name: l.name,
    weight: String(l.weight ?? 1),
    ...(l.unet_weight !== undefined && { unet_weight: String(l.unet_weight) }),
    ...(l.text_encoder_weight !== undefined && { text_encoder_weight: String(l.text_encoder_weight) }),
  }));
}

/** Chosen LoRAs (from storage) this worker still has, at most `MAX_LORAS`, each once. */
export function restoreChosen(saved: unknown, available: readonly LoraInfo[]): ChosenLora[] {
  if (!Array.isArray(saved)) return [];
  const names = new Set(available.map((l) => l.name));
  const out: ChosenLora[] = [];
  for (const s of saved as Partial<ChosenLora>[]) {
    if (!s || typeof s.name !== 'string' || !names.has(s.name) || out.some((c) => c.name === s.name)) continue;
    out.push({
      name: s.name,
      weight: typeof s.weight === 'string' ? s.weight : '1',
      ...(typeof s.unet_weight === 'string' && { unet_weight: s.unet_weight }),
      ...(typeof s.text_encoder_weight === 'string' && { text_encoder_weight: s.text_encoder_weight }),
    });
  }
  return out.slice(0, MAX_LORAS);
}

/** `text` with `words` appended after a comma (as prompts are written), or `words` alone. */
export function appendWords(text: string, words: string): string {
  const t = text.replace(/\s+$/, '');
  if (t === '') return words;
  return t.endsWith(',') ? `${t} ${words}` : `${t}, ${words}`;
}

/** LoRAs whose name, trigger words or family hold every word of `query` (case ignored). */
export function searchLoras(loras: readonly LoraInfo[], query: string): LoraInfo[] {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  if (words.length === 0) return [...loras];
  return loras.filter((l) => {
    const hay = [l.name, l.family, l.metadata.title ?? '', ...l.trigger_words].join(' ').toLowerCase();
    return words.every((w) => hay.includes(w));
  });
}
