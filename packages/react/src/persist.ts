// Remembering a hook's active job across reloads, in sessionStorage (one tab)
// or localStorage (every tab of the origin). Storage may be missing (SSR) or
// refuse writes (private mode, quota): then nothing is remembered.

export type PersistMode = 'session' | 'local';

const PREFIX = 'sd-worker:job:';

function storage(mode: PersistMode): Storage | null {
  try {
    if (typeof window === 'undefined') return null;
    return mode === 'local' ? window.localStorage : window.sessionStorage;
  } catch {
    return null;
  }
}

export function readPersistedJob(key: string | undefined, mode: PersistMode): string | null {
  if (!key) return null;
  try {
    return storage(mode)?.getItem(PREFIX + key) ?? null;
  } catch {
    return null;
  }
}

export function writePersistedJob(key: string | undefined, mode: PersistMode, jobId: string | null): void {
  if (!key) return;
  try {
    const s = storage(mode);
    if (jobId === null) s?.removeItem(PREFIX + key);
    else s?.setItem(PREFIX + key, jobId);
  } catch {
    // storage full or refused: the job is simply not resumed
  }
}
