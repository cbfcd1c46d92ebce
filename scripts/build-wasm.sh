#!/usr/bin/env bash
# Builds the browser SDK: sdk-wasm (the sd-worker-sdk crate) for wasm32, then
# wasm-bindgen --target web into packages/sdk/wasm/ (module `sd_worker_sdk`,
# with its .d.ts generated from the Rust types), then wasm-opt -Oz. Prints the
# raw and gzipped sizes and fails when the wasm exceeds the size budget.
# Safe to run again; packages/sdk/wasm/ is a build output.
#
# Needs: the wasm32-unknown-unknown target, wasm-bindgen-cli 0.2.130 (the
# version the crate pins), and binaryen's wasm-opt from the workspace's
# node_modules (`pnpm install`; scripts/setup-web.sh does both). Not Debian's
# binaryen: its version 108 writes the export of wasm-bindgen's externref table
# as table 0 (the funcref table), and the module then fails to instantiate.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT_DIR="${SD_WASM_OUT_DIR:-packages/sdk/wasm}"
BUDGET_GZIP_BYTES="${SD_WASM_BUDGET_GZIP_BYTES:-51200}" # 50 KB
WASM_BINDGEN_VERSION="0.2.130"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"

if ! command -v wasm-bindgen >/dev/null 2>&1; then
    echo "build-wasm: wasm-bindgen not found; install it with:" >&2
    echo "  cargo install wasm-bindgen-cli --version $WASM_BINDGEN_VERSION" >&2
    exit 1
fi
have="$(wasm-bindgen --version | awk '{print $2}')"
if [[ "$have" != "$WASM_BINDGEN_VERSION" ]]; then
    echo "build-wasm: wasm-bindgen $have found, the crate pins $WASM_BINDGEN_VERSION" >&2
    exit 1
fi

# Size-tuned release build, set here so the workspace profiles stay as they are.
# No stripping by cargo: wasm-bindgen needs the custom sections.
export CARGO_PROFILE_RELEASE_OPT_LEVEL=z
export CARGO_PROFILE_RELEASE_LTO=true
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
export CARGO_PROFILE_RELEASE_PANIC=abort
export CARGO_PROFILE_RELEASE_DEBUG=false
cargo build -p sd-worker-sdk --target wasm32-unknown-unknown --release

WASM_IN="$TARGET_DIR/wasm32-unknown-unknown/release/sd_worker_sdk.wasm"
mkdir -p "$OUT_DIR"
wasm-bindgen --target web --out-dir "$OUT_DIR" --out-name sd_worker_sdk "$WASM_IN"
# wasm-bindgen types each class's `[Symbol.dispose]()`, which TypeScript knows
# only with `lib: esnext.disposable`: an app on the Vite template's `ES2023`
# with `skipLibCheck: false` fails on it (TS2550). The method stays at run
# time where the engine has the symbol; only its declaration goes.
sed -i '/\[Symbol\.dispose\]()/d' "$OUT_DIR/sd_worker_sdk.d.ts"

WASM_OUT="$OUT_DIR/sd_worker_sdk_bg.wasm"
# No --enable-* flags: wasm-opt takes the features (bulk memory, reference
# types, ...) from the module's target_features section, which rustc writes
# and wasm-bindgen keeps.
pnpm exec wasm-opt --version
pnpm exec wasm-opt -Oz -o "$WASM_OUT.opt" "$WASM_OUT"
mv "$WASM_OUT.opt" "$WASM_OUT"

size_of() { wc -c <"$1" | tr -d ' '; }
gzip_size_of() { gzip -9 -c "$1" | wc -c | tr -d ' '; }
printf '%-48s %10s %10s\n' "file" "bytes" "gzip -9"
for f in "$WASM_OUT" "$OUT_DIR/sd_worker_sdk.js" "$OUT_DIR/sd_worker_sdk.d.ts"; do
    printf '%-48s %10s %10s\n' "$f" "$(size_of "$f")" "$(gzip_size_of "$f")"
done

wasm_gz="$(gzip_size_of "$WASM_OUT")"
if ((wasm_gz > BUDGET_GZIP_BYTES)); then
    echo "build-wasm: FAIL: the wasm is $wasm_gz bytes gzipped, over the budget of $BUDGET_GZIP_BYTES" >&2
    exit 1
fi
echo "build-wasm: ok ($wasm_gz of $BUDGET_GZIP_BYTES gzipped bytes)"
