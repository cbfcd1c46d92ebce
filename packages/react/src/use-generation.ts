// useTextToImage, useImageToImage, useInpainting, useUpscale: submit a job and follow it.
//
// Submission happens only inside `generate` (an event handler's call), never in
// an effect, so StrictMode's double effects cannot submit twice.

import { toSdError, type JobRequest, type Operation, type SdError } from '@sd-worker/sdk';
import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { useJobStore } from './context.js';
import { IDLE_STATE, type JobState } from './job-state.js';
import { readPersistedJob, writePersistedJob, type PersistMode } from './persist.js';
import { derive, useJobState, type DerivedFlags } from './use-job.js';

/** A request of one operation, without `operation` (the hook adds it). */
export type RequestOf<O extends Operation> = Omit<Extract<JobRequest, { operation: O }>, 'operation'>;
export type TextToImageParams = RequestOf<'image_generation'>;
export type ImageToImageParams = RequestOf<'image_transform'>;
export type InpaintingParams = RequestOf<'image_inpaint'>;
export type UpscaleParams = RequestOf<'image_upscale'>;

export interface GenerationOptions {
  /**
   * Remember the active job under this key, so that after a reload the hook
   * re-attaches to it (the worker replays its events) and shows its progress
   * or result. Cleared by `reset()`, replaced by the next `generate`.
   */
  persistKey?: string;
  /** `session` (default: this tab) or `local` (every tab of the origin). */
  persist?: PersistMode;
}

export interface Generation<P> extends JobState, DerivedFlags {
  /**
   * Submits a job (replacing the hook's current one, which goes on unwatched).
   * Resolves with its id, or null when the submission failed (see `error`); never rejects.
   */
  generate(params: P): Promise<string | null>;
  /** Cancels the job on the worker. Resolves true when the worker accepted the cancel. */
  cancel(): Promise<boolean>;
  /** Back to idle, forgetting the job (it is not cancelled) and its persisted id. */
  reset(): void;
}

type Local =
  | { kind: 'idle' }
  | { kind: 'submitting' }
  | { kind: 'rejected'; error: SdError }
  | { kind: 'job'; jobId: string; resumed: boolean };

const SUBMITTING: JobState = Object.freeze({ ...IDLE_STATE, status: 'submitting' }) as JobState;

export function useGeneration<O extends Operation>(
  operation: O,
  options: GenerationOptions = {},
): Generation<RequestOf<O>> {
  const { persistKey, persist = 'session' } = options;
  const store = useJobStore();
  const [local, setLocal] = useState<Local>(() => {
    const jobId = readPersistedJob(persistKey, persist);
    return jobId ? { kind: 'job', jobId, resumed: true } : { kind: 'idle' };
  });
  // Each generate/reset gets a number; answers to older ones are ignored.
  const generation = useRef(0);
  const cancelWhenAccepted = useRef<number | null>(null);

  const jobId = local.kind === 'job' ? local.jobId : null;
  const jobState = useJobState(store, jobId);
  // A remembered job the worker no longer knows (expired, or another worker): nothing to resume.
  const gone =
    local.kind === 'job' &&
    local.resumed &&
    jobState.status === 'failed' &&
    (jobState.error?.code === 'not_found' || jobState.error?.code === 'expired');
  useEffect(() => {
    if (gone) writePersistedJob(persistKey, persist, null);
  }, [gone, persistKey, persist]);

  const generate = useCallback(
    async (params: RequestOf<O>): Promise<string | null> => {
      const mine = ++generation.current;
      setLocal({ kind: 'submitting' });
      try {
        // `RequestOf<O>` plus its `operation` is the union's member of `O`, which
        // TypeScript cannot see through the generic.
        const request = { ...params, operation } as unknown as Extract<JobRequest, { operation: O }>;
        const accepted = await store.submit(request);
        if (generation.current !== mine) return accepted.job_id;
        writePersistedJob(persistKey, persist, accepted.job_id);
        setLocal({ kind: 'job', jobId: accepted.job_id, resumed: false });
        if (cancelWhenAccepted.current === mine) void store.cancel(accepted.job_id).catch(() => {});
        return accepted.job_id;
      } catch (e) {
        if (generation.current === mine) setLocal({ kind: 'rejected', error: toSdError(e) });
        return null;
      }
    },
    [store, operation, persistKey, persist],
  );

  const cancel = useCallback(async (): Promise<boolean> => {
    if (local.kind === 'submitting') {
      cancelWhenAccepted.current = generation.current;
      return true;
    }
    if (local.kind !== 'job') return false;
    try {
      await store.cancel(local.jobId);
      return true;
    } catch {
      // 409: it had already ended; anything else shows on the stream
      return false;
    }
  }, [store, local]);

  const reset = useCallback(() => {
    generation.current += 1;
    writePersistedJob(persistKey, persist, null);
    setLocal({ kind: 'idle' });
  }, [persistKey, persist]);

  return useMemo(() => {
    let state: JobState;
    if (local.kind === 'submitting') state = SUBMITTING;
    else if (local.kind === 'rejected') state = { ...IDLE_STATE, status: 'failed', error: local.error };
    else if (local.kind === 'job' && !gone) state = jobState;
    else state = IDLE_STATE;
    return { ...state, ...derive(state), generate, cancel, reset };
  }, [local, gone, jobState, generate, cancel, reset]);
}

/** Text to image: `generate({ prompt, steps, seed, ... })`. */
export function useTextToImage(options?: GenerationOptions): Generation<TextToImageParams> {
  return useGeneration('image_generation', options);
}

/** Image to image: `generate({ prompt, image, strength, ... })`, `image` base64 or a data URL. */
export function useImageToImage(options?: GenerationOptions): Generation<ImageToImageParams> {
  return useGeneration('image_transform', options);
}

/** Inpainting: `generate({ prompt, image, mask, ... })`; white in `mask` is repainted. */
export function useInpainting(options?: GenerationOptions): Generation<InpaintingParams> {
  return useGeneration('image_inpaint', options);
}

/**
 * Upscaling: `generate({ image, upscaler, scale })`, `upscaler` a name of
 * `client.upscalers()`; its progress counts tiles (`progress.phase` `upscale`).
 */
export function useUpscale(options?: GenerationOptions): Generation<UpscaleParams> {
  return useGeneration('image_upscale', options);
}
