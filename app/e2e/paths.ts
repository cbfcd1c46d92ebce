import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const APP_DIR = resolve(fileURLToPath(new URL('..', import.meta.url)));
/** Screenshots of every screen, kept by CI as test artifacts. */
export const SCREENSHOTS = join(APP_DIR, 'test-results', 'screenshots');
