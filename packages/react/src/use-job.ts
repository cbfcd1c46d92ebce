// Reading one job's state from the store, and keeping its stream open meanwhile.

import { useCallback, useEffect, useSyncExternalStore } from 'react';
import { IDLE_STATE, type JobState } from './job-state.js';
import type { JobStore } from './job-store.js';

const noop = () => {};

/** The job's state (IDLE_STATE for no job); watches its stream while mounted. */
export function useJobState(store: JobStore, jobId: string | null): JobState {
  const subscribe = useCallback(
    (listener: () => void) => (jobId === null ? noop : store.subscribe(jobId, listener)),
    [store, jobId],
  );
  const getSnapshot = useCallback(() => (jobId === null ? IDLE_STATE : store.get(jobId)), [store, jobId]);
  const state = useSyncExternalStore(subscribe, getSnapshot, getSnapshot);
  // Idempotent: a second watch of the same job shares the stream, and StrictMode's
  // unmount-remount keeps it (the store releases a stream a moment after its last watcher).
  useEffect(() => (jobId === null ? undefined : store.watch(jobId)), [store, jobId]);
  return state;
}

export interface DerivedFlags {
  isIdle: boolean;
  /** Submitting, queued or running. */
  isLoading: boolean;
  isSuccess: boolean;
  isError: boolean;
  isCancelled: boolean;
}

export function derive(state: JobState): DerivedFlags {
  const s = state.status;
  return {
    isIdle: s === 'idle',
    isLoading: s === 'submitting' || s === 'queued' || s === 'running',
    isSuccess: s === 'completed',
    isError: s === 'failed',
    isCancelled: s === 'cancelled',
  };
}
