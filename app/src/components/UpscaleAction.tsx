// Upscaling a gallery image (in the lightbox): one of the worker's upscalers,
// 2× or 4×, the tiles' progress, Cancel; the result lands in the gallery.

import { useState, type ReactNode } from 'react';
import { upscalerLabel } from '../hires.js';
import { CodeText } from './CodeText.js';
import { errorText } from '../lib/errors.js';
import type { GalleryEntry } from '../lib/gallery-db.js';
import { defaultUpscaler, type Upscaling } from '../use-upscale.js';

const FACTORS = [2, 4] as const;

export function UpscaleAction(props: {
  entry: GalleryEntry;
  upscaling: Upscaling;
  /** `limits.max_input_pixels`: the largest output. */
  maxPixels: number;
  workerUrl: string;
}): ReactNode {
  const { entry, upscaling, maxPixels, workerUrl } = props;
  const { upscalers, job, sourceId } = upscaling;
  const [chosen, setChosen] = useState('');
  if (upscalers.length === 0) return null;
  const upscaler = upscalers.some((u) => u.name === chosen) ? chosen : defaultUpscaler(upscalers);
  const mine = sourceId === entry.id;
  const { progress } = job;

  return (
    <div className="upscale" data-testid="upscale">
      <div className="row wrap">
        <label htmlFor="upscale-upscaler">Upscaler</label>
        <select id="upscale-upscaler" value={upscaler} onChange={(e) => setChosen(e.target.value)}>
          {upscalers.map((u) => (
            <option key={u.name} value={u.name}>
              {upscalerLabel(u)}
            </option>
          ))}
        </select>
        {FACTORS.map((f) => {
          const tooLarge = entry.width * entry.height * f * f > maxPixels;
          return (
            <button
              key={f}
              type="button"
              disabled={job.isLoading || tooLarge}
              title={tooLarge ? `Over the worker's ${maxPixels.toLocaleString('en')} pixels` : undefined}
              onClick={() => void upscaling.start(entry, upscaler, f)}
              data-testid={`upscale-${f}`}
            >
              Upscale {f}×
            </button>
          );
        })}
      </div>
      {job.isLoading && (
        <div className="progress-line">
          <p role="status" aria-live="polite" data-testid="upscale-progress">
            {!mine ? 'Upscaling another image… ' : ''}
            {progress && progress.total > 0
              ? `Tile ${progress.step} of ${progress.total}`
              : job.status === 'queued'
                ? 'Queued'
                : 'Upscaling…'}
          </p>
          <progress max={progress?.total || 1} value={progress ? progress.step : undefined} aria-label="Upscale progress" />
          <button type="button" className="danger" onClick={() => void job.cancel()}>
            Cancel
          </button>
        </div>
      )}
      {mine && job.status === 'failed' && job.error && (
        <p className="notice error" role="alert" data-testid="upscale-error">
          <CodeText text={errorText(job.error, workerUrl)} />
        </p>
      )}
      {mine && job.status === 'cancelled' && <p className="muted">Upscale cancelled.</p>}
    </div>
  );
}
