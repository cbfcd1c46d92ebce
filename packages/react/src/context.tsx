// SdProvider: makes a client (and its job store) available to the hooks below it.

import { createClient, type Client, type ClientOptions } from '@sd-worker/sdk';
import { createContext, use, useContext, useMemo, type ReactNode } from 'react';
import { jobStoreFor, type JobStore } from './job-store.js';

interface SdContextValue {
  client: Client | Promise<Client>;
  store: JobStore;
}

const SdContext = createContext<SdContextValue | null>(null);

export type SdProviderProps = {
  children?: ReactNode;
} & (
  | {
      /** A client made with `createClient` (or a promise of one). Keep it stable across renders. */
      client: Client | Promise<Client>;
      options?: never;
    }
  | {
      /** Options of a client the provider makes; providers with equal options share one client. */
      options: ClientOptions;
      client?: never;
    }
);

const sharedClients = new Map<string, Promise<Client>>();

/** One client per distinct options, made once: renders (and StrictMode's double renders) reuse it. */
function sharedClient(options: ClientOptions): Promise<Client> {
  const key = JSON.stringify(options, Object.keys(options).sort());
  let client = sharedClients.get(key);
  if (!client) {
    client = createClient(options);
    client.catch(() => sharedClients.delete(key));
    sharedClients.set(key, client);
  }
  return client;
}

export function SdProvider(props: SdProviderProps): ReactNode {
  const source = props.client ?? (props.options ? sharedClient(props.options) : null);
  if (source === null) throw new Error('<SdProvider> needs a `client` or `options`');
  const value = useMemo(() => ({ client: source, store: jobStoreFor(source) }), [source]);
  return <SdContext value={value}>{props.children}</SdContext>;
}

function useSdContext(hook: string): SdContextValue {
  const value = useContext(SdContext);
  if (value === null) throw new Error(`${hook} must be used inside <SdProvider>`);
  return value;
}

/**
 * The provider's client. While a provider given `options` is still loading the
 * wasm module this suspends (wrap it in <Suspense>); the generation hooks never do.
 */
export function useSdClient(): Client {
  const { client } = useSdContext('useSdClient');
  return client instanceof Promise ? use(client) : client;
}

/** The provider's job store: one stream per job, shared by every hook of the tree. */
export function useJobStore(): JobStore {
  return useSdContext('useJobStore').store;
}
