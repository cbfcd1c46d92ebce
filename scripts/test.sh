#!/usr/bin/env bash
# The project's one test command (README): installs what the tests need,
# idempotently, then runs formatting, lints and every test: Rust (worker and
# SDK), a property-based fuzzing run against the worker's own OpenAPI document,
# the official `openai` Python client against the OpenAI Images routes,
# `webuiapi` against the AUTOMATIC1111 routes,
# the WASM build and its size budget, the TypeScript packages, the packages'
# tarballs installed into a fresh Vite app outside the workspace, and the browser
# SDK and the studio in headless Chromium. Every test talks to a real
# worker binary (the shared-queue tests also to a real nats-server).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
[[ "$TARGET_DIR" = /* ]] || TARGET_DIR="$PWD/$TARGET_DIR"
export SD_WORKER_BIN="$TARGET_DIR/debug/sd-worker"

step "toolchain components"
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "browser toolchain: wasm32 target, wasm-bindgen-cli, chromium, pnpm, node_modules (binaryen)"
scripts/setup-web.sh --browser

step "nats-server (Debian) for the shared-queue tests"
scripts/setup-nats.sh

step "test assets (the real CLIP vocabulary, from PyPI)"
eval "$(scripts/fetch-test-assets.sh | grep '^SD_WORKER_CLIP_BPE=')"
export SD_WORKER_CLIP_BPE

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings (native, and the SDK for wasm32)"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p sd-worker-sdk --target wasm32-unknown-unknown --all-targets -- -D warnings

step "cargo test"
# One profile (dev, with optimised dependencies) serves tests, the binary and
# the benchmark, so Candle is compiled once.
cargo test --workspace --no-fail-fast

step "OpenAPI fuzzing (Schemathesis from PyPI, fixed seed, against the real worker)"
scripts/test-openapi-fuzz.sh

step "OpenAI Images API with the official openai Python package (from PyPI, unmodified, against the real worker)"
scripts/test-openai-client.sh

step "AUTOMATIC1111 API with webuiapi (from PyPI, unmodified, against the real worker)"
scripts/test-a1111-client.sh

step "WASM build of the SDK (wasm-bindgen, wasm-opt, 50 KB gzip budget)"
scripts/build-wasm.sh

step "TypeScript packages: build, typecheck, lint"
pnpm build
pnpm typecheck
pnpm lint

step "TypeScript package tests (Vitest, against the real worker)"
pnpm test

step "SDK installed from tarballs into a fresh Vite app (pack, plain npm, tsc with skipLibCheck false, vite build, one generation in headless Chromium)"
scripts/test-install.sh --no-build

step "studio end to end (Playwright in headless Chromium, the worker serving app/dist)"
pnpm test:e2e

step "browser SDK tests (wasm-bindgen-test in headless Chromium, against the real worker)"
scripts/test-wasm.sh
