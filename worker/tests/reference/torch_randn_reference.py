"""torch.randn values from PyTorch's CPU generator, as diffusers draws noise.

For each seed (0, 42, 2**32 + 5: torch's Mersenne Twister keeps only the low
32 bits, 2**53 - 1) and shape, a fresh `torch.Generator("cpu").manual_seed(seed)`
draws `torch.randn(shape, generator=g)` in float32, the way diffusers'
`randn_tensor` draws the starting latents of each image. The shapes cover the
paths of torch's CPU normal kernel: fewer than 16 values (one double-precision
Box-Muller pair per two values, the second cached in the generator), exactly
16, a count that is not a multiple of 16 (the last 16 values redrawn), and
latent shapes; the largest ones are recorded at a stride. One "sequence"
entry per seed draws several tensors in a row from the same generator (the
state and the cached normal carry over between draws, as they do between a
scheduler's steps). Values are stored as the f32 bit patterns (u32), so the
comparison in worker/src/pipeline/noise/torch_cpu.rs is exact.

The values depend on torch's CPU capability: on a CPU with AVX-512 (or none
of AVX2) torch uses its scalar kernel with the C library's logf/cosf/sinf,
which is what the worker follows; on an AVX2-only CPU torch uses a vectorised
approximation whose last bit differs for some values. The file records the
capability it was made with. Run with the reference venv (torch as pinned in
training/requirements.txt):

    python worker/tests/reference/torch_randn_reference.py \
        > worker/tests/reference/torch_randn_reference.json
"""

import json

import numpy as np
import torch

SEEDS = [0, 42, 2**32 + 5, 2**53 - 1]
# (shape, stride of the recorded values)
SHAPES = [
    ([1], 1),
    ([5], 1),
    ([2, 3, 2], 1),
    ([16], 1),
    ([37], 1),
    ([3, 7, 5], 1),
    ([1, 4, 8, 8], 1),
    ([1, 4, 64, 64], 61),
    ([1, 16, 128, 128], 997),
]
# Draws in a row from one generator: small (cached normal), large, small.
SEQUENCE = [[3], [1, 4, 8, 8], [7], [2], [21]]


def bits(t, stride):
    flat = t.contiguous().view(-1).numpy().astype(np.float32)
    idx = list(range(0, flat.size, stride))
    if idx[-1] != flat.size - 1:
        idx.append(flat.size - 1)
    return idx, [int(b) for b in flat[idx].view(np.uint32)]


def main():
    cases = []
    for seed in SEEDS:
        for shape, stride in SHAPES:
            g = torch.Generator("cpu").manual_seed(seed)
            t = torch.randn(shape, generator=g, dtype=torch.float32)
            idx, b = bits(t, stride)
            cases.append({"seed": seed, "shapes": [shape], "index": idx, "bits": b})
        g = torch.Generator("cpu").manual_seed(seed)
        seq = [torch.randn(s, generator=g, dtype=torch.float32) for s in SEQUENCE]
        idx, b = bits(torch.cat([t.view(-1) for t in seq]), 1)
        cases.append({"seed": seed, "shapes": SEQUENCE, "index": idx, "bits": b})
    json.dump(
        {
            "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cases": cases,
        },
        __import__("sys").stdout,
    )


if __name__ == "__main__":
    main()
