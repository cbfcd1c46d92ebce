#!/usr/bin/env bash
# The CUDA proof run: one script, run ON the GPU machine from the repository
# with the prebuilt dist/cuda/ (scripts/build-cuda.sh) beside it; no crates
# registry, no internet, no hub. Under 8 minutes on one H100/H200. Writes one
# markdown report: $OUT/gpu-report.md when $OUT is set, else ./gpu-report.md.
#
#   scripts/gpu-check.sh                       # dist/cuda/sd-worker, --device cuda
#   scripts/gpu-check.sh --bin PATH            # another worker binary
#   scripts/gpu-check.sh --cpu-dry-run         # the same flow on the CPU, tiny shapes
#
# 1. device and driver (nvidia-smi);
# 2. HTTP smoke test on tiny generated models (SD 1: txt2img, img2img,
#    inpaint; SDXL and SD 3 shapes: txt2img) with --device cuda in f32 and
#    f16, each image compared with the CPU f32 image of the same request (max
#    abs pixel difference; flagged above 8 in f32, 32 in f16);
# 3. `sd-worker bench`, random weights of the real shapes, f16, 20 steps: SD
#    1.5 at 512x512 and SDXL at 1024x1024 (it/s of the UNet at batch 2, peak
#    GPU memory polled from nvidia-smi);
# 4. the same shapes in diffusers fp16 (UNet2DConditionModel/AutoencoderKL
#    from configs written here, random weights) for the ratio.
#
# --cpu-dry-run proves the flow where there is no GPU: CPU binary (default
# $CARGO_TARGET_DIR/debug/sd-worker), --device cpu for the "GPU" runs too,
# the tiny shape for the benches, diffusers on the CPU in f32.
# Python: $SD_WORKER_PYTHON or python3, with Pillow and numpy (and torch +
# diffusers for section 4, skipped with a note when missing).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

DRY=0
BIN=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cpu-dry-run) DRY=1 ;;
    --bin) BIN="$2"; shift ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
PY="${SD_WORKER_PYTHON:-python3}"
HELP="$ROOT/scripts/lib/gpu_check.py"
REPORT="${OUT:+$OUT/}gpu-report.md"
[[ -n "${OUT:-}" ]] && mkdir -p "$OUT"
WORK="$(mktemp -d /tmp/sd-worker-gpu-check.XXXXXX)"
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"' EXIT

if [[ $DRY == 1 ]]; then
  DEV=cpu; BENCH=("tiny 64 64"); STEPS=2
  BIN="${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/sd-worker}"
  DIFF_DEV=cpu; DIFF_DT=f32
else
  DEV=cuda; BENCH=("sd15 512 512" "sdxl 1024 1024"); STEPS=20
  # dist/sd-worker-cuda.tar.gz (scripts/build-cuda.sh) is the one file to carry: 38 MiB against the folder's 87.
  if [[ -z "$BIN" && ! -x "$ROOT/dist/cuda/sd-worker" && -f "$ROOT/dist/sd-worker-cuda.tar.gz" ]]; then
    tar xzf "$ROOT/dist/sd-worker-cuda.tar.gz" -C "$ROOT/dist"
  fi
  BIN="${BIN:-$ROOT/dist/cuda/sd-worker}"
  DIFF_DEV=cuda; DIFF_DT=f16
fi
[[ -x "$BIN" ]] || { echo "no worker binary at $BIN (scripts/build-cuda.sh, or --bin)" >&2; exit 2; }
T0=$(date +%s)
say() { printf '%s\n' "$*" >> "$REPORT"; }
log() { printf '[%4ds] %s\n' $(( $(date +%s) - T0 )) "$*" >&2; }

: > "$REPORT"
say "# sd-worker GPU check$([[ $DRY == 1 ]] && echo ' (CPU dry run)')"
say ""
say "- date: $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
say "- binary: \`$BIN\`"
[[ -f "$(dirname "$BIN")/BUILD-INFO.txt" ]] && sed 's/^/- build: /' "$(dirname "$BIN")/BUILD-INFO.txt" >> "$REPORT"
say "- device under test: \`--device $DEV\`"

# --- 1. device and driver ----------------------------------------------------
log "device"
say ""; say "## 1. Device and driver"; say ""; say '```'
if command -v nvidia-smi >/dev/null && nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv >> "$REPORT" 2>&1
  nvidia-smi | sed -n '1,12p' >> "$REPORT"
  HAVE_SMI=1
else
  say "nvidia-smi: not available (no GPU here)"
  HAVE_SMI=0
fi
say '```'
say ""; say "Binary and libraries (\`$BIN --version\`; the wrapper names missing libraries):"; say ""; say '```'
if ! SD_WORKER_SHOW_LIBS=1 "$BIN" --version >> "$REPORT" 2>&1; then
  say '```'; say ""; say "**The binary does not start: nothing more can be checked.**"
  log "report: $REPORT"; cat "$REPORT"; exit 1
fi
say '```'

# Peak GPU memory while a command runs: nvidia-smi polled every 100 ms.
gpu_mem_start() {
  [[ $HAVE_SMI == 1 ]] || return 0
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i "${CUDA_VISIBLE_DEVICES:-0}" -lms 100 \
    > "$WORK/mem.txt" 2>/dev/null & MEM_PID=$!
}
gpu_mem_stop() {  # prints the peak minus the first sample, in MiB
  [[ $HAVE_SMI == 1 ]] || { echo "n/a"; return 0; }
  kill "$MEM_PID" 2>/dev/null; wait "$MEM_PID" 2>/dev/null
  awk 'NR==1 { base=$1 } { if ($1>max) max=$1 } END { print (max-base) }' "$WORK/mem.txt"
}

# --- 2. smoke test -----------------------------------------------------------
say ""; say "## 2. HTTP smoke test (tiny generated models, AUTOMATIC1111 routes, 4 steps)"; say ""
say "Each image against the CPU f32 image of the same request (0-255 pixel values)."
say ""; say "| run | request | max abs diff | mean abs diff | verdict |"; say "|---|---|---|---|---|"
for shape in tiny tiny-sdxl tiny-sd3; do
  log "smoke: $shape"
  model="$WORK/model-$shape"
  if ! "$BIN" generate-model --shape "$shape" --out "$model" >/dev/null 2>"$WORK/gen-$shape.log"; then
    say "| $shape | generate-model | FAIL: $(tail -1 "$WORK/gen-$shape.log") | | FAIL |"; continue
  fi
  only=(); [[ $shape != tiny ]] && only=(--txt2img-only)
  runs=("$shape-cpu-f32 cpu f32" "$shape-$DEV-f32 $DEV f32" "$shape-$DEV-f16 $DEV f16")
  [[ $DRY == 1 ]] && runs=("$shape-cpu-f32 cpu f32" "$shape-dry-f32 cpu f32" "$shape-dry-f16 cpu f16")
  labels=()
  for run in "${runs[@]}"; do
    read -r label dev dt <<< "$run"
    if timeout 300 "$PY" "$HELP" smoke "$BIN" "$model" "$WORK/img" "$label" "${only[@]}" \
         -- --device "$dev" --dtype "$dt" 2>>"$WORK/smoke.log"; then
      [[ $label != *-cpu-f32 ]] && labels+=("$label")
    else
      say "| $label | (worker) | FAIL: $(tail -2 "$WORK/img/$label.log" 2>/dev/null | tr '\n|' ' /') | | FAIL |"
    fi
  done
  [[ ${#labels[@]} -gt 0 ]] && "$PY" "$HELP" compare "$WORK/img" "$shape-cpu-f32" "${labels[@]}" >> "$REPORT"
done
[[ -n "${OUT:-}" ]] && mkdir -p "$OUT/images" && cp "$WORK"/img/*.png "$OUT/images/" 2>/dev/null

# --- 3. sd-worker bench ------------------------------------------------------
say ""; say "## 3. sd-worker bench (random weights of the real shape, $STEPS steps, guidance 7.5)"; say ""
say "| shape | size | dtype | UNet ms/step (batch 2) | it/s | VAE decode ms | end to end ms | load s | peak GPU MiB (nvidia-smi) |"
say "|---|---|---|---|---|---|---|---|---|"
declare -A WORKER_ITS
for b in "${BENCH[@]}"; do
  read -r shape w h <<< "$b"
  dt=f16; [[ $DRY == 1 ]] && dt=f32
  log "bench: $shape ${w}x$h $dt"
  gpu_mem_start
  timeout 240 "$BIN" bench --shape "$shape" --width "$w" --height "$h" --steps "$STEPS" \
    --device "$DEV" --dtype "$dt" --json > "$WORK/bench-$shape.txt" 2>"$WORK/bench-$shape.log"
  rc=$?
  peak="$(gpu_mem_stop)"
  json="$(grep '^{' "$WORK/bench-$shape.txt" | tail -1)"
  if [[ $rc != 0 || -z "$json" ]]; then
    say "| $shape | ${w}x$h | $dt | FAIL (exit $rc): $(tail -1 "$WORK/bench-$shape.log" | tr '|' '/') | | | | | |"; continue
  fi
  row="$("$PY" "$HELP" bench-row "$json")"
  WORKER_ITS[$shape]="$("$PY" "$HELP" bench-its "$json")"
  say "| $shape | ${w}x$h | $dt | $row | $peak |"
done

# --- 4. diffusers ------------------------------------------------------------
say ""; say "## 4. diffusers, same shapes ($DIFF_DT, random weights, UNet at batch 2 + one VAE decode)"; say ""
if ! "$PY" -c 'import torch, diffusers' 2>/dev/null; then
  say "skipped: \`$PY\` has no torch/diffusers (set SD_WORKER_PYTHON)."
else
  say "| shape | size | UNet ms/step | it/s | VAE decode ms | torch peak MiB | sd-worker it/s ÷ diffusers it/s |"
  say "|---|---|---|---|---|---|---|"
  "$PY" - "$WORK" <<'EOF'
import json, sys
d = sys.argv[1]
down = ["DownEncoderBlock2D"] * 4
up = ["UpDecoderBlock2D"] * 4
vae = {"_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
       "down_block_types": down, "up_block_types": up, "in_channels": 3, "out_channels": 3,
       "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "sample_size": 512,
       "scaling_factor": 0.18215}
sd15 = {"_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 8,
        "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, "downsample_padding": 1,
        "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "out_channels": 4,
        "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-5, "norm_num_groups": 32,
        "sample_size": 64}
sdxl = dict(sd15, attention_head_dim=[5, 10, 20], block_out_channels=[320, 640, 1280],
            cross_attention_dim=2048, addition_embed_type="text_time",
            addition_embed_type_num_heads=64, addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816, transformer_layers_per_block=[1, 2, 10],
            down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            use_linear_projection=True, sample_size=128)
for name, cfg in [("sd15-unet", sd15), ("sdxl-unet", sdxl), ("sd-vae", vae)]:
    json.dump(cfg, open(f"{d}/{name}.json", "w"))
EOF
  for b in "${BENCH[@]}"; do
    read -r shape w h <<< "$b"
    if [[ $shape == tiny ]]; then
      "$BIN" generate-model --shape tiny --out "$WORK/bench-tiny" >/dev/null
      ucfg="$WORK/bench-tiny/unet/config.json"; vcfg="$WORK/bench-tiny/vae/config.json"
    else
      ucfg="$WORK/$shape-unet.json"; vcfg="$WORK/sd-vae.json"
    fi
    log "diffusers: $shape ${w}x$h"
    json="$(timeout 240 "$PY" "$HELP" diffusers-bench "$ucfg" "$vcfg" "$w" "$h" "$STEPS" "$DIFF_DEV" "$DIFF_DT" 2>"$WORK/diffusers-$shape.log" | tail -1)"
    if [[ -z "$json" ]]; then
      say "| $shape | ${w}x$h | FAIL: $(tail -1 "$WORK/diffusers-$shape.log" | tr '|' '/') | | | | |"; continue
    fi
    say "| $shape | ${w}x$h | $("$PY" "$HELP" diffusers-row "$json" "${WORKER_ITS[$shape]:-}") |"
  done
  say ""; say "torch: $("$PY" -c 'import torch, diffusers; print(torch.__version__, "/ diffusers", diffusers.__version__, "/ CUDA", torch.version.cuda)')"
fi

say ""; say "Total time: $(( $(date +%s) - T0 )) s."
log "report: $REPORT"
cat "$REPORT"
