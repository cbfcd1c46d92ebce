"""Reference values for the model upscalers (worker/src/upscale), by spandrel.

spandrel 0.4.2 (the library ComfyUI loads upscale models with) on torch 2.11,
with safetensors and numpy, as in the project's reference venv. Run on the
tiny models the worker's own generator writes (seed 11 each):

    SD_WORKER_UPSCALER_OUT=/tmp/tiny-upscalers cargo test -p sd-worker --lib \
        write_tiny_upscalers_for_the_reference -- --ignored
    python worker/tests/reference/upscaler_reference.py /tmp/tiny-upscalers \
        worker/tests/reference/upscaler_reference.pth \
        > worker/tests/reference/upscaler_reference.json

For each `<kind>.safetensors` (see `KINDS`), spandrel's `ModelLoader` detects
the architecture from the keys and builds the model; recorded are what it
detected (architecture id, scale, channels, hyperparameters) and, on the
input below, the network alone (`descriptor.model(x)`, unclamped) and the
descriptor's call (`descriptor(x)`: padding to the size requirements,
clamping to [0, 1], cropping), each as shape, max |value| and sampled values.

The second argument receives a small `.pth` written by `torch.save` itself
(zip format), nesting the state dict under `params_ema` as Real-ESRGAN's
releases do, with f16 tensors: an SRVGGNetCompact of nf 4, 1 body conv, x2,
weights from `torch.Generator().manual_seed(5)` (`micro_compact` below). Its
spandrel output is recorded under `pth`; the Rust test reads that file
through Candle's pickle reader.

Input: [1, 3, 13, 11] (odd sides, so the pixel-unshuffle models pad) with
x[i] = 0.5 + 0.5 sin(0.1 i) over the flat index i (computed in f64, cast to
f32). Sampled arrays are the flattened values at 0, stride, 2 stride, ...
"""

import json
import sys
from collections import OrderedDict

import numpy as np
import spandrel
import torch
from spandrel import ModelLoader

KINDS = [
    "esrgan-x4",
    "esrgan-x2",
    "esrgan-x1",
    "esrgan-old-x4",
    "esrgan-old-x2",
    "esrgan-old-plus-x4",
    "compact-x4",
    "compact-x2",
]
H, W = 13, 11


def wave() -> torch.Tensor:
    i = torch.arange(3 * H * W, dtype=torch.float64)
    return (0.5 + 0.5 * torch.sin(0.1 * i)).float().reshape(1, 3, H, W)


def summary(t: torch.Tensor, n: int = 300) -> dict:
    flat = t.detach().double().reshape(-1).numpy()
    stride = max(1, len(flat) // n)
    return {
        "shape": list(t.shape),
        "max_abs": float(np.abs(flat).max()),
        "mean": float(flat.mean()),
        "stride": stride,
        "values": flat[::stride].tolist(),
    }


def hyper(model) -> dict:
    h = getattr(model, "hyperparameters", {}) or {}
    return {k: v for k, v in h.items() if isinstance(v, (int, float, str, bool)) or v is None}


def run(desc, x: torch.Tensor) -> dict:
    with torch.no_grad():
        raw = desc.model(x)
        called = desc(x)
    return {
        "arch": desc.architecture.id,
        "scale": desc.scale,
        "input_channels": desc.input_channels,
        "output_channels": desc.output_channels,
        "hyperparameters": hyper(desc.model),
        "raw": summary(raw),
        "call": summary(called),
    }


def micro_compact() -> "OrderedDict[str, torch.Tensor]":
    g = torch.Generator().manual_seed(5)
    nf, scale = 4, 2
    shapes = [
        ("body.0.weight", (nf, 3, 3, 3), 1 / (27**0.5), 0.0),
        ("body.0.bias", (nf,), 0.02, 0.0),
        ("body.1.weight", (nf,), 0.05, 0.25),
        ("body.2.weight", (nf, nf, 3, 3), 1 / ((9 * nf) ** 0.5), 0.0),
        ("body.2.bias", (nf,), 0.02, 0.0),
        ("body.3.weight", (nf,), 0.05, 0.25),
        ("body.4.weight", (3 * scale * scale, nf, 3, 3), 0.3 / ((9 * nf) ** 0.5), 0.0),
        ("body.4.bias", (3 * scale * scale,), 0.02, 0.0),
    ]
    sd = OrderedDict()
    for name, shape, std, offset in shapes:
        sd[name] = (offset + std * torch.randn(shape, generator=g)).half()
    return sd


def main(model_dir: str, pth_out: str) -> None:
    x = wave()
    loader = ModelLoader()
    out = {"spandrel": spandrel.__version__, "torch": torch.__version__, "input": [1, 3, H, W], "models": {}}
    for kind in KINDS:
        desc = loader.load_from_file(f"{model_dir}/{kind}.safetensors").eval()
        out["models"][kind] = run(desc, x)
    torch.save({"params_ema": micro_compact()}, pth_out)
    desc = loader.load_from_file(pth_out).eval()
    out["pth"] = run(desc, x)
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
