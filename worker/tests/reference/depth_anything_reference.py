"""Reference values for the `depth` preprocessor (Depth Anything V2), by transformers.

Run on the tiny model the worker's own generator writes:

    SD_WORKER_TINY_DEPTH_OUT=/tmp/tiny-depth cargo test -p sd-worker --lib \
        write_tiny_depth_model_for_the_reference -- --ignored
    python worker/tests/reference/depth_anything_reference.py /tmp/tiny-depth \
        > worker/tests/reference/depth_anything_reference.json

(torch 2.11, transformers 5.17, opencv-python 4.13, numpy, safetensors, as
in the project's reference venv.) worker/src/preprocess/depth_reference_tests.rs
writes the same model (seed 7) and compares.

The network is transformers' `DepthAnythingForDepthEstimation` built from the
tiny `config.json`, with the tiny `model.safetensors` (original Depth Anything
V2 key names) renamed to transformers' names by `to_hf` below and loaded
strictly. The preprocessing is not transformers' image processor but the
original repository's `DepthAnythingV2.image2tensor` / `infer_image`,
reproduced exactly: `Resize(518, 518, keep_aspect_ratio=True,
ensure_multiple_of=14, resize_method="lower_bound",
image_interpolation_method=cv2.INTER_CUBIC)` on the RGB image / 255 (f64),
ImageNet normalisation, f32; the depth back to the image size by
`F.interpolate(bilinear, align_corners=True)`; then run.py's
`((d - min) / (max - min) * 255).astype(np.uint8)`.

Inputs, easily reproduced: the image is 45 x 31 (w x h) RGB with
pixel(x, y, c) = (37 x + 23 y + 91 c + 3 ((x y) mod 29)) mod 256; the
network-only case is a [1, 3, 28, 42] tensor with x[i] = sin(0.1 i) (flat).
Sampled arrays are the flattened values at indices 0, stride, 2 stride, ...
"""

import json
import math
import sys

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

W, H = 45, 31
NET_CASE = (28, 42)
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def image() -> np.ndarray:
    y, x, c = np.meshgrid(np.arange(H), np.arange(W), np.arange(3), indexing="ij")
    return ((37 * x + 23 * y + 91 * c + 3 * ((x * y) % 29)) % 256).astype(np.uint8)


def to_hf(key: str, cfg) -> list[tuple[str, str, int | None]]:
    """Original Depth Anything V2 key -> [(transformers key, original key, qkv part)]."""
    p = key.split(".")
    if key == "pretrained.cls_token":
        return [("backbone.embeddings.cls_token", key, None)]
    if key == "pretrained.mask_token":
        return [("backbone.embeddings.mask_token", key, None)]
    if key == "pretrained.pos_embed":
        return [("backbone.embeddings.position_embeddings", key, None)]
    if key.startswith("pretrained.patch_embed.proj."):
        return [("backbone.embeddings.patch_embeddings.projection." + p[-1], key, None)]
    if key.startswith("pretrained.norm."):
        return [("backbone.layernorm." + p[-1], key, None)]
    if key.startswith("pretrained.blocks."):
        b = f"backbone.encoder.layer.{p[2]}."
        rest = ".".join(p[3:])
        if rest.startswith("attn.qkv."):
            return [(f"{b}attention.attention.{n}.{p[-1]}", key, j) for j, n in enumerate(["query", "key", "value"])]
        names = {"attn.proj": "attention.output.dense", "ls1.gamma": "layer_scale1.lambda1",
                 "ls2.gamma": "layer_scale2.lambda1"}
        for o, n in names.items():
            if rest.startswith(o):
                return [(b + n + rest[len(o):], key, None)]
        return [(b + rest, key, None)]  # norm1, norm2, mlp.fc1, mlp.fc2
    if key.startswith("depth_head.projects."):
        return [(f"neck.reassemble_stage.layers.{p[2]}.projection.{p[-1]}", key, None)]
    if key.startswith("depth_head.resize_layers."):
        return [(f"neck.reassemble_stage.layers.{p[2]}.resize.{p[-1]}", key, None)]
    s = p[2]
    if s.startswith("layer") and s.endswith("_rn"):
        return [(f"neck.convs.{int(s[5]) - 1}.{p[-1]}", key, None)]
    if s.startswith("refinenet"):
        j = 4 - int(s[-1])
        base = f"neck.fusion_stage.layers.{j}."
        if p[3] == "out_conv":
            return [(base + "projection." + p[-1], key, None)]
        u, c = p[3][-1], p[4][-1]
        return [(f"{base}residual_layer{u}.convolution{c}.{p[-1]}", key, None)]
    head = {"output_conv1": "conv1", "output_conv2.0": "conv2", "output_conv2.2": "conv3"}
    return [(f"head.{head['.'.join(p[2:-1])]}.{p[-1]}", key, None)]


def load(model_dir: str):
    raw = json.load(open(f"{model_dir}/config.json"))
    bb = dict(raw["backbone_config"])
    bb.pop("model_type")
    cfg = DepthAnythingConfig(
        backbone_config=Dinov2Config(**bb),
        patch_size=raw["patch_size"],
        reassemble_hidden_size=raw["reassemble_hidden_size"],
        reassemble_factors=raw["reassemble_factors"],
        neck_hidden_sizes=raw["neck_hidden_sizes"],
        fusion_hidden_size=raw["fusion_hidden_size"],
        head_in_index=raw["head_in_index"],
        head_hidden_size=raw["head_hidden_size"],
        depth_estimation_type=raw["depth_estimation_type"],
    )
    model = DepthAnythingForDepthEstimation(cfg).eval()
    original = load_file(f"{model_dir}/model.safetensors")
    d = cfg.backbone_config.hidden_size
    state, mapping = {}, []
    for key, t in original.items():
        for hf, orig, part in to_hf(key, cfg):
            state[hf] = t if part is None else t[part * d:(part + 1) * d]
            mapping.append([hf, orig, part])
    model.load_state_dict(state, strict=True)
    return model, sorted(mapping)


def constrain(x: float, min_val: float) -> int:
    y = np.round(x / 14) * 14
    if y < min_val:
        y = math.ceil(x / 14) * 14
    return int(y)


def network_size(w: int, h: int) -> tuple[int, int]:
    sh, sw = 518 / h, 518 / w
    if sw > sh:
        sh = sw
    else:
        sw = sh
    return constrain(sw * w, 518), constrain(sh * h, 518)


def sample(a, n: int = 1200) -> dict:
    flat = np.asarray(a, dtype=np.float64).reshape(-1)
    stride = max(1, len(flat) // n)
    return {"stride": stride, "values": flat[::stride].tolist()}


def main(model_dir: str) -> None:
    torch.manual_seed(0)
    model, mapping = load(model_dir)
    rgb = image()
    nw, nh = network_size(W, H)
    x = cv2.resize(rgb / 255.0, (nw, nh), interpolation=cv2.INTER_CUBIC)
    x = ((x - MEAN) / STD).transpose(2, 0, 1).astype(np.float32)
    with torch.no_grad():
        depth = model(torch.from_numpy(x)[None]).predicted_depth
        resized = F.interpolate(depth[:, None], (H, W), mode="bilinear", align_corners=True)[0, 0].numpy()
        nh2, nw2 = NET_CASE
        wave = torch.sin(torch.arange(3 * nh2 * nw2, dtype=torch.float64) * 0.1).float().reshape(1, 3, nh2, nw2)
        net_only = model(wave).predicted_depth
    mapped = ((resized - resized.min()) / (resized.max() - resized.min()) * 255.0).astype(np.uint8)
    out = {
        "image": [W, H],
        "network_size": [nw, nh],
        "input": sample(x),
        "network_depth": sample(depth.numpy()),
        "depth": sample(resized),
        "map": mapped.reshape(-1).tolist(),
        "net_only": {"shape": list(NET_CASE), **sample(net_only.numpy())},
        "hf_keys": mapping,
    }
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main(sys.argv[1])
