"""Reference values for the tiled VAE decode and encode, by diffusers' AutoencoderKL with enable_tiling().

Run on the tiny model the worker's own generator writes:

    sd-worker generate-model --shape tiny --seed 11 --out /tmp/tiny
    python worker/tests/reference/vae_tiling_reference.py /tmp/tiny \
        > worker/tests/reference/vae_tiling_reference.json

(torch, diffusers as pinned in training/requirements.txt.)
worker/src/model/vae_tiling_tests.rs writes the same model and compares our
tiled decode and encode, value for value.

The tiny VAE has 3 blocks (4 pixels per latent) and no sample_size in its
config, so the tiles are set by hand, as diffusers' attributes:
tile_sample_min_size 32, tile_latent_min_size 8, tile_overlap_factor 0.25 --
small enough that these inputs cut into 4 x 3 tiles, the last row and column
narrower than the blend (2 latents, 8 pixels), as a real image's edge tiles
often are.

Inputs, easily reproduced (flat, row-major): latents [1, 4, 20, 14] with
latents[i] = sin(0.1 i); pixels [1, 3, 80, 56] with pixels[i] = 0.8 cos(0.05 i).
Recorded: the tiled decode, the tiled posterior's mean and (clamped) log
variance, and how far each is from diffusers' own untiled result (`*_gap`).
"""

import json
import sys

import torch
from diffusers import AutoencoderKL

TILE_SAMPLE, TILE_LATENT, OVERLAP = 32, 8, 0.25
LATENTS = (1, 4, 20, 14)
PIXELS = (1, 3, 80, 56)


def wave(shape, scale: float, freq: float, fn) -> torch.Tensor:
    n = 1
    for d in shape:
        n *= d
    return (scale * fn(torch.arange(n, dtype=torch.float64) * freq)).float().reshape(shape)


def sampled(t: torch.Tensor) -> dict:
    flat = t.double().flatten()
    return {
        "shape": list(t.shape),
        "stride": 1,
        "values": flat.tolist(),
        "mean": flat.mean().item(),
        "abs_mean": flat.abs().mean().item(),
    }


def main(model_dir: str) -> None:
    vae = AutoencoderKL.from_pretrained(model_dir, subfolder="vae", torch_dtype=torch.float32)
    vae.eval()
    z = wave(LATENTS, 1.0, 0.1, torch.sin)
    x = wave(PIXELS, 0.8, 0.05, torch.cos)
    with torch.no_grad():
        plain_dec = vae.decode(z).sample
        plain_post = vae.encode(x).latent_dist
        vae.enable_tiling()
        vae.tile_sample_min_size = TILE_SAMPLE
        vae.tile_latent_min_size = TILE_LATENT
        vae.tile_overlap_factor = OVERLAP
        dec = vae.decode(z).sample
        post = vae.encode(x).latent_dist
    out = {
        "tile_sample_min_size": TILE_SAMPLE,
        "tile_latent_min_size": TILE_LATENT,
        "tile_overlap_factor": OVERLAP,
        "decoded": sampled(dec),
        "mean": sampled(post.mean),
        "logvar": sampled(post.logvar),
        "decoded_gap": (dec - plain_dec).abs().max().item(),
        "mean_gap": (post.mean - plain_post.mean).abs().max().item(),
        "logvar_gap": (post.logvar - plain_post.logvar).abs().max().item(),
        "versions": {"torch": torch.__version__, "diffusers": __import__("diffusers").__version__},
    }
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
