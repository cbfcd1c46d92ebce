// What the lightbox does with a gallery image: download it, reuse its request
// and seed, send it (with its request) to image to image or inpainting, delete
// it (with a few seconds to undo), and step to the previous or next image.

import type { WorkerInfo } from '@sd-worker/sdk';
import { useCallback, useEffect, useRef, useState } from 'react';
import type { LightboxAction } from './components/Lightbox.js';
import { revokeBlobUrl } from './components/thumbs.js';
import { formFromParsed, MODE_OF, type FormState, type JobParams, type Mode } from './form.js';
import { formFromEntry } from './gallery-form.js';
import { parseA1111 } from './lib/a1111.js';
import { addImage, deleteImage, type GalleryEntry } from './lib/gallery-db.js';
import { blobBytes, downloadBlob, loadImage, type LoadedImage } from './lib/images.js';
import { readPngParameters } from './lib/png-text.js';
import { chosenOfRefs, restoreChosen } from './loras.js';
import type { Loras } from './use-loras.js';
import type { Upscaling } from './use-upscale.js';

/** How long "Deleted · Undo" stays. */
export const UNDO_MS = 6000;

export interface GalleryActionsDeps {
  info: WorkerInfo;
  gallery: GalleryEntry[];
  lightbox: GalleryEntry | null;
  setLightbox: (entry: GalleryEntry | null) => void;
  setForm: (next: (f: FormState) => FormState) => void;
  setMode: (mode: Mode) => void;
  setInput: (image: LoadedImage) => void;
  setNotice: (notice: string) => void;
  loras: Loras;
  upscaling: Upscaling;
  refreshGallery: () => Promise<void>;
}

export interface GalleryActions {
  onAction: (action: LightboxAction, entry: GalleryEntry) => Promise<void>;
  /** The lightbox's neighbours in the gallery (newest first): -1 the previous, 1 the next. */
  step: (delta: -1 | 1) => void;
  canStep: (delta: -1 | 1) => boolean;
  /** The last deleted entry, while it can be restored. */
  deleted: GalleryEntry | null;
  undoDelete: () => Promise<void>;
}

const fileName = (e: GalleryEntry) => `seed-${e.seed}.${e.format === 'jpeg' ? 'jpg' : 'png'}`;

export function useGalleryActions(deps: GalleryActionsDeps): GalleryActions {
  const { info, gallery, lightbox, setLightbox, setForm, setMode, setInput, setNotice, loras, upscaling, refreshGallery } = deps;
  const [deleted, setDeleted] = useState<GalleryEntry | null>(null);
  const timer = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);

  // The deleted image's blob URL goes once it can no longer come back.
  const forget = useCallback((entry: GalleryEntry | null) => {
    clearTimeout(timer.current);
    if (entry) revokeBlobUrl(entry.blob);
  }, []);
  useEffect(() => () => clearTimeout(timer.current), []);

  /** The entry's request in the form (or, without one, its PNG's parameters). */
  const fill = async (entry: GalleryEntry, target: 'reuse' | 'img2img' | 'inpaint') => {
    const params: JobParams | null = entry.params;
    if (params) {
      setForm((f) => formFromEntry(f, params, entry.seed, target));
      loras.replace(restoreChosen(chosenOfRefs(params.loras ?? []), loras.available));
      return params;
    }
    const text = entry.format === 'png' ? await readPngParameters(await blobBytes(entry.blob)) : null;
    const parsed = text ? parseA1111(text, info.schedulers) : null;
    if (parsed)
      setForm((f) => {
        const next = formFromParsed(f, parsed, info.schedulers, upscaling.upscalers);
        return target === 'reuse' ? { ...next, num_images: '1' } : { ...next, num_images: '1', matchInput: true, width: f.width, height: f.height };
      });
    return null;
  };

  const onAction = async (action: LightboxAction, entry: GalleryEntry) => {
    switch (action) {
      case 'download':
        downloadBlob(entry.blob, `sd-worker-${entry.seed}.${entry.format === 'jpeg' ? 'jpg' : 'png'}`);
        return;
      case 'reuse': {
        const params = await fill(entry, 'reuse');
        // An upscaled image keeps its source's request.
        setMode(MODE_OF[params?.operation ?? entry.operation] ?? 'txt2img');
        setLightbox(null);
        setNotice(`Parameters and seed ${entry.seed} loaded.`);
        return;
      }
      case 'img2img':
      case 'inpaint':
        setInput(await loadImage(entry.blob, fileName(entry)));
        await fill(entry, action);
        setMode(action);
        setLightbox(null);
        setNotice(
          action === 'img2img'
            ? `Sent to image to image, with its prompt and seed ${entry.seed}.`
            : `Sent to inpainting, with its prompt and seed ${entry.seed}: paint the part to repaint.`,
        );
        return;
      case 'delete':
        await deleteImage(entry.id);
        setLightbox(null);
        setDeleted((previous) => {
          if (previous) forget(previous);
          return entry;
        });
        clearTimeout(timer.current);
        timer.current = setTimeout(() => {
          setDeleted((current) => {
            if (current === entry) revokeBlobUrl(entry.blob);
            return current === entry ? null : current;
          });
        }, UNDO_MS);
        await refreshGallery();
        return;
    }
  };

  const undoDelete = async () => {
    if (!deleted) return;
    clearTimeout(timer.current);
    const entry = deleted;
    setDeleted(null);
    await addImage(entry).catch(() => false);
    await refreshGallery();
    setNotice('Image restored.');
  };

  const neighbour = (delta: -1 | 1): GalleryEntry | null => {
    if (!lightbox) return null;
    const index = gallery.findIndex((g) => g.id === lightbox.id);
    return index < 0 ? null : (gallery[index + delta] ?? null);
  };
  const step = (delta: -1 | 1) => {
    const next = neighbour(delta);
    if (next) setLightbox(next);
  };

  return { onAction, step, canStep: (d) => neighbour(d) !== null, deleted, undoDelete };
}
