// Every image generated here, newest first, kept across reloads.

import type { Operation } from '@sd-worker/sdk';
import type { ReactNode } from 'react';
import type { GalleryEntry } from '../lib/gallery-db.js';
import { blobUrl } from './thumbs.js';

const OP_LABEL: Record<Operation, string> = {
  image_generation: 'Text to image',
  image_transform: 'Image to image',
  image_inpaint: 'Inpainting',
  image_upscale: 'Upscaled',
};

export function Gallery(props: { entries: GalleryEntry[]; onOpen: (entry: GalleryEntry) => void }): ReactNode {
  const { entries, onOpen } = props;
  return (
    <section className="gallery" aria-labelledby="gallery-title">
      <h2 id="gallery-title">
        Gallery <span className="muted">({entries.length})</span>
      </h2>
      {entries.length === 0 ? (
        <p className="muted">Generated images are kept here, in this browser.</p>
      ) : (
        <ul className="thumbs" data-testid="gallery">
          {entries.map((e) => (
            <li key={e.id}>
              <button
                type="button"
                className="thumb"
                onClick={() => onOpen(e)}
                aria-label={`Open: ${e.params?.prompt ?? 'image'} (seed ${e.seed})`}
                data-testid="gallery-item"
              >
                <img src={blobUrl(e.blob)} alt="" width={e.width} height={e.height} loading="lazy" />
                <span className="thumb-caption">
                  {OP_LABEL[e.operation]} · {e.seed}
                </span>
              </button>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
