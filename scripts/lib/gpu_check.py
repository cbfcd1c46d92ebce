"""Helpers of scripts/gpu-check.sh (standard library, Pillow and numpy; the
`diffusers-bench` command also needs torch and diffusers, nothing from a hub).

  smoke BIN MODEL_DIR OUT_DIR LABEL -- WORKER_FLAGS...
      starts `BIN --model-path MODEL_DIR WORKER_FLAGS`, runs the fixed
      requests (txt2img; img2img and inpaint unless --txt2img-only) through
      the AUTOMATIC1111 routes, saves each image as OUT_DIR/LABEL-<request>.png
  compare REF_DIR LABEL_REF LABEL ...
      one markdown row per request: max and mean abs pixel difference of
      LABEL's image against LABEL_REF's
  diffusers-bench UNET_CONFIG VAE_CONFIG WIDTH HEIGHT STEPS DEVICE DTYPE
      diffusers' UNet2DConditionModel and AutoencoderKL from the configs with
      random weights: STEPS UNet passes at batch 2 (guidance) and one VAE
      decode; prints one JSON line (it/s, ms per step, peak CUDA memory)
"""

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

REQUESTS = ["txt2img", "img2img", "inpaint"]


def gradient_png(w, h):
    import numpy as np
    from PIL import Image

    x = np.arange(w)[None, :].repeat(h, 0)
    y = np.arange(h)[:, None].repeat(w, 1)
    rgb = np.stack([x * 255 // w, y * 255 // h, (x + y) % 256], -1).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def mask_png(w, h):
    from PIL import Image

    m = Image.new("L", (w, h), 0)
    m.paste(255, (w // 2, 0, w, h))
    buf = io.BytesIO()
    m.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def post(url, body, timeout=600):
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


def start_worker(bin_path, model_dir, flags, log_path):
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [bin_path, "--host", "127.0.0.1", "--port", "0", "--model-path", model_dir,
         "--no-studio", *flags],
        stdout=subprocess.PIPE, stderr=log, text=True,
    )
    deadline = time.time() + 300
    base = None
    while time.time() < deadline and base is None:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise SystemExit(f"worker exited ({proc.returncode}); see {log_path}")
            continue
        for word in line.split():
            if word.startswith("http://"):  # "sd-worker listening on http://ADDR"
                base = word.rstrip("/")
    if base is None:
        proc.kill()
        raise SystemExit(f"worker printed no address; see {log_path}")
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(base + "/ready", timeout=5) as r:
                if r.status == 200:
                    return proc, base
        except Exception:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"worker never got ready; see {log_path}")


def smoke(argv):
    bin_path, model_dir, out_dir, label = argv[:4]
    txt_only = "--txt2img-only" in argv
    flags = argv[argv.index("--") + 1:] if "--" in argv else []
    os.makedirs(out_dir, exist_ok=True)
    proc, base = start_worker(bin_path, model_dir, flags, os.path.join(out_dir, label + ".log"))
    try:
        info = json.load(urllib.request.urlopen(base + "/v1/info", timeout=30))
        model = info.get("model") or {}
        w, h = int(model.get("native_width", 64)), int(model.get("native_height", 64))
        common = {"prompt": "a red lighthouse at dusk", "steps": 4, "seed": 5,
                  "cfg_scale": 7.5, "width": w, "height": h}
        bodies = {"txt2img": ("txt2img", dict(common))}
        if not txt_only:
            init = gradient_png(w, h)
            bodies["img2img"] = ("img2img", dict(common, init_images=[init],
                                                 denoising_strength=0.6))
            bodies["inpaint"] = ("img2img", dict(common, init_images=[init],
                                                 mask=mask_png(w, h), denoising_strength=0.8))
        for name, (route, body) in bodies.items():
            t0 = time.time()
            out = post(f"{base}/sdapi/v1/{route}", body)
            with open(os.path.join(out_dir, f"{label}-{name}.png"), "wb") as f:
                f.write(base64.b64decode(out["images"][0]))
            print(f"{label} {name}: {time.time() - t0:.2f} s", file=sys.stderr)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def compare(argv):
    import numpy as np
    from PIL import Image

    out_dir, ref, labels = argv[0], argv[1], argv[2:]
    for label in labels:
        for name in REQUESTS:
            a_path = os.path.join(out_dir, f"{ref}-{name}.png")
            b_path = os.path.join(out_dir, f"{label}-{name}.png")
            if not (os.path.exists(a_path) and os.path.exists(b_path)):
                if os.path.exists(a_path):
                    print(f"| {label} | {name} | missing | | FAIL |")
                continue
            a = np.asarray(Image.open(a_path).convert("RGB"), dtype=np.int16)
            b = np.asarray(Image.open(b_path).convert("RGB"), dtype=np.int16)
            if a.shape != b.shape:
                print(f"| {label} | {name} | shape {b.shape} vs {a.shape} | | FAIL |")
                continue
            d = np.abs(a - b)
            limit = 32 if "f16" in label else 8
            flag = "ok" if d.max() <= limit else f"FLAG (> {limit})"
            print(f"| {label} | {name} | {d.max()} | {d.mean():.3f} | {flag} |")


def diffusers_bench(argv):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    unet_cfg, vae_cfg, w, h, steps, device, dtype = argv[:7]
    w, h, steps = int(w), int(h), int(steps)
    dt = {"f16": torch.float16, "f32": torch.float32}[dtype]
    torch.manual_seed(0)
    # Initialised on the device: SDXL's 2.6B parameters take a while on a CPU.
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(json.load(open(unet_cfg))).to(dtype=dt).eval()
        vae = AutoencoderKL.from_config(json.load(open(vae_cfg))).to(dtype=dt).eval()
    cfg = unet.config
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    lat = torch.randn(2, cfg.in_channels, h // scale, w // scale, device=device, dtype=dt)
    ctx = torch.randn(2, 77, cfg.cross_attention_dim, device=device, dtype=dt)
    extra = {}
    if cfg.addition_embed_type == "text_time":
        pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        extra["added_cond_kwargs"] = {
            "text_embeds": torch.randn(2, pooled, device=device, dtype=dt),
            "time_ids": torch.tensor([[h, w, 0, 0, h, w]] * 2, device=device, dtype=dt),
        }
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        unet(lat, 999, encoder_hidden_states=ctx, **extra)  # warm-up
        sync()
        t0 = time.time()
        for i in range(steps):
            noise = unet(lat, 999 - i, encoder_hidden_states=ctx, **extra).sample
            lat = lat - 0.01 * noise
        sync()
        t1 = time.time()
        vae.decode(lat[:1] / vae.config.scaling_factor)
        sync()
        t2 = time.time()
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    print(json.dumps({
        "unet_step_ms": (t1 - t0) * 1000 / steps, "it_per_s": steps / (t1 - t0),
        "vae_decode_ms": (t2 - t1) * 1000, "torch_peak_mib": peak,
        "torch": torch.__version__,
    }))


def bench_row(argv):
    j = json.loads(argv[0])
    s = j["unet_step_ms"]
    print(f"{s:.1f} | {1000 / s:.2f} | {j['vae_decode_ms']:.0f} | "
          f"{j['end_to_end_ms']:.0f} | {j['load_s']:.1f}")


def bench_its(argv):
    print(1000 / json.loads(argv[0])["unet_step_ms"])


def diffusers_row(argv):
    j = json.loads(argv[0])
    worker_its = argv[1] if len(argv) > 1 else ""
    ratio = f"{float(worker_its) / j['it_per_s']:.2f}" if worker_its else "n/a"
    peak = j["torch_peak_mib"]
    peak = "n/a" if peak is None else f"{peak:.0f}"
    print(f"{j['unet_step_ms']:.1f} | {j['it_per_s']:.2f} | {j['vae_decode_ms']:.0f} | "
          f"{peak} | {ratio}")


if __name__ == "__main__":
    cmd, rest = sys.argv[1], sys.argv[2:]
    {"smoke": smoke, "compare": compare, "diffusers-bench": diffusers_bench,
     "bench-row": bench_row, "bench-its": bench_its, "diffusers-row": diffusers_row}[cmd](rest)
