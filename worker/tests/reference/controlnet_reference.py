"""Reference values for one ControlNet call and the UNet call it steers, by diffusers.

Run on the tiny models and ControlNets the worker's own generator writes:

    sd-worker generate-model --shape tiny --seed 11 --out /tmp/tiny
    sd-worker generate-controlnet --shape tiny --seed 12 --out /tmp/tiny-controlnet
    sd-worker generate-model --shape tiny-sdxl --seed 11 --out /tmp/tiny-sdxl
    sd-worker generate-controlnet --shape tiny-sdxl --seed 12 --out /tmp/tiny-sdxl-controlnet
    python worker/tests/reference/controlnet_reference.py \\
        tiny=/tmp/tiny,/tmp/tiny-controlnet tiny-sdxl=/tmp/tiny-sdxl,/tmp/tiny-sdxl-controlnet \\
        > worker/tests/reference/controlnet_reference.json

(torch, diffusers and transformers as pinned in training/requirements.txt.)
worker/src/model/controlnet/reference_tests.rs writes the same models and
compares: every down residual and the mid residual of diffusers'
`ControlNetModel` at conditioning scales 1.0 and 0.5, and the UNet's output
given them (`down_block_additional_residuals`,
`mid_block_additional_residual`) and without them. The generator's
ControlNets have random (not zero) `controlnet_down_blocks`,
`controlnet_mid_block` and conditioning-embedding outputs, as trained ones do.

Inputs, easily reproduced (flat, row-major): sample[i] = sin(0.1 i),
context[i] = 2 cos(0.37 i), control image[i] = 0.5 + 0.5 sin(0.05 i) (in
[0, 1], `p` = 4 pixels per latent for the tiny VAE), SDXL's
text_embeds[i] = cos(0.21 i) and time_ids (24, 32, 0, 0, 24, 32) per image;
timestep 500. One 8x8 latent of batch 1 and one 5x7 latent of batch 2 (5x7
does not halve evenly).
"""

import json
import sys

import torch
from diffusers import ControlNetModel, UNet2DConditionModel

TIMESTEP = 500.0
CASES = [("8x8", 1, 8, 8), ("5x7-batch2", 2, 5, 7)]
SCALES = [1.0, 0.5]
TIME_IDS = [24.0, 32.0, 0.0, 0.0, 24.0, 32.0]
STRIDE = 7


def wave(shape, scale: float, freq: float, fn=torch.sin, offset: float = 0.0) -> torch.Tensor:
    n = 1
    for s in shape:
        n *= s
    flat = offset + scale * fn(torch.arange(n, dtype=torch.float64) * freq)
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


def run_case(unet, controlnet, batch: int, h: int, w: int) -> dict:
    p = 2 ** (len(controlnet.config.conditioning_embedding_out_channels) - 1)
    latents = wave((batch, controlnet.config.in_channels, h, w), 1.0, 0.1)
    dim = controlnet.config.cross_attention_dim
    context = wave((batch, 77, dim), 2.0, 0.37, torch.cos)
    control = wave((batch, 3, p * h, p * w), 0.5, 0.05, offset=0.5)
    added = None
    if unet.config.addition_embed_type == "text_time":
        cfg = unet.config
        pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        added = {
            "text_embeds": wave((batch, pooled), 1.0, 0.21, torch.cos),
            "time_ids": torch.tensor([TIME_IDS] * batch),
        }
    t = torch.tensor(TIMESTEP)
    out = {"shape": [batch, h, w], "scales": []}
    with torch.no_grad():
        plain = unet(latents, t, encoder_hidden_states=context, added_cond_kwargs=added).sample
        out["unet_output_without"] = sample(plain)
        for scale in SCALES:
            down, mid = controlnet(
                latents,
                t,
                encoder_hidden_states=context,
                controlnet_cond=control,
                conditioning_scale=scale,
                added_cond_kwargs=added,
                return_dict=False,
            )
            steered = unet(
                latents,
                t,
                encoder_hidden_states=context,
                added_cond_kwargs=added,
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
            ).sample
            out["scales"].append(
                {
                    "conditioning_scale": scale,
                    "down": [sample(r) for r in down],
                    "mid": sample(mid),
                    "unet_output": sample(steered),
                }
            )
    return out


def main(pairs: list[str]) -> None:
    out = {"timestep": TIMESTEP, "time_ids": TIME_IDS, "models": {}}
    for pair in pairs:
        name, dirs = pair.split("=", 1)
        model_dir, controlnet_dir = dirs.split(",", 1)
        unet = UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet", torch_dtype=torch.float32)
        controlnet = ControlNetModel.from_pretrained(controlnet_dir, torch_dtype=torch.float32)
        unet.eval()
        controlnet.eval()
        out["models"][name] = {label: run_case(unet, controlnet, b, h, w) for label, b, h, w in CASES}
    out["versions"] = {
        "torch": torch.__version__,
        "diffusers": __import__("diffusers").__version__,
    }
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
