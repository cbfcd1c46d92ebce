#!/usr/bin/env bash
# Times sd-worker against PyTorch + diffusers on this machine's CPU, side by side
# (issue 20): an SD 1.5-shape model with random weights (UNet call at batch 2,
# VAE decode, peak memory) and the bundled demo model (a 20-step job). Both
# systems load the same diffusers folder and run alternately, several rounds, each
# in a fresh process; the table gives min / median per system and the ratio.
#
#   scripts/bench-compare.sh [--rounds N] [--size PX] [--steps N] [--no-sd15] [--no-demo] [--dtype D[,D...]]
#
# --dtype f32,q8 runs the worker in both precisions in each round (a column and
# a ratio against PyTorch f32 each): the 8-bit weight path's figures.
#
# Installs, once, a Python venv with the pinned torch + diffusers from PyPI
# ($SD_WORKER_BENCH_PYTHON overrides it with a Python that has them) and writes the
# SD 1.5-shape folder (3.4 GB) under ~/.cache/sd-worker/bench/. Not part of CI: it
# downloads torch and takes minutes. Run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${SD_WORKER_CACHE:-$HOME/.cache/sd-worker}"
ROUNDS=3 SIZE=512 STEPS=3 SD15=1 DEMO=1 DTYPE=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift 2 ;;
    --size) SIZE="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --no-sd15) SD15=0; shift ;;
    --no-demo) DEMO=0; shift ;;
    --dtype) DTYPE=(--dtype "$2"); shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

PYTHON="${SD_WORKER_BENCH_PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  VENV="$CACHE/bench-venv"
  if ! "$VENV/bin/python" -c 'import torch, diffusers, transformers' 2>/dev/null; then
    echo "==> creating $VENV (torch + diffusers from PyPI, once)" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -r scripts/bench/requirements.txt
  fi
  PYTHON="$VENV/bin/python"
fi

echo "==> building sd-worker (the project's one profile)" >&2
cargo build -q -p sd-worker
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
WORKER="$TARGET_DIR/debug/sd-worker"

ARGS=(--worker "$WORKER" --python "$PYTHON" --rounds "$ROUNDS" --size "$SIZE" --steps "$STEPS" "${DTYPE[@]}")
if [[ $SD15 = 1 ]]; then
  MODEL="$CACHE/bench/sd15-random"
  if [[ ! -f "$MODEL/unet/diffusion_pytorch_model.safetensors" ]]; then
    echo "==> writing the SD 1.5-shape random-weight model to $MODEL (once)" >&2
    "$WORKER" generate-model --shape sd15 --out "$MODEL"
  fi
  ARGS+=(--sd15 "$MODEL")
fi
[[ $DEMO = 1 ]] && ARGS+=(--demo worker/models/sd-demo-shapes)

echo "==> $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" >&2
"$PYTHON" scripts/bench/compare.py "${ARGS[@]}"
