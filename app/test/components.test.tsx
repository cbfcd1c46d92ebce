import type { JobState } from '@sd-worker/react';
import { cleanup, render, screen } from '@testing-library/react';
import { afterEach, describe, expect, it } from 'vitest';
import { ParamsPanel } from '../src/components/ParamsPanel.js';
import { ProgressView } from '../src/components/ProgressView.js';
import { defaultForm } from '../src/form.js';
import { INFO } from './fixtures.js';

afterEach(cleanup);

const job = (patch: Partial<JobState>): JobState => ({
  status: 'running',
  jobId: 'job-1',
  queuePosition: null,
  progress: null,
  preview: null,
  images: [],
  error: null,
  warnings: [],
  loras: [],
  ...patch,
});

describe('ParamsPanel', () => {
  it('shows a field error next to its control, tied by aria-describedby', () => {
    const form = { ...defaultForm(INFO), width: '70' };
    render(<ParamsPanel info={INFO} mode="txt2img" form={form} set={() => {}} errors={{ width: '`width` must be a multiple of 4' }} lastSeed={null} />);
    const width = screen.getByLabelText('Width');
    expect(width.getAttribute('aria-invalid')).toBe('true');
    expect(document.getElementById(width.getAttribute('aria-describedby')!)?.textContent).toBe('`width` must be a multiple of 4');
    expect(screen.getByLabelText('Height').getAttribute('aria-describedby')).toBeNull();
  });

  it('offers the worker’s schedulers and limits', () => {
    render(<ParamsPanel info={INFO} mode="img2img" form={defaultForm(INFO)} set={() => {}} errors={{}} lastSeed={42} />);
    const options = [...(screen.getByLabelText('Scheduler') as HTMLSelectElement).options].map((o) => o.value);
    expect(options).toEqual(['ddim', 'euler', 'euler_a']);
    expect((screen.getByLabelText('Steps') as HTMLInputElement).max).toBe('150');
    expect(screen.getByText('Same as the input image')).toBeTruthy();
    expect(screen.getByTestId('last-seed').textContent).toBe('42');
  });
});

describe('ProgressView', () => {
  it('shows the queue position, then step, percent and time left', () => {
    const { rerender } = render(<ProgressView job={job({ status: 'queued', queuePosition: 3 })} onCancel={() => {}} cancelling={false} />);
    expect(screen.getByTestId('progress-text').textContent).toBe('Queued: position 3');
    rerender(
      <ProgressView
        job={job({ progress: { step: 5, total: 20, percent: 25, etaMs: 4200 } })}
        onCancel={() => {}}
        cancelling={false}
      />,
    );
    expect(screen.getByTestId('progress-text').textContent).toBe('Step 5 of 20 · 25% · about 5 s left');
    expect(screen.getByRole('button', { name: 'Cancel' })).toBeTruthy();
  });
});
