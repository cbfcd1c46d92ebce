#!/usr/bin/env bash
# Drives the real worker with `webuiapi` (a published AUTOMATIC1111 client,
# from PyPI, pinned, installed idempotently into a venv of its own; it needs
# requests and Pillow, not torch), unmodified: only its host, port and
# credentials are set (HTTP Basic, any user, the API token as password).
# The worker runs with a tiny ControlNet (`tiny-canny`) and a tiny depth
# model, for the ControlNet extension's units and routes.
# worker/tests/clients/a1111_webuiapi.py holds the checks; it prints
# `N passed, N failed` and exits non-zero on any failure.
#
#   scripts/test-a1111-client.sh
set -euo pipefail
cd "$(dirname "$0")/.."

WEBUIAPI_VERSION="0.9.17"
VENV="${SD_WORKER_A1111_VENV:-$HOME/.cache/sd-worker/a1111-venv}"

installed() {
    [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c \
        "import importlib.metadata as m, sys; sys.exit(m.version('webuiapi') != '$WEBUIAPI_VERSION')" 2>/dev/null
}
if ! installed; then
    echo "installing webuiapi $WEBUIAPI_VERSION into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "webuiapi==$WEBUIAPI_VERSION" >&2
fi

# shellcheck source=lib/workers.sh
source scripts/lib/workers.sh
setup_workers a1111
TOKEN="a1111-client-token"
"$WORKER" generate-controlnet --shape tiny --out "$WORK/tiny-canny" >/dev/null
"$WORKER" generate-depth-model --out "$WORK/depth" >/dev/null
start_worker a1111 "$WORK/model" --api-token "$TOKEN" \
    --controlnet "$WORK/tiny-canny" --depth-model "$WORK/depth"
URL="$(cat "$WORK/a1111.url")"

echo "==> webuiapi $WEBUIAPI_VERSION (Python) against $URL"
status=0
"$VENV/bin/python" worker/tests/clients/a1111_webuiapi.py "$URL" "$TOKEN" || status=$?
if ! kill -0 "${PIDS[0]}" 2>/dev/null; then
    echo "the worker died during the client run:" >&2
    cat "$WORK/a1111.err" >&2
    exit 1
fi
exit "$status"
