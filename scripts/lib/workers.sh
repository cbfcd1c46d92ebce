# Sourced by the test scripts that run real workers: which binary to run, a
# temp folder with a tiny model, and workers on free loopback ports that are
# stopped (and the folder removed) when the script exits.
#
#   source scripts/lib/workers.sh
#   setup_workers NAME     sets WORKER and WORK, writes $WORK/model, sets the trap
#   start_worker ID MODEL [ARGS...]

# scripts/test.sh exports SD_WORKER_BIN, the binary its `cargo test` just
# built; building again here would resolve other features and compile Candle
# a second time. Run alone, build it.
resolve_worker() {
    if [[ -n "${SD_WORKER_BIN:-}" && -x "${SD_WORKER_BIN}" ]]; then
        WORKER="$SD_WORKER_BIN"
    else
        echo "==> build the worker"
        cargo build -p sd-worker
        WORKER="${CARGO_TARGET_DIR:-target}/debug/sd-worker"
    fi
}

PIDS=()
cleanup_workers() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}

# setup_workers NAME: the binary, a temp folder sd-worker-NAME.XXXXXX with a
# tiny random-weight model in $WORK/model, and the cleanup on exit.
setup_workers() {
    resolve_worker
    WORK="$(mktemp -d -t "sd-worker-$1.XXXXXX")"
    trap cleanup_workers EXIT INT TERM
    echo "==> generate a tiny model"
    "$WORKER" generate-model --shape tiny --out "$WORK/model" >/dev/null
}

# start_worker ID MODEL [ARGS...]: starts a worker on 127.0.0.1 on a free port
# with the model folder MODEL and, once it is listening and ready, writes its
# URL to $WORK/ID.url. Run it in the calling shell, not in a subshell, so that
# the trap knows its PID.
start_worker() {
    local name="$1" model="$2"
    shift 2
    # The environment must not add a token (or anything else) of its own.
    env -u SD_WORKER_API_TOKEN -u SD_WORKER_HOST -u SD_WORKER_PORT -u SD_WORKER_CORS_ORIGINS \
        "$WORKER" --host 127.0.0.1 --port 0 --model-path "$model" "$@" \
        >"$WORK/$name.out" 2>"$WORK/$name.err" &
    PIDS+=("$!")
    local pid="$!" url="" i
    for ((i = 0; i < 600; i++)); do
        url="$(sed -n 's/^sd-worker listening on \(http:\/\/[^ ]*\).*$/\1/p' "$WORK/$name.out" | head -n 1)"
        [[ -n "$url" ]] && break
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "worker $name exited:" >&2
            cat "$WORK/$name.err" >&2
            return 1
        fi
        sleep 0.1
    done
    if [[ -z "$url" ]]; then
        echo "worker $name did not print its address within 60 s" >&2
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
    echo "worker $name at $url never became ready" >&2
    cat "$WORK/$name.err" >&2
    return 1
}
