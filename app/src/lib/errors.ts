// Words for errors, for people.

import type { SdError } from '@sd-worker/sdk';

export function errorText(e: SdError, workerUrl: string): string {
  switch (e.code) {
    case 'network':
      return `Cannot reach the worker at ${workerUrl}. Is it running?`;
    case 'unavailable':
      return 'The model is still loading. Try again in a moment.';
    case 'queue_full':
      return 'The worker’s queue is full. Try again shortly.';
    case 'shutting_down':
      return 'The worker is shutting down.';
    case 'unauthorized':
      return 'The worker needs an access token.';
    case 'expired':
      return 'This job’s result has expired on the worker.';
    case 'payload_too_large':
      return `The image is too large for the worker: ${e.message}`;
    default:
      return e.message;
  }
}
