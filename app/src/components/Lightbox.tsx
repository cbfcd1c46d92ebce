// One gallery image, large, with what can be done with it; the arrow keys (or
// a swipe, on a touch screen) step to the previous or next image.

import { schedulerLabel } from '@sd-worker/sdk';
import { useEffect, useRef, type KeyboardEvent, type ReactNode } from 'react';
import type { GalleryEntry } from '../lib/gallery-db.js';
import { blobUrl } from './thumbs.js';

export type LightboxAction = 'download' | 'reuse' | 'img2img' | 'inpaint' | 'delete';

export function Lightbox(props: {
  entry: GalleryEntry | null;
  onClose: () => void;
  onAction: (action: LightboxAction, entry: GalleryEntry) => void;
  /** Steps to the previous (-1, newer) or next (1, older) gallery image. */
  onStep?: (delta: -1 | 1) => void;
  canStep?: (delta: -1 | 1) => boolean;
  /** More that can be done with the image (upscaling). */
  children?: ReactNode;
}): ReactNode {
  const { entry, onClose, onAction, onStep, canStep, children } = props;
  const dialog = useRef<HTMLDialogElement>(null);
  const swipeStart = useRef<{ x: number; y: number } | null>(null);

  const onKeyDown = (e: KeyboardEvent) => {
    if (!onStep || e.altKey || e.ctrlKey || e.metaKey) return;
    // Not while a control takes the arrows (a select, a text field).
    const target = e.target as HTMLElement;
    if (target.closest('input, select, textarea')) return;
    if (e.key === 'ArrowLeft') onStep(-1);
    else if (e.key === 'ArrowRight') onStep(1);
    else return;
    e.preventDefault();
  };

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
      onKeyDown={onKeyDown}
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
          <div className="lightbox-stage">
            {onStep && (
              <button
                type="button"
                className="lightbox-nav prev"
                aria-label="Previous image"
                disabled={!canStep?.(-1)}
                onClick={() => onStep(-1)}
              >
                ‹
              </button>
            )}
            <img
              className="large"
              src={blobUrl(entry.blob)}
              alt={p?.prompt ?? 'generated image'}
              width={entry.width}
              height={entry.height}
              draggable={false}
              onPointerDown={(e) => {
                if (e.pointerType !== 'mouse') swipeStart.current = { x: e.clientX, y: e.clientY };
              }}
              onPointerUp={(e) => {
                const start = swipeStart.current;
                swipeStart.current = null;
                if (!start || !onStep) return;
                const dx = e.clientX - start.x;
                if (Math.abs(dx) > 40 && Math.abs(dx) > Math.abs(e.clientY - start.y)) onStep(dx < 0 ? 1 : -1);
              }}
              onPointerCancel={() => (swipeStart.current = null)}
            />
            {onStep && (
              <button
                type="button"
                className="lightbox-nav next"
                aria-label="Next image"
                disabled={!canStep?.(1)}
                onClick={() => onStep(1)}
              >
                ›
              </button>
            )}
          </div>
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
