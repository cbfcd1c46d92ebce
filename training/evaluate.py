"""Evaluates the demo model through the Rust worker on the held-out combinations.

Starts `sd-worker` (or uses --url), asks it over HTTP for one image per held-out (shape colour, shape,
background) triple x position x size, and reads each PNG's pixels:
- background colour: the median of the border pixels, named by the nearest palette colour;
- the shape: the largest connected region of pixels far from that background colour (stray speckles elsewhere
  are not the shape); its colour is the median of that region's interior;
- shape: the best intersection-over-union among the five shapes drawn at the shape's bounding box;
- position: the nearest of the five anchors to the shape's centroid; size: nearest of the two sizes.
Prints the accuracies and writes every image (and a grid) to --out.

    python training/evaluate.py                      # the worker's default (bundled) model
    python training/evaluate.py --model-path DIR     # another model folder
    python training/evaluate.py --split train        # training combinations, for comparison
    python training/evaluate.py --dtype q8           # the same through the 8-bit weight path

Only the standard library, numpy and Pillow.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dataset  # noqa: E402

PALETTE = np.array(list(dataset.COLORS.values()), dtype=np.float32)
NAMES = list(dataset.COLORS)


def nearest_color(rgb) -> str:
    return NAMES[int(np.argmin(((PALETTE - np.asarray(rgb, dtype=np.float32)) ** 2).sum(1)))]


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected region of `mask`: the shape, without stray speckles elsewhere in the background."""
    h, w = mask.shape
    seen = np.zeros_like(mask)
    best: list[tuple[int, int]] = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        stack, region = [(y0, x0)], []
        while stack:
            y, x = stack.pop()
            region.append((y, x))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
        if len(region) > len(best):
            best = region
    out = np.zeros_like(mask)
    if best:
        ys, xs = zip(*best)
        out[list(ys), list(xs)] = True
    return out


def analyse(img: np.ndarray) -> dict:
    """Reads background colour, shape colour, shape, position and size from an RGB uint8 image."""
    h, w, _ = img.shape
    px = img.astype(np.float32)
    border = np.concatenate([px[:2].reshape(-1, 3), px[-2:].reshape(-1, 3), px[:, :2].reshape(-1, 3), px[:, -2:].reshape(-1, 3)])
    bg_rgb = np.median(border, axis=0)
    dist = np.sqrt(((px - bg_rgb) ** 2).sum(-1))
    mask = largest_component(dist > 60)
    out = dict(background=nearest_color(bg_rgb), color=None, shape=None, position=None, size=None)
    if mask.sum() < 12:
        return out
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    core = inner if inner.sum() >= 6 else mask
    out["color"] = nearest_color(np.median(px[core], axis=0))
    ys, xs = np.nonzero(mask)
    cx, cy = xs.mean(), ys.mean()
    out["position"] = min(dataset.POSITIONS, key=lambda p: (dataset.POSITIONS[p][0] - cx) ** 2 + (dataset.POSITIONS[p][1] - cy) ** 2)
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    extent = max(x1 - x0 + 1, y1 - y0 + 1)
    best = (-1.0, None, None)
    for shape in dataset.SHAPES:
        for k in np.arange(0.8, 1.25, 0.05):
            size = extent * k
            t = dataset.shape_mask(shape, 32, 32, size, side=w)
            if not t.any():
                continue
            tys, txs = np.nonzero(t)
            dx = int(round((x0 + x1) / 2 - (txs.min() + txs.max()) / 2))
            dy = int(round((y0 + y1) / 2 - (tys.min() + tys.max()) / 2))
            t = np.roll(np.roll(t, dy, axis=0), dx, axis=1)
            iou = (t & mask).sum() / max(1, (t | mask).sum())
            if iou > best[0]:
                best = (iou, shape, size)
    out["shape"] = best[1]
    out["iou"] = round(float(best[0]), 3)
    out["size"] = min(dataset.SIZES, key=lambda s: abs(dataset.SIZES[s] - best[2]))
    return out


class Worker:
    def __init__(self, url: str | None, binary: str, model_path: str | None, dtype: str | None = None):
        self.proc = None
        if url:
            self.base = url.rstrip("/")
            return
        cmd = [binary, "--host", "127.0.0.1", "--port", "0", "--no-studio"]
        if model_path:
            cmd += ["--model-path", model_path]
        if dtype:
            cmd += ["--dtype", dtype]
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline().strip()
        prefix = "sd-worker listening on "
        if not line.startswith(prefix):
            raise SystemExit(f"unexpected worker output: {line!r}")
        self.base = line[len(prefix):]
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(self.base + "/ready") as r:
                    if r.status == 200:
                        break
            except Exception:
                pass
            if time.time() > deadline:
                raise SystemExit("worker not ready within 120 s")
            time.sleep(0.1)

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.base + path) as r:
            return r.read()

    def generate(self, body: dict) -> bytes:
        req = urllib.request.Request(self.base + "/v1/jobs", data=json.dumps(body).encode(), headers={"content-type": "application/json"})
        with urllib.request.urlopen(req) as r:
            job = json.loads(r.read())
        while True:
            status = json.loads(self.get(f"/v1/jobs/{job['job_id']}"))
            if status["status"] == "completed":
                return self.get(f"/v1/jobs/{job['job_id']}/images/0")
            if status["status"] in ("failed", "cancelled"):
                raise SystemExit(f"job failed: {status}")
            time.sleep(0.02)

    def close(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait()


def combinations(split: str, seed: int) -> list[tuple[str, str, str]]:
    if split == "held-out":
        return dataset.eval_combinations()
    rng = random.Random(seed)
    combos = []
    while len(combos) < 24:
        c, s = rng.choice(dataset.BACKGROUNDS), rng.choice(dataset.SHAPES)
        b = rng.choice([x for x in dataset.BACKGROUNDS if x != c])
        if not dataset.is_held_out(c, s, b) and (c, s, b) not in combos:
            combos.append((c, s, b))
    return combos


def main() -> None:
    target = os.environ.get("CARGO_TARGET_DIR", str(Path(__file__).resolve().parent.parent / "target"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", default=str(Path(target) / "debug" / "sd-worker"), help="the sd-worker binary")
    ap.add_argument("--url", help="use a running worker instead of starting one")
    ap.add_argument("--model-path", help="model folder (default: the worker's bundled default)")
    ap.add_argument("--dtype", help="the worker's --dtype (f32, q8; default: the worker's default)")
    ap.add_argument("--split", choices=["held-out", "train"], default="held-out")
    ap.add_argument("--steps", type=int, help="sampling steps (default: the worker's default)")
    ap.add_argument("--guidance", type=float, help="guidance scale (default: the worker's default)")
    ap.add_argument("--scheduler")
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--out", default="/tmp/sd-demo-eval", help="where the images and results.json go")
    ap.add_argument("--limit", type=int, help="evaluate only the first N prompts")
    args = ap.parse_args()

    cases = [
        (c, s, b, p, z)
        for (c, s, b) in combinations(args.split, args.seed)
        for p in dataset.POSITIONS
        for z in dataset.SIZES
    ][: args.limit]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    worker = Worker(args.url, args.worker, args.model_path, args.dtype)
    info = json.loads(worker.get("/v1/info"))
    print(f"model {info['model']['id']}, {len(cases)} prompts ({args.split}), steps {args.steps or info['defaults']['steps']}, "
          f"guidance {args.guidance or info['defaults']['guidance_scale']}, scheduler {args.scheduler or info['defaults']['scheduler']}")
    keys = ["color", "background", "shape", "position", "size"]
    hits = {k: 0 for k in keys}
    rows, tiles, elapsed = [], [], 0.0
    try:
        for i, (c, s, b, p, z) in enumerate(cases):
            prompt = dataset.eval_prompt(c, s, b, p, z)
            body = {"operation": "image_generation", "prompt": prompt, "seed": args.seed + i}
            if args.steps:
                body["steps"] = args.steps
            if args.guidance is not None:
                body["guidance_scale"] = args.guidance
            if args.scheduler:
                body["scheduler"] = args.scheduler
            t0 = time.time()
            png = worker.generate(body)
            elapsed += time.time() - t0
            img = Image.open(io.BytesIO(png)).convert("RGB")
            img.save(out / f"{i:03d}.png")
            tiles.append(img)
            got = analyse(np.asarray(img))
            want = dict(color=c, shape=s, background=b, position=p, size=z)
            for k in keys:
                hits[k] += int(got[k] == want[k])
            rows.append(dict(prompt=prompt, want=want, got=got))
    finally:
        worker.close()
    n = len(cases)
    acc = {k: hits[k] / n for k in keys}
    print(f"mean time per image (HTTP round trip): {elapsed / n * 1000:.0f} ms")
    for k, label in [("color", "colour of shape"), ("background", "background"), ("shape", "shape"), ("position", "position"), ("size", "size")]:
        print(f"{label:>16}: {acc[k] * 100:5.1f}%  ({hits[k]}/{n})")
    (out / "results.json").write_text(json.dumps(dict(accuracy=acc, n=n, rows=rows), indent=1))
    cols = 10
    grid = Image.new("RGB", (cols * 64, ((n + cols - 1) // cols) * 64), (255, 255, 255))
    for i, t in enumerate(tiles):
        grid.paste(t.resize((64, 64)), ((i % cols) * 64, (i // cols) * 64))
    grid.save(out / "grid.png")
    print(f"images, grid.png and results.json in {out}")


if __name__ == "__main__":
    main()
