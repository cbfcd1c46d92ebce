// The page: finds the worker, waits for its model, then shows the studio.

import { SdProvider } from '@sd-worker/react';
import { useState, type ReactNode } from 'react';
import { Studio } from './Studio.js';
import { TokenForm } from './components/TokenForm.js';
import { useConnection, type Connection } from './connection.js';
import { loadToken, resolveWorkerUrl, saveToken } from './worker-url.js';

const workerUrl = resolveWorkerUrl(window.location);

export function Root(): ReactNode {
  const [token, setToken] = useState(loadToken);
  const [attempt, setAttempt] = useState(0);
  const { client, connection } = useConnection(workerUrl, token, attempt);
  const retry = () => setAttempt((a) => a + 1);

  if (connection.state === 'ready') {
    return (
      <SdProvider client={client}>
        <Studio info={connection.info} workerUrl={workerUrl} client={client} />
      </SdProvider>
    );
  }
  return (
    <div className="app">
      <header className="topbar">
        <h1>sd-worker studio</h1>
      </header>
      <main className="waiting">
        <ConnectionStatus
          connection={connection}
          retry={retry}
          token={token}
          setToken={(t) => {
            saveToken(t);
            setToken(t);
          }}
        />
      </main>
    </div>
  );
}

function ConnectionStatus(props: {
  connection: Exclude<Connection, { state: 'ready' }>;
  retry: () => void;
  token: string;
  setToken: (token: string) => void;
}): ReactNode {
  const { connection, retry } = props;
  switch (connection.state) {
    case 'connecting':
      return (
        <p className="notice" role="status">
          Connecting to the worker at {workerUrl}…
        </p>
      );
    case 'loading':
      return (
        <div className="notice" role="status" data-testid="model-loading">
          <p>
            <strong>The model is still loading.</strong> The studio opens as soon as the worker is ready.
          </p>
          <span className="spinner" aria-hidden="true" />
        </div>
      );
    case 'unreachable':
      return (
        <div className="notice error" role="alert" data-testid="worker-unreachable">
          <p>
            <strong>Cannot reach the worker at {workerUrl}.</strong> Is it running? Retrying every few seconds.
          </p>
          <p className="muted">{connection.error.message}</p>
          <button type="button" onClick={retry}>
            Retry now
          </button>
        </div>
      );
    case 'unauthorized':
      return <TokenForm refused={props.token} onToken={props.setToken} />;
  }
}
