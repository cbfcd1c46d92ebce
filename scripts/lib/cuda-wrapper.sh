#!/usr/bin/env bash
# dist/cuda/sd-worker: runs sd-worker-cuda (beside this script) with the CUDA
# libraries it links found, and says clearly what is missing when they are
# not. Installed by scripts/build-cuda.sh; see docs/DEPLOY.md.
#
# Search order for cuBLAS, cuRAND, NVRTC, cudart and cuDNN:
#   1. ./lib beside this script (also the binary's own rpath, $ORIGIN/lib)
#   2. $SD_WORKER_CUDA_LIBS (colon-separated folders)
#   3. a pip-installed CUDA 13 (nvidia/cu13/lib, nvidia/cudnn/lib) in the
#      site-packages of $SD_WORKER_PYTHON or python3 (PyTorch's wheels)
#   4. LD_LIBRARY_PATH as given, then the system's (ldconfig)
# libcuda.so.1 always comes from the NVIDIA driver (R580 or newer).
set -euo pipefail
DIR="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
BIN="$DIR/sd-worker-cuda"

paths="$DIR/lib${SD_WORKER_CUDA_LIBS:+:$SD_WORKER_CUDA_LIBS}"
py="${SD_WORKER_PYTHON:-python3}"
if site="$("$py" -c 'import nvidia, os; print(os.pathsep.join(nvidia.__path__))' 2>/dev/null)"; then
  IFS=: read -r -a roots <<< "$site"
  for root in "${roots[@]}"; do
    for d in "$root"/cu13/lib "$root"/cudnn/lib "$root"/*/lib; do
      [[ -d "$d" ]] && paths="$paths:$d"
    done
  done
fi
export LD_LIBRARY_PATH="$paths${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

missing="$(ldd "$BIN" 2>/dev/null | awk '/not found/ { print $1 }' | tr '\n' ' ')"
if [[ -n "$missing" ]]; then
  if [[ " $missing " == *" libcuda.so.1 "* ]]; then
    echo "error: libcuda.so.1 not found: the NVIDIA driver (R580 or newer, CUDA 13.0) is not installed here;" \
         "on a machine without a GPU run sd-worker-cpu instead" >&2
  fi
  echo "error: missing CUDA libraries: $missing" >&2
  echo "       put them in $DIR/lib (scripts/build-cuda.sh --bundle all), point SD_WORKER_CUDA_LIBS" \
       "at a CUDA 13 lib folder, or install the wheels: pip install nvidia-cublas nvidia-curand" \
       "nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 (docs/DEPLOY.md)" >&2
  exit 127
fi
if [[ -n "${SD_WORKER_SHOW_LIBS:-}" ]]; then  # scripts/gpu-check.sh: where each library came from
  ldd "$BIN" | grep -E 'libcuda|cublas|curand|cudnn|cudart|nvrtc' >&2
fi
exec "$BIN" "$@"
