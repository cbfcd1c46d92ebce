"""SDXL's unconditional embeddings for an explicit empty negative prompt.

diffusers' StableDiffusionXLPipeline.encode_prompt zeroes the negative
embeddings only when `negative_prompt` is None (absent) and the pipeline's
`force_zeros_for_empty_prompt` is set; an explicit "" is tokenized and
encoded like any prompt. This records that encoding (both encoders'
penultimate hidden states, concatenated, and the pooled embedding through
text_projection), and checks on the way that None still gives zeros.

Run on the tiny SDXL-shaped model the worker's own generator writes (the
one sdxl_reference.py uses):

    sd-worker generate-model --shape tiny-sdxl --seed 7 --out /tmp/tiny-sdxl
    python worker/tests/reference/sdxl_empty_negative_reference.py /tmp/tiny-sdxl \
        > worker/tests/reference/sdxl_empty_negative_reference.json

(torch, diffusers and transformers as pinned in training/requirements.txt.)
worker/src/pipeline/reference_tests.rs compares the worker's unconditional
embeddings for `negative_prompt: ""` (and for an absent one) to these.
"""

import json
import sys

import diffusers
import torch
import transformers
from diffusers import StableDiffusionXLPipeline

PROMPT = "a red circle on a blue background"
STRIDE = 7


def sample(t: torch.Tensor) -> dict:
    flat = t.detach().double().flatten()
    return {
        "shape": list(t.shape),
        "stride": STRIDE,
        "values": flat[::STRIDE].tolist(),
        "mean": flat.mean().item(),
        "abs_mean": flat.abs().mean().item(),
    }


def main(model_dir: str) -> None:
    pipe = StableDiffusionXLPipeline.from_pretrained(model_dir, torch_dtype=torch.float32)
    assert pipe.config.force_zeros_for_empty_prompt
    with torch.no_grad():
        encode = lambda negative: pipe.encode_prompt(  # noqa: E731
            PROMPT,
            device="cpu",
            num_images_per_prompt=1,
            do_classifier_free_guidance=True,
            negative_prompt=negative,
        )
        _, uncond, _, uncond_pooled = encode("")
        _, absent, _, absent_pooled = encode(None)
    assert absent.abs().max() == 0 and absent_pooled.abs().max() == 0
    assert uncond.abs().max() > 0
    json.dump(
        {
            "prompt": PROMPT,
            "negative_prompt": "",
            "negative_prompt_embeds": sample(uncond),
            "negative_pooled_prompt_embeds": sample(uncond_pooled),
            "versions": {
                "torch": torch.__version__,
                "diffusers": diffusers.__version__,
                "transformers": transformers.__version__,
            },
        },
        sys.stdout,
        indent=1,
    )


if __name__ == "__main__":
    main(sys.argv[1])
