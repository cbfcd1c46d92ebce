"""Reference values for TAESD (diffusers' AutoencoderTiny) encode and decode.

Run on the tiny TAESDs the worker's own generator writes:

    sd-worker generate-taesd --latent-channels 4 --seed 21 --out /tmp/taesd-4
    sd-worker generate-taesd --latent-channels 16 --seed 21 --out /tmp/taesd-16
    python worker/tests/reference/taesd_reference.py /tmp/taesd-4 /tmp/taesd-16 \\
        > worker/tests/reference/taesd_reference.json

(torch, diffusers as pinned in training/requirements.txt.)
worker/src/model/taesd/reference_tests.rs writes the same folders and
compares. Each folder is loaded with `AutoencoderTiny.from_pretrained`; the
16-channel one a second time with SD 3's latent scale and shift as config
overrides ("tiny-16-scaled"), so that the pipeline convention is tested with
values other than the published 1.0 and 0.0.

What is compared is what diffusers' pipelines do with an AutoencoderTiny as
their VAE: decode `vae.decode(latents / scaling_factor + shift_factor).sample`
(StableDiffusion3Pipeline; the SD 1/XL pipelines leave the shift out, 0 in
every published config), encode `(vae.encode(image).latents - shift_factor) *
scaling_factor` (StableDiffusion3Img2ImgPipeline).

Inputs, easily reproduced (flat, row-major): latents[i] = 3 sin(0.1 i) (large
enough that DecoderTiny's tanh(x / 3) * 3 clamp bends them), image[i] =
0.9 sin(0.05 i). Decoded: one 8x8 latent of batch 1, one 5x7 of batch 2.
Encoded: one 64x64 image of batch 1, one 36x52 of batch 2 (not multiples of
8: the strided convs round up). Outputs sampled every STRIDE values, with the
mean and mean magnitude of the whole tensor.

Also recorded: the state-dict names and shapes (and the parameter count) of
the default `AutoencoderTiny()` (the published taesd / taesdxl shape) and of
`AutoencoderTiny(latent_channels=16)` (taesd3 / taef1), which the Rust test
compares with the names and shapes its loader asks for.
"""

import json
import sys

import torch
from diffusers import AutoencoderTiny

STRIDE = 11
SD3_SCALE = 1.5305
SD3_SHIFT = 0.0609
DECODE_CASES = [(1, 8, 8), (2, 5, 7)]
ENCODE_CASES = [(1, 64, 64), (2, 36, 52)]


def wave(shape, scale: float, freq: float) -> torch.Tensor:
    n = 1
    for s in shape:
        n *= s
    flat = scale * torch.sin(torch.arange(n, dtype=torch.float64) * freq)
    return flat.float().reshape(shape)


def sample(t: torch.Tensor) -> dict:
    flat = t.detach().double().flatten()
    return {
        "shape": list(t.shape),
        "stride": STRIDE,
        "values": flat[::STRIDE].tolist(),
        "mean": flat.mean().item(),
        "abs_mean": flat.abs().mean().item(),
    }


def run(vae: AutoencoderTiny) -> dict:
    cfg = vae.config
    scale, shift = cfg.scaling_factor, cfg.shift_factor
    out = {
        "latent_channels": cfg.latent_channels,
        "scaling_factor": scale,
        "shift_factor": shift,
        "decode": [],
        "encode": [],
    }
    with torch.no_grad():
        for b, h, w in DECODE_CASES:
            latents = wave((b, cfg.latent_channels, h, w), 3.0, 0.1)
            image = vae.decode(latents / scale + shift).sample
            out["decode"].append(sample(image))
        for b, h, w in ENCODE_CASES:
            image = wave((b, 3, h, w), 0.9, 0.05)
            latents = (vae.encode(image).latents - shift) * scale
            out["encode"].append(sample(latents))
    return out


def published(latent_channels: int) -> dict:
    vae = AutoencoderTiny(latent_channels=latent_channels)
    sd = vae.state_dict()
    return {
        "keys": {k: list(v.shape) for k, v in sd.items()},
        "parameters": sum(v.numel() for v in sd.values()),
    }


def main(dir4: str, dir16: str) -> None:
    load = lambda d, **kw: AutoencoderTiny.from_pretrained(d, torch_dtype=torch.float32, **kw).eval()
    scaled = load(dir16, scaling_factor=SD3_SCALE, shift_factor=SD3_SHIFT)
    assert scaled.config.scaling_factor == SD3_SCALE and scaled.config.shift_factor == SD3_SHIFT
    out = {
        "seed": 21,
        "models": {
            "tiny-4": run(load(dir4)),
            "tiny-16": run(load(dir16)),
            "tiny-16-scaled": run(scaled),
        },
        "published": {"4": published(4), "16": published(16)},
        "versions": {
            "torch": torch.__version__,
            "diffusers": __import__("diffusers").__version__,
        },
    }
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
