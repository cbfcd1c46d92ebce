// Where the job is: submitting, queue position, step, percent, time left, the
// live preview, and Cancel; then its images or what went wrong.

import type { JobState } from '@sd-worker/react';
import type { Phase } from '@sd-worker/sdk';
import type { ReactNode } from 'react';

export function formatEta(ms: number | null): string {
  if (ms === null) return 'estimating…';
  const s = Math.ceil(ms / 1000);
  if (s < 60) return `about ${s} s left`;
  return `about ${Math.floor(s / 60)} min ${s % 60} s left`;
}

/** What a person calls each pass (every `Phase` of the contract). */
export const PHASE_LABEL: Record<Phase, string> = { base: 'Base pass', hires: 'Hires pass', upscale: 'Upscaling' };

export function ProgressView(props: {
  job: JobState;
  onCancel: () => void;
  cancelling: boolean;
}): ReactNode {
  const { job, onCancel, cancelling } = props;
  const { status, progress } = job;
  let line: string;
  if (status === 'submitting') line = 'Submitting…';
  else if (status === 'queued')
    line =
      job.queuePosition === null
        ? 'Queued'
        : job.queuePosition <= 1
          ? 'Queued: runs next'
          : `Queued: position ${job.queuePosition}`;
  else if (progress)
    line = `${progress.phase ? `${PHASE_LABEL[progress.phase]} · ` : ''}Step ${progress.step} of ${progress.total} · ${Math.round(progress.percent)}% · ${formatEta(progress.etaMs)}`;
  else line = 'Starting…';

  return (
    <div className="progress-view" data-testid="progress">
      <div className="progress-line">
        <p role="status" aria-live="polite" data-testid="progress-text" data-phase={progress?.phase}>
          {line}
        </p>
        <button type="button" className="danger" onClick={onCancel} disabled={cancelling}>
          {cancelling ? 'Cancelling…' : 'Cancel'}
        </button>
      </div>
      <progress
        max={progress?.total ?? 1}
        value={progress ? progress.step : undefined}
        aria-label="Generation progress"
      />
      {job.preview && (
        <img className="preview" src={job.preview} alt="Live preview of the image being generated" data-testid="preview" />
      )}
    </div>
  );
}
