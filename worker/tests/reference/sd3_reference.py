"""Reference values for the SD 3 path, computed by diffusers.

Run on the tiny SD 3.5-shaped model the worker's own generator writes:

    sd-worker generate-model --shape tiny-sd3 --seed 7 --out /tmp/tiny-sd3
    python worker/tests/reference/sd3_reference.py /tmp/tiny-sd3 \
        > worker/tests/reference/sd3_reference.json

(torch, diffusers and transformers as pinned in training/requirements.txt.)
worker/src/pipeline/reference_tests.rs loads the same model through the
worker and compares: the prompt embeddings (both CLIPs' penultimate states
side by side, zero-padded to T5's width, then T5's states), the same without
T5 (zeros in its place), both CLIPs' pooled embeddings side by side, the
encoded empty negative prompt, one MMDiT call (dual attention, q/k RMS norms)
and the VAE decode with SD 3's scale and shift.
"""

import json
import sys

import torch
from diffusers import StableDiffusion3Pipeline

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


def encode(pipe):
    return pipe.encode_prompt(
        PROMPT,
        prompt_2=None,
        prompt_3=None,
        device="cpu",
        num_images_per_prompt=1,
        do_classifier_free_guidance=True,
        negative_prompt=None,
        max_sequence_length=256,
    )


def main(model_dir: str) -> None:
    torch.manual_seed(0)
    pipe = StableDiffusion3Pipeline.from_pretrained(model_dir, torch_dtype=torch.float32)
    no_t5 = StableDiffusion3Pipeline.from_pretrained(
        model_dir, text_encoder_3=None, tokenizer_3=None, torch_dtype=torch.float32
    )
    with torch.no_grad():
        cond, uncond, pooled, uncond_pooled = encode(pipe)
        cond_no_t5 = encode(no_t5)[0]
        # Fixed, easily reproduced inputs: latents[i] = sin(0.1 i), a 48x32 image (VAE factor 4).
        latents = torch.sin(torch.arange(16 * 8 * 12, dtype=torch.float64) * 0.1)
        latents = latents.float().reshape(1, 16, 8, 12)
        timestep = 750.0
        out = pipe.transformer(
            hidden_states=latents,
            timestep=torch.tensor([timestep]),
            encoder_hidden_states=cond,
            pooled_projections=pooled,
        ).sample
        vae = pipe.vae.config
        image = pipe.vae.decode(latents / vae.scaling_factor + vae.shift_factor).sample
    json.dump(
        {
            "prompt": PROMPT,
            "timestep": timestep,
            "prompt_embeds": sample(cond),
            "prompt_embeds_without_t5": sample(cond_no_t5),
            "negative_prompt_embeds": sample(uncond),
            "pooled_prompt_embeds": sample(pooled),
            "negative_pooled_prompt_embeds": sample(uncond_pooled),
            "transformer_output": sample(out),
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
