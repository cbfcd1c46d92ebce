// The state of one job as components see it, and how stream events change it.

import {
  imageDataUrl,
  SdError,
  type GeneratedImage,
  type ImageFormat,
  type LoraApplied,
  type Phase,
  type StreamEvent,
} from '@sd-worker/sdk';

/** One status for everything a hook can be doing: no contradicting flags. */
export type GenerationStatus = 'idle' | 'submitting' | 'queued' | 'running' | 'completed' | 'failed' | 'cancelled';

export interface JobProgress {
  /** Denoising steps finished. */
  step: number;
  /** Denoising steps the job runs. */
  total: number;
  /** 0 to 100. */
  percent: number;
  /** Estimated time to completion; null before the first step. */
  etaMs: number | null;
  /**
   * The pass the step belongs to: `base` and `hires` for a hires-fix job
   * (`step` and `total` count both passes), `upscale` for an `image_upscale`
   * job (one step per tile); absent for single-pass jobs.
   */
  phase?: Phase;
}

export interface JobImage {
  /** `data:image/png;base64,…`: an <img> src. */
  url: string;
  seed: number;
  width: number;
  height: number;
  format: ImageFormat;
}

export interface JobWarning {
  code: string;
  message: string;
}

export interface JobState {
  status: GenerationStatus;
  jobId: string | null;
  /** While queued: 1 runs next. */
  queuePosition: number | null;
  progress: JobProgress | null;
  /** The latest live preview (`data:image/jpeg;base64,…`), when the request asked for previews. */
  preview: string | null;
  images: JobImage[];
  error: SdError | null;
  /** Non-fatal notices, such as a prompt cut to the text encoder's window. */
  warnings: JobWarning[];
  /** The job's LoRAs and how many of each one's tensors matched the model (the `complete` event's; empty without). */
  loras: LoraApplied[];
}

export const IDLE_STATE: JobState = Object.freeze({
  status: 'idle',
  jobId: null,
  queuePosition: null,
  progress: null,
  preview: null,
  images: [],
  error: null,
  warnings: [],
  loras: [],
}) as JobState;

export function initialJobState(jobId: string, queuePosition: number | null = null): JobState {
  return { ...IDLE_STATE, status: 'queued', jobId, queuePosition };
}

export function isFinished(status: GenerationStatus): boolean {
  return status === 'completed' || status === 'failed' || status === 'cancelled';
}

export function toJobImage(image: GeneratedImage): JobImage {
  return { url: imageDataUrl(image), seed: image.seed, width: image.width, height: image.height, format: image.format };
}

/** The state after `event`. Pure. */
export function applyEvent(state: JobState, event: StreamEvent): JobState {
  switch (event.type) {
    case 'queued':
      return { ...state, status: 'queued', queuePosition: event.position };
    case 'started':
      return {
        ...state,
        status: 'running',
        queuePosition: null,
        progress: { step: 0, total: event.total, percent: 0, etaMs: null },
      };
    case 'warning':
      return { ...state, warnings: [...state.warnings, { code: event.code, message: event.message }] };
    case 'progress':
      return {
        ...state,
        status: 'running',
        queuePosition: null,
        progress: {
          step: event.step,
          total: event.total,
          percent: event.percent,
          etaMs: event.eta_ms,
          ...(event.phase ? { phase: event.phase } : {}),
        },
      };
    case 'preview':
      return { ...state, status: 'running', preview: imageDataUrl(event) };
    case 'complete':
      return {
        ...state,
        status: 'completed',
        queuePosition: null,
        images: event.images.map(toJobImage),
        loras: event.loras ?? [],
      };
    case 'error':
      return {
        ...state,
        status: 'failed',
        queuePosition: null,
        error: new SdError({ code: event.code, message: event.message }),
      };
    case 'cancelled':
      return { ...state, status: 'cancelled', queuePosition: null };
    case 'requeued':
      // Its worker stopped (shared NATS queue): another runs it from the start.
      return { ...state, status: 'queued', queuePosition: null, progress: null, preview: null };
    default:
      return state;
  }
}

/** Progress and previews may wait for the throttle; everything else is shown at once. */
export function isUrgent(before: JobState, event: StreamEvent, after: JobState): boolean {
  if (before.status !== after.status) return true;
  return event.type !== 'progress' && event.type !== 'preview';
}
