import type { JobState } from '@sd-worker/react';
import { SCHEDULERS, type WorkerInfo } from '@sd-worker/sdk';
import { cleanup, render, screen } from '@testing-library/react';
import { afterEach, describe, expect, it } from 'vitest';
import { CodeText } from '../src/components/CodeText.js';
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
    const message = document.getElementById(width.getAttribute('aria-describedby')!)!;
    // The worker's markdown code span is code, not literal backticks.
    expect(message.textContent).toBe('width must be a multiple of 4');
    expect(message.querySelector('code')?.textContent).toBe('width');
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

describe('ParamsPanel labels', () => {
  it('names every scheduler by the contract’s label, never by its wire name', () => {
    const info = { ...INFO, schedulers: SCHEDULERS.map((s) => s.name) } as WorkerInfo;
    render(<ParamsPanel info={info} mode="txt2img" form={defaultForm(info)} set={() => {}} errors={{}} lastSeed={null} />);
    const options = [...(screen.getByLabelText('Scheduler') as HTMLSelectElement).options];
    expect(options.map((o) => o.textContent!.replace(' (model default)', ''))).toEqual(SCHEDULERS.map((s) => s.label));
    expect(options.find((o) => o.value === 'dpmpp_2m_karras')?.textContent).toBe('DPM++ 2M Karras');
  });

  it('shows AUTOMATIC1111’s names beside the studio’s labels', () => {
    render(<ParamsPanel info={INFO} mode="txt2img" form={defaultForm(INFO)} set={() => {}} errors={{}} lastSeed={null} />);
    expect(screen.getByText('A1111: Sampler')).toBeTruthy();
    expect(screen.getByText('A1111: CFG scale')).toBeTruthy();
    // The labels stay the controls' names.
    expect(screen.getByLabelText('Scheduler').tagName).toBe('SELECT');
    expect(screen.getByLabelText('Guidance scale').getAttribute('type')).toBe('number');
  });
});

describe('CodeText', () => {
  it('turns code spans into code and leaves an unpaired backtick', () => {
    const { container } = render(
      <p>
        <CodeText text="`hires.scale` must be between 1 and 4; a ` alone" />
      </p>,
    );
    expect(container.textContent).toBe('hires.scale must be between 1 and 4; a ` alone');
    expect(container.querySelectorAll('code')).toHaveLength(1);
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
