"""The inpainting mask at latent resolution, as diffusers computes it.

A 96x72 greyscale mask whose edges are off the 8-pixel grid (a rectangle,
a disc, and a band of greys around the 50 % threshold) goes through
diffusers' own code: StableDiffusionInpaintPipeline's `mask_processor` (a
VaeImageProcessor with do_normalize=False, do_binarize=True,
do_convert_grayscale=True: at the output size it only scales to [0, 1] and
binarises at 0.5) and `prepare_mask_latents` (torch.nn.functional.interpolate
to the latent size, default mode 'nearest'). The latent mask is what the
inpainting UNet's extra channel and the latent blending of other UNets both
use; the binarised pixel mask is what blanks the masked image
(`init_image * (mask_condition < 0.5)`).
worker/src/pipeline/latents.rs's test feeds the same pixels through the
worker and compares both cell for cell. Run with the reference venv (torch,
diffusers as pinned in training/requirements.txt):

    python worker/tests/reference/inpaint_mask_reference.py \
        > worker/tests/reference/inpaint_mask_reference.json
"""

import json
import sys
import types

import diffusers
import numpy as np
import torch
from diffusers import StableDiffusionInpaintPipeline
from diffusers.image_processor import VaeImageProcessor
from PIL import Image

WIDTH, HEIGHT, FACTOR = 96, 72, 8


def mask_pixels() -> np.ndarray:
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    m = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    m[(x >= 13) & (x < 58) & (y >= 5) & (y < 37)] = 255
    m[(x - 70.5) ** 2 + (y - 40.3) ** 2 < 17.2**2] = 255
    band = (y >= 60) & (y < 69)
    m[band] = (118 + (x[band] * 7 + y[band] * 3) % 21).astype(np.uint8)  # 118..138
    return m


def main() -> None:
    pixels = mask_pixels()
    processor = VaeImageProcessor(
        vae_scale_factor=FACTOR, do_normalize=False, do_binarize=True, do_convert_grayscale=True
    )
    condition = processor.preprocess(Image.fromarray(pixels, mode="L"), height=HEIGHT, width=WIDTH)
    # prepare_mask_latents with a stand-in for the pipeline: only vae_scale_factor is read
    # when the masked "image" already has 4 (latent) channels.
    masked = torch.zeros(1, 4, HEIGHT // FACTOR, WIDTH // FACTOR)
    latent_mask, _ = StableDiffusionInpaintPipeline.prepare_mask_latents(
        types.SimpleNamespace(vae_scale_factor=FACTOR),
        condition,
        masked,
        1,
        HEIGHT,
        WIDTH,
        torch.float32,
        "cpu",
        None,
        False,
    )

    def rows(t: torch.Tensor) -> list:
        a = t[0, 0].numpy()
        assert set(np.unique(a)) <= {0.0, 1.0}
        return ["".join("1" if v else "0" for v in row) for row in a]

    json.dump(
        {
            "width": WIDTH,
            "height": HEIGHT,
            "vae_scale_factor": FACTOR,
            "mask": pixels.tolist(),
            "binarised_mask": rows(condition),
            "latent_mask": rows(latent_mask),
            "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
        },
        sys.stdout,
        separators=(",", ":"),
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
