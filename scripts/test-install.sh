#!/usr/bin/env bash
# The SDK as an app outside this repository gets it: packs @sd-worker/sdk and
# @sd-worker/react (scripts/pack.sh), scaffolds a fresh Vite React TypeScript
# app in a temp folder (create-vite, pinned), installs the two tarballs with
# plain npm, type-checks it with the template's `tsc -b` and `lib` but
# `skipLibCheck: false` (so the packages' declarations are checked too),
# builds it with `vite build` (no plugin for the wasm), then serves the build
# with `vite preview` and, in headless Chromium, generates one image with the
# React hook against the real worker on its bundled model: the result must be
# a decoded PNG of the worker's default size. The same again on the Vite dev
# server (which pre-bundles the dependencies). Everything listens on 127.0.0.1;
# processes and the temp folder go on exit.
#
#   scripts/test-install.sh [--no-build]   (--no-build: the packages are built)
#
# Needs: node and npm (the npm registry, for the template's dependencies),
# pnpm, Debian's chromium (CHROMIUM_PATH), the workspace's node_modules
# (playwright-core), the worker binary (SD_WORKER_BIN, else cargo build).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
CREATE_VITE_VERSION="9.3.0"
started=$SECONDS

pack_args=()
if [[ "${1:-}" == "--no-build" ]]; then pack_args+=(--no-build); fi

# shellcheck source=lib/workers.sh
source scripts/lib/workers.sh
resolve_worker
# Outside the repository, so npm finds no workspace above the app.
WORK="$(mktemp -d "${TMPDIR:-/tmp}/sd-worker-install.XXXXXX")"
trap cleanup_workers EXIT INT TERM
case "$WORK" in "$REPO"/*)
    echo "test-install: the temp folder $WORK is inside the repository" >&2
    exit 1
    ;;
esac

free_port() {
    node -e "const s = require('node:net').createServer().listen(0, '127.0.0.1', () => { console.log(s.address().port); s.close(); })"
}

echo "==> pack the packages"
scripts/pack.sh "${pack_args[@]}" "$WORK/npm" | sed -n '/==> tarballs/,$p'
SDK_TGZ="$(ls "$WORK"/npm/sd-worker-sdk-*.tgz)"
REACT_TGZ="$(ls "$WORK"/npm/sd-worker-react-*.tgz)"

# The worker starts now (it loads its model while npm installs); the app's
# origin, the preview server's, is the one it allows.
APP_PORT="$(free_port)"
APP_URL="http://127.0.0.1:$APP_PORT"
echo "==> start the worker on its bundled model (CORS: $APP_URL)"
env -u SD_WORKER_API_TOKEN -u SD_WORKER_HOST -u SD_WORKER_PORT -u SD_WORKER_CORS_ORIGINS \
    -u SD_WORKER_MODEL -u SD_WORKER_MODEL_PATH \
    "$WORKER" --host 127.0.0.1 --port 0 --cors-origin "$APP_URL" >"$WORK/worker.out" 2>"$WORK/worker.err" &
PIDS+=("$!")
WORKER_PID="$!"

echo "==> scaffold a Vite React TypeScript app (create-vite $CREATE_VITE_VERSION) in $WORK/app"
(cd "$WORK" && npm create --yes "vite@$CREATE_VITE_VERSION" app -- --template react-ts --no-interactive >/dev/null)
APP="$WORK/app"

echo "==> npm install, with the two tarballs"
(cd "$APP" && npm install --no-audit --no-fund --loglevel=error "$SDK_TGZ" "$REACT_TGZ")
# Both from the tarballs: npm must not have fetched an @sd-worker/sdk of the registry for the React package.
node - "$APP/package-lock.json" <<'EOF'
const lock = require(process.argv[2]);
for (const name of ['@sd-worker/sdk', '@sd-worker/react']) {
  const entries = Object.entries(lock.packages).filter(([path]) => path.endsWith(`node_modules/${name}`));
  const bad = entries.filter(([, p]) => !String(p.resolved).startsWith('file:'));
  if (entries.length !== 1 || bad.length) {
    console.error(`test-install: FAIL: ${name} installed as ${JSON.stringify(entries)}`);
    process.exit(1);
  }
}
EOF

echo "==> the app: the React hook against import.meta.env.VITE_SD_WORKER_URL; skipLibCheck false"
cat >"$APP/src/App.tsx" <<'EOF'
import { SdProvider, useTextToImage } from '@sd-worker/react'
import type { JobRequest } from '@sd-worker/sdk'

const baseUrl: string = import.meta.env.VITE_SD_WORKER_URL ?? 'http://127.0.0.1:8600'

// The contract's exact request type, as an app would keep one.
const request: Omit<Extract<JobRequest, { operation: 'image_generation' }>, 'operation'> = {
  prompt: 'a red circle on a blue background',
  steps: 2,
  seed: 7,
  scheduler: 'euler_a',
}

export default function App() {
  return (
    <SdProvider options={{ baseUrl }}>
      <Generator />
    </SdProvider>
  )
}

function Generator() {
  const job = useTextToImage()
  return (
    <main>
      <button type="button" data-testid="generate" disabled={job.isLoading} onClick={() => void job.generate(request)}>
        Generate
      </button>
      <p data-testid="status">{job.status}</p>
      {job.error && (
        <p role="alert" data-testid="error">
          {job.error.code}: {job.error.message}
        </p>
      )}
      {job.images.map((image) => (
        <img key={image.seed} data-testid="result" src={image.url} width={image.width} height={image.height} alt={`seed ${image.seed}`} />
      ))}
    </main>
  )
}
EOF
node - "$APP" <<'EOF'
// Every tsconfig of the template: skipLibCheck false, its `lib` as it is.
const { readdirSync, readFileSync, writeFileSync } = require('node:fs');
const { join } = require('node:path');
const dir = process.argv[2];
let changed = 0;
for (const f of readdirSync(dir).filter((f) => /^tsconfig.*\.json$/.test(f))) {
  const text = readFileSync(join(dir, f), 'utf8');
  const next = text.replace(/"skipLibCheck":\s*true/, '"skipLibCheck": false');
  if (next !== text) changed++;
  writeFileSync(join(dir, f), next);
  const lib = /"lib":\s*(\[[^\]]*\])/.exec(next)?.[1];
  if (lib) console.log(`${f}: lib ${lib.replace(/\s+/g, ' ')}, skipLibCheck false`);
}
if (changed === 0) {
  console.error('test-install: FAIL: no tsconfig of the template set skipLibCheck');
  process.exit(1);
}
EOF

echo "==> type-check (tsc -b, the template's)"
(cd "$APP" && npx tsc -b)

echo "==> wait for the worker"
url=""
for ((i = 0; i < 600; i++)); do
    url="$(sed -n 's/^sd-worker listening on \(http:\/\/[^ ]*\).*$/\1/p' "$WORK/worker.out" | head -n 1)"
    if [[ -n "$url" ]] && curl -sf -o /dev/null "$url/ready"; then break; fi
    if ! kill -0 "$WORKER_PID" 2>/dev/null; then
        echo "test-install: the worker exited:" >&2
        cat "$WORK/worker.err" >&2
        exit 1
    fi
    url=""
    sleep 0.1
done
if [[ -z "$url" ]]; then
    echo "test-install: the worker was not ready in 60 s" >&2
    cat "$WORK/worker.err" >&2
    exit 1
fi
echo "worker: $url"

echo "==> vite build"
(cd "$APP" && VITE_SD_WORKER_URL="$url" npx vite build --logLevel warn)
ls "$APP"/dist/assets/*.wasm >/dev/null # the SDK's wasm, emitted as an asset

# serve NAME VITE_ARGS...: the vite binary itself (not npx, whose child would
# outlive the trap's kill) on the app's origin; sets SERVER_PID.
serve() {
    local name="$1"
    shift
    (cd "$APP" && VITE_SD_WORKER_URL="$url" exec node_modules/.bin/vite "$@" --host 127.0.0.1 --port "$APP_PORT" --strictPort) \
        >"$WORK/$name.out" 2>&1 &
    SERVER_PID="$!"
    PIDS+=("$SERVER_PID")
    for ((i = 0; i < 300; i++)); do
        curl -sf -o /dev/null "$APP_URL/" && return 0
        sleep 0.1
    done
    echo "test-install: vite $name did not answer on $APP_URL" >&2
    cat "$WORK/$name.out" >&2
    return 1
}

echo "==> generate in headless Chromium: the build (vite preview on $APP_URL)"
serve preview preview
node scripts/lib/install-app-check.mjs "$APP_URL" "$url"
kill "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true

echo "==> generate in headless Chromium: the dev server (vite, dependencies pre-bundled)"
serve dev
node scripts/lib/install-app-check.mjs "$APP_URL" "$url"

echo "test-install: ok in $((SECONDS - started)) s"
