import type { Generation, JobState, UpscaleParams } from '@sd-worker/react';
import { cleanup, fireEvent, render, screen } from '@testing-library/react';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { UpscaleAction } from '../src/components/UpscaleAction.js';
import type { GalleryEntry } from '../src/lib/gallery-db.js';
import type { Upscaling } from '../src/use-upscale.js';

afterEach(cleanup);

const ENTRY: GalleryEntry = {
  id: 'job-1:0',
  jobId: 'job-1',
  index: 0,
  operation: 'image_generation',
  createdAt: 0,
  blob: new Blob(),
  format: 'png',
  seed: 7,
  width: 64,
  height: 48,
  params: null,
};

function upscaling(state: Partial<Generation<UpscaleParams>>, sourceId: string | null = ENTRY.id): Upscaling {
  const job = {
    status: 'idle',
    jobId: null,
    queuePosition: null,
    progress: null,
    preview: null,
    images: [],
    error: null,
    warnings: [],
    loras: [],
    isIdle: true,
    isLoading: false,
    isSuccess: false,
    isError: false,
    isCancelled: false,
    generate: vi.fn(),
    cancel: vi.fn(),
    reset: vi.fn(),
    ...state,
  } as Generation<UpscaleParams>;
  return {
    upscalers: [
      { name: 'lanczos', kind: 'builtin', label: 'Lanczos (resampling)' },
      { name: 'nearest', kind: 'builtin', label: 'Nearest neighbour (resampling)' },
      { name: 'esrgan-x2', kind: 'model', architecture: 'ESRGAN', scale: 2 },
    ],
    job,
    sourceId,
    start: vi.fn(() => Promise.resolve()),
  };
}

describe('UpscaleAction', () => {
  it('picks the model upscaler, and submits 2× or 4× of the entry', () => {
    const u = upscaling({});
    render(<UpscaleAction entry={ENTRY} upscaling={u} maxPixels={64 * 48 * 4} workerUrl="" />);
    expect((screen.getByLabelText('Upscaler') as HTMLSelectElement).value).toBe('esrgan-x2');
    // 4× would be over the worker's input pixels.
    expect((screen.getByTestId('upscale-4') as HTMLButtonElement).disabled).toBe(true);
    fireEvent.change(screen.getByLabelText('Upscaler'), { target: { value: 'lanczos' } });
    fireEvent.click(screen.getByTestId('upscale-2'));
    expect(u.start).toHaveBeenCalledWith(ENTRY, 'lanczos', 2);
  });

  it('names the built-ins by their labels and the models by name, architecture and factor', () => {
    render(<UpscaleAction entry={ENTRY} upscaling={upscaling({})} maxPixels={1 << 24} workerUrl="" />);
    const options = [...(screen.getByLabelText('Upscaler') as HTMLSelectElement).options];
    expect(options.map((o) => [o.value, o.textContent])).toEqual([
      ['lanczos', 'Lanczos (resampling)'],
      ['nearest', 'Nearest neighbour (resampling)'],
      ['esrgan-x2', 'esrgan-x2 (ESRGAN, 2×)'],
    ]);
  });

  it('shows the tiles done while it runs, and its error', () => {
    const { rerender } = render(
      <UpscaleAction
        entry={ENTRY}
        upscaling={upscaling({ status: 'running', isLoading: true, progress: { step: 2, total: 6, percent: 33, etaMs: null, phase: 'upscale' } })}
        maxPixels={1 << 24}
        workerUrl=""
      />,
    );
    expect(screen.getByTestId('upscale-progress').textContent).toBe('Tile 2 of 6');
    expect((screen.getByTestId('upscale-2') as HTMLButtonElement).disabled).toBe(true);
    rerender(
      <UpscaleAction
        entry={ENTRY}
        upscaling={upscaling({ status: 'failed', isError: true, error: { code: 'invalid_request', message: 'too large' } as JobState['error'] })}
        maxPixels={1 << 24}
        workerUrl=""
      />,
    );
    expect(screen.getByTestId('upscale-error').textContent).toBe('too large');
  });

  it('shows nothing on a worker without upscalers', () => {
    const u = { ...upscaling({}), upscalers: [] };
    const { container } = render(<UpscaleAction entry={ENTRY} upscaling={u} maxPixels={1 << 24} workerUrl="" />);
    expect(container.textContent).toBe('');
  });
});
