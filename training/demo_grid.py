"""Writes the README's picture: the worker's default model on a few prompts, generated through its HTTP API.

    python training/demo_grid.py --out docs/images/demo-shapes.png

Each tile is the worker's 64x64 output (default steps, guidance and scheduler; seed 42), enlarged 2x
without smoothing. The prompts are listed in PROMPTS, left to right, top to bottom.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate import Worker  # noqa: E402

PROMPTS = [
    "a red circle on a blue background",
    "a large yellow star on a purple background",
    "a small white square on the left on a black background",
    "a green triangle at the top on a pink background",
    "a blue cross on the right, yellow background",
    "a small orange circle at the bottom on a gray background",
    "a black star on a cyan background",
    "a large pink triangle on a brown background",
]


def main() -> None:
    target = os.environ.get("CARGO_TARGET_DIR", str(Path(__file__).resolve().parent.parent / "target"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", default=str(Path(target) / "debug" / "sd-worker"))
    ap.add_argument("--model-path")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--cols", type=int, default=4)
    ap.add_argument("--out", default="docs/images/demo-shapes.png")
    args = ap.parse_args()
    worker = Worker(None, args.worker, args.model_path)
    try:
        tiles = []
        for p in PROMPTS:
            png = worker.generate({"operation": "image_generation", "prompt": p, "seed": args.seed})
            tiles.append(Image.open(io.BytesIO(png)).convert("RGB"))
            print(p)
    finally:
        worker.close()
    t, gap = 128, 4
    rows = (len(tiles) + args.cols - 1) // args.cols
    grid = Image.new("RGB", (args.cols * (t + gap) - gap, rows * (t + gap) - gap), (255, 255, 255))
    for i, tile in enumerate(tiles):
        grid.paste(tile.resize((t, t), Image.NEAREST), ((i % args.cols) * (t + gap), (i // args.cols) * (t + gap)))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
