// The connection to the worker: its client, and its /v1/info once the model is
// loaded. Before that the studio says why it waits: the worker cannot be
// reached, the model is loading, or a token is needed.

import { createClient, toSdError, type Client, type SdError, type WorkerInfo } from '@sd-worker/sdk';
import { useEffect, useMemo, useState } from 'react';

export type Connection =
  | { state: 'connecting' }
  | { state: 'unreachable'; error: SdError }
  | { state: 'loading' }
  | { state: 'unauthorized'; error: SdError }
  | { state: 'ready'; info: WorkerInfo };

const POLL_MS = 2000;

export function useConnection(baseUrl: string, token: string, attempt: number) {
  const options = useMemo(() => ({ baseUrl, ...(token ? { token } : {}) }), [baseUrl, token]);
  // The client of the jobs (retries 429/503), and a probe that answers at once.
  const client = useMemo<Promise<Client>>(() => createClient(options), [options]);
  const [connection, setConnection] = useState<Connection>({ state: 'connecting' });

  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const probe = createClient({ ...options, maxRetries: 0 });
    const poll = async () => {
      try {
        const info = await (await probe).info();
        if (!stopped) setConnection({ state: 'ready', info });
        return;
      } catch (e) {
        if (stopped) return;
        const error = toSdError(e);
        if (error.code === 'unauthorized') {
          setConnection({ state: 'unauthorized', error });
          return;
        }
        setConnection(
          error.code === 'unavailable' || error.code === 'shutting_down'
            ? { state: 'loading' }
            : { state: 'unreachable', error },
        );
      }
      timer = setTimeout(() => void poll(), POLL_MS);
    };
    void poll();
    return () => {
      stopped = true;
      clearTimeout(timer);
      void probe.then((p) => p.close()).catch(() => {});
    };
  }, [options, attempt]);

  return { client, connection };
}
