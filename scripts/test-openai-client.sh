#!/usr/bin/env bash
# Drives the real worker with the official `openai` Python package (from PyPI,
# pinned, installed idempotently into a venv of its own), unmodified: only its
# base_url and api_key are set. worker/tests/clients/openai_images.py holds the
# checks; it prints `N passed, N failed` and exits non-zero on any failure.
#
#   scripts/test-openai-client.sh
set -euo pipefail
cd "$(dirname "$0")/.."

OPENAI_VERSION="3.57.0"
VENV="${SD_WORKER_OPENAI_VENV:-$HOME/.cache/sd-worker/openai-venv}"

installed() {
    [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c \
        "import importlib.metadata as m, sys; sys.exit(m.version('openai') != '$OPENAI_VERSION')" 2>/dev/null
}
if ! installed; then
    echo "installing openai $OPENAI_VERSION into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "openai==$OPENAI_VERSION" >&2
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
if ! kill -0 "${PIDS[0]}" 2>/dev/null; then
    echo "the worker died during the client run:" >&2
    cat "$WORK/openai.err" >&2
    exit 1
fi
exit "$status"
