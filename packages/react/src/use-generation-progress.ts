// useGenerationProgress: the live state of any job, by id (one submitted
// elsewhere, by another tab, or by the hive).

import { useCallback, useMemo } from 'react';
import { useJobStore } from './context.js';
import type { JobState } from './job-state.js';
import { derive, useJobState, type DerivedFlags } from './use-job.js';

export interface GenerationProgress extends JobState, DerivedFlags {
  /** Cancels the job on the worker. Resolves true when the worker accepted the cancel. */
  cancel(): Promise<boolean>;
}

/** Follows the job (sharing the stream with every other watcher of it); idle for no id. */
export function useGenerationProgress(jobId: string | null | undefined): GenerationProgress {
  const store = useJobStore();
  const id = jobId ?? null;
  const state = useJobState(store, id);
  const cancel = useCallback(async () => {
    if (id === null) return false;
    try {
      await store.cancel(id);
      return true;
    } catch {
      return false;
    }
  }, [store, id]);
  return useMemo(() => ({ ...state, ...derive(state), cancel }), [state, cancel]);
}
