// One gallery image, large, with what can be done with it.

import { schedulerLabel } from '@sd-worker/sdk';
import { useEffect, useRef, type ReactNode } from 'react';
import type { GalleryEntry } from '../lib/gallery-db.js';
import { blobUrl } from './thumbs.js';

export type LightboxAction = 'download' | 'reuse' | 'img2img' | 'inpaint' | 'delete';

export function Lightbox(props: {
  entry: GalleryEntry | null;
  onClose: () => void;
  onAction: (action: LightboxAction, entry: GalleryEntry) => void;
  /** More that can be done with the image (upscaling). */
  children?: ReactNode;
}): ReactNode {
  const { entry, onClose, onAction, children } = props;
  const dialog = useRef<HTMLDialogElement>(null);

  useEffect(() => {
    const d = dialog.current;
    if (!d) return;
    if (entry && !d.open) d.showModal();
    if (!entry && d.open) d.close();
  }, [entry]);

  const p = entry?.params;
  return (
    <dialog
      ref={dialog}
      className="lightbox"
      aria-labelledby="lightbox-title"
      onClose={onClose}
      onClick={(e) => {
        if (e.target === e.currentTarget) onClose();
      }}
      data-testid="lightbox"
    >
      {entry && (
        <div className="lightbox-body">
          <div className="lightbox-head">
            <h2 id="lightbox-title">Seed {entry.seed}</h2>
            <button type="button" onClick={onClose} aria-label="Close">
              ✕
            </button>
          </div>
          <img
            className="large"
            src={blobUrl(entry.blob)}
            alt={p?.prompt ?? 'generated image'}
            width={entry.width}
            height={entry.height}
          />
          <dl className="meta">
            {p && (
              <>
                <dt>Prompt</dt>
                <dd data-testid="lightbox-prompt">{p.prompt}</dd>
                {p.negative_prompt && (
                  <>
                    <dt>Negative</dt>
                    <dd>{p.negative_prompt}</dd>
                  </>
                )}
                <dt>Steps</dt>
                <dd>{p.steps ?? 'default'}</dd>
                <dt>Guidance</dt>
                <dd>{p.guidance_scale ?? 'default'}</dd>
                <dt>Scheduler</dt>
                <dd>{p.scheduler ? schedulerLabel(p.scheduler) : 'default'}</dd>
                {p.strength !== undefined && (
                  <>
                    <dt>Strength</dt>
                    <dd>{p.strength}</dd>
                  </>
                )}
              </>
            )}
            {entry.upscaled && (
              <>
                <dt>Upscaled</dt>
                <dd data-testid="lightbox-upscaled">
                  {entry.upscaled.scale}× by {entry.upscaled.upscaler}
                </dd>
              </>
            )}
            <dt>Size</dt>
            <dd data-testid="lightbox-size">
              {entry.width}×{entry.height}
            </dd>
            <dt>Made</dt>
            <dd>{new Date(entry.createdAt).toLocaleString()}</dd>
          </dl>
          <div className="row wrap">
            <button type="button" className="primary" onClick={() => onAction('download', entry)}>
              Download {entry.format.toUpperCase()}
            </button>
            <button type="button" onClick={() => onAction('reuse', entry)}>
              Reuse parameters &amp; seed
            </button>
            <button type="button" onClick={() => onAction('img2img', entry)}>
              Send to image to image
            </button>
            <button type="button" onClick={() => onAction('inpaint', entry)}>
              Send to inpainting
            </button>
            <button type="button" className="danger" onClick={() => onAction('delete', entry)}>
              Delete
            </button>
          </div>
          {children}
        </div>
      )}
    </dialog>
  );
}
