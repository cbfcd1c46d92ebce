import type { FormEvent, ReactNode } from 'react';

/**
 * Asks for the worker's access token. `refused` is the token the worker just
 * turned down (empty when none was sent): the form says so, rather than
 * coming back unchanged.
 */
export function TokenForm({ refused, onToken }: { refused: string; onToken: (token: string) => void }): ReactNode {
  const submit = (e: FormEvent<HTMLFormElement>) => {
    e.preventDefault();
    onToken(String(new FormData(e.currentTarget).get('token') ?? '').trim());
  };
  return (
    <form className="notice" onSubmit={submit} role="alert">
      <p>
        <strong>This worker needs an access token</strong> (it was started with <code>--api-token</code>).
      </p>
      {refused && (
        <p id="token-refused" className="field-error" data-testid="token-refused">
          The worker refused this token: check it against the worker’s <code>--api-token</code>.
        </p>
      )}
      <label htmlFor="token">Token</label>
      <div className="row">
        <input
          id="token"
          name="token"
          type="password"
          autoComplete="current-password"
          required
          aria-invalid={refused ? true : undefined}
          aria-describedby={refused ? 'token-refused' : undefined}
        />
        <button type="submit">Connect</button>
      </div>
    </form>
  );
}
