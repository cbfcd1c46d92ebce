//! Which upscaler a state dict holds, read from its tensor names and shapes
//! (the approach of spandrel 0.4.2's `architectures/ESRGAN/__init__.py` and
//! `architectures/Compact/__init__.py`, re-derived here), and the renaming of
//! every supported key layout into one canonical layout the networks load.
//!
//! Canonical names (basicsr's `RRDBNet` / `SRVGGNetCompact`):
//! - ESRGAN: `conv_first`, `body.{i}.rdb{k}.conv{j}` (and `conv1x1` for
//!   ESRGAN+), `conv_body`, `conv_up{k}` (k = 1..), `conv_hr`, `conv_last`;
//! - compact: `body.{2i}` convolutions and `body.{2i+1}` PReLU weights.

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use std::collections::HashMap;

/// The three ESRGAN key layouts found in the wild.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EsrganLayout {
    /// basicsr / Real-ESRGAN: `conv_first`, `body.N.rdbK.convJ`, `conv_body`,
    /// `conv_up1/2`, `conv_hr`, `conv_last`.
    New,
    /// The original ESRGAN repository (community models such as 4x-UltraSharp):
    /// `model.0`, `model.1.sub.N.RDBk.convJ.0`, `model.1.sub.<nb>`, then
    /// `model.3, 6, ...` (upsampling convs), `model.3n+2` (HR), `model.3n+4` (last).
    Old,
    /// BSRGAN / RealSR: `RRDB_trunk.N.RDBk.convJ`, `trunk_conv`, `upconvK`, `HRconv`.
    Bsrgan,
}

/// Shapes of an RRDBNet, all read from the weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrdbConfig {
    /// Channels the first conv takes (3, or 3 x shuffle^2 with pixel-unshuffle).
    pub in_nc: usize,
    /// Output channels (3).
    pub out_nc: usize,
    /// Feature channels (`num_feat`, 64 in released models).
    pub nf: usize,
    /// RRDB blocks (23 for x4plus, 6 for the anime_6B model).
    pub nb: usize,
    /// Growth channels of each dense block (`num_grow_ch`, 32).
    pub gc: usize,
    /// Nearest-2x + conv stages after the trunk.
    pub upsamples: usize,
    /// Pixel-unshuffle factor of the input (1: none; 2 for Real-ESRGAN x2plus, 4 for x1).
    pub shuffle: usize,
    /// ESRGAN+ (extra `conv1x1` residual paths in the dense blocks).
    pub plus: bool,
    /// The file's key layout (for reporting; tensors are renamed on load).
    pub layout: EsrganLayout,
}

impl RrdbConfig {
    /// Output pixels per input pixel along each side: `2^upsamples / shuffle`.
    pub fn scale(&self) -> usize {
        (1 << self.upsamples) / self.shuffle
    }
}

/// Shapes of a Real-ESRGAN SRVGGNetCompact (PReLU activations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactConfig {
    /// Input image channels (3).
    pub in_nc: usize,
    /// Output image channels (3).
    pub out_nc: usize,
    /// Feature channels (64 in the released models).
    pub nf: usize,
    /// Body convolutions after the first (32 for realesr-general-x4v3, 16 for animevideov3).
    pub num_conv: usize,
    /// Pixel-shuffle factor of the last conv (`out_nc * upscale^2` channels).
    pub upscale: usize,
}

/// A detected upscaler architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpscalerArch {
    /// ESRGAN / Real-ESRGAN RRDBNet (any key layout).
    Esrgan(RrdbConfig),
    /// Real-ESRGAN SRVGGNetCompact.
    Compact(CompactConfig),
}

impl UpscalerArch {
    /// "ESRGAN" or "RealESRGAN-compact".
    pub fn name(&self) -> &'static str {
        match self {
            UpscalerArch::Esrgan(_) => "ESRGAN",
            UpscalerArch::Compact(_) => "RealESRGAN-compact",
        }
    }

    /// Sides are padded up to a multiple of this (4 for pixel-unshuffle
    /// ESRGAN models, as spandrel's size requirements; 1 otherwise).
    pub fn size_multiple(&self) -> usize {
        match self {
            UpscalerArch::Esrgan(c) if c.shuffle > 1 => 4,
            _ => 1,
        }
    }

    /// Output side / input side.
    pub fn scale(&self) -> usize {
        match self {
            UpscalerArch::Esrgan(c) => c.scale(),
            UpscalerArch::Compact(c) => c.upscale,
        }
    }

    /// Channels of the image the model takes (before any pixel-unshuffle).
    pub fn input_channels(&self) -> usize {
        match self {
            UpscalerArch::Esrgan(c) => c.in_nc / (c.shuffle * c.shuffle),
            UpscalerArch::Compact(c) => c.in_nc,
        }
    }

    /// Channels of the image the model returns.
    pub fn output_channels(&self) -> usize {
        match self {
            UpscalerArch::Esrgan(c) => c.out_nc,
            UpscalerArch::Compact(c) => c.out_nc,
        }
    }
}

/// Message for layouts that are no supported upscaler.
pub const SUPPORTED: &str =
    "supported: ESRGAN (RRDBNet: basicsr, original and BSRGAN key layouts), Real-ESRGAN compact (SRVGGNetCompact, PReLU)";

/// Detects the architecture of `tensors` (an unwrapped state dict) and
/// renames its keys into the canonical layout.
///
/// Errors: no tensors; keys of another kind of model (a Stable Diffusion
/// UNet, VAE, text encoder, LoRA, ControlNet, or an upscaler architecture not
/// written here), each named; inconsistent shapes; a key the detected
/// network would not use (so an unsupported variant is refused rather than
/// silently mis-loaded).
pub fn detect(tensors: HashMap<String, Tensor>) -> Result<(UpscalerArch, HashMap<String, Tensor>)> {
    if tensors.is_empty() {
        bail!("no tensors in the file: not an upscaler");
    }
    let has = |k: &str| tensors.contains_key(k);
    if has("model.0.weight")
        && (has("model.1.sub.0.RDB1.conv1.0.weight") || has("model.1.sub.0.RDB1.conv1x1.weight"))
    {
        let renamed = rename_old(&tensors)?;
        return finish_esrgan(renamed, EsrganLayout::Old);
    }
    if has("conv_first.weight")
        && has("body.0.rdb1.conv1.weight")
        && has("conv_body.weight")
        && has("conv_last.weight")
    {
        return finish_esrgan(tensors, EsrganLayout::New);
    }
    if has("conv_first.weight")
        && has("RRDB_trunk.0.RDB1.conv1.weight")
        && has("trunk_conv.weight")
        && has("conv_last.weight")
    {
        let renamed = rename_bsrgan(tensors);
        return finish_esrgan(renamed, EsrganLayout::Bsrgan);
    }
    if has("body.0.weight") && has("body.1.weight") {
        return compact(tensors);
    }
    if has("body.0.weight") && has("body.2.weight") && !has("body.1.weight") {
        bail!("SRVGGNetCompact without PReLU weights (a relu / leakyrelu variant, which the weights cannot tell apart) is not supported; {SUPPORTED}");
    }
    bail!("{}", unknown(&tensors))
}

/// Names what the keys look like, for the error.
fn unknown(tensors: &HashMap<String, Tensor>) -> String {
    let any = |p: &str| tensors.keys().any(|k| k.starts_with(p) || k.contains(p));
    let what = if any("model.diffusion_model.") || any("down_blocks.") && any("time_embedding") {
        Some("keys look like a Stable Diffusion UNet")
    } else if any("control_model.") || any("controlnet_") {
        Some("keys look like a ControlNet")
    } else if any("lora_up") || any("lora_down") || any("lora_A") || any("lora_B") {
        Some("keys look like a LoRA")
    } else if any("first_stage_model.") || any("encoder.down") && any("decoder.up") {
        Some("keys look like a VAE")
    } else if any("text_model.") || any("transformer.resblocks") {
        Some("keys look like a text encoder")
    } else if any("emb_params") || any("string_to_param") {
        Some("keys look like a textual-inversion embedding")
    } else {
        None
    };
    if let Some(w) = what {
        return format!("not an upscaler: {w}");
    }
    let hint = if any("layers.0.residual_group") {
        " (keys look like SwinIR / HAT, which is not supported)"
    } else if any("block_1.c1_r") {
        " (keys look like SPAN, which is not supported)"
    } else {
        ""
    };
    let mut keys: Vec<&String> = tensors.keys().collect();
    keys.sort();
    let shown: Vec<&str> = keys.iter().take(4).map(|k| k.as_str()).collect();
    format!(
        "unsupported upscaler architecture{hint}; {SUPPORTED}; found {} tensors, first keys: {}",
        tensors.len(),
        shown.join(", ")
    )
}

fn dims(tensors: &HashMap<String, Tensor>, key: &str) -> Result<Vec<usize>> {
    Ok(tensors
        .get(key)
        .with_context(|| format!("missing tensor `{key}`"))?
        .dims()
        .to_vec())
}

/// Largest `i` + 1 such that some key starts with `{prefix}.{i}.` (spandrel's `get_seq_len`).
fn seq_len(keys: impl Iterator<Item = impl AsRef<str>>, prefix: &str) -> usize {
    let p = format!("{prefix}.");
    keys.filter_map(|k| {
        let rest = k.as_ref().strip_prefix(&p)?.to_string();
        rest.split('.').next()?.parse::<usize>().ok()
    })
    .map(|i| i + 1)
    .max()
    .unwrap_or(0)
}

/// Old layout -> canonical names.
fn rename_old(tensors: &HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>> {
    let len = seq_len(tensors.keys(), "model");
    if len < 5 || (len - 5) % 3 != 0 {
        bail!("ESRGAN (original layout): {len} entries in `model`, expected 5 + 3 per 2x upsampling stage");
    }
    let ups = (len - 5) / 3;
    let nb = seq_len(tensors.keys(), "model.1.sub") - 1;
    let mut out = HashMap::new();
    for (k, t) in tensors {
        let new = if let Some(rest) = k.strip_prefix("model.1.sub.") {
            let (idx, tail) = rest.split_once('.').unwrap_or((rest, ""));
            let i: usize = idx.parse().unwrap_or(usize::MAX);
            if i == nb {
                format!("conv_body.{tail}")
            } else if let Some((rdb, conv)) = tail.split_once('.') {
                // RDBk.convJ.0.weight -> rdbk.convJ.weight
                let conv = conv.replace(".0.", ".");
                format!("body.{i}.{}.{conv}", rdb.to_lowercase())
            } else {
                bail!("unexpected key `{k}` in an ESRGAN (original layout)")
            }
        } else if let Some(rest) = k.strip_prefix("model.") {
            let (idx, tail) = rest.split_once('.').unwrap_or((rest, ""));
            let i: usize = idx.parse().unwrap_or(usize::MAX);
            match i {
                0 => format!("conv_first.{tail}"),
                _ if i == 3 * ups + 2 => format!("conv_hr.{tail}"),
                _ if i == 3 * ups + 4 => format!("conv_last.{tail}"),
                _ if i.is_multiple_of(3) && i / 3 >= 1 && i / 3 <= ups => format!("conv_up{}.{tail}", i / 3),
                _ => bail!("unexpected key `{k}` in an ESRGAN (original layout) with {ups} upsampling stages"),
            }
        } else {
            bail!("unexpected key `{k}` in an ESRGAN (original layout)")
        };
        out.insert(new, t.clone());
    }
    Ok(out)
}

/// BSRGAN / RealSR layout -> canonical names.
fn rename_bsrgan(tensors: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    tensors
        .into_iter()
        .map(|(k, t)| {
            let new = if let Some(rest) = k.strip_prefix("RRDB_trunk.") {
                format!("body.{}", rest.replace(".RDB", ".rdb"))
            } else if let Some(rest) = k.strip_prefix("trunk_conv.") {
                format!("conv_body.{rest}")
            } else if let Some(rest) = k.strip_prefix("upconv") {
                format!("conv_up{rest}")
            } else if let Some(rest) = k.strip_prefix("HRconv.") {
                format!("conv_hr.{rest}")
            } else {
                k
            };
            (new, t)
        })
        .collect()
}

/// Reads an RRDBNet's shapes from canonical names and checks every key is used.
fn finish_esrgan(
    tensors: HashMap<String, Tensor>,
    layout: EsrganLayout,
) -> Result<(UpscalerArch, HashMap<String, Tensor>)> {
    let first = dims(&tensors, "conv_first.weight")?;
    let last = dims(&tensors, "conv_last.weight")?;
    let rdb = dims(&tensors, "body.0.rdb1.conv1.weight")?;
    anyhow::ensure!(
        first.len() == 4 && last.len() == 4 && rdb.len() == 4,
        "ESRGAN: convolution weights must be 4-D"
    );
    let (nf, in_nc, out_nc, gc) = (first[0], first[1], last[0], rdb[0]);
    let nb = seq_len(tensors.keys(), "body");
    let mut upsamples = 0;
    while tensors.contains_key(&format!("conv_up{}.weight", upsamples + 1)) {
        upsamples += 1;
    }
    // Pixel-unshuffled input, as spandrel decides it: in = out * 4 or out * 16.
    let shuffle = if in_nc == out_nc * 4 {
        2
    } else if in_nc == out_nc * 16 {
        4
    } else {
        1
    };
    if (1 << upsamples) < shuffle {
        bail!("ESRGAN: {upsamples} upsampling stages with a pixel-unshuffle of {shuffle} would shrink the image");
    }
    let plus = tensors.keys().any(|k| k.contains(".conv1x1."));
    let cfg = RrdbConfig {
        in_nc,
        out_nc,
        nf,
        nb,
        gc,
        upsamples,
        shuffle,
        plus,
        layout,
    };
    check_used(&tensors, &esrgan_keys(&cfg), "ESRGAN")?;
    Ok((UpscalerArch::Esrgan(cfg), tensors))
}

/// Every canonical key an RRDBNet of `cfg` loads.
pub fn esrgan_keys(cfg: &RrdbConfig) -> Vec<String> {
    let mut keys = Vec::new();
    let mut conv = |name: String| {
        keys.push(format!("{name}.weight"));
        keys.push(format!("{name}.bias"));
    };
    conv("conv_first".into());
    for i in 0..cfg.nb {
        for k in 1..=3 {
            for j in 1..=5 {
                conv(format!("body.{i}.rdb{k}.conv{j}"));
            }
        }
    }
    conv("conv_body".into());
    for k in 1..=cfg.upsamples {
        conv(format!("conv_up{k}"));
    }
    conv("conv_hr".into());
    conv("conv_last".into());
    if cfg.plus {
        for i in 0..cfg.nb {
            for k in 1..=3 {
                keys.push(format!("body.{i}.rdb{k}.conv1x1.weight"));
            }
        }
    }
    keys
}

fn compact(tensors: HashMap<String, Tensor>) -> Result<(UpscalerArch, HashMap<String, Tensor>)> {
    let highest = seq_len(tensors.keys(), "body") - 1;
    let first = dims(&tensors, "body.0.weight")?;
    let prelu = dims(&tensors, "body.1.weight")?;
    anyhow::ensure!(
        first.len() == 4 && prelu.len() == 1,
        "compact: `body.0.weight` must be a conv weight and `body.1.weight` a PReLU weight, found {first:?} and {prelu:?}"
    );
    let (nf, in_nc) = (first[0], first[1]);
    anyhow::ensure!(
        highest >= 2 && highest % 2 == 0,
        "compact: the last body entry is {highest}, expected an even index"
    );
    let num_conv = (highest - 2) / 2;
    let last = dims(&tensors, &format!("body.{highest}.weight"))?[0];
    // last = out_nc * scale^2; out_nc tried as in_nc, 3, 4, 1 (spandrel's candidates).
    let (upscale, out_nc) = [in_nc, 3, 4, 1]
        .into_iter()
        .find_map(|c| {
            let q = last / c;
            let s = (q as f64).sqrt().round() as usize;
            (last % c == 0 && s * s == q).then_some((s, c))
        })
        .with_context(|| format!("compact: last conv has {last} channels, not out_nc x scale^2"))?;
    let cfg = CompactConfig {
        in_nc,
        out_nc,
        nf,
        num_conv,
        upscale,
    };
    check_used(&tensors, &compact_keys(&cfg), "compact")?;
    Ok((UpscalerArch::Compact(cfg), tensors))
}

/// Every key an SRVGGNetCompact of `cfg` loads.
pub fn compact_keys(cfg: &CompactConfig) -> Vec<String> {
    let mut keys = Vec::new();
    for i in 0..=cfg.num_conv + 1 {
        keys.push(format!("body.{}.weight", 2 * i));
        keys.push(format!("body.{}.bias", 2 * i));
        if i <= cfg.num_conv {
            keys.push(format!("body.{}.weight", 2 * i + 1));
        }
    }
    keys
}

/// Fails on a tensor the network would not load, or a missing one.
fn check_used(tensors: &HashMap<String, Tensor>, expected: &[String], what: &str) -> Result<()> {
    let set: std::collections::HashSet<&str> = expected.iter().map(|s| s.as_str()).collect();
    let mut extra: Vec<&String> = tensors
        .keys()
        .filter(|k| !set.contains(k.as_str()))
        .collect();
    extra.sort();
    if let Some(k) = extra.first() {
        bail!(
            "{what}: unexpected tensor `{k}` ({} unused in all): an unsupported variant",
            extra.len()
        );
    }
    if let Some(k) = expected.iter().find(|k| !tensors.contains_key(k.as_str())) {
        bail!("{what}: missing tensor `{k}`");
    }
    Ok(())
}
