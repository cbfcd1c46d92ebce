#!/usr/bin/env bash
# Runs the browser SDK's tests (sdk-wasm/tests/web.rs) in headless Chromium
# against two real workers on a tiny random-weight model: one open, one
# started with --api-token test-token. Everything listens on 127.0.0.1 only;
# the workers are stopped on exit. Safe to run again.
#
# Needs: the wasm32-unknown-unknown target, wasm-bindgen-cli 0.2.130 (its
# wasm-bindgen-test-runner is the cargo runner, see .cargo/config.toml),
# Debian's chromium and chromium-driver, curl.
set -euo pipefail
cd "$(dirname "$0")/.."

CHROMEDRIVER="${CHROMEDRIVER:-/usr/bin/chromedriver}"
for tool in wasm-bindgen-test-runner curl "$CHROMEDRIVER"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "test-wasm: $tool not found" >&2
        exit 1
    fi
done

# shellcheck source=lib/workers.sh
source scripts/lib/workers.sh
setup_workers wasm-test

echo "==> start the workers"
start_worker open "$WORK/model" --cors-origin '*'
start_worker auth "$WORK/model" --cors-origin '*' --api-token test-token
SD_WORKER_TEST_URL="$(cat "$WORK/open.url")"
SD_WORKER_TEST_AUTH_URL="$(cat "$WORK/auth.url")"
export SD_WORKER_TEST_URL SD_WORKER_TEST_AUTH_URL
echo "open worker: $SD_WORKER_TEST_URL"
echo "auth worker: $SD_WORKER_TEST_AUTH_URL"

echo "==> browser tests (headless Chromium)"
export CHROMEDRIVER
export WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-180}"
cargo test -p sd-worker-sdk --target wasm32-unknown-unknown --test web
