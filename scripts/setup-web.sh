#!/usr/bin/env bash
# Installs what the browser SDK, the TypeScript packages and the studio need,
# idempotently: the wasm32 target, wasm-bindgen-cli at exactly the wasm-bindgen
# crate's version, pnpm, and the workspace's node_modules (binaryen's wasm-opt
# among them). With --browser, also Debian's chromium + chromium-driver for the
# browser tests. Safe to run again: it skips what is there.
#
#   scripts/setup-web.sh [--browser]
set -euo pipefail
cd "$(dirname "$0")/.."

PNPM_VERSION="$(node -p "require('./package.json').packageManager.split('@')[1]")"
WASM_BINDGEN_VERSION="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)"
if [[ -z "$WASM_BINDGEN_VERSION" ]]; then
    echo "wasm-bindgen is not in Cargo.lock" >&2
    exit 1
fi

rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || rustup target add wasm32-unknown-unknown

if [[ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WASM_BINDGEN_VERSION" ]]; then
    echo "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (matches the wasm-bindgen crate)" >&2
    cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --force
fi

missing=()
if [[ "${1:-}" == "--browser" ]]; then
    command -v chromium >/dev/null || missing+=(chromium)
    command -v chromedriver >/dev/null || missing+=(chromium-driver)
fi
if ((${#missing[@]})); then
    echo "installing ${missing[*]} from Debian" >&2
    SUDO=""
    [[ "$(id -u)" == 0 ]] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

if [[ "$(pnpm --version 2>/dev/null)" != "$PNPM_VERSION" ]]; then
    echo "installing pnpm $PNPM_VERSION" >&2
    npm install -g "pnpm@$PNPM_VERSION" >/dev/null
fi

pnpm install --frozen-lockfile --prefer-offline
