"""Control maps as OpenCV computes them, for worker/src/preprocess.

A1111's ControlNet extension (and lllyasviel's annotator it took over)
computes the `canny` control map as `cv2.Canny(img, low, high)` on the RGB
uint8 array as it comes from PIL: three channels, R first, Sobel aperture 3,
L1 gradient. With a 3-channel input OpenCV takes, at each pixel, the channel
whose |dx| + |dy| is largest (the first one on ties), so the channel order
matters on ties: we keep R, G, B as A1111 does.

The 64x48 colour test image is built from an integer formula (`test_image`)
that worker/src/preprocess/reference_tests.rs rebuilds; its SHA-256 is
recorded so that the Rust test knows it fed the same pixels. Recorded:

- `canny`: `cv2.Canny` edge maps (rows of '0'/'1') for the colour image at
  several threshold pairs, and for its grey version (`cv2.COLOR_RGB2GRAY`).
- `grey_hex`: that grey image, value for value (the worker's `grey_601` must
  equal it), and `scribble`: grey < 128, the worker's scribble rule.
- `hwc3_hex`: lllyasviel's `HWC3` (RGBA composited over white in float32, then
  truncated to uint8) on a 16x16 RGBA image holding all 256 alpha values.

Each Canny map is computed with OpenCV's default threads, with one thread
(where the IPP path may run) and with optimisations off; the script stops if
they disagree. It also checks the fixed-point formula of RGB2GRAY on all
2^24 colours.

Run with the reference venv plus `opencv-python-headless==4.13.0.92`
(OpenCV 4.13.0) and numpy 2.4:

    python worker/tests/reference/canny_reference.py \
        > worker/tests/reference/canny_reference.json
"""

import hashlib
import json

import cv2
import numpy as np

W, H = 64, 48
COLOUR_CASES = [(100, 200), (50, 150), (20, 60), (0, 30)]
GREY_CASES = [(100, 200), (50, 150)]
SCRIBBLE_THRESHOLD = 128


def noise(x, y, c):
    """Pseudo-random texture in -8..=8 from a u32 hash of (x, y, channel)."""
    h = ((x * 73856093) & 0xFFFFFFFF) ^ ((y * 19349663) & 0xFFFFFFFF)
    h ^= (c * 83492791) & 0xFFFFFFFF
    return h % 17 - 8


def test_image():
    """The RGB test image: gradients, shapes (one touching the left border),
    a diagonal band and a little texture. Integer arithmetic only."""
    img = np.zeros((H, W, 3), dtype=np.uint8)
    for y in range(H):
        for x in range(W):
            rgb = [x * 4, y * 5, 128]
            if 8 <= x < 28 and 6 <= y < 20:
                rgb = [220, 40, 40]
            if (x - 44) ** 2 + (y - 30) ** 2 <= 121:
                rgb = [30, 200, 90]
            if x < 3 and 30 <= y < 40:
                rgb = [20, 20, 230]
            if abs(x - y - 5) <= 1:
                rgb = [250, 250, 250]
            for c in range(3):
                img[y, x, c] = min(255, max(0, rgb[c] + noise(x, y, c)))
    return img


def rgba_image():
    """16x16 RGBA: alpha = 16 * y + x (every value once), colour from a formula."""
    img = np.zeros((16, 16, 4), dtype=np.uint8)
    for y in range(16):
        for x in range(16):
            img[y, x] = [(x * 37 + y * 11) % 256, (x * 5 + y * 90) % 256, (x * y * 7) % 256, 16 * y + x]
    return img


def hwc3(x):
    """lllyasviel's annotator/util.py HWC3, for a 4-channel uint8 image."""
    color = x[:, :, 0:3].astype(np.float32)
    alpha = x[:, :, 3:4].astype(np.float32) / 255.0
    y = color * alpha + 255.0 * (1.0 - alpha)
    return y.clip(0, 255).astype(np.uint8)


def canny_every_way(img, low, high):
    """cv2.Canny three ways; they must agree."""
    results = []
    default_threads = cv2.getNumThreads()
    for threads, optimized in [(default_threads, True), (1, True), (default_threads, False)]:
        cv2.setNumThreads(threads)
        cv2.setUseOptimized(optimized)
        results.append(cv2.Canny(img, low, high))
    cv2.setNumThreads(default_threads)
    cv2.setUseOptimized(True)
    for r in results[1:]:
        assert np.array_equal(r, results[0]), "cv2.Canny differs between its code paths"
    assert set(np.unique(results[0])) <= {0, 255}
    return results[0]


def rows(binary):
    return ["".join("1" if v else "0" for v in row) for row in binary]


def check_grey_formula():
    """RGB2GRAY on 8 bits is (9798 R + 19235 G + 3735 B + 16384) >> 15."""
    v = np.arange(1 << 24, dtype=np.uint32)
    rgb = np.stack([(v >> 16) & 255, (v >> 8) & 255, v & 255], axis=1).astype(np.uint8)
    grey = cv2.cvtColor(rgb.reshape(4096, 4096, 3), cv2.COLOR_RGB2GRAY).reshape(-1)
    r, g, b = (rgb[:, i].astype(np.uint32) for i in range(3))
    ours = (9798 * r + 19235 * g + 3735 * b + 16384) >> 15
    assert np.array_equal(grey, ours.astype(np.uint8)), "RGB2GRAY formula differs"


def main():
    check_grey_formula()
    img = test_image()
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    cases = []
    for low, high in COLOUR_CASES:
        edges = canny_every_way(img, low, high)
        cases.append({"input": "colour", "low": low, "high": high, "rows": rows(edges > 0)})
    for low, high in GREY_CASES:
        edges = canny_every_way(grey, low, high)
        cases.append({"input": "grey", "low": low, "high": high, "rows": rows(edges > 0)})
    rgba = rgba_image()
    out = {
        "opencv": cv2.__version__,
        "width": W,
        "height": H,
        "image_sha256": hashlib.sha256(img.tobytes()).hexdigest(),
        "canny": cases,
        "grey_hex": grey.tobytes().hex(),
        "scribble_threshold": SCRIBBLE_THRESHOLD,
        "scribble": rows(grey < SCRIBBLE_THRESHOLD),
        "hwc3_rgba_sha256": hashlib.sha256(rgba.tobytes()).hexdigest(),
        "hwc3_hex": hwc3(rgba).tobytes().hex(),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
