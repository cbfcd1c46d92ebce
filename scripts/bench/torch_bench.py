"""PyTorch + diffusers side of `scripts/bench-compare.sh`.

Times the same stages as `sd-worker bench --model-path DIR --json` on the same
diffusers folder (the same weights), in a fresh process, and prints one JSON line
with the same keys:

- `text_encoder_ms`: one CLIP pass, warm (the second of two calls);
- `unet_step_ms`: the mean of `--steps` UNet calls (batch 2 with guidance, as
  a job runs them), the first call included, as the worker's bench counts it;
- `vae_decode_ms`: one decode of the final latents (batch 1);
- `end_to_end_ms`: text encoding + the steps (Euler, diffusers'
  `EulerDiscreteScheduler`) + the decode;
- `peak_rss_mib_generating`: the process's peak resident set (ru_maxrss), which
  for PyTorch includes loading (its weights are read into memory once).

Threads: PyTorch's default intra-op pool (one per core), as the worker uses one
thread per core. Versions: scripts/bench/requirements.txt.
"""

import argparse
import json
import resource
import time

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer


def ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model-path", required=True)
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--guidance-scale", type=float, default=7.5)
    a = p.parse_args()

    torch.manual_seed(0)
    t0 = time.perf_counter()
    unet = UNet2DConditionModel.from_pretrained(a.model_path, subfolder="unet").eval()
    vae = AutoencoderKL.from_pretrained(a.model_path, subfolder="vae").eval()
    text_encoder = CLIPTextModel.from_pretrained(a.model_path, subfolder="text_encoder").eval()
    tokenizer = CLIPTokenizer.from_pretrained(a.model_path, subfolder="tokenizer")
    scheduler = EulerDiscreteScheduler.from_pretrained(a.model_path, subfolder="scheduler")
    load_s = (time.perf_counter() - t0)

    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    native = unet.config.sample_size * scale
    width, height = a.width or native, a.height or native
    prompt = "a photograph of an astronaut riding a horse"
    guided = a.guidance_scale > 1.0

    with torch.inference_mode():
        def encode(text: str) -> torch.Tensor:
            ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length,
                            truncation=True, return_tensors="pt").input_ids
            return text_encoder(ids)[0]

        encode(prompt)
        t0 = time.perf_counter()
        encode(prompt)
        text_ms = ms(t0)

        t_job = time.perf_counter()
        cond = encode(prompt)
        context = torch.cat([encode(""), cond]) if guided else cond
        scheduler.set_timesteps(a.steps)
        latents = torch.randn(1, unet.config.in_channels, height // scale, width // scale)
        latents = latents * scheduler.init_noise_sigma
        t_denoise = time.perf_counter()
        for t in scheduler.timesteps:
            x = torch.cat([latents] * 2) if guided else latents
            x = scheduler.scale_model_input(x, t)
            noise = unet(x, t, encoder_hidden_states=context).sample
            if guided:
                uncond, text = noise.chunk(2)
                noise = uncond + a.guidance_scale * (text - uncond)
            latents = scheduler.step(noise, t, latents).prev_sample
        step_ms = ms(t_denoise) / a.steps
        t0 = time.perf_counter()
        image = vae.decode(latents / vae.config.scaling_factor).sample
        vae_ms = ms(t0)
        (image / 2 + 0.5).clamp(0, 1)
        e2e_ms = ms(t_job)

    print(json.dumps({
        "system": "pytorch", "torch": torch.__version__, "threads": torch.get_num_threads(),
        "width": width, "height": height, "steps": a.steps, "unet_batch": 2 if guided else 1,
        "load_s": load_s, "text_encoder_ms": text_ms, "unet_step_ms": step_ms,
        "vae_decode_ms": vae_ms, "end_to_end_ms": e2e_ms,
        "peak_rss_mib_generating": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    }))


if __name__ == "__main__":
    main()
