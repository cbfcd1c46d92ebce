#!/usr/bin/env bash
# Fetches the assets that the test suite needs from package registries and
# caches them; safe to run again (does nothing when the cache is valid).
#
#   clip/bpe_simple_vocab_16e6.txt  OpenAI's CLIP BPE merges (the source of every
#                                   Stable Diffusion vocab.json / merges.txt), taken
#                                   from the open_clip_torch wheel on PyPI.
#
# Prints `SD_WORKER_CLIP_BPE=<path>` last; the tokenizer tests read that variable:
#   eval "$(scripts/fetch-test-assets.sh | tail -n 1 | sed 's/^/export /')"
set -euo pipefail

OPEN_CLIP_VERSION="3.3.0"
# open_clip/bpe_simple_vocab_16e6.txt.gz inside the wheel, and its gunzipped text.
GZ_SIZE=1356917
GZ_SHA256="924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
TXT_SIZE=3194984
TXT_SHA256="67603cfda2e032ad77b5f8808af37789d590db664b26df8705d2bf8b3c553fc8"

ASSETS="${SD_WORKER_ASSETS:-$HOME/.cache/sd-worker/assets}"
BPE_TXT="$ASSETS/clip/bpe_simple_vocab_16e6.txt"

sha256_of() {
    python3 -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$1"
}

valid_txt() {
    [[ -f "$1" ]] && [[ "$(wc -c <"$1" | tr -d ' ')" == "$TXT_SIZE" ]] && [[ "$(sha256_of "$1")" == "$TXT_SHA256" ]]
}

if valid_txt "$BPE_TXT"; then
    echo "cached: $BPE_TXT" >&2
else
    mkdir -p "$(dirname "$BPE_TXT")"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    echo "downloading open_clip_torch==$OPEN_CLIP_VERSION from PyPI" >&2
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
        "open_clip_torch==$OPEN_CLIP_VERSION" -d "$work" >&2
    wheel="$(ls "$work"/open_clip_torch-"$OPEN_CLIP_VERSION"-*.whl)"
    python3 - "$wheel" "$work/bpe.txt" "$GZ_SIZE" "$GZ_SHA256" <<'EOF'
import gzip, hashlib, sys, zipfile

wheel, out, size, sha = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with zipfile.ZipFile(wheel) as z:
    data = z.read("open_clip/bpe_simple_vocab_16e6.txt.gz")
digest = hashlib.sha256(data).hexdigest()
if len(data) != size or digest != sha:
    sys.exit(f"unexpected bpe_simple_vocab_16e6.txt.gz in {wheel}: {len(data)} bytes, sha256 {digest}")
with open(out, "wb") as f:
    f.write(gzip.decompress(data))
EOF
    if ! valid_txt "$work/bpe.txt"; then
        echo "error: the gunzipped BPE file does not have the expected size/sha256" >&2
        exit 1
    fi
    mv -f "$work/bpe.txt" "$BPE_TXT"
    echo "stored: $BPE_TXT" >&2
fi

echo "SD_WORKER_CLIP_BPE=$BPE_TXT"
