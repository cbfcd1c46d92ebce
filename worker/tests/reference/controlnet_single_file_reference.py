"""Reference conversion of single-file (LDM-layout) ControlNets, by diffusers.

The inputs are tiny ControlNets the worker writes deterministically: the
UNet-shared part of the project's generated tiny UNets (seeds 21 and 22) plus
seeded hint-encoder and zero convolutions, in the original ControlNet
repository's layout (`control_model.` + `time_embed`, SDXL's `label_emb`,
`input_blocks`, `middle_block`, `input_hint_block.{0..14}`, `zero_convs`,
`middle_block_out`), and each one's diffusers `config.json`:

    mkdir -p /tmp/cn-fixtures
    SD_WORKER_CONTROLNET_FIXTURES=/tmp/cn-fixtures cargo test -p sd-worker --lib \\
        write_controlnet_single_file_fixtures -- --ignored
    python worker/tests/reference/controlnet_single_file_reference.py /tmp/cn-fixtures \\
        > worker/tests/reference/controlnet_single_file_reference.json

Cases: `sd15` (SD 1.x-shaped), `sdxl` (SDXL-shaped: `label_emb`, linear
projections, 256-wide time ids) and `sd15_no_prefix` (the `sd15` file without
the `control_model.` prefix). Each is loaded offline with
`ControlNetModel.from_single_file(file, config=<folder with config.json>,
local_files_only=True)` (diffusers 0.42.1, torch 2.11 CPU), which renames the
tensors with `convert_controlnet_checkpoint`; for every tensor it converts we
record shape, the SHA-256 of its f32 values, sum, sum of v[i] * (i % 7 + 1) (both in f64) and four sampled
values (with their f32 bits), after checking the loaded model holds exactly those
values. `missing_in_diffusers` lists the model's tensors the converter leaves
out: diffusers 0.42.1 does not map SDXL's `label_emb` (its controlnet mapping
has no `add_embedding`), so `from_single_file` leaves `add_embedding` at its
random initialisation without a warning; the worker maps it like a full
checkpoint's UNet (`label_emb.0.{0,2}` -> `add_embedding.linear_{1,2}`).
`config` holds the loaded model's config fields that matter, which the
worker's shape inference must reproduce; `diffusers_model_type` is what
diffusers' `infer_diffusers_model_type` guesses from the keys (informative:
`controlnet`, SD 1.5's, even for the LDM SDXL file, and `v1`, a full SD 1.5
checkpoint, for the file without prefix; hence `config=`).
worker/src/model/single_file/controlnet_tests.rs
(`conversion_matches_diffusers_from_single_file`) writes the same files,
checks their SHA-256 against `fixture_sha256`, converts them and compares.
"""

import hashlib
import json
import struct
import sys
from pathlib import Path

import diffusers
import torch
from diffusers import ControlNetModel
from diffusers.loaders.single_file_utils import (
    convert_controlnet_checkpoint,
    infer_diffusers_model_type,
)
from safetensors.torch import load_file

CASES = ["sd15", "sdxl", "sd15_no_prefix"]
CONFIG_FIELDS = [
    "in_channels",
    "conditioning_channels",
    "conditioning_embedding_out_channels",
    "block_out_channels",
    "down_block_types",
    "mid_block_type",
    "layers_per_block",
    "cross_attention_dim",
    "attention_head_dim",
    "num_attention_heads",
    "transformer_layers_per_block",
    "use_linear_projection",
    "upcast_attention",
    "only_cross_attention",
    "addition_embed_type",
    "addition_time_embed_dim",
    "projection_class_embeddings_input_dim",
    "class_embed_type",
    "flip_sin_to_cos",
    "freq_shift",
    "norm_num_groups",
    "norm_eps",
    "act_fn",
    "downsample_padding",
    "mid_block_scale_factor",
    "resnet_time_scale_shift",
    "controlnet_conditioning_channel_order",
    "global_pool_conditions",
]


def stats(t: torch.Tensor) -> dict:
    v = t.detach().flatten().double()
    n = v.numel()
    weights = (torch.arange(n) % 7 + 1).double()
    picks = sorted({0, n // 3, n // 2, n - 1})
    flat = t.detach().flatten().float()
    return {
        "shape": list(t.shape),
        # Of the little-endian f32 values, row-major: the bit-exact check.
        "sha256": hashlib.sha256(flat.numpy().astype("<f4").tobytes()).hexdigest(),
        "sum": v.sum().item(),
        "weighted": (v * weights).sum().item(),
        # [index, value, its f32 bits] (JSON parsers may round the decimal).
        "samples": [[i, flat[i].item(), struct.unpack("<I", struct.pack("<f", flat[i].item()))[0]] for i in picks],
    }


def case(root: Path, name: str) -> dict:
    file = root / f"{name}.safetensors"
    model = ControlNetModel.from_single_file(
        str(file), config=str(root / name), local_files_only=True
    )
    loaded = model.state_dict()
    checkpoint = load_file(str(file))
    converted = convert_controlnet_checkpoint(checkpoint, dict(model.config))
    assert set(converted) <= set(loaded), set(converted) - set(loaded)
    for key, t in converted.items():
        assert torch.equal(loaded[key], t), key
    config = {}
    for field in CONFIG_FIELDS:
        value = model.config[field]
        config[field] = list(value) if isinstance(value, tuple) else value
    return {
        "name": name,
        "fixture_sha256": hashlib.sha256(file.read_bytes()).hexdigest(),
        "diffusers_model_type": infer_diffusers_model_type(checkpoint),
        "config": config,
        "missing_in_diffusers": sorted(set(loaded) - set(converted)),
        "tensors": {k: stats(converted[k]) for k in sorted(converted)},
    }


def main() -> None:
    root = Path(sys.argv[1])
    out = {
        "diffusers_version": diffusers.__version__,
        "torch_version": torch.__version__,
        "cases": [case(root, name) for name in CASES],
    }
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
