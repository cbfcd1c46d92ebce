// JobStore: the jobs of one client, as external state for useSyncExternalStore.
//
// One stream per job, however many components watch it: watchers are counted,
// the stream opens with the first and is aborted (detached, the job goes on)
// shortly after the last leaves. The short delay makes StrictMode's
// mount-unmount-mount keep the same stream. A stream that is re-opened resumes
// after the last event seen (Last-Event-ID), so nothing is applied twice.
// Progress and preview updates are throttled per job; the last one is always
// delivered and status changes are delivered at once.

import { toSdError, type Client, type JobAccepted, type JobRequest, type JobSnapshot } from '@sd-worker/sdk';
import { applyEvent, initialJobState, isFinished, isUrgent, type JobState } from './job-state.js';

export interface JobStoreOptions {
  /** Least time between two progress/preview updates of one job (default 100 ms: at most ~10 per second). */
  throttleMs?: number;
  /** How long a stream outlives its last watcher (default 0: the next macrotask). */
  releaseDelayMs?: number;
}

type Listener = () => void;

interface Entry {
  jobId: string;
  /** What `get` answers: the last published state. */
  published: JobState;
  /** The newest state, published at once or when the throttle allows. */
  current: JobState;
  lastPublishAt: number;
  timer: ReturnType<typeof setTimeout> | null;
  listeners: Set<Listener>;
  watchers: number;
  releaseTimer: ReturnType<typeof setTimeout> | null;
  controller: AbortController | null;
  lastEventId: number;
  /** A terminal event was received: the stream is never re-opened. */
  ended: boolean;
}

export class JobStore {
  readonly #client: Promise<Client>;
  readonly #throttleMs: number;
  readonly #releaseDelayMs: number;
  readonly #entries = new Map<string, Entry>();
  #streamsOpened = 0;
  #streamsActive = 0;

  constructor(client: Client | Promise<Client>, options: JobStoreOptions = {}) {
    this.#client = Promise.resolve(client);
    this.#throttleMs = options.throttleMs ?? 100;
    this.#releaseDelayMs = options.releaseDelayMs ?? 0;
  }

  /** Streams opened since the store was made (for tests and diagnostics). */
  get streamsOpened(): number {
    return this.#streamsOpened;
  }

  /** Streams open now. */
  get streamsActive(): number {
    return this.#streamsActive;
  }

  /** The job's state; the same object until it changes. */
  get(jobId: string): JobState {
    return this.#entry(jobId).published;
  }

  subscribe(jobId: string, listener: Listener): () => void {
    const entry = this.#entry(jobId);
    entry.listeners.add(listener);
    return () => {
      entry.listeners.delete(listener);
      this.#scheduleRelease(entry);
    };
  }

  /**
   * Follows the job's stream until the returned function is called. Any number of
   * watchers share one stream. Releasing never cancels the job.
   */
  watch(jobId: string): () => void {
    const entry = this.#entry(jobId);
    entry.watchers += 1;
    if (entry.releaseTimer !== null) {
      clearTimeout(entry.releaseTimer);
      entry.releaseTimer = null;
    }
    if (entry.controller === null && !entry.ended) void this.#follow(entry);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      entry.watchers -= 1;
      this.#scheduleRelease(entry);
    };
  }

  /** Submits a job; its state starts as `queued` with the worker's queue position. */
  async submit(request: JobRequest): Promise<JobAccepted> {
    const client = await this.#client;
    const accepted = await client.submit(request);
    const entry = this.#entry(accepted.job_id);
    if (entry.lastEventId === 0) {
      this.#update(entry, initialJobState(accepted.job_id, accepted.queue_position), true);
    }
    return accepted;
  }

  /** Asks the worker to cancel the job; its stream then ends with `cancelled`. */
  async cancel(jobId: string): Promise<JobSnapshot> {
    const client = await this.#client;
    const snapshot = await client.cancel(jobId);
    const entry = this.#entries.get(jobId);
    if (entry && snapshot.status === 'cancelled' && !isFinished(entry.current.status)) {
      this.#update(entry, { ...entry.current, status: 'cancelled', queuePosition: null }, true);
    }
    return snapshot;
  }

  #entry(jobId: string): Entry {
    let entry = this.#entries.get(jobId);
    if (!entry) {
      const state = initialJobState(jobId);
      entry = {
        jobId,
        published: state,
        current: state,
        lastPublishAt: 0,
        timer: null,
        listeners: new Set(),
        watchers: 0,
        releaseTimer: null,
        controller: null,
        lastEventId: 0,
        ended: false,
      };
      this.#entries.set(jobId, entry);
    }
    return entry;
  }

  async #follow(entry: Entry): Promise<void> {
    const controller = new AbortController();
    entry.controller = controller;
    this.#streamsOpened += 1;
    this.#streamsActive += 1;
    try {
      const client = await this.#client;
      if (controller.signal.aborted) return;
      await client.stream(
        entry.jobId,
        (event, id) => {
          if (controller.signal.aborted || id <= entry.lastEventId) return;
          entry.lastEventId = id;
          const before = entry.current;
          const after = applyEvent(before, event);
          if (event.type === 'complete' || event.type === 'error' || event.type === 'cancelled') entry.ended = true;
          this.#update(entry, after, isUrgent(before, event, after));
        },
        { signal: controller.signal, ...(entry.lastEventId > 0 ? { lastEventId: entry.lastEventId } : {}) },
      );
    } catch (e) {
      const error = toSdError(e);
      if (!controller.signal.aborted) {
        // The worker no longer knows the job (404/410), or it could not be reached
        // after the client's retries: shown as failed; a new watcher tries again.
        this.#update(entry, { ...entry.current, status: 'failed', error }, true);
      }
    } finally {
      this.#streamsActive -= 1;
      if (entry.controller === controller) entry.controller = null;
    }
  }

  #update(entry: Entry, next: JobState, urgent: boolean): void {
    entry.current = next;
    const wait = entry.lastPublishAt + this.#throttleMs - Date.now();
    if (urgent || wait <= 0) {
      this.#publish(entry);
    } else if (entry.timer === null) {
      entry.timer = setTimeout(() => this.#publish(entry), wait);
    }
  }

  #publish(entry: Entry): void {
    if (entry.timer !== null) {
      clearTimeout(entry.timer);
      entry.timer = null;
    }
    entry.lastPublishAt = Date.now();
    if (entry.published === entry.current) return;
    entry.published = entry.current;
    for (const listener of [...entry.listeners]) listener();
  }

  #scheduleRelease(entry: Entry): void {
    if (entry.watchers > 0 || entry.releaseTimer !== null) return;
    entry.releaseTimer = setTimeout(() => {
      entry.releaseTimer = null;
      if (entry.watchers > 0) return;
      // Detach: stop listening, never cancel.
      entry.controller?.abort();
      entry.controller = null;
      if (entry.listeners.size === 0) {
        if (entry.timer !== null) clearTimeout(entry.timer);
        this.#entries.delete(entry.jobId);
      }
    }, this.#releaseDelayMs);
  }
}

const stores = new WeakMap<object, JobStore>();

/** The store of a client (or of a promise of one): one per client, made on first use. */
export function jobStoreFor(client: Client | Promise<Client>): JobStore {
  let store = stores.get(client);
  if (!store) {
    store = new JobStore(client);
    stores.set(client, store);
  }
  return store;
}
