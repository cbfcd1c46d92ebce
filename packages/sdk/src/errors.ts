// The one error type of the SDK. The wasm client rejects with plain `Error`s named
// "SdError" carrying { status, code, message, field?, retryAfterMs? }; every
// method of `Client` turns those (and anything else thrown) into `SdError` instances.

import type { ErrorCode } from '../wasm/sd_worker_sdk.js';

/**
 * What went wrong, for `switch`: the worker's `ErrorCode` (see docs/API.md, Errors),
 * or one of the client's own:
 * - `network`: the worker could not be reached (after the client's retries);
 * - `aborted`: the caller's `AbortSignal` fired (the job itself goes on);
 * - `cancelled`: the job was cancelled (`generate` rejects with it);
 * - `invalid_response`: the worker answered something that is not the contract.
 */
export type SdErrorCode = ErrorCode | 'network' | 'aborted' | 'cancelled' | 'invalid_response';

export interface SdErrorInit {
  /** HTTP status; 0 when no HTTP answer is behind the error (network, aborted, job failures). */
  status?: number;
  code: SdErrorCode;
  message: string;
  field?: string;
  retryAfterMs?: number;
  cause?: unknown;
}

export class SdError extends Error {
  override readonly name = 'SdError';
  /** HTTP status; 0 when no HTTP answer is behind the error. */
  readonly status: number;
  readonly code: SdErrorCode;
  /** The request field at fault (422/400/413), when there is one. */
  readonly field?: string;
  /** From `Retry-After` (429 queue full, 503 loading), in milliseconds. */
  readonly retryAfterMs?: number;

  constructor(init: SdErrorInit) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.status = init.status ?? 0;
    this.code = init.code;
    if (init.field !== undefined) this.field = init.field;
    if (init.retryAfterMs !== undefined) this.retryAfterMs = init.retryAfterMs;
  }
}

interface RawSdError {
  name: 'SdError';
  message: string;
  status?: unknown;
  code: string;
  field?: unknown;
  retryAfterMs?: unknown;
}

function isRawSdError(e: unknown): e is RawSdError {
  return (
    typeof e === 'object' &&
    e !== null &&
    (e as { name?: unknown }).name === 'SdError' &&
    typeof (e as { code?: unknown }).code === 'string'
  );
}

/**
 * True for an `SdError`, including one made by another copy of this package
 * (two versions in one bundle) or the raw errors of the wasm client.
 */
export function isSdError(e: unknown): e is SdError {
  return e instanceof SdError || isRawSdError(e);
}

/** Converts anything thrown by the wasm client (or by fetch, or a bug) into an `SdError`. */
export function toSdError(e: unknown): SdError {
  if (e instanceof SdError) return e;
  if (isRawSdError(e)) {
    return new SdError({
      status: typeof e.status === 'number' ? e.status : 0,
      code: e.code as SdErrorCode,
      message: String(e.message ?? e.code),
      field: typeof e.field === 'string' ? e.field : undefined,
      retryAfterMs: typeof e.retryAfterMs === 'number' ? e.retryAfterMs : undefined,
      cause: e,
    });
  }
  const name = typeof e === 'object' && e !== null ? (e as { name?: unknown }).name : undefined;
  if (name === 'AbortError') {
    return new SdError({ code: 'aborted', message: 'the request was aborted', cause: e });
  }
  if (e instanceof TypeError) {
    return new SdError({ code: 'network', message: e.message, cause: e });
  }
  const message = e instanceof Error ? e.message : String(e);
  return new SdError({ code: 'internal', message: `unexpected client failure: ${message}`, cause: e });
}
