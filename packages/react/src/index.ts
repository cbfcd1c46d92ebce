// @sd-worker/react: hooks for sd-worker jobs.

export { SdProvider, useJobStore, useSdClient } from './context.js';
export type { SdProviderProps } from './context.js';
export { JobStore, jobStoreFor } from './job-store.js';
export type { JobStoreOptions } from './job-store.js';
export { IDLE_STATE } from './job-state.js';
export type { GenerationStatus, JobImage, JobProgress, JobState, JobWarning } from './job-state.js';
export type { PersistMode } from './persist.js';
export { useGenerationProgress } from './use-generation-progress.js';
export type { GenerationProgress } from './use-generation-progress.js';
export { useGeneration, useImageToImage, useInpainting, useTextToImage, useUpscale } from './use-generation.js';
export type {
  Generation,
  GenerationOptions,
  ImageToImageParams,
  InpaintingParams,
  RequestOf,
  TextToImageParams,
  UpscaleParams,
} from './use-generation.js';
export type { DerivedFlags } from './use-job.js';
