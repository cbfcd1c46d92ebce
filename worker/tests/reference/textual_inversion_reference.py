"""Reference values for textual-inversion embeddings, computed by diffusers.

Run on the tiny models and embeddings the worker's own generators write:

    sd-worker generate-model --shape tiny --seed 7 --out /tmp/ti/tiny
    sd-worker generate-model --shape tiny-sdxl --seed 7 --out /tmp/ti/tiny-sdxl
    sd-worker generate-embedding --format a1111 --dims 32 --vectors 3 --seed 11 \
        --out /tmp/ti/tistyle.safetensors
    sd-worker generate-embedding --format sdxl --dims 32,48 --vectors 2 --seed 12 \
        --out /tmp/ti/tixl.safetensors
    python worker/tests/reference/textual_inversion_reference.py /tmp/ti \
        > worker/tests/reference/textual_inversion_reference.json

(torch, diffusers and transformers as pinned in training/requirements.txt.)
SD 1.x: `pipe.load_textual_inversion(file, token="tistyle")` (the A1111
`emb_params` layout, three vectors). SDXL: `load_textual_inversion` twice, the
file's `clip_l` with `text_encoder`/`tokenizer` and its `clip_g` with
`text_encoder_2`/`tokenizer_2`, as diffusers documents (two vectors each).
The pooled embedding is read at the end-of-text token (see `sdxl`: the
legacy-config argmax pooling of transformers would read it at the
embedding's last token). Recorded: `encode_prompt`'s prompt embeddings (and SDXL's pooled one) for a
prompt writing the name, and for the same prompt without the embedding
loaded (the name read as text), which the Rust test
(worker/src/model/embeddings_reference_tests.rs) uses to show that the
embedding moves the output by far more than the tolerance.
"""

import json
import sys

import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from safetensors.torch import load_file

SD_PROMPT = "a red circle tistyle on a blue background"
SDXL_PROMPT = "a red circle on a blue background, tixl"
STRIDE = 7


def sample(t: torch.Tensor) -> dict:
    flat = t.detach().double().flatten()
    return {
        "shape": list(t.shape),
        "stride": STRIDE,
        "values": flat[::STRIDE].tolist(),
        "mean": flat.mean().item(),
        "abs_mean": flat.abs().mean().item(),
    }


def sd(root: str) -> dict:
    pipe = StableDiffusionPipeline.from_pretrained(f"{root}/tiny", torch_dtype=torch.float32)
    with torch.no_grad():
        plain, _ = pipe.encode_prompt(SD_PROMPT, "cpu", 1, False)
        pipe.load_textual_inversion(f"{root}/tistyle.safetensors", token="tistyle")
        embedded, _ = pipe.encode_prompt(SD_PROMPT, "cpu", 1, False)
    return {
        "prompt": SD_PROMPT,
        "prompt_embeds": sample(embedded),
        "prompt_embeds_without": sample(plain),
    }


def sdxl(root: str) -> dict:
    pipe = StableDiffusionXLPipeline.from_pretrained(
        f"{root}/tiny-sdxl", torch_dtype=torch.float32
    )
    # The generated configs carry CLIP's legacy `eos_token_id: 2` (as SDXL
    # base 1.0's do), for which transformers pools at `input_ids.argmax()`:
    # with added tokens (ids past the vocabulary) that is the embedding's last
    # token, not the end-of-text token ("can't work correctly with extra new
    # tokens added", transformers' modeling_clip.py). A1111 and ComfyUI pool
    # at the end-of-text token, as transformers does with a corrected config:
    # we give the encoders the tokenizer's real eos id, which changes nothing
    # without the embedding.
    for encoder, tokenizer in [
        (pipe.text_encoder, pipe.tokenizer),
        (pipe.text_encoder_2, pipe.tokenizer_2),
    ]:
        getattr(encoder, "text_model", encoder).eos_token_id = tokenizer.eos_token_id
    with torch.no_grad():
        plain, _, plain_pooled, _ = pipe.encode_prompt(
            SDXL_PROMPT, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        state = load_file(f"{root}/tixl.safetensors")
        pipe.load_textual_inversion(
            state["clip_g"], token="tixl", text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2
        )
        pipe.load_textual_inversion(
            state["clip_l"], token="tixl", text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer
        )
        embedded, _, pooled, _ = pipe.encode_prompt(
            SDXL_PROMPT, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False
        )
    return {
        "prompt": SDXL_PROMPT,
        "prompt_embeds": sample(embedded),
        "pooled_prompt_embeds": sample(pooled),
        "prompt_embeds_without": sample(plain),
        "pooled_prompt_embeds_without": sample(plain_pooled),
    }


def main(root: str) -> None:
    torch.manual_seed(0)
    json.dump(
        {
            "sd": sd(root),
            "sdxl": sdxl(root),
            "versions": {
                "torch": torch.__version__,
                "diffusers": __import__("diffusers").__version__,
                "transformers": __import__("transformers").__version__,
            },
        },
        sys.stdout,
        indent=1,
    )


if __name__ == "__main__":
    main(sys.argv[1])
