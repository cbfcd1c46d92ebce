import { createClient, type Client } from '@sd-worker/sdk';
import { act, fireEvent, render, screen, waitFor } from '@testing-library/react';
import { StrictMode, type ReactNode } from 'react';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { metric, STREAM_REQUESTS, SUBMITTED_T2I } from '../../sdk/test/worker.js';
import {
  jobStoreFor,
  SdProvider,
  useGenerationProgress,
  useTextToImage,
  type GenerationOptions,
  type JobState,
} from '../src/index.js';

const url = () => inject('workerUrl');

function Generator({ steps, ...options }: GenerationOptions & { steps: number }): ReactNode {
  const job = useTextToImage(options);
  return (
    <div>
      <button onClick={() => void job.generate({ prompt: 'a red circle', steps, seed: 1 })}>generate</button>
      <button onClick={() => void job.cancel()}>cancel</button>
      <p data-testid="status">{job.status}</p>
      <p data-testid="job">{job.jobId}</p>
      {job.progress && (
        <p>
          step {job.progress.step} of {job.progress.total}
        </p>
      )}
      {job.images.map((image) => (
        <img key={image.seed} src={image.url} alt={`seed ${image.seed}`} />
      ))}
      {job.error && <p role="alert">{job.error.code}</p>}
    </div>
  );
}

function Watcher({ jobId, name }: { jobId: string; name: string }): ReactNode {
  const job = useGenerationProgress(jobId);
  return (
    <p data-testid={name}>
      {job.status} {job.progress ? `${job.progress.step}/${job.progress.total}` : ''} {job.images.length}
    </p>
  );
}

const status = () => screen.getByTestId('status').textContent;

describe('useTextToImage', () => {
  it('in StrictMode: one click submits exactly one job, shows progress, then the PNG', async () => {
    const before = await metric(url(), SUBMITTED_T2I);
    render(
      <StrictMode>
        <SdProvider options={{ baseUrl: url() }}>
          <Generator steps={40} />
        </SdProvider>
      </StrictMode>,
    );
    expect(status()).toBe('idle');
    fireEvent.click(screen.getByText('generate'));
    expect(status()).toBe('submitting');
    await screen.findByText(/^step \d+ of 40$/, {}, { timeout: 10_000 });
    const img = await screen.findByRole('img', {}, { timeout: 20_000 });
    expect(img.getAttribute('src')).toMatch(/^data:image\/png;base64,iVBORw0KGgo/);
    expect(status()).toBe('completed');
    expect(screen.getByText('step 40 of 40')).toBeTruthy();
    expect(await metric(url(), SUBMITTED_T2I)).toBe(before + 1);
  });

  it('cancel stops the job: status cancelled', async () => {
    render(
      <SdProvider options={{ baseUrl: url() }}>
        <Generator steps={150} />
      </SdProvider>,
    );
    fireEvent.click(screen.getByText('generate'));
    await screen.findByText(/^step \d+ of 150$/, {}, { timeout: 10_000 });
    fireEvent.click(screen.getByText('cancel'));
    await waitFor(() => expect(status()).toBe('cancelled'), { timeout: 10_000 });
  });

  it('a rejected submission is status failed with the SdError', async () => {
    function Bad(): ReactNode {
      const job = useTextToImage();
      return (
        <>
          <button onClick={() => void job.generate({ prompt: 'x', steps: 0 })}>generate</button>
          <p data-testid="status">{job.status}</p>
          <p data-testid="error">{job.error ? `${job.error.status} ${job.error.code} ${job.error.field}` : ''}</p>
        </>
      );
    }
    render(
      <SdProvider options={{ baseUrl: url() }}>
        <Bad />
      </SdProvider>,
    );
    fireEvent.click(screen.getByText('generate'));
    await waitFor(() => expect(status()).toBe('failed'));
    expect(screen.getByTestId('error').textContent).toBe('422 invalid_value steps');
  });
});

describe('JobStore', () => {
  let client: Client;
  beforeAll(async () => {
    client = await createClient({ baseUrl: url() });
  });
  afterAll(() => client.close());

  it('two components watching one job share one stream', async () => {
    const store = jobStoreFor(client);
    const streamsBefore = await metric(url(), STREAM_REQUESTS);
    const opened = store.streamsOpened;
    const { job_id } = await client.submit({ operation: 'image_generation', prompt: 'shared', steps: 30 });
    render(
      <StrictMode>
        <SdProvider client={client}>
          <Watcher jobId={job_id} name="a" />
          <Watcher jobId={job_id} name="b" />
        </SdProvider>
      </StrictMode>,
    );
    await waitFor(
      () => {
        expect(screen.getByTestId('a').textContent).toBe('completed 30/30 1');
        expect(screen.getByTestId('b').textContent).toBe('completed 30/30 1');
      },
      { timeout: 20_000 },
    );
    expect(store.streamsOpened - opened).toBe(1);
    expect(await metric(url(), STREAM_REQUESTS)).toBe(streamsBefore + 1);
  });

  it('throttles progress to about 10 updates a second and always delivers the last', async () => {
    const store = jobStoreFor(client);
    const { job_id } = await client.submit({ operation: 'image_generation', prompt: 'throttled', steps: 80 });
    const seen: { at: number; state: JobState }[] = [];
    const unsubscribe = store.subscribe(job_id, () => seen.push({ at: Date.now(), state: store.get(job_id) }));
    const release = store.watch(job_id);
    await waitFor(() => expect(store.get(job_id).status).toBe('completed'), { timeout: 20_000 });
    release();
    unsubscribe();
    const running = seen.filter((s) => s.state.status === 'running');
    const elapsed = running.at(-1)!.at - running[0]!.at;
    // 80 steps, each its own progress event; at most one update per 100 ms gets through (+ status changes).
    expect(running.length).toBeLessThanOrEqual(Math.floor(elapsed / 100) + 3);
    expect(running.length).toBeLessThan(80);
    expect(seen.at(-1)!.state.progress).toMatchObject({ step: 80, total: 80 });
    expect(seen.at(-1)!.state.images).toHaveLength(1);
  });

  it('the last watcher leaving detaches the stream without cancelling the job', async () => {
    const store = jobStoreFor(client);
    const { job_id } = await client.submit({ operation: 'image_generation', prompt: 'left alone', steps: 60 });
    const release = store.watch(job_id);
    await waitFor(() => expect(store.get(job_id).status).toBe('running'), { timeout: 10_000 });
    const active = store.streamsActive;
    release();
    await waitFor(() => expect(store.streamsActive).toBe(active - 1));
    const { terminal } = await client.stream(job_id, () => {});
    expect(terminal.type).toBe('complete');
  });
});

describe('persistKey', () => {
  it('a remount (a reload) resumes the stored job and shows its result', async () => {
    const before = await metric(url(), SUBMITTED_T2I);
    const first = render(
      <SdProvider options={{ baseUrl: url() }}>
        <Generator steps={60} persistKey="resume" />
      </SdProvider>,
    );
    fireEvent.click(screen.getByText('generate'));
    await screen.findByText(/^step \d+ of 60$/, {}, { timeout: 10_000 });
    const jobId = screen.getByTestId('job').textContent!;
    expect(sessionStorage.getItem('sd-worker:job:resume')).toBe(jobId);
    first.unmount();

    // A new client and store, as after a page reload: nothing cached.
    const fresh = await createClient({ baseUrl: url() });
    render(
      <StrictMode>
        <SdProvider client={fresh}>
          <Generator steps={60} persistKey="resume" />
        </SdProvider>
      </StrictMode>,
    );
    expect(screen.getByTestId('job').textContent).toBe(jobId);
    const img = await screen.findByRole('img', {}, { timeout: 20_000 });
    expect(img.getAttribute('src')).toMatch(/^data:image\/png;base64,/);
    expect(status()).toBe('completed');
    expect(await metric(url(), SUBMITTED_T2I)).toBe(before + 1);
    expect(jobStoreFor(fresh).streamsOpened).toBe(1);
    // Cancelling a job that already ended is a 409 the hook absorbs.
    await act(async () => fireEvent.click(screen.getByText('cancel')));
    expect(status()).toBe('completed');
    fresh.close();
  });

  it('a stored job the worker does not know is forgotten: idle', async () => {
    sessionStorage.setItem('sd-worker:job:gone', 'job-00000000000000000000000000000000');
    render(
      <SdProvider options={{ baseUrl: url() }}>
        <Generator steps={2} persistKey="gone" />
      </SdProvider>,
    );
    await waitFor(() => expect(sessionStorage.getItem('sd-worker:job:gone')).toBeNull());
    expect(status()).toBe('idle');
  });
});
