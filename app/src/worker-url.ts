// Where the worker is. The worker serves the studio, so by default the API is
// the page's own origin. `?worker=http://host:port` (remembered in
// localStorage; `?worker=` alone forgets it) or VITE_SD_WORKER_URL at build
// time point the studio at another worker (which then needs --cors-origin).

const WORKER_KEY = 'sd-studio:worker';
const TOKEN_KEY = 'sd-studio:token';

function storage(): Storage | null {
  try {
    return window.localStorage;
  } catch {
    return null;
  }
}

export function resolveWorkerUrl(
  location: { search: string; origin: string },
  envUrl: string | undefined = import.meta.env.VITE_SD_WORKER_URL as string | undefined,
): string {
  const store = storage();
  const param = new URLSearchParams(location.search).get('worker');
  if (param !== null) {
    const url = param.trim().replace(/\/+$/, '');
    try {
      if (url) store?.setItem(WORKER_KEY, url);
      else store?.removeItem(WORKER_KEY);
    } catch {
      // not remembered
    }
    if (url) return url;
  }
  const saved = store?.getItem(WORKER_KEY);
  if (saved) return saved;
  if (envUrl) return envUrl.replace(/\/+$/, '');
  return location.origin;
}

export function loadToken(): string {
  return storage()?.getItem(TOKEN_KEY) ?? '';
}

export function saveToken(token: string): void {
  try {
    if (token) storage()?.setItem(TOKEN_KEY, token);
    else storage()?.removeItem(TOKEN_KEY);
  } catch {
    // not remembered
  }
}
