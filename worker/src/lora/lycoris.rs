//! LyCORIS weight deltas: LoHa (`hada_*`), LoKr (`lokr_*`) and LoCon's
//! Tucker middle factor (`lora_mid`), as pure functions from one module's
//! tensors to the f32 delta to add to its weight.
//!
//! The maths follows the reference implementations the files in the wild are
//! written for (LyCORIS itself, `lycoris/modules/{loha,lokr,locon}.py`, and the
//! loaders that apply them: ComfyUI's `comfy/weight_adapter/{loha,lokr,lora}.py`,
//! A1111's `extensions-builtin/Lora/network_{hada,lokr}.py`); parity is tested
//! against PEFT 0.21.2's `LoHaModel`/`LoKrModel` merges and lycoris-lora
//! 4.1.3's own rebuilds (`tests/reference/lycoris_reference.py`). One convention differs between
//! them and we follow the files: a LoKr with both Kronecker factors stored in
//! full is not scaled by `alpha / rank` (LyCORIS forces its scale to 1 there
//! and the loaders have no rank to divide by), where PEFT would still apply
//! its `alpha / r`.
//!
//! Key suffixes (what follows the module name in a kohya/LyCORIS
//! `.safetensors`, e.g. `lora_unet_..._proj_in.hada_w1_a`) are listed in
//! [`LYCORIS_SUFFIXES`]. `dora_scale` (DoRA weight decomposition) needs the
//! base weight: [`delta_with_base`] / [`dora_delta`]; [`delta`] refuses it
//! with an error rather than silently ignoring it.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};

/// Every key suffix this module reads (plus `alpha`, shared with plain LoRA).
pub const LYCORIS_SUFFIXES: &[&str] = &[
    "hada_w1_a",
    "hada_w1_b",
    "hada_w2_a",
    "hada_w2_b",
    "hada_t1",
    "hada_t2",
    "lokr_w1",
    "lokr_w1_a",
    "lokr_w1_b",
    "lokr_w2",
    "lokr_w2_a",
    "lokr_w2_b",
    "lokr_t2",
    "lora_mid",
    "dora_scale",
];

/// One module's tensors, keyed by the suffix after the module name in the
/// file (`hada_w1_a`, `lokr_w2`, `lora_up`, `alpha`, …), in any float dtype;
/// `alpha` is a one-element tensor (0-d as kohya and LyCORIS write it).
#[derive(Debug, Clone, Default)]
pub struct ModuleTensors {
    tensors: HashMap<String, Tensor>,
}

impl ModuleTensors {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the tensor stored under `suffix`.
    pub fn insert(&mut self, suffix: impl Into<String>, tensor: Tensor) {
        self.tensors.insert(suffix.into(), tensor);
    }

    /// The tensor stored under `suffix`, if any.
    pub fn get(&self, suffix: &str) -> Option<&Tensor> {
        self.tensors.get(suffix)
    }

    /// The suffixes present, in no particular order.
    pub fn suffixes(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// How many tensors the set holds.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    fn f32(&self, suffix: &str) -> Result<Option<Tensor>> {
        self.get(suffix)
            .map(|t| {
                t.to_dtype(DType::F32)
                    .with_context(|| format!("`{suffix}` to f32"))
            })
            .transpose()
    }

    fn require(&self, suffix: &str, algo: &str) -> Result<Tensor> {
        self.f32(suffix)?
            .with_context(|| format!("{algo} module lacks `{suffix}`"))
    }

    /// `alpha` as a number, when present; an error when it holds other than
    /// one element.
    pub fn alpha(&self) -> Result<Option<f64>> {
        let Some(t) = self.f32("alpha")? else {
            return Ok(None);
        };
        let v = t.flatten_all()?.to_vec1::<f32>()?;
        match v.as_slice() {
            [a] => Ok(Some(*a as f64)),
            _ => bail!("`alpha` must hold one value, it holds {}", v.len()),
        }
    }
}

impl From<HashMap<String, Tensor>> for ModuleTensors {
    fn from(tensors: HashMap<String, Tensor>) -> Self {
        Self { tensors }
    }
}

/// Which LyCORIS algorithm a module's tensors use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LycorisKind {
    /// Hadamard product of two low-rank products (`hada_*`).
    LoHa,
    /// Kronecker product of two factors, each full or low-rank (`lokr_*`).
    LoKr,
    /// LoRA/LoCon with a Tucker middle factor (`lora_up`, `lora_mid`, `lora_down`).
    LoConTucker,
}

/// The algorithm `tensors` belong to, or `None` for anything else (plain
/// LoRA/LoCon without `lora_mid` included: that is the LoRA core's).
pub fn kind(tensors: &ModuleTensors) -> Option<LycorisKind> {
    if tensors.suffixes().any(|s| s.starts_with("hada_")) {
        Some(LycorisKind::LoHa)
    } else if tensors.suffixes().any(|s| s.starts_with("lokr_")) {
        Some(LycorisKind::LoKr)
    } else if tensors.get("lora_mid").is_some() {
        Some(LycorisKind::LoConTucker)
    } else {
        None
    }
}

/// The weight delta one LyCORIS module adds to its target weight:
/// `multiplier · scale · Δ`, in f32, shaped `target_shape` (`[out, in]` for a
/// linear weight, `[out, in, kh, kw]` for a conv), on the tensors' device.
///
/// `Δ` and `scale` by algorithm (`r` the rank, `scale = alpha / r`, or 1 when
/// `alpha` is absent):
/// - LoHa: `Δ = (w1_a·w1_b) ⊙ (w2_a·w2_b)`, `r = rows of hada_w1_b`; with
///   `hada_t1/t2` (conv Tucker form, `w_a: [r, out]`, `w_b: [r, in]`,
///   `t: [r, r, kh, kw]`) each product is
///   `m[p,q,k,l] = Σ_ij t[i,j,k,l]·w_a[i,p]·w_b[j,q]`
///   (LyCORIS `loha.py`/`functional/loha.py`, ComfyUI `loha.py`).
/// - LoKr: `Δ = kron(w1, w2)`, each factor stored full (`lokr_w1`) or as a
///   product (`lokr_w1_a·lokr_w1_b`; `lokr_w2` may be Tucker with
///   `lokr_t2`); a 4-d `w2` makes `w1` `[a, b, 1, 1]`. `r` is the rank of
///   the low-rank factor (`w2`'s when both are); when both factors are full
///   the scale is 1 whatever `alpha` says (LyCORIS `lokr.py`, ComfyUI
///   `lokr.py`).
/// - LoCon Tucker: `Δ[o,i,k,l] = Σ_ab up[o,a]·mid[a,b,k,l]·down[b,i]`,
///   `r = rows of lora_down` (LyCORIS `locon.py`, ComfyUI `lora.py`).
///
/// Returns `Ok(None)` when the tensors are not LyCORIS ones (see [`kind`]).
/// Errors name the inconsistent tensor: a missing factor, inner dimensions
/// that do not match, a product whose element count differs from the
/// target's, a `dora_scale` (DoRA needs the base weight: [`delta_with_base`]).
pub fn delta(
    tensors: &ModuleTensors,
    target_shape: &[usize],
    multiplier: f64,
) -> Result<Option<Tensor>> {
    let Some(kind) = kind(tensors) else {
        return Ok(None);
    };
    if tensors.get("dora_scale").is_some() {
        bail!("{kind:?} module has `dora_scale` (DoRA): its delta needs the base weight (`delta_with_base`)");
    }
    scaled_delta(tensors, kind, target_shape, multiplier).map(Some)
}

/// [`delta`] for a module that may carry `dora_scale` (LyCORIS's DoRA
/// "weight decomposition", DoHa/DoKr/DoRA), which needs the base weight
/// `base` (any float dtype, the target's shape). Without `dora_scale` this is
/// [`delta`] on `base`'s shape; with it, see [`dora_delta`].
pub fn delta_with_base(
    tensors: &ModuleTensors,
    base: &Tensor,
    multiplier: f64,
) -> Result<Option<Tensor>> {
    let Some(kind) = kind(tensors) else {
        return Ok(None);
    };
    let Some(dora_scale) = tensors.get("dora_scale") else {
        return scaled_delta(tensors, kind, base.dims(), multiplier).map(Some);
    };
    let full = scaled_delta(tensors, kind, base.dims(), 1.0)?;
    dora_delta(base, &full, dora_scale, multiplier).map(Some)
}

/// The DoRA delta `m · (W' − W)`, `W' = (W + Δ) · dora_scale / (‖W + Δ‖ + ε)`,
/// for base weight `W`, the module's delta `Δ` at multiplier 1 (scale
/// included) and `ε` f32's epsilon, in f32 shaped like `W`. The norm runs
/// per output row when `dora_scale` is `[out, 1, …]` (LyCORIS's `wd_on_out`,
/// its default) and per input column when it is `[1, in, …]` (older files):
/// LyCORIS `functional/general.py` `weight_decompose` at multiplier 1.
/// Other multipliers scale the change linearly, as ComfyUI
/// (`weight_adapter/base.py` `weight_decompose`) and A1111 do, so that 0
/// gives no change (LyCORIS's own module interpolates the rescale factor
/// instead, which does not). ComfyUI differs on the output axis, where it
/// takes the norm of `W` rather than of `W + Δ`; we follow LyCORIS, whose
/// training defines the files. Usable for plain LoRA + DoRA too.
///
/// Errors: `Δ` not shaped like `W`, `dora_scale` fitting neither axis.
pub fn dora_delta(
    base: &Tensor,
    delta: &Tensor,
    dora_scale: &Tensor,
    multiplier: f64,
) -> Result<Tensor> {
    let w = base.to_dtype(DType::F32)?;
    let dims = w.dims().to_vec();
    if delta.dims() != dims.as_slice() || dims.len() < 2 {
        bail!(
            "DoRA: delta {:?} does not fit the base weight {:?}",
            delta.dims(),
            dims
        );
    }
    let d = dora_scale.to_dtype(DType::F32)?;
    let (out, inp) = (dims[0], dims[1]);
    let merged = (&w + delta.to_dtype(DType::F32)?)?;
    let on_axis = |axis: usize| {
        d.rank() == dims.len()
            && d.dims()
                .iter()
                .enumerate()
                .all(|(i, &n)| n == if i == axis { dims[axis] } else { 1 })
    };
    let mut shape = vec![1usize; dims.len()];
    let norm = if on_axis(0) {
        shape[0] = out;
        merged.reshape((out, ()))?.sqr()?.sum_keepdim(1)?
    } else if on_axis(1) {
        shape[1] = inp;
        let t = merged.transpose(0, 1)?.contiguous()?;
        t.reshape((inp, ()))?.sqr()?.sum_keepdim(1)?
    } else {
        bail!(
            "`dora_scale` {:?} fits neither the output ({out}) nor the input ({inp}) axis of {:?}",
            d.dims(),
            dims
        );
    };
    let norm = norm.sqrt()?.reshape(shape.as_slice())?;
    let factor = d.broadcast_div(&norm.affine(1.0, f32::EPSILON as f64)?)?;
    let rescaled = merged.broadcast_mul(&factor)?;
    Ok((rescaled - &w)?.affine(multiplier, 0.0)?)
}

/// `multiplier · scale · Δ` shaped `target_shape` (see [`delta`]).
fn scaled_delta(
    tensors: &ModuleTensors,
    kind: LycorisKind,
    target_shape: &[usize],
    multiplier: f64,
) -> Result<Tensor> {
    let (raw, rank) = match kind {
        LycorisKind::LoHa => loha(tensors)?,
        LycorisKind::LoKr => lokr(tensors)?,
        LycorisKind::LoConTucker => locon_tucker(tensors)?,
    };
    let scale = match (tensors.alpha()?, rank) {
        (Some(alpha), Some(r)) => alpha / r as f64,
        _ => 1.0,
    };
    let want: usize = target_shape.iter().product();
    if raw.elem_count() != want {
        bail!(
            "{kind:?} product has shape {:?} ({} values) but the target weight is {:?} ({want} values)",
            raw.dims(),
            raw.elem_count(),
            target_shape
        );
    }
    Ok(raw.reshape(target_shape)?.affine(multiplier * scale, 0.0)?)
}

/// A tensor seen as a matrix `[dims[0], rest]` (LyCORIS stores conv factors
/// as 2-d already; some writers keep trailing 1x1 kernel dims).
fn as_matrix(t: &Tensor, name: &str) -> Result<Tensor> {
    let dims = t.dims();
    if dims.is_empty() {
        bail!("`{name}` is a scalar, expected a matrix");
    }
    let rest: usize = dims[1..].iter().product();
    Ok(t.reshape((dims[0], rest))?)
}

/// `a · b` with the inner dimensions checked and named.
fn matmul_named(a: &Tensor, an: &str, b: &Tensor, bn: &str) -> Result<Tensor> {
    let a = as_matrix(a, an)?;
    let b = as_matrix(b, bn)?;
    let (ad, bd) = (a.dims2()?, b.dims2()?);
    if ad.1 != bd.0 {
        bail!(
            "`{an}` {:?} and `{bn}` {:?} do not multiply (inner dimensions {} vs {})",
            ad,
            bd,
            ad.1,
            bd.0
        );
    }
    Ok(a.contiguous()?.matmul(&b.contiguous()?)?)
}

/// Tucker rebuild `out[p,q,k,l] = Σ_ij t[i,j,k,l]·wa[i,p]·wb[j,q]` for
/// `t: [i, j, k, l]`, `wa: [i, p]`, `wb: [j, q]` → `[p, q, k, l]`
/// (LyCORIS `functional.rebuild_tucker`, ComfyUI's
/// `einsum('i j k l, j r, i p -> p r k l', t, wb, wa)`).
fn tucker(t: &Tensor, tn: &str, wa: &Tensor, an: &str, wb: &Tensor, bn: &str) -> Result<Tensor> {
    let (i, j, k, l) = t
        .dims4()
        .with_context(|| format!("`{tn}` must be 4-d [r, r, kh, kw], it is {:?}", t.dims()))?;
    let wa = as_matrix(wa, an)?;
    let wb = as_matrix(wb, bn)?;
    let (ai, p) = wa.dims2()?;
    let (bj, q) = wb.dims2()?;
    if ai != i || bj != j {
        bail!(
            "`{tn}` {:?} does not fit `{an}` {:?} and `{bn}` {:?} (want [{ai}, {bj}, kh, kw])",
            t.dims(),
            wa.dims(),
            wb.dims()
        );
    }
    // [k, l, i, j] · wb → [k·l·i, q]
    let x = t
        .permute((2, 3, 0, 1))?
        .contiguous()?
        .reshape((k * l * i, j))?
        .matmul(&wb.contiguous()?)?;
    // [i, k·l·q], then waᵀ · that → [p, k, l, q] → [p, q, k, l]
    let x = x
        .reshape((k * l, i, q))?
        .transpose(0, 1)?
        .contiguous()?
        .reshape((i, k * l * q))?;
    let y = wa.t()?.contiguous()?.matmul(&x)?;
    Ok(y.reshape((p, k, l, q))?
        .permute((0, 3, 1, 2))?
        .contiguous()?)
}

/// LoHa's unscaled product and its rank (`hada_w1_b`'s rows).
fn loha(m: &ModuleTensors) -> Result<(Tensor, Option<usize>)> {
    let w1a = m.require("hada_w1_a", "LoHa")?;
    let w1b = m.require("hada_w1_b", "LoHa")?;
    let w2a = m.require("hada_w2_a", "LoHa")?;
    let w2b = m.require("hada_w2_b", "LoHa")?;
    let (m1, m2) = match (m.f32("hada_t1")?, m.f32("hada_t2")?) {
        (Some(t1), Some(t2)) => (
            tucker(&t1, "hada_t1", &w1a, "hada_w1_a", &w1b, "hada_w1_b")?,
            tucker(&t2, "hada_t2", &w2a, "hada_w2_a", &w2b, "hada_w2_b")?,
        ),
        (None, None) => (
            matmul_named(&w1a, "hada_w1_a", &w1b, "hada_w1_b")?,
            matmul_named(&w2a, "hada_w2_a", &w2b, "hada_w2_b")?,
        ),
        _ => bail!("LoHa module has only one of `hada_t1` and `hada_t2`"),
    };
    if m1.dims() != m2.dims() {
        bail!(
            "LoHa products differ in shape: w1 {:?} vs w2 {:?}",
            m1.dims(),
            m2.dims()
        );
    }
    let rank = w1b.dims().first().copied();
    Ok(((m1 * m2)?, rank))
}

/// One LoKr factor: full (`lokr_wN`) or a product, and the product's rank.
fn lokr_factor(m: &ModuleTensors, n: u8) -> Result<(Tensor, Option<usize>)> {
    let full = format!("lokr_w{n}");
    let (an, bn) = (format!("lokr_w{n}_a"), format!("lokr_w{n}_b"));
    if let Some(w) = m.f32(&full)? {
        if m.get(&an).is_some() || m.get(&bn).is_some() {
            bail!("LoKr module has both `{full}` and `{an}`/`{bn}`");
        }
        return Ok((w, None));
    }
    let (a, b) = match (m.f32(&an)?, m.f32(&bn)?) {
        (Some(a), Some(b)) => (a, b),
        _ => bail!("LoKr module lacks `{full}` (or both `{an}` and `{bn}`)"),
    };
    let rank = b.dims().first().copied();
    let t = if n == 2 { m.f32("lokr_t2")? } else { None };
    let w = match t {
        Some(t) => tucker(&t, "lokr_t2", &a, &an, &b, &bn)?,
        None => matmul_named(&a, &an, &b, &bn)?,
    };
    Ok((w, rank))
}

/// LoKr's unscaled `kron(w1, w2)` and the rank its scale divides by (that
/// of `w2` when low-rank, else `w1`'s, else none).
fn lokr(m: &ModuleTensors) -> Result<(Tensor, Option<usize>)> {
    let (w1, r1) = lokr_factor(m, 1)?;
    let (w2, r2) = lokr_factor(m, 2)?;
    let w1 = as_matrix(&w1, "lokr_w1")?;
    let (a, b) = w1.dims2()?;
    let (c, d, k, l) = match *w2.dims() {
        [c, d] => (c, d, 1, 1),
        [c, d, k, l] => (c, d, k, l),
        ref other => bail!("LoKr w2 must be 2-d or 4-d, it is {other:?}"),
    };
    let w1 = w1.reshape((a, 1, b, 1, 1, 1))?;
    let w2 = w2.reshape((1, c, 1, d, k, l))?;
    let kron = w1.broadcast_mul(&w2)?.reshape((a * c, b * d, k, l))?;
    Ok((kron, r2.or(r1)))
}

/// LoCon with Tucker middle: `up · mid · down`, rank = `lora_down`'s rows.
fn locon_tucker(m: &ModuleTensors) -> Result<(Tensor, Option<usize>)> {
    let up = m.require("lora_up", "LoCon (Tucker)")?;
    let mid = m.require("lora_mid", "LoCon (Tucker)")?;
    let down = m.require("lora_down", "LoCon (Tucker)")?;
    let up_t = as_matrix(&up, "lora_up")?.t()?;
    let w = tucker(&mid, "lora_mid", &up_t, "lora_up", &down, "lora_down")?;
    Ok((w, down.dims().first().copied()))
}

/// `0.6 · sin(f·i + φ)` for i in 0..n, `f = 0.71 + 0.13·seed`,
/// `φ = 0.37·seed + 0.1`, computed in f64 and rounded to f32: the values the
/// tiny generator gives each tensor (the reference script builds the same).
pub fn wave_tensor(shape: &[usize], seed: u32, device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let (f, phi) = (0.71 + 0.13 * seed as f64, 0.37 * seed as f64 + 0.1);
    let v: Vec<f32> = (0..n)
        .map(|i| (0.6 * (f * i as f64 + phi).sin()) as f32)
        .collect();
    Ok(Tensor::from_vec(v, shape, device)?)
}

/// One tiny generated module: its name, the target weight's shape and its
/// tensors (suffixes as on disk, `alpha` a 0-d f32).
#[derive(Debug, Clone)]
pub struct TinyModule {
    /// Case name, as in the reference JSON.
    pub name: &'static str,
    /// The target weight's shape.
    pub target_shape: Vec<usize>,
    /// The module's tensors.
    pub tensors: ModuleTensors,
}

/// Tensor layouts of the tiny cases: (name, target shape, alpha, [(suffix, shape)]).
type CaseSpec = (
    &'static str,
    &'static [usize],
    Option<f32>,
    &'static [(&'static str, &'static [usize])],
);

#[rustfmt::skip]
const TINY_CASES: &[CaseSpec] = &[
    ("loha_linear", &[12, 10], Some(2.0), &[
        ("hada_w1_a", &[12, 3]), ("hada_w1_b", &[3, 10]),
        ("hada_w2_a", &[12, 3]), ("hada_w2_b", &[3, 10]),
    ]),
    ("loha_conv", &[6, 4, 3, 3], Some(1.0), &[
        ("hada_w1_a", &[6, 2]), ("hada_w1_b", &[2, 36]),
        ("hada_w2_a", &[6, 2]), ("hada_w2_b", &[2, 36]),
    ]),
    ("loha_conv_tucker", &[6, 4, 3, 3], Some(5.0), &[
        ("hada_t1", &[3, 3, 3, 3]), ("hada_w1_a", &[3, 6]), ("hada_w1_b", &[3, 4]),
        ("hada_t2", &[3, 3, 3, 3]), ("hada_w2_a", &[3, 6]), ("hada_w2_b", &[3, 4]),
    ]),
    ("lokr_linear", &[12, 10], Some(3.0), &[
        ("lokr_w1", &[3, 2]), ("lokr_w2_a", &[4, 2]), ("lokr_w2_b", &[2, 5]),
    ]),
    ("lokr_linear_both_low_rank", &[12, 10], Some(0.5), &[
        ("lokr_w1_a", &[3, 1]), ("lokr_w1_b", &[1, 2]),
        ("lokr_w2_a", &[4, 1]), ("lokr_w2_b", &[1, 5]),
    ]),
    ("lokr_linear_full", &[12, 10], Some(7.0), &[("lokr_w1", &[3, 2]), ("lokr_w2", &[4, 5])]),
    ("lokr_conv", &[6, 4, 3, 3], Some(3.0), &[
        ("lokr_w1", &[2, 2]), ("lokr_w2_a", &[3, 2]), ("lokr_w2_b", &[2, 18]),
    ]),
    ("lokr_conv_tucker", &[6, 4, 3, 3], Some(1.5), &[
        ("lokr_w1", &[2, 2]), ("lokr_t2", &[2, 2, 3, 3]),
        ("lokr_w2_a", &[2, 3]), ("lokr_w2_b", &[2, 2]),
    ]),
    ("lokr_conv_full", &[6, 4, 3, 3], None, &[("lokr_w1", &[2, 2]), ("lokr_w2", &[3, 2, 3, 3])]),
    ("locon_tucker", &[6, 4, 3, 3], Some(3.0), &[
        ("lora_up", &[6, 2, 1, 1]), ("lora_mid", &[2, 2, 3, 3]), ("lora_down", &[2, 4, 1, 1]),
    ]),
];

/// The tiny deterministic LoHa, LoKr and LoCon-Tucker modules the parity test
/// uses, for linear `[12, 10]` and conv `[6, 4, 3, 3]` targets, in the layout
/// LyCORIS writes (tensor `j` of a case is [`wave_tensor`] with seed
/// `10·case + j + 1`). Non-trivial: every value differs from its neighbours.
pub fn tiny_modules(device: &Device) -> Result<Vec<TinyModule>> {
    TINY_CASES
        .iter()
        .enumerate()
        .map(|(ci, (name, target, alpha, layout))| {
            let mut tensors = ModuleTensors::new();
            for (j, (suffix, shape)) in layout.iter().enumerate() {
                let seed = (10 * ci + j + 1) as u32;
                tensors.insert(*suffix, wave_tensor(shape, seed, device)?);
            }
            if let Some(a) = alpha {
                tensors.insert("alpha", Tensor::new(*a, device)?);
            }
            Ok(TinyModule {
                name,
                target_shape: target.to_vec(),
                tensors,
            })
        })
        .collect()
}

#[cfg(test)]
#[path = "lycoris_tests.rs"]
mod tests;
