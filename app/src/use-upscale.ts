// Upscaling gallery images: the worker's upscalers (`GET /v1/upscalers`), an
// `image_upscale` job of a gallery entry's image (one at a time, followed
// across reloads), and its result saved into the gallery with its source's
// seed and parameters.

import { useUpscale, type Generation, type UpscaleParams } from '@sd-worker/react';
import type { Client, UpscalerInfo } from '@sd-worker/sdk';
import { useEffect, useState } from 'react';
import { addImage, type GalleryEntry, type Upscaled } from './lib/gallery-db.js';
import { blobToDataUrl, dataUrlToBlob } from './lib/images.js';

const SOURCE = 'sd-studio:upscale:';

/** What a job's result takes from its source, until it is in the gallery. */
interface Source {
  seed: number;
  params: GalleryEntry['params'];
  upscaled: Upscaled;
}

function readSource(jobId: string): Source | null {
  try {
    return JSON.parse(localStorage.getItem(SOURCE + jobId) ?? 'null') as Source | null;
  } catch {
    return null;
  }
}

function writeSource(jobId: string, source: Source | null): void {
  try {
    if (source) localStorage.setItem(SOURCE + jobId, JSON.stringify(source));
    else localStorage.removeItem(SOURCE + jobId);
  } catch {
    // the result keeps no source
  }
}

/** A model upscaler (the first), else the first built-in: what a person most likely wants. */
export function defaultUpscaler(upscalers: readonly UpscalerInfo[]): string {
  return (upscalers.find((u) => u.kind === 'model') ?? upscalers[0])?.name ?? '';
}

export interface Upscaling {
  /** The worker's upscalers (empty until read). */
  upscalers: UpscalerInfo[];
  job: Generation<UpscaleParams>;
  /** The entry being upscaled (null when none, or after a reload). */
  sourceId: string | null;
  start: (entry: GalleryEntry, upscaler: string, scale: number) => Promise<void>;
}

/** `onAdded` gets the result's gallery entry, once. */
export function useUpscaling(client: Client | Promise<Client>, onAdded: (entry: GalleryEntry) => void): Upscaling {
  const job = useUpscale({ persistKey: 'studio:upscale' });
  const [upscalers, setUpscalers] = useState<UpscalerInfo[]>([]);
  const [sourceId, setSourceId] = useState<string | null>(null);

  useEffect(() => {
    let live = true;
    void (async () => {
      // A worker without upscaling answers 404: the built-ins are not offered either.
      const list = await (await client).upscalers().catch(() => []);
      if (live) setUpscalers(list);
    })().catch(() => {});
    return () => {
      live = false;
    };
  }, [client]);

  const { status, jobId, images } = job;
  useEffect(() => {
    if (status !== 'completed' || !jobId || images.length === 0) return;
    void (async () => {
      const source = readSource(jobId);
      const image = images[0]!;
      const entry: GalleryEntry = {
        id: `${jobId}:0`,
        jobId,
        index: 0,
        operation: 'image_upscale',
        createdAt: Date.now(),
        blob: dataUrlToBlob(image.url),
        format: image.format,
        seed: source?.seed ?? image.seed,
        width: image.width,
        height: image.height,
        params: source?.params ?? null,
        ...(source ? { upscaled: source.upscaled } : {}),
      };
      const added = await addImage(entry).catch(() => false);
      writeSource(jobId, null);
      if (added) onAdded(entry);
    })();
  }, [status, jobId, images, onAdded]);

  const start = async (entry: GalleryEntry, upscaler: string, scale: number) => {
    setSourceId(entry.id);
    const id = await job.generate({ image: await blobToDataUrl(entry.blob), upscaler, scale });
    if (id) writeSource(id, { seed: entry.seed, params: entry.params, upscaled: { from: entry.id, upscaler, scale } });
  };

  return { upscalers, job, sourceId, start };
}
