#!/usr/bin/env bash
# The project's run command (README): builds the browser SDK and the studio,
# then starts the worker, which serves the studio and the API on one URL
# (http://127.0.0.1:8600 by default). With no model flag the worker runs the
# bundled default model, offline. Arguments go to the worker:
#
#   scripts/run.sh                                  # bundled model, studio at /
#   scripts/run.sh --model-path /models/sd15 --port 9000
#
# The first run installs what the build needs (wasm32 target, wasm-bindgen-cli,
# pnpm, node_modules; see scripts/setup-web.sh) and compiles Candle: minutes.
# Later runs reuse all of it.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "toolchain for the studio (idempotent)"
scripts/setup-web.sh
step "browser SDK (Rust to WebAssembly)"
scripts/build-wasm.sh >/dev/null
step "SDK, React hooks and studio"
pnpm build >/dev/null
step "worker"
# The dev profile optimises dependencies (Candle) fully and shares one build
# with the tests; see Cargo.toml.
export SD_WORKER_STUDIO_DIR="${SD_WORKER_STUDIO_DIR:-$PWD/app/dist}"
exec cargo run -p sd-worker -- "$@"
