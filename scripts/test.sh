#!/usr/bin/env bash
# The project's one test command (README): installs what the tests need,
# idempotently, then runs formatting, lints and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain components"
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "test assets (the real CLIP vocabulary, from PyPI)"
eval "$(scripts/fetch-test-assets.sh | grep '^SD_WORKER_CLIP_BPE=')"
export SD_WORKER_CLIP_BPE

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
# One profile (dev, with optimised dependencies) serves tests, the binary and
# the benchmark, so Candle is compiled once.
cargo test --workspace --no-fail-fast
