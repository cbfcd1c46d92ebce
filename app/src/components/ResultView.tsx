// The result area: the job's progress, then its images. Until this mode's job
// has images of its own (after a reload, or when a submit was refused), it
// keeps showing the last result of the gallery rather than going blank.

import type { JobState } from '@sd-worker/react';
import type { ReactNode } from 'react';
import type { GalleryEntry } from '../lib/gallery-db.js';
import { LoraMatches } from './LoraSection.js';
import { ProgressView } from './ProgressView.js';
import { blobUrl } from './thumbs.js';
import { CodeText } from './CodeText.js';

/** The newest gallery entry's batch (its job's images, in order). */
export function lastResult(gallery: readonly GalleryEntry[]): GalleryEntry[] {
  const newest = gallery[0];
  if (!newest) return [];
  return gallery.filter((g) => g.jobId === newest.jobId).sort((a, b) => a.index - b.index);
}

export function ResultView(props: {
  job: JobState & { isLoading: boolean; isIdle: boolean };
  generalError: string | null;
  cancelling: boolean;
  onCancel: () => void;
  /** The gallery's last result, shown while the job has none. */
  last: GalleryEntry[];
  onOpenImage: (index: number) => void;
  onOpenEntry: (entry: GalleryEntry) => void;
}): ReactNode {
  const { job, generalError, cancelling, onCancel, last, onOpenImage, onOpenEntry } = props;
  const completed = job.status === 'completed';
  const showLast = !completed && !job.isLoading && last.length > 0;
  return (
    <section className="card result" aria-label="Result" data-testid="result">
      {job.isLoading && <ProgressView job={job} onCancel={onCancel} cancelling={cancelling} />}
      {generalError && (
        <div className="notice error" role="alert" data-testid="job-error">
          <CodeText text={generalError} />
        </div>
      )}
      {job.status === 'cancelled' && (
        <p className="muted" role="status" data-testid="cancelled">
          Cancelled.
        </p>
      )}
      {job.warnings.map((w, i) => (
        <p key={`${w.code}-${i}`} className="notice warn" data-testid="job-warning" data-code={w.code}>
          <CodeText text={w.message} />
        </p>
      ))}
      {completed && <LoraMatches loras={job.loras} />}
      {completed && (
        <ul className="results" data-testid="results">
          {job.images.map((image, i) => (
            <li key={`${job.jobId}-${i}`}>
              <button type="button" className="result-image" onClick={() => onOpenImage(i)}>
                <img src={image.url} width={image.width} height={image.height} alt={`Result, seed ${image.seed}`} />
              </button>
              <span className="muted">seed {image.seed}</span>
            </li>
          ))}
        </ul>
      )}
      {showLast && (
        <>
          <p className="muted">Last result</p>
          <ul className="results" data-testid="last-result">
            {last.map((entry) => (
              <li key={entry.id}>
                <button type="button" className="result-image" onClick={() => onOpenEntry(entry)}>
                  <img src={blobUrl(entry.blob)} width={entry.width} height={entry.height} alt={`Result, seed ${entry.seed}`} />
                </button>
                <span className="muted">seed {entry.seed}</span>
              </li>
            ))}
          </ul>
        </>
      )}
      {job.isIdle && last.length === 0 && <p className="muted placeholder">Your images appear here.</p>}
    </section>
  );
}
