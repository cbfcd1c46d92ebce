"""Reference weight deltas of tiny LyCORIS modules (LoHa, LoKr, LoCon Tucker).

    python worker/tests/reference/lycoris_reference.py > worker/tests/reference/lycoris_reference.json

(torch as pinned in training/requirements.txt, peft==0.21.2, lycoris-lora==4.1.3.)
worker/src/lora/lycoris_tests.rs builds the same modules with the worker's
generator (`lycoris::tiny_modules`) and compares `lycoris::delta` with the
deltas recorded here, value for value.

Each module's tensor j (in the order listed in CASES) is
0.6 sin((0.71 + 0.13 s) i + 0.37 s + 0.1), s = 10 case + j + 1, flat
row-major, computed in float64 and rounded to float32: the generator's
formula. The tensors are in the layout LyCORIS writes into the
`.safetensors` files users have (and A1111/ComfyUI read): LoHa `hada_w*_a`
[out, r], `hada_w*_b` [r, in*kh*kw], or with Tucker `hada_t*` [r, r, kh, kw],
`hada_w*_a` [r, out], `hada_w*_b` [r, in]; LoKr `lokr_w1` [a, c] or
`lokr_w1_a/b`, `lokr_w2` [b, d(, kh, kw)] or `lokr_w2_a` [b, r],
`lokr_w2_b` [r, d*kh*kw], or Tucker `lokr_t2` [r, r, kh, kw],
`lokr_w2_a` [r, b], `lokr_w2_b` [r, d].

LoHa and LoKr: the delta is PEFT's own merge. A torch Linear/Conv2d with a
wave base weight is wrapped by `LoHaModel`/`LoKrModel`, the adapter's
parameters are replaced by the module's tensors, and `merged - base` after
`merge_and_unload()` is recorded (all in float64, so the subtraction
loses nothing: the f32 inputs are exact in f64). PEFT scales by alpha/r always; the files
follow LyCORIS, where a LoKr with both factors full has scale 1 (LyCORIS
`lokr.py` forces alpha = lora_dim there, and A1111/ComfyUI divide by a rank
only when a low-rank factor exists), so PEFT's `scaling` is set to the files'
scale (alpha / rank of the low-rank factor, w2's first; 1 when none or no
alpha). Each delta is also checked here against an independent computation
by the loaders' formulas (ComfyUI `weight_adapter/{loha,lokr}.py`), in
float64: they agree to 1e-16, or 1e-9 where PEFT's LoHa rounds its scale to
a float32 tensor (`loader_formula_gap` in the JSON).

Every delta is also compared with lycoris-lora's own functional rebuild
(`lycoris.functional.{loha,lokr,locon}`, torch backend, given the files'
scale), the library that writes these files (`lycoris_gap` in the JSON).

DoRA (`dora_scale`): for three modules, the delta W' - W with
W' = lycoris.functional.general.weight_decompose(W + delta, dora_scale, 1,
wd_on_out) (base W = wave(seed 99), dora_scale = |wave(seed 77)| + 0.5),
per output row and per input column (`dora_cases`).

LoCon Tucker (`lora_mid`, no PEFT equivalent): the delta is
sum_ab up[o,a] mid[a,b,k,l] down[b,i] * alpha/r, checked here against the
LyCORIS module's forward (conv 1x1 down, conv kxk mid, conv 1x1 up) on an
input: conv2d(x, delta) must equal scale * up(mid(down(x))).
"""

import json
import math

import torch
import torch.nn.functional as F
from lycoris.functional import locon as ly_locon
from lycoris.functional import loha as ly_loha
from lycoris.functional import lokr as ly_lokr
from lycoris.functional.general import weight_decompose
from peft import LoHaConfig, LoKrConfig, get_peft_model

CASES = [
    ("loha_linear", [12, 10], 2.0, [
        ("hada_w1_a", [12, 3]), ("hada_w1_b", [3, 10]),
        ("hada_w2_a", [12, 3]), ("hada_w2_b", [3, 10])]),
    ("loha_conv", [6, 4, 3, 3], 1.0, [
        ("hada_w1_a", [6, 2]), ("hada_w1_b", [2, 36]),
        ("hada_w2_a", [6, 2]), ("hada_w2_b", [2, 36])]),
    ("loha_conv_tucker", [6, 4, 3, 3], 5.0, [
        ("hada_t1", [3, 3, 3, 3]), ("hada_w1_a", [3, 6]), ("hada_w1_b", [3, 4]),
        ("hada_t2", [3, 3, 3, 3]), ("hada_w2_a", [3, 6]), ("hada_w2_b", [3, 4])]),
    ("lokr_linear", [12, 10], 3.0, [
        ("lokr_w1", [3, 2]), ("lokr_w2_a", [4, 2]), ("lokr_w2_b", [2, 5])]),
    ("lokr_linear_both_low_rank", [12, 10], 0.5, [
        ("lokr_w1_a", [3, 1]), ("lokr_w1_b", [1, 2]),
        ("lokr_w2_a", [4, 1]), ("lokr_w2_b", [1, 5])]),
    ("lokr_linear_full", [12, 10], 7.0, [("lokr_w1", [3, 2]), ("lokr_w2", [4, 5])]),
    ("lokr_conv", [6, 4, 3, 3], 3.0, [
        ("lokr_w1", [2, 2]), ("lokr_w2_a", [3, 2]), ("lokr_w2_b", [2, 18])]),
    ("lokr_conv_tucker", [6, 4, 3, 3], 1.5, [
        ("lokr_w1", [2, 2]), ("lokr_t2", [2, 2, 3, 3]),
        ("lokr_w2_a", [2, 3]), ("lokr_w2_b", [2, 2])]),
    ("lokr_conv_full", [6, 4, 3, 3], None, [("lokr_w1", [2, 2]), ("lokr_w2", [3, 2, 3, 3])]),
    ("locon_tucker", [6, 4, 3, 3], 3.0, [
        ("lora_up", [6, 2, 1, 1]), ("lora_mid", [2, 2, 3, 3]), ("lora_down", [2, 4, 1, 1])]),
]

LOHA = ["hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"]
LOKR = ["lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"]


def wave(shape, seed: int) -> torch.Tensor:
    n = math.prod(shape)
    i = torch.arange(n, dtype=torch.float64)
    return (0.6 * torch.sin((0.71 + 0.13 * seed) * i + 0.37 * seed + 0.1)).float().reshape(shape)


def rank_of(t: dict) -> int | None:
    """The rank the files' scale divides by (LoKr: w2's product first)."""
    for b in ("hada_w1_b", "lokr_w2_b", "lokr_w1_b", "lora_down"):
        if b in t:
            return t[b].shape[0]
    return None


def tucker(t, wa, wb):
    # m[p, q, k, l] = sum_ij t[i, j, k, l] wa[i, p] wb[j, q]
    return torch.einsum("ijkl,ip,jq->pqkl", t.double(), wa.double(), wb.double())


def loader_delta(t: dict, shape) -> torch.Tensor:
    """The loaders' formula (ComfyUI weight_adapter), in float64."""
    d = {k: v.double() for k, v in t.items()}
    if "hada_w1_a" in d:
        if "hada_t1" in d:
            m1 = tucker(d["hada_t1"], d["hada_w1_a"], d["hada_w1_b"])
            m2 = tucker(d["hada_t2"], d["hada_w2_a"], d["hada_w2_b"])
        else:
            m1, m2 = d["hada_w1_a"] @ d["hada_w1_b"], d["hada_w2_a"] @ d["hada_w2_b"]
        return (m1 * m2).reshape(shape)
    w1 = d["lokr_w1"] if "lokr_w1" in d else d["lokr_w1_a"] @ d["lokr_w1_b"]
    if "lokr_w2" in d:
        w2 = d["lokr_w2"]
    elif "lokr_t2" in d:
        w2 = tucker(d["lokr_t2"], d["lokr_w2_a"], d["lokr_w2_b"])
    else:
        w2 = d["lokr_w2_a"] @ d["lokr_w2_b"]
    if w2.dim() == 4:
        w1 = w1[:, :, None, None]
    return torch.kron(w1, w2.contiguous()).reshape(shape)


class Wrap(torch.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer


def base_layer(shape) -> torch.nn.Module:
    if len(shape) == 2:
        layer = torch.nn.Linear(shape[1], shape[0], bias=False)
    else:
        layer = torch.nn.Conv2d(shape[1], shape[0], shape[2:], padding=1, bias=False)
    layer = layer.double()
    with torch.no_grad():
        layer.weight.copy_(wave(shape, 99))
    return layer


def peft_delta(name, shape, t: dict, scale: float) -> torch.Tensor:
    base = base_layer(shape)
    w0 = base.weight.detach().clone()
    r = rank_of(t) or 1
    tuck = "hada_t1" in t or "lokr_t2" in t
    if name.startswith("loha"):
        cfg = LoHaConfig(r=r, alpha=r, target_modules=["layer"], init_weights=False,
                         use_effective_conv2d=tuck)
        names = LOHA
    else:
        cfg = LoKrConfig(r=r, alpha=r, target_modules=["layer"], init_weights=False,
                         use_effective_conv2d=tuck)
        names = LOKR
    model = get_peft_model(Wrap(base), cfg)
    layer = model.base_model.model.layer
    for n in names:  # the module's own structure replaces PEFT's choice
        pd = getattr(layer, n)
        if "default" in pd:
            del pd["default"]
        if n in t:
            pd["default"] = torch.nn.Parameter(t[n].double())
    layer.scaling["default"] = scale
    merged = model.merge_and_unload().layer.weight.detach()
    return merged - w0


def locon_delta(t: dict, shape, scale: float) -> torch.Tensor:
    up, mid, down = t["lora_up"], t["lora_mid"], t["lora_down"]
    delta = torch.einsum("oa,abkl,bi->oikl", up.flatten(1).double(), mid.double(),
                         down.flatten(1).double()) * scale
    x = wave([2, shape[1], 7, 5], 98).double()
    chained = F.conv2d(F.conv2d(F.conv2d(x, down.double()), mid.double(), padding=1), up.double())
    direct = F.conv2d(x, delta, padding=1)
    gap = (direct - scale * chained).abs().max().item()
    assert gap < 1e-9, f"locon_tucker: the composed weight is off the module's forward by {gap}"
    return delta


def lycoris_delta(name, shape, t: dict, scale: float) -> torch.Tensor:
    d = {k: v.double() for k, v in t.items()}
    g = d.get
    if name.startswith("loha"):
        out = ly_loha.diff_weight(g("hada_w1_b"), g("hada_w1_a"), g("hada_w2_b"), g("hada_w2_a"),
                                  g("hada_t1"), g("hada_t2"), gamma=scale, backend="torch")
    elif name.startswith("lokr"):
        out = ly_lokr.kron_weight(g("lokr_w1"), g("lokr_w1_a"), g("lokr_w1_b"), g("lokr_w2"),
                                  g("lokr_w2_a"), g("lokr_w2_b"), g("lokr_t2"), scale=scale,
                                  backend="torch")
    else:
        out = ly_locon.diff_weight(g("lora_down"), g("lora_up"), g("lora_mid"), gamma=scale,
                                   backend="torch")
    return out.reshape(shape)


DORA = [("loha_linear", True), ("lokr_conv", False), ("locon_tucker", True)]


def dora_case(name: str, on_out: bool, shape, delta: torch.Tensor) -> dict:
    w = wave(shape, 99).double()
    ds_shape = [shape[0]] + [1] * (len(shape) - 1) if on_out else [1, shape[1]] + [1] * (len(shape) - 2)
    ds = wave(ds_shape, 77).abs() + 0.5
    merged = weight_decompose(w + delta, ds.double(), 1, on_out, backend="torch")
    return {
        "module": name,
        "base": w.flatten().tolist(),
        "dora_scale": {"shape": ds_shape, "values": ds.double().flatten().tolist()},
        "delta": (merged - w).flatten().tolist(),
    }


def main() -> None:
    cases, dora_cases = [], []
    for ci, (name, shape, alpha, layout) in enumerate(CASES):
        t = {n: wave(s, 10 * ci + j + 1) for j, (n, s) in enumerate(layout)}
        rank = rank_of(t)
        low_rank = any(k.endswith(("_a", "_b")) or k in ("lokr_t2", "lora_down") for k in t)
        scale = alpha / rank if alpha is not None and low_rank else 1.0
        if name.startswith("locon"):
            delta = locon_delta(t, shape, scale)
            check = None
        else:
            delta = peft_delta(name, shape, t, scale).double()
            check = (loader_delta(t, shape) * scale - delta).abs().max().item()
            assert check < 1e-7, f"{name}: PEFT and the loaders' formula differ by {check}"
        ly = lycoris_delta(name, shape, t, scale)
        lycoris_gap = (ly - delta).abs().max().item()
        assert lycoris_gap < 1e-7, f"{name}: lycoris-lora differs by {lycoris_gap}"
        for dname, on_out in DORA:
            if dname == name:
                dora_cases.append(dora_case(name, on_out, shape, ly))
        cases.append({
            "name": name,
            "target_shape": shape,
            "alpha": alpha,
            "scale": scale,
            "tensors": {n: {"shape": list(v.shape), "values": v.flatten().tolist()} for n, v in t.items()},
            "delta": delta.flatten().tolist(),
            "loader_formula_gap": check,
            "lycoris_gap": lycoris_gap,
        })
    json.dump({"peft": "0.21.2", "lycoris-lora": "4.1.3", "torch": torch.__version__,
               "cases": cases, "dora_cases": dora_cases}, __import__("sys").stdout)


if __name__ == "__main__":
    main()
