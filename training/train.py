"""Trains the bundled demo model (`sd-demo-shapes`) from scratch (on a GPU when there is one) and writes it in the diffusers layout.

Stages, each from the previous one's output:
1. data:  `dataset.generate` renders N captioned 64x64 images (seeded; held-out combinations excluded).
2. VAE:   an AutoencoderKL (64x64 RGB <-> 16x16x4 latents), MSE reconstruction + a small KL term.
          Its `scaling_factor` is 1 / std of the latents it produces, as Stable Diffusion computed 0.18215.
3. UNet + text encoder, jointly, from scratch: a UNet2DConditionModel with cross-attention on a small
   CLIPTextModel's last_hidden_state (final layer norm applied), prompts padded to 77 tokens with
   <|endoftext|> -- exactly what the worker feeds it. Epsilon prediction on Stable Diffusion 1.x's noise schedule
   (scaled_linear, 0.00085..0.012, 1000 steps), min-SNR-5 loss weights, 10% empty captions (so
   classifier-free guidance works), an EMA of the weights (what is exported).
4. export: model_index.json, scheduler/, text_encoder/, tokenizer/, unet/, vae/ into --out.

Re-run (see training/README.md):  python training/train.py --out worker/models/sd-demo-shapes
Each stage takes a wall-clock budget (--vae-minutes, --unet-minutes) or a fixed step count
(--vae-steps, --unet-steps; then the run is repeatable step for step).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dataset  # noqa: E402

from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# The worker's own generated CLIP-style BPE vocabulary (`sd-worker generate-model` writes the same files):
# 812 tokens, every caption word is a single token.
TOKENIZER_SRC = Path(__file__).resolve().parent / "tokenizer"

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 3,
    up_block_types=["UpDecoderBlock2D"] * 3,
    block_out_channels=[16, 32, 64],
    layers_per_block=1,
    latent_channels=4,
    # One group: per-group normalisation of flat-colour images would erase the colour itself.
    norm_num_groups=1,
    sample_size=64,
    act_fn="silu",
)
TEXT_CONFIG = dict(
    vocab_size=812,
    hidden_size=64,
    intermediate_size=256,
    num_hidden_layers=3,
    num_attention_heads=4,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=64,
    bos_token_id=810,
    eos_token_id=811,
    pad_token_id=811,
)
UNET_CONFIG = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    block_out_channels=[32, 64, 128],
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    mid_block_type="UNetMidBlock2DCrossAttn",
    layers_per_block=1,
    attention_head_dim=[1, 2, 4],  # diffusers' misnomer: heads per block (32 channels each)
    cross_attention_dim=64,
    norm_num_groups=32,
)
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    steps_offset=1,
    timestep_spacing="linspace",
    clip_sample=False,
    set_alpha_to_one=False,
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def lr_at(frac: float, base: float, warmup: float = 0.03) -> float:
    if frac < warmup:
        return base * frac / warmup
    p = min(1.0, (frac - warmup) / (1 - warmup))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


class Budget:
    """Progress through a stage: by step count when given, else by wall-clock time."""

    def __init__(self, steps: int | None, minutes: float):
        self.steps, self.seconds, self.start = steps, minutes * 60, time.time()

    def frac(self, step: int) -> float:
        if self.steps:
            return step / self.steps
        return (time.time() - self.start) / self.seconds

    def done(self, step: int) -> bool:
        return self.frac(step) >= 1.0


def train_vae(images: torch.Tensor, args) -> AutoencoderKL:
    torch.manual_seed(args.seed)
    vae = AutoencoderKL(**VAE_CONFIG).to(args.device)
    log(f"VAE: {sum(p.numel() for p in vae.parameters()):,} parameters")
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    budget = Budget(args.vae_steps, args.vae_minutes)
    g = torch.Generator(args.device).manual_seed(args.seed + 1)
    step = 0
    while not budget.done(step):
        for group in opt.param_groups:
            group["lr"] = lr_at(budget.frac(step), args.vae_lr)
        # Random 32x32 crops for most of the stage (4x cheaper; the VAE is convolutional), whole images at the end.
        frac = budget.frac(step)
        if frac < args.vae_crop_frac:
            idx = torch.randint(0, len(images), (args.vae_batch * 2,), generator=g, device=args.device)
            oy, ox = (int(v) for v in torch.randint(0, 9, (2,), generator=g, device=args.device) * 4)
            x = images[idx, :, oy : oy + 32, ox : ox + 32]
        else:
            idx = torch.randint(0, len(images), (args.vae_batch,), generator=g, device=args.device)
            x = images[idx]
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g, device=args.device)
        rec = vae.decode(z).sample
        mse = F.mse_loss(rec, x)
        kl = post.kl().mean() / z[0].numel()
        loss = mse + args.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % (args.log_every * 4) == 0:
            log(f"vae step {step} mse {mse.item():.5f} kl {kl.item():.3f} lr {opt.param_groups[0]['lr']:.2e}")
    log(f"VAE done after {step} steps")
    vae.eval()
    return vae


@torch.no_grad()
def encode_all(vae: AutoencoderKL, images: torch.Tensor, batch: int = 256):
    means, stds = [], []
    for i in range(0, len(images), batch):
        post = vae.encode(images[i : i + batch]).latent_dist
        means.append(post.mean)
        stds.append(post.std)
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def vae_report(vae: AutoencoderKL, images: torch.Tensor, mean: torch.Tensor) -> float:
    rec = vae.decode(mean[:256]).sample.clamp(-1, 1)
    mse = F.mse_loss(rec, images[:256]).item()
    psnr = 10 * math.log10(4.0 / mse)
    log(f"VAE reconstruction on 256 training images: mse {mse:.5f}, PSNR {psnr:.1f} dB")
    return psnr


def ema_update(ema: dict, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        state = model.state_dict()
        names = [n for n, p in state.items() if p.dtype.is_floating_point]
        # One fused update over all tensors (a Python loop of small ops dominates a GPU step otherwise).
        torch._foreach_lerp_([ema[n] for n in names], [state[n] for n in names], 1 - decay)


def canonical_text_keys(path: Path) -> None:
    """Writes the text encoder under `text_model.`, as CLIP checkpoints on the hub (and transformers 4) name it;
    transformers 5 saves its CLIPTextModel without the prefix, which other tools do not read."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    renamed = {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in tensors.items()}
    save_file(renamed, path, metadata={"format": "pt"})


def export(out: Path, vae, unet_state, text_state, scaling_factor: float, meta: dict) -> None:
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    vae = vae.to("cpu")
    vae.register_to_config(scaling_factor=round(scaling_factor, 5))
    vae.save_pretrained(tmp / "vae", safe_serialization=True)
    vae_config = json.loads((tmp / "vae/config.json").read_text())
    vae_config.pop("_name_or_path", None)
    (tmp / "vae/config.json").write_text(json.dumps(vae_config, indent=2, sort_keys=True) + "\n")
    unet = UNet2DConditionModel(**UNET_CONFIG)
    unet.load_state_dict({k: v.cpu() for k, v in unet_state.items()})
    unet.save_pretrained(tmp / "unet", safe_serialization=True)
    text = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    text.load_state_dict({k: v.cpu() for k, v in text_state.items()})
    text.save_pretrained(tmp / "text_encoder", safe_serialization=True)
    canonical_text_keys(tmp / "text_encoder/model.safetensors")
    shutil.copytree(TOKENIZER_SRC, tmp / "tokenizer")
    (tmp / "scheduler").mkdir()
    scheduler = {"_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.31.0", **SCHEDULER_CONFIG}
    (tmp / "scheduler/scheduler_config.json").write_text(json.dumps(scheduler, indent=2) + "\n")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.31.0",
        "_name_or_path": "sd-worker/sd-demo-shapes",
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    (tmp / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    # Keep a hand-written model card across exports.
    if (out / "README.md").exists():
        shutil.copy(out / "README.md", tmp / "README.md")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    log(f"exported to {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "worker/models/sd-demo-shapes"))
    ap.add_argument("--work", default="/tmp/sd-demo-work", help="checkpoints and the encoded data set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--images", type=int, default=30000)
    ap.add_argument("--threads", type=int, default=1, help="torch threads; 1 is fastest on a busy 2-core machine")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--resume", action="store_true", help="start the UNet and text encoder from the weights in --out")
    ap.add_argument("--vae-minutes", type=float, default=10)
    ap.add_argument("--vae-steps", type=int)
    ap.add_argument("--vae-batch", type=int, default=24)
    ap.add_argument("--vae-lr", type=float, default=1e-3)
    ap.add_argument("--vae-crop-frac", type=float, default=0.7, help="share of the VAE stage on 32x32 crops")
    ap.add_argument("--vae-kl", type=float, default=1e-5)
    ap.add_argument("--unet-minutes", type=float, default=40)
    ap.add_argument("--unet-steps", type=int)
    ap.add_argument("--unet-batch", type=int, default=64)
    ap.add_argument("--unet-lr", type=float, default=5e-4)
    ap.add_argument("--uncond-prob", type=float, default=0.1)
    ap.add_argument("--offset-noise", type=float, default=0.05)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--export-every", type=float, default=8, help="minutes between exports of the EMA model")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    log(f"device {args.device}, torch {torch.__version__}")
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    out, work = Path(args.out), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()

    log(f"generating {args.images} images (seed {args.seed})")
    raw, captions, _ = dataset.generate(args.images, args.seed)
    images = to_tensor(raw).to(args.device)
    log("data ready")

    vae_path = work / "vae"
    if (vae_path / "config.json").exists():
        vae = AutoencoderKL.from_pretrained(vae_path).to(args.device)
        vae.eval()
        args.vae_steps, args.vae_minutes = "reused from the work folder", 0
        log("VAE loaded from the work folder")
    else:
        vae = train_vae(images, args)
        vae.save_pretrained(vae_path)
    vae_minutes = (time.time() - started) / 60

    log("encoding the data set")
    mean, std = encode_all(vae, images)
    psnr = vae_report(vae, images, mean)
    g = torch.Generator(args.device).manual_seed(args.seed + 2)
    sample = mean + std * torch.randn(mean.shape, generator=g, device=args.device)
    scaling_factor = 1.0 / sample.std().item()
    log(f"latent std {sample.std().item():.4f} -> scaling_factor {scaling_factor:.5f}")

    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER_SRC)
    assert len(tokenizer) == TEXT_CONFIG["vocab_size"], len(tokenizer)

    def tokenize(texts):
        return tokenizer(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids

    ids = tokenize(captions).to(args.device)
    empty = tokenize([""])[0].to(args.device)
    log(f"tokens of {captions[0]!r}: {ids[0][:16].tolist()}")

    torch.manual_seed(args.seed + 3)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    text = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    previous = None
    if args.resume:
        previous = json.loads((out / "training.json").read_text()) if (out / "training.json").exists() else None
        unet = UNet2DConditionModel.from_pretrained(out / "unet")
        text = CLIPTextModel.from_pretrained(out / "text_encoder")
        log(f"resumed from {out}")
    unet, text = unet.to(args.device), text.to(args.device)
    n_unet = sum(p.numel() for p in unet.parameters())
    n_text = sum(p.numel() for p in text.parameters())
    n_vae = sum(p.numel() for p in vae.parameters())
    log(f"UNet {n_unet:,} / text encoder {n_text:,} / VAE {n_vae:,} parameters")
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=args.unet_lr, weight_decay=1e-2)
    sched = DDPMScheduler(**{k: SCHEDULER_CONFIG[k] for k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type", "clip_sample")})
    alphas = sched.alphas_cumprod.to(args.device)
    snr = alphas / (1 - alphas)
    weights = torch.clamp(snr, max=5.0) / snr

    ema_u = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    ema_t = {k: v.detach().clone() for k, v in text.state_dict().items()}
    budget = Budget(args.unet_steps, args.unet_minutes)
    last_export = time.time()
    step, running = 0, 0.0

    def meta(step):
        return dict(
            seed=args.seed,
            images=args.images,
            vae_steps_or_minutes=args.vae_steps or args.vae_minutes,
            vae_psnr_db=round(psnr, 2),
            unet_steps=step,
            unet_batch=args.unet_batch,
            unet_lr=args.unet_lr,
            uncond_prob=args.uncond_prob,
            offset_noise=args.offset_noise,
            scaling_factor=round(scaling_factor, 5),
            parameters=dict(unet=n_unet, text_encoder=n_text, vae=n_vae),
            minutes=round((time.time() - started) / 60, 1),
            vae_minutes=round(vae_minutes, 1),
            threads=args.threads,
            device=torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
            torch=torch.__version__,
            resumed_from=previous,
        )

    while not budget.done(step):
        lr = lr_at(budget.frac(step), args.unet_lr)
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, len(images), (args.unet_batch,), generator=g, device=args.device)
        latents = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g, device=args.device)) * scaling_factor
        tok = ids[idx].clone()
        drop = torch.rand(len(idx), generator=g, device=args.device) < args.uncond_prob
        tok[drop] = empty
        noise = torch.randn(latents.shape, generator=g, device=args.device)
        if args.offset_noise:
            noise = noise + args.offset_noise * torch.randn(latents.shape[0], latents.shape[1], 1, 1, generator=g, device=args.device)
        t = torch.randint(0, 1000, (len(idx),), generator=g, device=args.device)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        cond = text(tok).last_hidden_state
        pred = unet(noisy, t, cond).sample
        loss = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
        loss = (loss * weights[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        decay = min(0.999, (1 + step) / (10 + step))
        ema_update(ema_u, unet, decay)
        ema_update(ema_t, text, decay)
        if step % args.log_every == 0:
            running = loss.item()  # (a sync: only when logging)
            el = time.time() - budget.start
            log(f"unet step {step} loss {running:.4f} lr {lr:.2e} {el / step:.2f} s/step")
        if time.time() - last_export > args.export_every * 60:
            export(out, vae, ema_u, ema_t, scaling_factor, meta(step))
            last_export = time.time()
    log(f"UNet done after {step} steps")
    export(out, vae, ema_u, ema_t, scaling_factor, meta(step))
    log(f"total {(time.time() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
