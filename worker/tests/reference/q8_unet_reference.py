"""Reference values for one UNet call with 8-bit weights and activations (`--dtype q8`).

The quantisation the worker's int8 kernels (kernels/src/q8) implement, written out in PyTorch over
diffusers' UNet: every nn.Linear and nn.Conv2d of the UNet except the time and added-condition
embeddings (`time_embedding.*`, `add_embedding.*`, which stay f32) computes

    q_w = round(w * (127 / max|w_row|)),     s_w = max|w_row| / 127   (per output channel)
    q_a = round(a * (127 / max|a_row|)),     s_a = max|a_row| / 127   (per token for a linear layer,
                                                                       per output pixel's receptive
                                                                       field for a convolution)
    y   = (sum q_a q_w) * s_a * s_w + bias

with round-half-even, values clamped to [-127, 127], the products summed exactly (f64 holds
them) and the rescale in f32, in the kernel's order. Run on the tiny models the worker's own
generator writes:

    sd-worker generate-model --shape tiny --seed 11 --out /tmp/tiny
    sd-worker generate-model --shape tiny-sd2 --seed 11 --out /tmp/tiny-sd2
    python worker/tests/reference/q8_unet_reference.py tiny=/tmp/tiny tiny-sd2=/tmp/tiny-sd2 \
        > worker/tests/reference/q8_unet_reference.json

(torch and diffusers as pinned in training/requirements.txt.) worker/src/model/quant_tests.rs
writes the same models, builds the UNet with int8 weights and compares its output value for
value. Each case also records how far the quantisation moves the output from the f32 UNet
(`f32_gap`), so the test can show its tolerance tells a quantised UNet from an unquantised one.
Inputs as sd15_unet_reference.py: latents[i] = sin(0.1 i), context[i] = 2 cos(0.37 i), timestep 500.
"""

import json
import sys

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel

# The same inputs and cases as the f32 UNet reference beside this script.
from sd15_unet_reference import CASES, TIMESTEP, run

DENSE = ("time_embedding.", "add_embedding.")


def quantize(x: torch.Tensor, dim: int):
    """int8 values (as f64) and f32 scales of `x` (f32) along `dim`, as the kernel does."""
    amax = x.abs().amax(dim, keepdim=True)
    inv = torch.where(amax > 0, torch.tensor(127.0) / amax, torch.zeros_like(amax))
    q = torch.round(torch.clamp(x * inv, -127.0, 127.0))
    scale = torch.where(amax > 0, amax / 127.0, torch.zeros_like(amax))
    return q.double(), scale


def q8_linear(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    qa, sa = quantize(x, -1)  # per token
    qw, sw = quantize(layer.weight, 1)  # per output feature
    acc = (qa @ qw.T).float()
    y = (acc * sa) * sw.T
    return y + layer.bias if layer.bias is not None else y + 0.0


def q8_conv(layer: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    assert layer.groups == 1
    b, _, h, w = x.shape
    kh, kw = layer.kernel_size
    cols = F.unfold(x, (kh, kw), dilation=layer.dilation, padding=layer.padding, stride=layer.stride)
    qa, sa = quantize(cols, 1)  # per output pixel: its receptive field
    qw, sw = quantize(layer.weight.reshape(layer.out_channels, -1), 1)
    acc = (qw @ qa).float()  # [b, c_out, pixels]
    y = (acc * sw) * sa
    y = y + layer.bias[:, None] if layer.bias is not None else y + 0.0
    oh = (h + 2 * layer.padding[0] - layer.dilation[0] * (kh - 1) - 1) // layer.stride[0] + 1
    ow = (w + 2 * layer.padding[1] - layer.dilation[1] * (kw - 1) - 1) // layer.stride[1] + 1
    return y.reshape(b, layer.out_channels, oh, ow)


def quantize_unet(unet) -> int:
    count = 0
    for name, module in unet.named_modules():
        if name.startswith(DENSE):
            continue
        if isinstance(module, torch.nn.Linear):
            module.forward = lambda x, m=module: q8_linear(m, x)
            count += 1
        elif isinstance(module, torch.nn.Conv2d):
            module.forward = lambda x, m=module: q8_conv(m, x)
            count += 1
    return count


def main(pairs: list[str]) -> None:
    out = {"timestep": TIMESTEP, "models": {}}
    for pair in pairs:
        name, model_dir = pair.split("=", 1)
        load = lambda: UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet", torch_dtype=torch.float32).eval()
        dense, quantized = load(), load()
        layers = quantize_unet(quantized)
        cases = []
        for label, batch, h, w in CASES:
            q8 = run(quantized, batch, h, w)
            f32 = run(dense, batch, h, w)
            cases.append(
                {
                    "name": label,
                    "shape": list(q8.shape),
                    "values": q8.double().flatten().tolist(),
                    "f32_gap": (q8 - f32).abs().max().item(),
                }
            )
        out["models"][name] = {"quantized_layers": layers, "cases": cases}
    out["versions"] = {"torch": torch.__version__, "diffusers": __import__("diffusers").__version__}
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
