import type { JobState } from '@sd-worker/react';
import type { UpscalerInfo } from '@sd-worker/sdk';
import { cleanup, fireEvent, render, screen } from '@testing-library/react';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ParamsPanel } from '../src/components/ParamsPanel.js';
import { ProgressView } from '../src/components/ProgressView.js';
import { defaultForm } from '../src/form.js';
import { INFO } from './fixtures.js';

afterEach(cleanup);

const UPSCALERS: UpscalerInfo[] = [
  { name: 'lanczos', kind: 'builtin', label: 'Lanczos (resampling)' },
  { name: 'esrgan-x2', kind: 'model', architecture: 'ESRGAN', scale: 2 },
];

describe('hires section', () => {
  it('is offered in text to image only, and turns on with its checkbox', () => {
    const set = vi.fn();
    const { rerender } = render(
      <ParamsPanel info={INFO} mode="txt2img" form={defaultForm(INFO)} set={set} errors={{}} lastSeed={null} upscalers={UPSCALERS} />,
    );
    expect(screen.getByText('Hires fix')).toBeTruthy();
    expect(screen.queryByLabelText('Upscaler')).toBeNull();
    fireEvent.click(screen.getByLabelText('Upscale and repaint at a larger size'));
    expect(set).toHaveBeenCalledWith({ hires: expect.objectContaining({ enabled: true }) });
    rerender(<ParamsPanel info={INFO} mode="img2img" form={defaultForm(INFO)} set={set} errors={{}} lastSeed={null} />);
    expect(screen.queryByText('Hires fix')).toBeNull();
  });

  it('offers the latent and the worker’s upscalers, shows the target size and the worker’s errors', () => {
    const form = defaultForm(INFO);
    form.hires = { ...form.hires, enabled: true, scale: '1.5' };
    render(
      <ParamsPanel
        info={INFO}
        mode="txt2img"
        form={form}
        set={() => {}}
        errors={{ 'hires.scale': 'the hires size is over this worker’s pixels' }}
        lastSeed={null}
        upscalers={UPSCALERS}
      />,
    );
    const options = [...(screen.getByLabelText('Upscaler') as HTMLSelectElement).options].map((o) => o.textContent);
    expect(options).toEqual(['Latent', 'Latent (nearest)', 'Latent (bicubic)', 'Lanczos (resampling)', 'esrgan-x2 (ESRGAN, 2×)']);
    expect(screen.getByText('Target 96×96')).toBeTruthy();
    const scale = screen.getByLabelText('Hires scale');
    expect(scale.getAttribute('aria-invalid')).toBe('true');
    expect(document.getElementById(scale.getAttribute('aria-describedby')!)?.textContent).toContain('over this worker');
    expect((screen.getByLabelText('Denoising strength') as HTMLInputElement).value).toBe('0.7');
    expect((screen.getByLabelText('Hires steps') as HTMLInputElement).value).toBe('0');
  });
});

describe('TAESD choices', () => {
  it('appear only when /v1/info says taesd', () => {
    const set = vi.fn();
    const { rerender } = render(<ParamsPanel info={INFO} mode="txt2img" form={defaultForm(INFO)} set={set} errors={{}} lastSeed={null} />);
    expect(screen.queryByLabelText('Preview method')).toBeNull();
    expect(screen.queryByLabelText('Fast decode (TAESD)')).toBeNull();
    const info = { ...INFO, taesd: true };
    rerender(<ParamsPanel info={info} mode="txt2img" form={defaultForm(info)} set={set} errors={{}} lastSeed={null} />);
    const select = screen.getByLabelText('Preview method') as HTMLSelectElement;
    expect([...select.options].map((o) => o.value)).toEqual(['', 'taesd', 'vae']);
    fireEvent.change(select, { target: { value: 'vae' } });
    expect(set).toHaveBeenCalledWith({ preview_method: 'vae' });
    fireEvent.click(screen.getByLabelText('Fast decode (TAESD)'));
    expect(set).toHaveBeenCalledWith({ fastDecode: true });
  });
});

describe('progress phase', () => {
  it('names the pass of a hires job', () => {
    const job = {
      status: 'running',
      jobId: 'j',
      queuePosition: null,
      progress: { step: 5, total: 6, percent: 83, etaMs: 1000, phase: 'hires' },
      preview: null,
      images: [],
      error: null,
      warnings: [],
      loras: [],
    } as JobState;
    render(<ProgressView job={job} onCancel={() => {}} cancelling={false} />);
    const text = screen.getByTestId('progress-text');
    expect(text.textContent).toBe('Hires pass · Step 5 of 6 · 83% · about 1 s left');
    expect(text.dataset.phase).toBe('hires');
  });
});
