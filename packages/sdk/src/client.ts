// `Client`: the wasm `SdClient` with every rejection turned into an `SdError`.

import { SdClient } from '../wasm/sd_worker_sdk.js';
import type {
  ClientOptions,
  EmbeddingInfo,
  GenerateOptions,
  GeneratedImage,
  JobAccepted,
  JobRequest,
  JobSnapshot,
  LoraInfo,
  PreprocessOptions,
  PreprocessRequest,
  StreamEnd,
  StreamEvent,
  StreamOptions,
  UpscalerInfo,
  WorkerInfo,
} from '../wasm/sd_worker_sdk.js';
import { SdError, toSdError } from './errors.js';
import { initWasm } from './wasm.js';

/** Called for every stream event, with its sequence number (the SSE `id`). */
export type StreamEventHandler = (event: StreamEvent, id: number) => void;

/**
 * Creates a client of one worker. The first call loads the wasm module; later
 * ones reuse it. Rejects with an `SdError` (for example on a malformed `baseUrl`).
 */
export async function createClient(options: ClientOptions): Promise<Client> {
  try {
    await initWasm();
    return new Client(new SdClient(options));
  } catch (e) {
    throw toSdError(e);
  }
}

export class Client {
  #raw: SdClient | null;

  /** Use `createClient`: it loads the wasm module first. */
  constructor(raw: SdClient) {
    this.#raw = raw;
  }

  /** `POST /v1/jobs`: queue a job; resolves with its id, queue position and seed. */
  submit(request: JobRequest): Promise<JobAccepted> {
    return this.#call((raw) => raw.submit(request));
  }

  /** `GET /v1/jobs/{id}`: a snapshot of the job. */
  status(jobId: string): Promise<JobSnapshot> {
    return this.#call((raw) => raw.status(jobId));
  }

  /** `DELETE /v1/jobs/{id}`: cancel the job (409 `conflict` once it ended). */
  cancel(jobId: string): Promise<JobSnapshot> {
    return this.#call((raw) => raw.cancel(jobId));
  }

  /** `GET /v1/info`: the model, limits and defaults. */
  info(): Promise<WorkerInfo> {
    return this.#call((raw) => raw.info());
  }

  /**
   * `GET /v1/loras`: the LoRA files the worker can apply (sorted by name; `[]`
   * without `--lora-dir`), each with its detected `family`, `format`,
   * A1111 short `hash` and `trigger_words`. Request them by `name` in a job's
   * `loras` or with a `<lora:name:weight>` tag in its prompt.
   */
  loras(): Promise<LoraInfo[]> {
    return this.#call((raw) => raw.loras());
  }

  /**
   * `GET /v1/embeddings`: the textual-inversion embeddings the worker has
   * (sorted by name; `[]` without `--embeddings-dir`). Writing an embedding's
   * `name` in a prompt uses it.
   */
  embeddings(): Promise<EmbeddingInfo[]> {
    return this.#call((raw) => raw.embeddings());
  }

  /**
   * `GET /v1/upscalers`: what an `image_upscale` job's `upscaler` (and a hires
   * fix's) may name: the built-in resamplers (`kind: "builtin"`, `lanczos`
   * and `nearest`), then the model files of the worker's `--upscaler-dir`
   * (`kind: "model"`, with their `architecture` and own `scale`).
   */
  upscalers(): Promise<UpscalerInfo[]> {
    return this.#call((raw) => raw.upscalers());
  }

  /**
   * `POST /v1/preprocess`: the control map of `request.image` as a ControlNet
   * unit with the same `preprocessor` and thresholds would compute it, as the
   * worker's PNG (a `Blob` of type `image/png`; `URL.createObjectURL` shows it).
   * Rejects with an `SdError` (422 naming the field at fault, such as
   * `preprocessor` or `low_threshold`; 413 for an image over the input limits).
   */
  preprocess(request: PreprocessRequest, options: PreprocessOptions = {}): Promise<Blob> {
    return this.#call((raw) => raw.preprocess(request, options));
  }

  /** `GET /health`. */
  health(): Promise<{ status: string }> {
    return this.#call((raw) => raw.health());
  }

  /**
   * Follows the job's event stream to its terminal event, reconnecting with
   * `Last-Event-ID` when the connection drops: `onEvent` sees every event once.
   * Resolves on the terminal event (complete, error or cancelled alike); rejects
   * with code `aborted` when `signal` fires, which detaches without cancelling.
   */
  stream(jobId: string, onEvent: StreamEventHandler, options: StreamOptions = {}): Promise<StreamEnd> {
    return this.#call((raw) => raw.stream(jobId, onEvent, options));
  }

  /**
   * Submits and follows a job; resolves with its images. Rejects with the job's
   * error code, `cancelled`, or `aborted` (the signal detaches; the job goes on).
   */
  generate(request: JobRequest, options: GenerateOptions = {}): Promise<GeneratedImage[]> {
    return this.#call((raw) => raw.generate(request, options));
  }

  /** Frees the wasm object. Call it once no request or stream is in flight; later calls reject. */
  close(): void {
    const raw = this.#raw;
    this.#raw = null;
    raw?.free();
  }

  get closed(): boolean {
    return this.#raw === null;
  }

  async #call<T>(f: (raw: SdClient) => Promise<T>): Promise<T> {
    const raw = this.#raw;
    if (raw === null) throw new SdError({ code: 'aborted', message: 'the client is closed' });
    try {
      return await f(raw);
    } catch (e) {
      throw toSdError(e);
    }
  }
}
