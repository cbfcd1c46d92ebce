"""Reference values of PyTorch's `F.interpolate(x, size=..., mode=...)`
(`align_corners=False`, no antialiasing), what AUTOMATIC1111's latent
hires-fix upscalers call, for worker/src/pipeline/resize.rs.

    python worker/tests/reference/latent_resize_reference.py \
        > worker/tests/reference/latent_resize_reference.json

The input of each case is `x.flatten()[i] = sin(0.37 i)` (float32), torch
as pinned in training/requirements.txt.
"""

import json
import sys

import torch
import torch.nn.functional as F

CASES = [
    ([1, 2, 4, 5], (8, 10)),
    ([2, 1, 5, 3], (9, 7)),
    ([1, 1, 6, 6], (4, 5)),
]


def main() -> None:
    out = []
    for shape, size in CASES:
        n = 1
        for d in shape:
            n *= d
        x = torch.sin(torch.arange(n, dtype=torch.float32) * 0.37).reshape(shape)
        for mode in ["nearest", "bilinear", "bicubic"]:
            kwargs = {} if mode == "nearest" else {"align_corners": False}
            y = F.interpolate(x, size=size, mode=mode, **kwargs)
            out.append(
                {
                    "mode": mode,
                    "input": shape,
                    "size": list(size),
                    "output": [round(v, 7) for v in y.flatten().tolist()],
                }
            )
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
