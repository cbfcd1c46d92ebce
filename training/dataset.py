"""Seeded generator of the demo model's training data: simple shapes on plain backgrounds.

Every image is 64x64 RGB: one shape (5 kinds) in one of 12 colours, on a plain background of another
of the 12 colours, at one of 5 positions and in one of 2 sizes, with a caption in natural phrasing.

Conventions the captions follow (the model card repeats them): a caption that names no position means
the shape is in the center; one that names no size means the shape is large.

Generalisation is measured on combinations that never occur in training: HELD_OUT_PAIRS (a shape
colour with a shape, on no background at all) and HELD_OUT_TRIPLES (shape colour, shape, background).
`python training/dataset.py --preview out.png` writes a grid of samples with their captions.
"""

from __future__ import annotations

import argparse
import random

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
SUPERSAMPLE = 4

# name -> RGB. Chosen to be far apart, so that a pixel's colour names itself.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "purple": (130, 40, 170),
    "orange": (245, 140, 20),
    "pink": (245, 130, 190),
    "cyan": (30, 210, 220),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
    "brown": (130, 80, 30),
}
SHAPES = ["circle", "square", "triangle", "star", "cross"]
BACKGROUNDS = list(COLORS)
# Shape centers in pixels.
POSITIONS: dict[str, tuple[int, int]] = {
    "center": (32, 32),
    "left": (18, 32),
    "right": (46, 32),
    "top": (32, 18),
    "bottom": (32, 46),
}
POSITION_PHRASES = {
    "center": ["in the center", "in the middle", "at the center"],
    "left": ["on the left", "at the left"],
    "right": ["on the right", "at the right"],
    "top": ["at the top", "on the top"],
    "bottom": ["at the bottom", "on the bottom"],
}
# Size of the shape's bounding box, in pixels.
SIZES = {"small": 18, "large": 32}
SIZE_WORDS = {"small": ["small", "small", "tiny"], "large": ["large", "large", "big"]}

# Never in training: each colour with each shape, on any background, at any position and size.
HELD_OUT_PAIRS: list[tuple[str, str]] = [
    ("green", "circle"),
    ("blue", "triangle"),
    ("yellow", "star"),
    ("purple", "square"),
    ("orange", "cross"),
    ("cyan", "circle"),
]
# Never in training: these (shape colour, shape, background) triples, at any position and size.
HELD_OUT_TRIPLES: list[tuple[str, str, str]] = [
    ("red", "square", "white"),
    ("pink", "circle", "black"),
    ("white", "star", "blue"),
    ("black", "triangle", "yellow"),
    ("gray", "cross", "green"),
    ("brown", "circle", "cyan"),
    ("red", "triangle", "gray"),
    ("blue", "star", "orange"),
    ("yellow", "circle", "purple"),
    ("green", "square", "pink"),
    ("purple", "cross", "white"),
    ("cyan", "square", "brown"),
]
# The backgrounds the held-out pairs are evaluated on.
HELD_OUT_PAIR_BACKGROUNDS = ["white", "black"]


def is_held_out(color: str, shape: str, background: str) -> bool:
    return (color, shape) in HELD_OUT_PAIRS or (color, shape, background) in HELD_OUT_TRIPLES


def eval_combinations() -> list[tuple[str, str, str]]:
    """The held-out (shape colour, shape, background) triples the evaluation generates."""
    combos = [(c, s, b) for (c, s) in HELD_OUT_PAIRS for b in HELD_OUT_PAIR_BACKGROUNDS]
    combos += HELD_OUT_TRIPLES
    return combos


def shape_polygon(shape: str, cx: float, cy: float, size: float) -> list[tuple[float, float]] | None:
    """Outline of a shape centred on (cx, cy) whose bounding box is about `size` wide; None for the circle."""
    r = size / 2
    if shape == "circle":
        return None
    if shape == "square":
        h = r * 0.88
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)]
    if shape == "star":
        pts = []
        for i in range(10):
            rad = r * 1.05 if i % 2 == 0 else r * 0.45
            a = -np.pi / 2 + i * np.pi / 5
            pts.append((cx + rad * np.cos(a), cy + 0.08 * r + rad * np.sin(a)))
        return pts
    if shape == "cross":
        t = r * 0.36
        return [
            (cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t),
            (cx + r, cy + t), (cx + t, cy + t), (cx + t, cy + r), (cx - t, cy + r),
            (cx - t, cy + t), (cx - r, cy + t), (cx - r, cy - t), (cx - t, cy - t),
        ]
    raise ValueError(shape)


def render(color, shape: str, background, cx: float, cy: float, size: float, side: int = SIZE) -> Image.Image:
    """Draws one antialiased image. Colours are names or RGB triples."""
    fg = COLORS[color] if isinstance(color, str) else tuple(color)
    bg = COLORS[background] if isinstance(background, str) else tuple(background)
    s = SUPERSAMPLE
    img = Image.new("RGB", (side * s, side * s), bg)
    draw = ImageDraw.Draw(img)
    poly = shape_polygon(shape, cx * s, cy * s, size * s)
    if poly is None:
        r = size * s / 2
        draw.ellipse([cx * s - r, cy * s - r, cx * s + r, cy * s + r], fill=fg)
    else:
        draw.polygon(poly, fill=fg)
    return img.resize((side, side), Image.BOX)


def shape_mask(shape: str, cx: float, cy: float, size: float, side: int = SIZE) -> np.ndarray:
    """Boolean mask of a shape, for the evaluation's template matching."""
    img = render("white", shape, "black", cx, cy, size, side)
    return np.asarray(img)[:, :, 0] > 127


def caption(rng: random.Random, color: str, shape: str, background: str, position: str | None, size: str | None) -> str:
    """A caption in natural phrasing. `position`/`size` None: the caption does not mention it."""
    size_word = rng.choice(SIZE_WORDS[size]) + " " if size else ""
    pos = " " + rng.choice(POSITION_PHRASES[position]) if position else ""
    templates = [
        f"a {size_word}{color} {shape}{pos} on a {background} background",
        f"a {background} background with a {size_word}{color} {shape}{pos}",
        f"{size_word}{color} {shape}{pos}, {background} background",
        f"a {size_word}{color} {shape} on a {background} background{',' if pos else ''}{pos}",
        f"a {size_word}{color} {shape}{pos} on {background}",
    ]
    return rng.choice(templates)


def eval_prompt(color: str, shape: str, background: str, position: str, size: str) -> str:
    """The evaluation's prompt for one combination (the first phrasing the generator uses)."""
    return f"a {size} {color} {shape} {POSITION_PHRASES[position][0]} on a {background} background"


def sample(rng: random.Random, train: bool = True) -> tuple[Image.Image, str, dict]:
    """One (image, caption, attributes) drawn from the training distribution (held-out combinations excluded)."""
    while True:
        color = rng.choice(list(COLORS))
        shape = rng.choice(SHAPES)
        background = rng.choice([b for b in BACKGROUNDS if b != color])
        if is_held_out(color, shape, background) == train:
            continue
        break
    # A caption leaves out the position 20% of the time (then the shape is centred)
    # and the size 25% of the time (then it is large).
    position = rng.choice(list(POSITIONS)) if rng.random() > 0.2 else None
    size = rng.choice(list(SIZES)) if rng.random() > 0.25 else None
    pos_name = position or "center"
    size_name = size or "large"
    cx, cy = POSITIONS[pos_name]
    px = SIZES[size_name]
    cx += rng.uniform(-2, 2)
    cy += rng.uniform(-2, 2)
    px += rng.uniform(-2, 2)
    img = render(color, shape, background, cx, cy, px)
    text = caption(rng, color, shape, background, position, size)
    attrs = dict(color=color, shape=shape, background=background, position=pos_name, size=size_name)
    return img, text, attrs


def generate(n: int, seed: int) -> tuple[np.ndarray, list[str], list[dict]]:
    """`n` training samples: uint8 images [n, 64, 64, 3], captions, attributes. Deterministic in `seed`."""
    rng = random.Random(seed)
    images = np.zeros((n, SIZE, SIZE, 3), dtype=np.uint8)
    captions, attrs = [], []
    for i in range(n):
        img, text, a = sample(rng)
        images[i] = np.asarray(img)
        captions.append(text)
        attrs.append(a)
    return images, captions, attrs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preview", help="write a grid of samples to this PNG and print their captions")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-n", type=int, default=16)
    args = ap.parse_args()
    images, captions, _ = generate(args.n, args.seed)
    for i, c in enumerate(captions):
        print(f"{i:3d} {c}")
    if args.preview:
        cols = 8
        rows = (args.n + cols - 1) // cols
        grid = Image.new("RGB", (cols * SIZE, rows * SIZE), (255, 255, 255))
        for i, im in enumerate(images):
            grid.paste(Image.fromarray(im), ((i % cols) * SIZE, (i // cols) * SIZE))
        grid.save(args.preview)
    print(f"{len(eval_combinations())} held-out combinations")


if __name__ == "__main__":
    main()
