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

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
CHROMEDRIVER="${CHROMEDRIVER:-/usr/bin/chromedriver}"
for tool in wasm-bindgen-test-runner curl "$CHROMEDRIVER"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "test-wasm: $tool not found" >&2
        exit 1
    fi
done

# scripts/test.sh exports SD_WORKER_BIN, the binary its `cargo test` just
# built; building again here would resolve other features and compile Candle
# a second time. Run alone, build it.
if [[ -n "${SD_WORKER_BIN:-}" && -x "${SD_WORKER_BIN}" ]]; then
    WORKER="$SD_WORKER_BIN"
else
    echo "==> build the worker"
    cargo build -p sd-worker
    WORKER="$TARGET_DIR/debug/sd-worker"
fi

WORK="$(mktemp -d -t sd-worker-wasm-test.XXXXXX)"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

echo "==> generate a tiny model"
"$WORKER" generate-model --shape tiny --out "$WORK/model" >/dev/null

# start_worker NAME [ARGS...]: starts a worker on a free port and, once it is
# listening and ready, writes its URL to $WORK/NAME.url. (Run in this shell, not
# in a subshell, so that the trap knows its PID.)
start_worker() {
    local name="$1"
    shift
    # The environment must not add a token (or anything else) of its own.
    env -u SD_WORKER_API_TOKEN -u SD_WORKER_HOST -u SD_WORKER_PORT -u SD_WORKER_CORS_ORIGINS \
        "$WORKER" --host 127.0.0.1 --port 0 --model-path "$WORK/model" --cors-origin '*' "$@" \
        >"$WORK/$name.out" 2>"$WORK/$name.err" &
    PIDS+=("$!")
    local pid="$!" url="" i
    for ((i = 0; i < 600; i++)); do
        url="$(sed -n 's/^sd-worker listening on \(http:\/\/[^ ]*\).*$/\1/p' "$WORK/$name.out" | head -n 1)"
        [[ -n "$url" ]] && break
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "test-wasm: worker $name exited:" >&2
            cat "$WORK/$name.err" >&2
            return 1
        fi
        sleep 0.1
    done
    if [[ -z "$url" ]]; then
        echo "test-wasm: worker $name did not print its address within 60 s" >&2
        cat "$WORK/$name.err" >&2
        return 1
    fi
    for ((i = 0; i < 600; i++)); do
        if curl -sf -o /dev/null "$url/ready"; then
            echo "$url" >"$WORK/$name.url"
            return 0
        fi
        sleep 0.1
    done
    echo "test-wasm: worker $name at $url never became ready" >&2
    cat "$WORK/$name.err" >&2
    return 1
}

echo "==> start the workers"
start_worker open
start_worker auth --api-token test-token
SD_WORKER_TEST_URL="$(cat "$WORK/open.url")"
SD_WORKER_TEST_AUTH_URL="$(cat "$WORK/auth.url")"
export SD_WORKER_TEST_URL SD_WORKER_TEST_AUTH_URL
echo "open worker: $SD_WORKER_TEST_URL"
echo "auth worker: $SD_WORKER_TEST_AUTH_URL"

echo "==> browser tests (headless Chromium)"
export CHROMEDRIVER
export WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-180}"
cargo test -p sd-worker-sdk --target wasm32-unknown-unknown --test web
