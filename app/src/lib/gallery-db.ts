// The gallery, kept in IndexedDB across reloads: every generated image with the
// parameters it was made with. Also a small key-value store (the input image).

import { openDB, type DBSchema, type IDBPDatabase } from 'idb';
import type { Operation } from '@sd-worker/sdk';
import type { JobParams } from '../form.js';

export interface GalleryEntry {
  /** `${jobId}:${index}`: saving the same result twice (a replay after a reload) keeps one. */
  id: string;
  jobId: string;
  index: number;
  operation: Operation;
  createdAt: number;
  /** The image file as the worker made it (PNGs carry their `parameters` chunk). */
  blob: Blob;
  format: 'png' | 'jpeg';
  seed: number;
  width: number;
  height: number;
  /** The request, without its images; null when unknown (a job submitted elsewhere). An upscale keeps its source's. */
  params: JobParams | null;
  /** An `image_upscale` result: how it was made, and from which entry. */
  upscaled?: Upscaled;
}

export interface Upscaled {
  /** The source entry's id. */
  from: string;
  upscaler: string;
  scale: number;
}

interface StudioDb extends DBSchema {
  images: { key: string; value: GalleryEntry; indexes: { createdAt: number } };
  kv: { key: string; value: unknown };
}

let db: Promise<IDBPDatabase<StudioDb>> | undefined;

function open(): Promise<IDBPDatabase<StudioDb>> {
  db ??= openDB<StudioDb>('sd-studio', 1, {
    upgrade(d) {
      const images = d.createObjectStore('images', { keyPath: 'id' });
      images.createIndex('createdAt', 'createdAt');
      d.createObjectStore('kv');
    },
  });
  return db;
}

/** Newest first. */
export async function listImages(): Promise<GalleryEntry[]> {
  const all = await (await open()).getAllFromIndex('images', 'createdAt');
  return all.reverse();
}

/** Saves the entry unless one with its id exists; true when it was added. */
export async function addImage(entry: GalleryEntry): Promise<boolean> {
  const tx = (await open()).transaction('images', 'readwrite');
  const exists = (await tx.store.getKey(entry.id)) !== undefined;
  if (!exists) await tx.store.put(entry);
  await tx.done;
  return !exists;
}

export async function hasImage(id: string): Promise<boolean> {
  return (await (await open()).getKey('images', id)) !== undefined;
}

export async function deleteImage(id: string): Promise<void> {
  await (await open()).delete('images', id);
}

export async function getValue<T>(key: string): Promise<T | undefined> {
  return (await (await open()).get('kv', key)) as T | undefined;
}

export async function setValue(key: string, value: unknown): Promise<void> {
  const d = await open();
  if (value === undefined || value === null) await d.delete('kv', key);
  else await d.put('kv', value, key);
}
