#!/usr/bin/env bash
# Installs Schemathesis (the property-based API fuzzer, from PyPI) into a venv
# of its own, idempotently, and prints `SD_WORKER_ST=<path to st>` last.
#
#   scripts/setup-fuzz.sh
set -euo pipefail

SCHEMATHESIS_VERSION="4.32.5"
VENV="${SD_WORKER_FUZZ_VENV:-$HOME/.cache/sd-worker/fuzz-venv}"
ST="$VENV/bin/st"

installed() {
    [[ -x "$ST" ]] && "$VENV/bin/python" -c \
        "import importlib.metadata as m, sys; sys.exit(m.version('schemathesis') != '$SCHEMATHESIS_VERSION')" 2>/dev/null
}

if ! installed; then
    echo "installing schemathesis $SCHEMATHESIS_VERSION into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" >&2
fi
echo "SD_WORKER_ST=$ST"
