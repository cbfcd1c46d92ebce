"""Reference values for the SDXL conditioning path, computed by diffusers.

Run on the tiny SDXL-shaped model the worker's own generator writes:

    sd-worker generate-model --shape tiny-sdxl --seed 7 --out /tmp/tiny-sdxl
    python worker/tests/reference/sdxl_reference.py /tmp/tiny-sdxl \
        > worker/tests/reference/sdxl_reference.json

(torch, diffusers and transformers as pinned in training/requirements.txt.)
worker/src/pipeline/reference_tests.rs loads the same model through the
worker and compares: the prompt embeddings (both encoders' penultimate
hidden states, concatenated), the pooled embedding through text_projection,
the zeros for an empty negative prompt, one UNet call with the six time ids,
and the VAE decode with SDXL's scaling factor.
"""

import json
import sys

import torch
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
    torch.manual_seed(0)
    pipe = StableDiffusionXLPipeline.from_pretrained(model_dir, torch_dtype=torch.float32)
    with torch.no_grad():
        cond, uncond, pooled, uncond_pooled = pipe.encode_prompt(
            PROMPT,
            device="cpu",
            num_images_per_prompt=1,
            do_classifier_free_guidance=True,
            negative_prompt=None,
        )
        # Fixed, easily reproduced inputs: latents[i] = sin(0.1 i), a 32x24 image (VAE factor 4).
        latents = torch.sin(torch.arange(4 * 6 * 8, dtype=torch.float64) * 0.1)
        latents = latents.float().reshape(1, 4, 6, 8)
        time_ids = torch.tensor([[24.0, 32.0, 0.0, 0.0, 24.0, 32.0]])
        unet_out = pipe.unet(
            latents,
            torch.tensor(500.0),
            encoder_hidden_states=cond,
            added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids},
        ).sample
        scaling = pipe.vae.config.scaling_factor
        image = pipe.vae.decode(latents / scaling).sample
    json.dump(
        {
            "prompt": PROMPT,
            "timestep": 500.0,
            "time_ids": time_ids[0].tolist(),
            "prompt_embeds": sample(cond),
            "negative_prompt_embeds": sample(uncond),
            "pooled_prompt_embeds": sample(pooled),
            "negative_pooled_prompt_embeds": sample(uncond_pooled),
            "unet_output": sample(unet_out),
            "vae_decoded": sample(image),
            "versions": {
                "torch": torch.__version__,
                "diffusers": __import__("diffusers").__version__,
                "transformers": __import__("transformers").__version__,
            },
        },
        sys.stdout,
        indent=1,
    )


if __name__ == "__main__":
    main(sys.argv[1])
