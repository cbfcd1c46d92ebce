# Sourced by the test scripts that need a running worker. Expects $WORKER (the
# binary), $WORK (a temp folder) and a PIDS array whose members the caller's
# EXIT trap kills.
#
# start_worker NAME MODEL [ARGS...]: starts a worker on 127.0.0.1 on a free
# port with the model folder MODEL and, once it is listening and ready, writes
# its URL to $WORK/NAME.url. Run it in the calling shell, not in a subshell, so
# that the trap knows its PID.
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
