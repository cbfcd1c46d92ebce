//! Single-file ControlNets: one `.safetensors` in the original ControlNet
//! repository's (lllyasviel, LDM) layout, as `control_v11p_sd15_canny`
//! and most ControlNets on model sites ship: `control_model.` + the UNet's
//! encoder half (`time_embed`, SDXL's `label_emb`, `input_blocks`,
//! `middle_block`), the hint encoder `input_hint_block.{0,2,..,2k}` (SiLUs at
//! the odd indices), one zero convolution per skip state
//! `zero_convs.{i}.0` and `middle_block_out.0`. Some files omit the
//! `control_model.` prefix.
//!
//! The file is written once as a diffusers `ControlNetModel` folder
//! (`config.json` inferred from the tensor shapes,
//! `diffusion_pytorch_model.safetensors` under diffusers' names) in the
//! cache, like full checkpoints ([`super::converted_folder`]). The renaming
//! follows diffusers' `convert_controlnet_checkpoint`
//! (`diffusers/loaders/single_file_utils.py`), the UNet part through the same
//! [`unet_key`] as full checkpoints; the config follows
//! `create_controlnet_diffusers_config_from_ldm`, from shapes instead of the
//! original YAML.

use anyhow::{bail, Context, Result};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{Device, Tensor};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::infer::{indices, infer_down_path};
use super::keys::{index, unet_key, RESNET_RENAMES};
use super::{convert_once, fingerprint, write_json, Kind};
use crate::model::config::UNetConfig;

/// Prefix of the original ControlNet repository's tensor names.
pub const LDM_CONTROLNET_PREFIX: &str = "control_model.";

/// SDXL's width of each time id's sinusoidal embedding (its published
/// config; diffusers' YAML conversion hard-codes it too).
const SDXL_TIME_ID_DIM: usize = 256;

fn open(file: &Path) -> Result<(MmapedSafetensors, BTreeSet<String>)> {
    // Safety: read-only mapping of a model file that is not modified meanwhile.
    let st = unsafe { MmapedSafetensors::new(file) }
        .with_context(|| format!("reading {}", file.display()))?;
    let names = st.tensors().into_iter().map(|(n, _)| n).collect();
    Ok((st, names))
}

/// The prefix (`control_model.` or none) under which `names` hold an LDM
/// ControlNet; `None` when they do not.
fn ldm_prefix(names: &BTreeSet<String>) -> Option<&'static str> {
    // Stability's Control-LoRAs share the hint encoder's names but hold
    // low-rank factors of the UNet.
    if names.contains("lora_controlnet") {
        return None;
    }
    [LDM_CONTROLNET_PREFIX, ""].into_iter().find(|p| {
        names.contains(&format!("{p}input_hint_block.0.weight"))
            && names.contains(&format!("{p}zero_convs.0.0.weight"))
            && names.contains(&format!("{p}time_embed.0.weight"))
    })
}

/// Whether `path` is a `.safetensors` ControlNet in the LDM layout (with or
/// without the `control_model.` prefix). Errors only when the file cannot be
/// read as safetensors.
pub fn is_controlnet_file(path: &Path) -> Result<bool> {
    let (_, names) = open(path)?;
    Ok(ldm_prefix(&names).is_some())
}

/// Why `file` is not an LDM ControlNet, naming what it looks like instead.
fn not_a_controlnet(names: &BTreeSet<String>, file: &Path) -> anyhow::Error {
    let has = |f: &dyn Fn(&str) -> bool| names.iter().any(|n| f(n));
    let what = if names.contains("lora_controlnet") {
        "a Control-LoRA (low-rank ControlNet), which is not supported"
    } else if has(&|n| n.starts_with("model.diffusion_model.")) {
        "a full Stable Diffusion checkpoint (load it as the model, not as a ControlNet)"
    } else if has(&|n| {
        n.contains("lora_") || n.contains(".lora.") || n.contains("hada_") || n.contains("lokr_")
    }) {
        "a LoRA (low-rank weight deltas), not a ControlNet"
    } else if has(&|n| n.starts_with("controlnet_cond_embedding.")) {
        "a ControlNet in diffusers' layout: put it in a folder as diffusion_pytorch_model.safetensors beside its config.json"
    } else if has(&|n| n.starts_with("adapter.") || n.starts_with("body.")) {
        "a T2I-Adapter, which is not a ControlNet and is not supported"
    } else {
        "not a ControlNet"
    };
    anyhow::anyhow!(
        "{} is {what}: an LDM ControlNet has `{LDM_CONTROLNET_PREFIX}input_hint_block.*`, `zero_convs.*` and `time_embed.*` tensors",
        file.display()
    )
}

/// Values a ControlNet's weights do not record, for which the base UNet it
/// runs with is the authority: attention heads (`attention_head_dim` /
/// `num_attention_heads`) and SDXL's `addition_time_embed_dim`. Without a
/// base, the family's published values are used (SD 1.x: 8 heads; SD 2.x and
/// SDXL: 64-wide heads, SDXL: 256-wide time ids). The base must have the
/// ControlNet's `block_out_channels` and `cross_attention_dim`.
fn apply_base(cfg: &mut UNetConfig, base: &UNetConfig) -> Result<()> {
    let cross = |c: &UNetConfig| c.to_candle().map(|c| c.cross_attention_dim);
    if base.block_out_channels != cfg.block_out_channels || cross(base)? != cross(cfg)? {
        bail!(
            "the ControlNet (block_out_channels {:?}, cross-attention width {}) does not fit the base UNet ({:?}, {})",
            cfg.block_out_channels,
            cross(cfg)?,
            base.block_out_channels,
            cross(base)?
        );
    }
    cfg.attention_head_dim = base.attention_head_dim.clone();
    cfg.num_attention_heads = base.num_attention_heads.clone();
    Ok(())
}

/// diffusers' `ControlNetModel` `config.json` for the encoder half `unet`
/// plus the hint encoder: `conditioning_channels` (hint image channels, 3)
/// and `cond_out` (`conditioning_embedding_out_channels`, SD: 16, 32, 96,
/// 256). Field names and defaults as `ControlNetModel.__init__`.
pub(crate) fn config_json(
    unet: &UNetConfig,
    conditioning_channels: usize,
    cond_out: &[usize],
) -> serde_json::Value {
    serde_json::json!({
        "_class_name": "ControlNetModel",
        "_diffusers_version": "0.30.0",
        "in_channels": unet.in_channels,
        "conditioning_channels": conditioning_channels,
        "conditioning_embedding_out_channels": cond_out,
        "flip_sin_to_cos": unet.flip_sin_to_cos,
        "freq_shift": unet.freq_shift,
        "down_block_types": unet.down_block_types,
        "mid_block_type": unet.mid_block_type,
        "only_cross_attention": false,
        "block_out_channels": unet.block_out_channels,
        "layers_per_block": unet.layers_per_block,
        "downsample_padding": unet.downsample_padding,
        "mid_block_scale_factor": unet.mid_block_scale_factor,
        "act_fn": unet.act_fn,
        "norm_num_groups": unet.norm_num_groups,
        "norm_eps": unet.norm_eps,
        "cross_attention_dim": unet.cross_attention_dim,
        "transformer_layers_per_block": unet.transformer_layers_per_block,
        "encoder_hid_dim": null,
        "encoder_hid_dim_type": unet.encoder_hid_dim_type,
        "attention_head_dim": unet.attention_head_dim,
        "num_attention_heads": unet.num_attention_heads,
        "use_linear_projection": unet.use_linear_projection,
        "class_embed_type": unet.class_embed_type,
        "addition_embed_type": unet.addition_embed_type,
        "addition_time_embed_dim": unet.addition_time_embed_dim,
        "num_class_embeds": null,
        "upcast_attention": false,
        "resnet_time_scale_shift": "default",
        "projection_class_embeddings_input_dim": unet.projection_class_embeddings_input_dim,
        "controlnet_conditioning_channel_order": "rgb",
        "global_pool_conditions": false,
        "addition_embed_type_num_heads": 64,
    })
}

/// A ControlNet's config inferred from its tensors under `prefix`: the
/// UNet-shared part as [`infer_down_path`] does for full checkpoints, the
/// family from the tensors (SDXL: `label_emb`; SD 2.x: 1024-wide
/// cross-attention or linear projections; else SD 1.x), and the hint encoder:
/// `(config, conditioning_channels, conditioning_embedding_out_channels)`.
pub(super) fn infer_controlnet(
    names: &BTreeSet<String>,
    shape: &dyn Fn(&str) -> Result<Vec<usize>>,
    prefix: &str,
    base: Option<&UNetConfig>,
) -> Result<(UNetConfig, usize, Vec<usize>)> {
    let p = |k: &str| format!("{prefix}{k}");
    let probe = infer_down_path(names, shape, prefix, Kind::Sd1, None)?;
    let cross = probe.to_candle()?.cross_attention_dim;
    let sdxl = names.contains(&p("label_emb.0.0.weight"));
    let (kind, pooled) = if sdxl {
        let input = shape(&p("label_emb.0.0.weight"))?[1];
        let time_dim = base
            .and_then(|b| b.addition_time_embed_dim)
            .unwrap_or(SDXL_TIME_ID_DIM);
        let pooled = input.checked_sub(6 * time_dim).filter(|&w| w > 0).with_context(|| {
            format!("the ControlNet's label_emb takes {input} values, fewer than 6 time ids x {time_dim}: give the base UNet's config (its addition_time_embed_dim)")
        })?;
        (Kind::Sdxl, Some(pooled))
    } else if cross >= 1024 || probe.use_linear_projection {
        (Kind::Sd2 { v: false }, None)
    } else {
        (Kind::Sd1, None)
    };
    let mut cfg = infer_down_path(names, shape, prefix, kind, pooled)?;
    if let Some(base) = base {
        apply_base(&mut cfg, base)?;
    }
    cfg.to_candle().context("the ControlNet")?;

    // The hint encoder: conv_in, then per width a same-width conv and a
    // stride-2 conv to the next width, then conv_out (diffusers'
    // `ControlNetConditioningEmbedding`).
    let hint = indices(names, &p("input_hint_block."), "");
    let convs = hint.len();
    if convs < 2 || !convs.is_multiple_of(2) || hint.iter().enumerate().any(|(k, &i)| i != 2 * k) {
        bail!("the ControlNet's input_hint_block convolutions sit at {hint:?}, not at 0, 2, 4, .. (an even number of them)");
    }
    let hint_shape = |k: usize| shape(&p(&format!("input_hint_block.{}.weight", 2 * k)));
    let conv_in = hint_shape(0)?;
    let mut cond_out = vec![conv_in[0]];
    for k in (2..convs - 1).step_by(2) {
        cond_out.push(hint_shape(k)?[0]);
    }
    let conv_out = hint_shape(convs - 1)?;
    if conv_out[0] != cfg.block_out_channels[0] || conv_out[1] != *cond_out.last().unwrap_or(&0) {
        bail!("the ControlNet's last input_hint_block conv maps {} to {} channels, not {} to conv_in's {}", conv_out[1], conv_out[0], cond_out.last().unwrap_or(&0), cfg.block_out_channels[0]);
    }
    let zero_convs = indices(names, &p("zero_convs."), "0.weight").len();
    let skips = indices(names, &p("input_blocks."), "").len();
    if zero_convs != skips || !names.contains(&p("middle_block_out.0.weight")) {
        bail!("the ControlNet has {zero_convs} zero_convs for {skips} input blocks, or no middle_block_out: not a complete ControlNet");
    }
    Ok((cfg, conv_in[1], cond_out))
}

/// A ControlNet tensor name (without its prefix) in diffusers' layout;
/// `hint_last` is the index of the last `input_hint_block` conv. `None` for a
/// name a ControlNet does not have.
fn controlnet_key(key: &str, layers: usize, hint_last: usize) -> Option<String> {
    if let Some(s) = key.strip_prefix("input_hint_block.") {
        let (i, rest) = index(s)?;
        let to = match i {
            0 => "conv_in".to_string(),
            i if i == hint_last => "conv_out".to_string(),
            i if i % 2 == 0 && i < hint_last => format!("blocks.{}", i / 2 - 1),
            _ => return None,
        };
        return Some(format!("controlnet_cond_embedding.{to}.{rest}"));
    }
    if let Some(s) = key.strip_prefix("zero_convs.") {
        let (i, rest) = index(s)?;
        return Some(format!(
            "controlnet_down_blocks.{i}.{}",
            rest.strip_prefix("0.")?
        ));
    }
    if let Some(rest) = key.strip_prefix("middle_block_out.0.") {
        return Some(format!("controlnet_mid_block.{rest}"));
    }
    let shared = [
        "time_embed.",
        "label_emb.",
        "input_blocks.",
        "middle_block.",
    ];
    if shared.iter().any(|s| key.starts_with(s)) {
        return unet_key(key, layers);
    }
    None
}

/// Writes the LDM ControlNet `file` as a diffusers `ControlNetModel` folder
/// at `out` (`config.json`, `diffusion_pytorch_model.safetensors`, tensors
/// in the file's dtype), the family's published values standing in for what
/// the weights do not record; see [`convert_controlnet_for`].
pub fn convert_controlnet(file: &Path, out: &Path) -> Result<()> {
    convert_controlnet_for(file, None, out)
}

/// [`convert_controlnet`], with heads and SDXL's time-id width taken from
/// `base`, the config of the UNet the ControlNet will run with (needed for an
/// SDXL-shaped ControlNet whose time ids are not 256 wide). Errors: the file
/// is not an LDM ControlNet (a LoRA, a full checkpoint, a T2I-Adapter, a
/// diffusers-layout file: each named), its tensors do not form one, or it does
/// not fit `base`.
pub fn convert_controlnet_for(file: &Path, base: Option<&UNetConfig>, out: &Path) -> Result<()> {
    let (st, names) = open(file)?;
    let prefix = ldm_prefix(&names).ok_or_else(|| not_a_controlnet(&names, file))?;
    let shape = |name: &str| -> Result<Vec<usize>> {
        Ok(st
            .get(name)
            .with_context(|| format!("the ControlNet has no `{name}`"))?
            .shape()
            .to_vec())
    };
    let (cfg, cond_channels, cond_out) = infer_controlnet(&names, &shape, prefix, base)
        .with_context(|| format!("reading {} as a ControlNet", file.display()))?;
    let hint_last = 2 * (2 * cond_out.len() - 1);
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for name in names.iter().filter(|n| n.starts_with(prefix)) {
        let key = &name[prefix.len()..];
        let Some(to) = controlnet_key(key, cfg.layers_per_block, hint_last) else {
            bail!("{}: unexpected ControlNet tensor `{name}`", file.display());
        };
        if tensors
            .insert(to.clone(), st.load(name, &Device::Cpu)?)
            .is_some()
        {
            bail!("two ControlNet tensors map to `{to}`");
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    write_json(
        &out.join("config.json"),
        &config_json(&cfg, cond_channels, &cond_out),
    )?;
    let weights = out.join("diffusion_pytorch_model.safetensors");
    candle_core::safetensors::save(&tensors, &weights)
        .with_context(|| format!("writing {}", weights.display()))
}

/// The diffusers ControlNet folder converted from `file` (see
/// [`convert_controlnet_for`]), converting on first use into
/// `cache/converted/<fingerprint>[-<base values>]/<file stem>`.
pub fn converted_controlnet_folder(
    file: &Path,
    base: Option<&UNetConfig>,
    cache: &Path,
) -> Result<PathBuf> {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "controlnet".into());
    let mut key = fingerprint(file)?;
    if let Some(base) = base {
        use sha2::{Digest, Sha256};
        let used = serde_json::json!([
            base.attention_head_dim,
            base.num_attention_heads,
            base.addition_time_embed_dim
        ]);
        let h = Sha256::digest(used.to_string().as_bytes());
        key += "-";
        key.extend(h.iter().take(4).map(|b| format!("{b:02x}")));
    }
    let parent = cache.join("converted").join(key);
    convert_once(&parent, &stem, |staged| {
        convert_controlnet_for(file, base, staged)
    })
}

/// A diffusers ControlNet tensor name in the LDM layout (without prefix):
/// the inverse of [`controlnet_key`]; `hint_blocks` is the number of
/// `controlnet_cond_embedding.blocks`.
fn ldm_key(key: &str, layers: usize, hint_blocks: usize) -> Option<String> {
    let per = layers + 1;
    let resnet = |r: &str| {
        RESNET_RENAMES
            .iter()
            .find_map(|(ldm, d)| r.strip_prefix(d).map(|t| format!("{ldm}{t}")))
    };
    for (d, l) in [
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("add_embedding.linear_1.", "label_emb.0.0."),
        ("add_embedding.linear_2.", "label_emb.0.2."),
        ("conv_in.", "input_blocks.0.0."),
        ("controlnet_cond_embedding.conv_in.", "input_hint_block.0."),
        ("controlnet_mid_block.", "middle_block_out.0."),
        ("mid_block.attentions.0.", "middle_block.1."),
    ] {
        if let Some(r) = key.strip_prefix(d) {
            return Some(format!("{l}{r}"));
        }
    }
    if let Some(r) = key.strip_prefix("controlnet_cond_embedding.conv_out.") {
        return Some(format!("input_hint_block.{}.{r}", 2 * (hint_blocks + 1)));
    }
    if let Some(s) = key.strip_prefix("controlnet_cond_embedding.blocks.") {
        let (j, r) = index(s)?;
        return Some(format!("input_hint_block.{}.{r}", 2 * (j + 1)));
    }
    if let Some(s) = key.strip_prefix("controlnet_down_blocks.") {
        let (i, r) = index(s)?;
        return Some(format!("zero_convs.{i}.0.{r}"));
    }
    if let Some(s) = key.strip_prefix("mid_block.resnets.") {
        let (i, r) = index(s)?;
        return Some(format!("middle_block.{}.{}", 2 * i, resnet(r)?));
    }
    let s = key.strip_prefix("down_blocks.")?;
    let (b, s) = index(s)?;
    if let Some(r) = s.strip_prefix("downsamplers.0.conv.") {
        return Some(format!("input_blocks.{}.0.op.{r}", (b + 1) * per));
    }
    if let Some(s) = s.strip_prefix("resnets.") {
        let (l, r) = index(s)?;
        return Some(format!("input_blocks.{}.0.{}", b * per + l + 1, resnet(r)?));
    }
    let (l, r) = index(s.strip_prefix("attentions.")?)?;
    Some(format!("input_blocks.{}.1.{r}", b * per + l + 1))
}

/// Writes the diffusers ControlNet folder `diffusers_folder` (its
/// `config.json` and `diffusion_pytorch_model.safetensors`) as one LDM-layout
/// file with the `control_model.` prefix, as the original ControlNet
/// repository saves them: the inverse of [`convert_controlnet`], for tests.
pub fn write_ldm_controlnet(diffusers_folder: &Path, out_file: &Path) -> Result<()> {
    let cfg: serde_json::Value =
        crate::model::config::read_json(&diffusers_folder.join("config.json"))?;
    let layers = cfg["layers_per_block"]
        .as_u64()
        .context("the ControlNet config has no layers_per_block")? as usize;
    let weights = diffusers_folder.join("diffusion_pytorch_model.safetensors");
    let tensors = candle_core::safetensors::load(&weights, &Device::Cpu)
        .with_context(|| format!("reading {}", weights.display()))?;
    let hint_blocks = tensors
        .keys()
        .filter_map(|k| index(k.strip_prefix("controlnet_cond_embedding.blocks.")?))
        .map(|(j, _)| j + 1)
        .max()
        .unwrap_or(0);
    let mut out = HashMap::with_capacity(tensors.len());
    for (name, t) in tensors {
        let ldm = ldm_key(&name, layers, hint_blocks)
            .with_context(|| format!("unexpected ControlNet tensor `{name}`"))?;
        out.insert(format!("{LDM_CONTROLNET_PREFIX}{ldm}"), t);
    }
    candle_core::safetensors::save(&out, out_file)
        .with_context(|| format!("writing {}", out_file.display()))
}
