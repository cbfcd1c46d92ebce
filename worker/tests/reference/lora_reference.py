"""Reference outputs of LoRAs merged by diffusers (`load_lora_weights` +
`fuse_lora(lora_scale=0.8)`) into the tiny SD 1.x, SDXL and SD 3 models.

The models (seeds 11, 7 and 5, as `sd-worker generate-model` writes them)
and one tiny rank-4 LoRA per format (kohya with alpha, a kohya LoCon with
the resnet convs, diffusers' old `lora.down/up` + `lora_linear_layer`,
PEFT's `lora_A/lora_B`, and PEFT's with diffusers' `lora_adapter_metadata`
giving each component its own lora_alpha / r, alpha patterns and rsLoRA;
SD 3 gets the diffusers and PEFT ones, on the MMDiT's attention and
feed-forward linears of both streams and both CLIP encoders) are written
by the worker's own generators:

    SD_WORKER_LORA_REF_DIR=/tmp/loraref \
        cargo test -p sd-worker --lib write_reference_inputs -- --ignored
    python worker/tests/reference/lora_reference.py /tmp/loraref \
        > worker/tests/reference/lora_reference.json

(torch, diffusers and transformers as pinned in training/requirements.txt;
diffusers' LoRA loading needs `peft`, whose version is recorded in the JSON.)
worker/src/lora/reference_tests.rs merges the same files through the worker
and compares, for each case and for no LoRA ("none"): the prompt
embeddings, the pooled embedding (SDXL, SD 3), and one UNet / MMDiT call on
`latents[i] = sin(0.1 i)` conditioned on them. SD 3 runs without T5 (as
the worker's test loads it): zeros in T5's place. Sampled every `stride`
values, with the mean and mean magnitude of the whole tensor.
"""

import json
import os
import sys

import torch
from diffusers import (
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)

PROMPT = "a red circle on a blue background"
STRIDE = 7
SCALE = 0.8
TIMESTEP = 500.0
TIME_IDS = [24.0, 32.0, 0.0, 0.0, 24.0, 32.0]
CASES = {
    "sd15": ["kohya", "locon", "diffusers", "peft", "peft_alpha"],
    "sdxl": ["kohya", "locon", "diffusers", "peft", "peft_alpha"],
    "sd3": ["diffusers", "peft", "peft_alpha"],
}


def sample(t: torch.Tensor) -> dict:
    flat = t.detach().double().flatten()
    return {
        "shape": list(t.shape),
        "stride": STRIDE,
        "values": flat[::STRIDE].tolist(),
        "mean": flat.mean().item(),
        "abs_mean": flat.abs().mean().item(),
    }


def outputs(pipe, name: str) -> dict:
    with torch.no_grad():
        if name == "sd3":
            enc = pipe.encode_prompt(
                PROMPT,
                prompt_2=None,
                prompt_3=None,
                device="cpu",
                num_images_per_prompt=1,
                do_classifier_free_guidance=False,
                max_sequence_length=256,
            )
        else:
            enc = pipe.encode_prompt(
                PROMPT,
                device="cpu",
                num_images_per_prompt=1,
                do_classifier_free_guidance=False,
            )
        cond = enc[0]
        channels = 16 if name == "sd3" else 4
        latents = torch.sin(torch.arange(channels * 6 * 8, dtype=torch.float64) * 0.1)
        latents = latents.float().reshape(1, channels, 6, 8)
        out = {"prompt_embeds": sample(cond)}
        if name == "sd3":
            pooled = enc[2]
            out["pooled_prompt_embeds"] = sample(pooled)
            pred = pipe.transformer(
                hidden_states=latents,
                timestep=torch.tensor([TIMESTEP]),
                encoder_hidden_states=cond,
                pooled_projections=pooled,
            ).sample
            out["unet_output"] = sample(pred)
            return out
        kwargs = {}
        if name == "sdxl":
            pooled = enc[2]
            kwargs["added_cond_kwargs"] = {
                "text_embeds": pooled,
                "time_ids": torch.tensor([TIME_IDS]),
            }
            out["pooled_prompt_embeds"] = sample(pooled)
        unet = pipe.unet(latents, torch.tensor(TIMESTEP), encoder_hidden_states=cond, **kwargs)
        out["unet_output"] = sample(unet.sample)
    return out


def main(root: str) -> None:
    models = {}
    pipelines = [
        ("sd15", StableDiffusionPipeline, {"safety_checker": None}),
        ("sdxl", StableDiffusionXLPipeline, {}),
        ("sd3", StableDiffusion3Pipeline, {"text_encoder_3": None, "tokenizer_3": None}),
    ]
    for name, cls, kwargs in pipelines:
        folder = os.path.join(root, name)
        pipe = cls.from_pretrained(folder, torch_dtype=torch.float32, **kwargs)
        results = {"none": outputs(pipe, name)}
        for case in CASES[name]:
            pipe.load_lora_weights(os.path.join(folder, "loras"), weight_name=f"{case}.safetensors")
            pipe.fuse_lora(lora_scale=SCALE)
            results[case] = outputs(pipe, name)
            pipe.unfuse_lora()
            pipe.unload_lora_weights()
        models[name] = results
    json.dump(
        {
            "prompt": PROMPT,
            "timestep": TIMESTEP,
            "lora_scale": SCALE,
            "time_ids": TIME_IDS,
            "models": models,
            "versions": {
                "torch": torch.__version__,
                "diffusers": __import__("diffusers").__version__,
                "transformers": __import__("transformers").__version__,
                "peft": __import__("peft").__version__,
            },
        },
        sys.stdout,
        indent=1,
    )


if __name__ == "__main__":
    main(sys.argv[1])
