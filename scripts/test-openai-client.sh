#!/usr/bin/env bash
# Drives the real worker with the official `openai` Python package (from PyPI,
# pinned, installed idempotently into a venv of its own) and the official
# `openai` npm package (pinned, installed idempotently with plain `npm install
# --prefix` into a folder of its own, outside the pnpm workspace), both
# unmodified: only their base URL and API key are set.
# worker/tests/clients/openai_images.py and openai_images.mjs hold the checks;
# each prints `N passed, N failed`; the script exits non-zero on any failure.
# The npm package is 6.x: 7.x needs Node 22, and Node 20 is what CI has.
#
#   scripts/test-openai-client.sh
set -euo pipefail
cd "$(dirname "$0")/.."

OPENAI_VERSION="3.57.0"
VENV="${SD_WORKER_OPENAI_VENV:-$HOME/.cache/sd-worker/openai-venv}"
OPENAI_NODE_VERSION="6.49.0"
NODE_DIR="${SD_WORKER_OPENAI_NODE_DIR:-$HOME/.cache/sd-worker/openai-node}"

installed() {
    [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c \
        "import importlib.metadata as m, sys; sys.exit(m.version('openai') != '$OPENAI_VERSION')" 2>/dev/null
}
if ! installed; then
    echo "installing openai $OPENAI_VERSION into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "openai==$OPENAI_VERSION" >&2
fi
node_installed() {
    [[ -f "$NODE_DIR/node_modules/openai/package.json" ]] && node -e \
        "process.exit(require(process.argv[1]).version === '$OPENAI_NODE_VERSION' ? 0 : 1)" \
        "$NODE_DIR/node_modules/openai/package.json" 2>/dev/null
}
if ! node_installed; then
    echo "installing openai $OPENAI_NODE_VERSION (npm) into $NODE_DIR" >&2
    mkdir -p "$NODE_DIR"
    npm install --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error "openai@$OPENAI_NODE_VERSION" >&2
fi

# shellcheck source=lib/workers.sh
source scripts/lib/workers.sh
setup_workers openai
TOKEN="openai-client-token"
start_worker openai "$WORK/model" --api-token "$TOKEN"
URL="$(cat "$WORK/openai.url")"

echo "==> openai $OPENAI_VERSION (Python) against $URL"
status=0
"$VENV/bin/python" worker/tests/clients/openai_images.py "$URL" "$TOKEN" || status=$?
echo "==> openai $OPENAI_NODE_VERSION (npm, Node $(node --version)) against $URL"
OPENAI_NODE_MODULES="$NODE_DIR/node_modules" node worker/tests/clients/openai_images.mjs "$URL" "$TOKEN" || status=$?
if ! kill -0 "${PIDS[0]}" 2>/dev/null; then
    echo "the worker died during the client run:" >&2
    cat "$WORK/openai.err" >&2
    exit 1
fi
exit "$status"
