"""Reference values for one UNet call of SD 1.x- and 2.x-shaped UNets, by diffusers.

Run on the tiny models the worker's own generator writes:

    sd-worker generate-model --shape tiny --seed 11 --out /tmp/tiny
    sd-worker generate-model --shape tiny-sd2 --seed 11 --out /tmp/tiny-sd2
    python worker/tests/reference/sd15_unet_reference.py tiny=/tmp/tiny tiny-sd2=/tmp/tiny-sd2 \
        > worker/tests/reference/sd15_unet_reference.json

(torch, diffusers and transformers as pinned in training/requirements.txt.)
worker/src/model/unet_reference_tests.rs writes the same models and compares
our UNet's output, value for value. Each case is also run with diffusers'
GEGLU switched to the tanh GELU (`tanh_gap`: the largest difference that
makes), so the test can show its tolerance tells the two apart.

Inputs, easily reproduced: latents[i] = sin(0.1 i), context[i] = 2 cos(0.37 i)
(flat, row-major), timestep 500; one 8x8 latent of batch 1 and one 5x7 latent
of batch 2 (5x7 does not halve evenly: explicit upsample sizes).
"""

import json
import sys

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models import activations

TIMESTEP = 500.0
CASES = [("8x8", 1, 8, 8), ("5x7-batch2", 2, 5, 7)]


def wave(n: int, scale: float, freq: float, fn=torch.sin) -> torch.Tensor:
    return (scale * fn(torch.arange(n, dtype=torch.float64) * freq)).float()


def run(unet, batch: int, h: int, w: int) -> torch.Tensor:
    cfg = unet.config
    latents = wave(batch * cfg.in_channels * h * w, 1.0, 0.1).reshape(batch, cfg.in_channels, h, w)
    dim = cfg.cross_attention_dim
    context = wave(batch * 77 * dim, 2.0, 0.37, torch.cos).reshape(batch, 77, dim)
    with torch.no_grad():
        return unet(latents, torch.tensor(TIMESTEP), encoder_hidden_states=context).sample


def main(pairs: list[str]) -> None:
    exact_gelu = activations.GEGLU.gelu
    out = {"timestep": TIMESTEP, "models": {}}
    for pair in pairs:
        name, model_dir = pair.split("=", 1)
        unet = UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet", torch_dtype=torch.float32)
        unet.eval()
        cases = []
        for label, batch, h, w in CASES:
            activations.GEGLU.gelu = exact_gelu
            exact = run(unet, batch, h, w)
            activations.GEGLU.gelu = lambda self, gate: F.gelu(gate, approximate="tanh")
            tanh = run(unet, batch, h, w)
            activations.GEGLU.gelu = exact_gelu
            cases.append(
                {
                    "name": label,
                    "shape": list(exact.shape),
                    "values": exact.double().flatten().tolist(),
                    "tanh_gap": (exact - tanh).abs().max().item(),
                }
            )
        out["models"][name] = cases
    out["versions"] = {
        "torch": torch.__version__,
        "diffusers": __import__("diffusers").__version__,
    }
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
