"""AUTOMATIC1111's "NV" noise (`modules/rng_philox.py`), the values our `rng: "nv"` must draw.

A1111 draws each image's noise from `rng_philox.Generator(seed + i)`: the
starting latents are its first `randn(shape)` call (offset 0), and each step
of an ancestral sampler takes the next call (offsets 1, 2, ...). This script
imports A1111's own module from a checkout of its repository (the module needs
only numpy) and records, for each seed (0, 42, 2**32 + 5: the key keeps all 64
bits, 2**53 - 1) and shape, a "sequence" of three draws in a row from one
generator; the large shapes are recorded at a stride. Values are stored as the
f32 bit patterns (u32), so the comparison in worker/tests/nv_rng.rs can be
exact.

Run with any Python that has numpy (e.g. the reference venv):

    git clone https://github.com/AUTOMATIC1111/stable-diffusion-webui /tmp/a1111
    python worker/tests/reference/a1111_nv_reference.py /tmp/a1111 \
        > worker/tests/reference/a1111_nv_reference.json
"""

import json
import sys

import numpy as np

SEEDS = [0, 42, 2**32 + 5, 2**53 - 1]
# (shape, stride of the recorded values)
SHAPES = [
    ([3, 4], 1),
    ([5], 1),
    ([4, 8, 8], 1),
    ([3, 7, 5], 1),
    ([4, 13, 9], 7),
    ([4, 64, 64], 61),
    ([4, 96, 72], 397),
]
DRAWS = 3


def main():
    sys.path.insert(0, sys.argv[1])
    from modules import rng_philox  # A1111's module, from the checkout

    cases = []
    for seed in SEEDS:
        for shape, stride in SHAPES:
            g = rng_philox.Generator(seed)
            draws = []
            for _ in range(DRAWS):
                values = np.asarray(g.randn(shape), dtype=np.float32).reshape(-1)
                draws.append([int(b) for b in values[::stride].view(np.uint32)])
            cases.append({"seed": seed, "shape": shape, "stride": stride, "draws": draws})
    json.dump({"numpy": np.__version__, "cases": cases}, sys.stdout, separators=(",", ":"))
    print()


if __name__ == "__main__":
    main()
