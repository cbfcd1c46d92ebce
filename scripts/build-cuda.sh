#!/usr/bin/env bash
# Builds the CUDA worker (`sd-worker-cuda`, features cuda,cudnn) on a machine
# with NO GPU and NO system CUDA toolkit, and packs it into dist/cuda/.
#
#   scripts/build-cuda.sh                 # toolkit (idempotent) + build + dist/cuda
#   scripts/build-cuda.sh --flash-attn    # also Candle's flash-attention kernels (slow; needs GitHub, see below)
#   scripts/build-cuda.sh --bundle all    # copy every runtime library into dist/cuda/lib
#   scripts/build-cuda.sh --toolkit-only  # install the toolkit, print its env, build nothing
#
# 1. NVIDIA's CUDA 13.0 compiler, headers and libraries come from PyPI (pinned
#    below) into a project-local venv, $SD_WORKER_CUDA_VENV (default
#    ~/.cache/sd-worker/cuda-venv). CUDA 13.0 because the target GPU machine's
#    driver is R580 (= CUDA 13.0): PTX from a newer nvcc would not JIT there.
# 2. A CUDA_HOME is assembled beside it (cuda-home/): the unversioned .so links
#    the linker wants, and a stub libcuda.so (the real one comes with the
#    driver; cudarc links the driver API by name, `dynamic-linking`).
# 3. cargo build --release in its OWN target dir ($SD_WORKER_CUDA_TARGET,
#    default ~/.cache/sd-worker/target-cuda), niced, so the shared debug
#    binary is never touched.
# 4. dist/cuda/: sd-worker-cuda, an `sd-worker` wrapper that finds the CUDA
#    libraries (dist/cuda/lib, then a pip-installed CUDA 13 such as PyTorch's,
#    then the system's), and the small runtime libraries (--bundle); and
#    dist/sd-worker-cuda.tar.gz, the folder as one file (38 MiB) to carry to a
#    GPU machine, where scripts/gpu-check.sh unpacks it.
#
# GPU architectures: Candle's kernels (candle-kernels, built by cudaforge)
# honour ONE CUDA_COMPUTE_CAP. We build PTX for compute_80 (Ampere): the driver
# JIT-compiles it for sm_80, sm_86, sm_89, sm_90, sm_100 and sm_120 on first
# use (cached in ~/.nv/ComputeCache), so one binary runs on A100, A10/RTX 30xx,
# L4/L40S/RTX 40xx, H100/H200 and RTX 50xx/B200. A newer cap (e.g. 90) would
# become `compute_90a`, architecture-specific PTX that runs on Hopper ONLY.
# Candle's static MoE/GGUF kernels (unused by diffusion) get sm_80 SASS only.
# Override with CUDA_COMPUTE_CAP=89 etc. for a single-architecture build.
#
# flash-attn: opt-in (--flash-attn), not part of the default build. Its build
# script git-clones CUTLASS from GitHub (cudaforge, a pinned commit), so it
# needs GitHub access, and it compiles 53 CUTLASS kernels as sm_80 SASS (not
# PTX: the result runs on sm_8x GPUs only) at minutes of nvcc each: hours on
# two cores. Not built on the project's build machine (no GitHub access).
#
# CI does NOT run this script: a cold build took 27 minutes on the project's
# 2-core machine (24m45s for Candle and its kernels, shared with other builds,
# + 2m15s for the worker; measured), and it downloads ~1.5 GB of CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

CACHE="${SD_WORKER_CACHE_HOME:-$HOME/.cache/sd-worker}"
VENV="${SD_WORKER_CUDA_VENV:-$CACHE/cuda-venv}"
TARGET="${SD_WORKER_CUDA_TARGET:-$CACHE/target-cuda}"
DIST="${SD_WORKER_CUDA_DIST:-$ROOT/dist/cuda}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"

# CUDA 13.0 (Update 2) components, and cuDNN 9.13 (the first for CUDA 13).
PINS=(
  "nvidia-cuda-nvcc==13.0.88"
  "nvidia-cuda-crt==13.0.88"
  "nvidia-nvvm==13.0.88"
  "nvidia-cuda-cccl==13.0.85"
  "nvidia-cuda-runtime==13.0.96"
  "nvidia-cuda-nvrtc==13.0.88"
  "nvidia-cublas==13.1.0.3"
  "nvidia-curand==10.4.0.35"
  "nvidia-cudnn-cu13==9.13.0.50"
)

FEATURES="cuda,cudnn"
BUNDLE="small"
TOOLKIT_ONLY=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --flash-attn) FEATURES="cuda,cudnn,flash-attn" ;;
    --bundle) BUNDLE="$2"; shift ;;
    --toolkit-only) TOOLKIT_ONLY=1 ;;
    -h|--help) sed -n "2,43p" "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$BUNDLE" in none|small|all) ;; *) echo "--bundle takes none, small or all" >&2; exit 2 ;; esac

step() { printf '\n==> %s\n' "$*" >&2; }

# --- 1. toolkit from PyPI (idempotent: a stamp of the pin list) -------------
STAMP="$VENV/.sd-worker-pins"
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "${PINS[*]}" ]]; then
  step "CUDA 13.0 toolkit from PyPI into $VENV"
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PINS[@]}"
  echo "${PINS[*]}" > "$STAMP"
fi
NV="$("$VENV/bin/python" -c 'import os, nvidia; print(os.path.dirname(nvidia.__path__[0]) + "/nvidia")')"
CU="$NV/cu13"
CUDNN="$NV/cudnn"

# --- 2. CUDA_HOME: unversioned links + a libcuda stub ------------------------
HOME_DIR="$VENV/cuda-home"
mkdir -p "$HOME_DIR/lib64/stubs"
for d in bin include nvvm; do ln -sfn "$CU/$d" "$HOME_DIR/$d"; done
for so in "$CU"/lib/lib*.so.* "$CUDNN"/lib/lib*.so.*; do
  base="$(basename "$so")"; ln -sf "$so" "$HOME_DIR/lib64/$base"
  ln -sf "$so" "$HOME_DIR/lib64/${base%%.so.*}.so"
done
STUB="$HOME_DIR/lib64/stubs/libcuda.so"
if [[ ! -f "$STUB" ]]; then
  step "stub libcuda.so (every driver-API symbol cudarc declares)"
  SYS="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.*/src/driver/sys/mod.rs | tail -1)"
  grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+' "$SYS" | sed 's/^pub unsafe fn //' | sort -u \
    | awk '{ printf "int %s(void) { return 999; }\n", $1 }' > "$HOME_DIR/lib64/stubs/libcuda_stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$STUB" "$HOME_DIR/lib64/stubs/libcuda_stub.c"
fi
export CUDA_HOME="$HOME_DIR" NVCC="$CU/bin/nvcc" PATH="$CU/bin:$PATH"
export LIBRARY_PATH="$HOME_DIR/lib64:$HOME_DIR/lib64/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
if [[ $TOOLKIT_ONLY == 1 ]]; then
  printf 'export CUDA_HOME=%q NVCC=%q PATH=%q CUDA_COMPUTE_CAP=%q\n' "$CUDA_HOME" "$NVCC" "$PATH" "$CUDA_COMPUTE_CAP"
  exit 0
fi
"$NVCC" --version | tail -2

# --- 3. the build ------------------------------------------------------------
step "cargo build --release --features $FEATURES (CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP, target $TARGET)"
export CARGO_TARGET_DIR="$TARGET"
# $ORIGIN/lib: dist/cuda/lib is searched first without any wrapper.
export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-Wl,-rpath,\$ORIGIN/lib"
start=$(date +%s)
nice -n 19 cargo build --release --locked -p sd-worker --features "$FEATURES" --bin sd-worker-cuda
echo "build time: $(( $(date +%s) - start )) s"

# --- 4. dist/cuda ------------------------------------------------------------
step "dist: $DIST (bundle: $BUNDLE)"
rm -rf "$DIST"; mkdir -p "$DIST/lib"
install -m 0755 "$TARGET/release/sd-worker-cuda" "$DIST/sd-worker-cuda"
strip "$DIST/sd-worker-cuda" 2>/dev/null || true
case "$BUNDLE" in
  # small: what fits a 64 MiB carry beside the binary. cuBLAS(Lt) (~600 MB),
  # cuRAND (~130 MB), NVRTC (~110 MB) and cuDNN (~450 MB) must already be on
  # the machine (a CUDA 13 toolkit, or PyTorch's nvidia-* wheels).
  small) cp -L "$CU/lib/libcudart.so.13" "$DIST/lib/" ;;
  all) cp -L "$CU"/lib/lib{cudart.so.13,cublas.so.13,cublasLt.so.13,curand.so.10,nvrtc.so.13,nvrtc-builtins.so.13.0} \
          "$CUDNN"/lib/libcudnn*.so.9 "$DIST/lib/" ;;
  none) ;;
esac
install -m 0755 "$ROOT/scripts/lib/cuda-wrapper.sh" "$DIST/sd-worker"
cat > "$DIST/BUILD-INFO.txt" <<EOF
sd-worker $(git -C "$ROOT" rev-parse --short HEAD) $(date -u +%FT%TZ)
features: $FEATURES
CUDA: $("$NVCC" --version | grep -o 'release [0-9.]*'), kernels: PTX compute_$CUDA_COMPUTE_CAP (JIT on newer GPUs)
needs: NVIDIA driver R580+ (CUDA 13.0); libraries: see 'ldd sd-worker-cuda' and docs/DEPLOY.md
EOF
ls -la "$DIST" "$DIST/lib"
du -sh "$DIST"
# One file to carry to a GPU machine (scripts/gpu-check.sh unpacks it when dist/cuda is absent).
tar czf "$(dirname "$DIST")/sd-worker-cuda.tar.gz" -C "$(dirname "$DIST")" "$(basename "$DIST")"
echo "tar.gz: $(stat -c %s "$(dirname "$DIST")/sd-worker-cuda.tar.gz") bytes ($(dirname "$DIST")/sd-worker-cuda.tar.gz)"
