"""The bundled demo model's pictures as diffusers draws them, for `rng: "torch-cpu"`.

diffusers' own pipelines (StableDiffusionPipeline, and
StableDiffusionImg2ImgPipeline on the same components) run
worker/models/sd-demo-shapes in float32 on the CPU, with one
`torch.Generator("cpu").manual_seed(seed + i)` per image `i` (a list of
generators, as the worker seeds image i with seed + i), its own scheduler
config (EulerDiscreteScheduler) or EulerAncestralDiscreteScheduler built from
that config, and `output_type="np"`; each image is rounded to 8 bits as
diffusers' `numpy_to_pil` does ((x * 255).round()) and stored as a base64 PNG.
worker/tests/torch_rng.rs asks the real worker for the same jobs over HTTP
with `"rng": "torch-cpu"` and compares the pixels. The image-to-image input is
worker/tests/common/mod.rs's `gradient(64, 64)`, rebuilt here. Run with the
reference venv (torch, diffusers as pinned in training/requirements.txt):

    python worker/tests/reference/demo_torch_rng_reference.py \
        > worker/tests/reference/demo_torch_rng_reference.json
"""

import base64
import io
import json
import pathlib
import sys

import diffusers
import numpy as np
import torch
from diffusers import (
    EulerAncestralDiscreteScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
)
from PIL import Image

MODEL = pathlib.Path(__file__).resolve().parents[2] / "models" / "sd-demo-shapes"

CASES = [
    {"name": "text_to_image_euler_two_images", "scheduler": "euler", "seed": 1234,
     "num_images": 2, "prompt": "a red circle on a blue background"},
    {"name": "text_to_image_euler_a", "scheduler": "euler_a", "seed": 99,
     "num_images": 2, "prompt": "a small white triangle on the left on a green background"},
    {"name": "image_to_image_euler", "scheduler": "euler", "seed": 7,
     "num_images": 1, "prompt": "a yellow star on a purple background", "strength": 0.6},
]
STEPS, GUIDANCE, SIZE = 20, 7.5, 64


def gradient(w, h):
    a = np.zeros((h, w, 3), dtype=np.uint8)
    for y in range(h):
        for x in range(w):
            a[y, x] = [x * 255 // w, y * 255 // h, (x + y) % 256]
    return Image.fromarray(a)


def png_b64(img):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def main():
    torch.set_num_threads(2)
    base = StableDiffusionPipeline.from_pretrained(
        MODEL, torch_dtype=torch.float32, safety_checker=None
    )
    base.set_progress_bar_config(disable=True)
    out = []
    for case in CASES:
        config = base.scheduler.config
        scheduler = (
            EulerAncestralDiscreteScheduler.from_config(config)
            if case["scheduler"] == "euler_a"
            else type(base.scheduler).from_config(config)
        )
        n = case["num_images"]
        generators = [torch.Generator("cpu").manual_seed(case["seed"] + i) for i in range(n)]
        kwargs = dict(
            prompt=case["prompt"], num_inference_steps=STEPS, guidance_scale=GUIDANCE,
            num_images_per_prompt=n, generator=generators, output_type="np",
        )
        if "strength" in case:
            pipe = StableDiffusionImg2ImgPipeline(**{**base.components, "scheduler": scheduler})
            pipe.set_progress_bar_config(disable=True)
            images = pipe(image=gradient(SIZE, SIZE), strength=case["strength"], **kwargs).images
        else:
            pipe = StableDiffusionPipeline(**{**base.components, "scheduler": scheduler})
            pipe.set_progress_bar_config(disable=True)
            images = pipe(height=SIZE, width=SIZE, **kwargs).images
        u8 = [(img * 255).round().astype(np.uint8) for img in images]
        out.append({**case, "steps": STEPS, "guidance_scale": GUIDANCE, "size": SIZE,
                    "images": [png_b64(img) for img in u8]})
    json.dump({"torch": torch.__version__, "diffusers": diffusers.__version__,
               "cases": out}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
