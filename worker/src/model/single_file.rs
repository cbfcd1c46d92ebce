//! Single-file checkpoints: one `.safetensors` holding every network under
//! the original (CompVis/LDM) names, as A1111, ComfyUI and model sites ship
//! Stable Diffusion 1.x. The keys are renamed to the diffusers layout, the
//! configs are inferred from the tensor shapes, and the result is written
//! once as a diffusers folder in the cache (keyed by the file's content
//! fingerprint); the worker then loads that folder like any other, so there is
//! one loading path.
//!
//! A checkpoint carries no tokenizer: it comes from `--tokenizer DIR`, or else
//! from the hub repository of the text encoder it was trained with.

use anyhow::{bail, Context, Result};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{Device, Tensor};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::config::{PerBlock, TextEncoderConfig, UNetConfig, VaeConfig};
use super::shapes::ModelShape;

const UNET: &str = "model.diffusion_model.";
const VAE: &str = "first_stage_model.";
const CLIP: &str = "cond_stage_model.transformer.";
/// Where SD 1.x's tokenizer lives on the hub (the text encoder it was trained with).
pub const SD1_TOKENIZER_REPO: &str = "openai/clip-vit-large-patch14";

/// Whether `path` names a single-file checkpoint rather than a folder.
pub fn is_single_file(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}

/// Returns the diffusers folder converted from `file`, converting it on first
/// use into `cache/converted/<fingerprint>/<file stem>`.
pub fn converted_folder(file: &Path, tokenizer_dir: &Path, cache: &Path) -> Result<PathBuf> {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    let parent = cache.join("converted").join(fingerprint(file)?);
    let target = parent.join(&stem);
    if target.join(".complete").is_file() {
        return Ok(target);
    }
    let staging = parent.join(format!(".staging-{}", uuid::Uuid::new_v4().simple()));
    let staged = staging.join(&stem);
    convert(file, tokenizer_dir, &staged)?;
    std::fs::write(staged.join(".complete"), b"")?;
    if std::fs::rename(&staged, &target).is_err() && !target.join(".complete").is_file() {
        bail!(
            "could not place the converted model at {}",
            target.display()
        );
    }
    let _ = std::fs::remove_dir_all(&staging);
    Ok(target)
}

/// Size plus a hash of the safetensors header (names, shapes, offsets) and
/// the first and last MiB of data: cheap for multi-GB files, and any
/// re-saved or edited checkpoint changes it.
fn fingerprint(file: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let len = f.metadata()?.len();
    let mut h = Sha256::new();
    h.update(len.to_le_bytes());
    for start in [0, len.saturating_sub(1 << 20)] {
        let mut buf = Vec::new();
        f.seek(SeekFrom::Start(start))?;
        (&mut f).take(1 << 20).read_to_end(&mut buf)?;
        h.update(&buf);
    }
    Ok(h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Writes `file` as a diffusers folder at `out`.
pub fn convert(file: &Path, tokenizer_dir: &Path, out: &Path) -> Result<()> {
    // Safety: read-only mapping of a model file that is not modified meanwhile.
    let st = unsafe { MmapedSafetensors::new(file) }
        .with_context(|| format!("reading {}", file.display()))?;
    let names: BTreeSet<String> = st.tensors().into_iter().map(|(n, _)| n).collect();
    if names
        .iter()
        .any(|n| n.starts_with("conditioner.embedders."))
    {
        bail!("{} is an SDXL single-file checkpoint; only SD 1.x single files are supported so far (use the diffusers folder of the model)", file.display());
    }
    if names
        .iter()
        .any(|n| n.starts_with("cond_stage_model.model."))
    {
        bail!("{} is an SD 2.x (OpenCLIP) single-file checkpoint; only SD 1.x single files are supported so far", file.display());
    }
    for (prefix, what) in [(UNET, "UNet"), (VAE, "VAE"), (CLIP, "CLIP text encoder")] {
        if !names.iter().any(|n| n.starts_with(prefix)) {
            bail!("{} has no {what} (`{prefix}*` tensors): not a full Stable Diffusion 1.x checkpoint", file.display());
        }
    }
    let shape = |name: &str| -> Result<Vec<usize>> {
        Ok(st
            .get(name)
            .with_context(|| format!("the checkpoint has no `{name}`"))?
            .shape()
            .to_vec())
    };

    let unet_cfg = infer_unet(&names, &shape)?;
    let vae_cfg = infer_vae(&names, &shape)?;
    let text_cfg = infer_text(&names, &shape)?;
    let mut scheduler = ModelShape::sd15().scheduler_config;
    scheduler["_class_name"] = "PNDMScheduler".into();

    for sub in ["unet", "vae", "text_encoder", "tokenizer", "scheduler"] {
        std::fs::create_dir_all(out.join(sub))
            .with_context(|| format!("creating {}", out.display()))?;
    }
    write_json(&out.join("unet/config.json"), &unet_cfg)?;
    write_json(&out.join("vae/config.json"), &vae_cfg)?;
    write_json(&out.join("text_encoder/config.json"), &text_cfg)?;
    write_json(&out.join("scheduler/scheduler_config.json"), &scheduler)?;
    write_json(
        &out.join("model_index.json"),
        &serde_json::json!({
            "_class_name": if unet_cfg.in_channels == 9 { "StableDiffusionInpaintPipeline" } else { "StableDiffusionPipeline" },
            "_converted_from": file.file_name().map(|n| n.to_string_lossy().into_owned()),
        }),
    )?;
    copy_tokenizer(tokenizer_dir, &out.join("tokenizer"))?;

    let layers = unet_cfg.layers_per_block;
    let vae_blocks = vae_cfg.block_out_channels.len();
    let components: [(&str, &str, Box<Rename>); 3] = [
        (
            UNET,
            "unet/diffusion_pytorch_model.safetensors",
            Box::new(move |k| unet_key(k, layers)),
        ),
        (
            VAE,
            "vae/diffusion_pytorch_model.safetensors",
            Box::new(move |k| vae_key(k, vae_blocks)),
        ),
        (CLIP, "text_encoder/model.safetensors", Box::new(text_key)),
    ];
    // One component at a time: peak memory is the largest network, not all three.
    for (prefix, path, rename) in components {
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for name in names.iter().filter(|n| n.starts_with(prefix)) {
            let Some(key) = rename(&name[prefix.len()..]) else {
                continue;
            };
            let mut t = st.load(name, &Device::Cpu)?;
            // LDM's VAE attention uses 1x1 convolutions where diffusers has linears.
            if prefix == VAE && key.contains(".attentions.") && t.rank() == 4 {
                let (o, i, _, _) = t.dims4()?;
                t = t.reshape((o, i))?;
            }
            if tensors.insert(key.clone(), t).is_some() {
                bail!("two checkpoint tensors map to `{key}`");
            }
        }
        candle_core::safetensors::save(&tensors, out.join(path))
            .with_context(|| format!("writing {}", out.join(path).display()))?;
    }
    Ok(())
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)? + "\n";
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn copy_tokenizer(from: &Path, to: &Path) -> Result<()> {
    let mut copied = 0;
    for name in super::source::TOKENIZER_FILES {
        let src = from.join(name);
        if src.is_file() {
            std::fs::copy(&src, to.join(name))
                .with_context(|| format!("copying {}", src.display()))?;
            copied += 1;
        }
    }
    if copied == 0 {
        bail!(
            "{} holds no tokenizer files (tokenizer.json, or vocab.json + merges.txt)",
            from.display()
        );
    }
    Ok(())
}

/// The ResNet names of LDM's `ResBlock` in diffusers' `ResnetBlock2D`.
fn resnet(rest: &str) -> Option<String> {
    const MAP: &[(&str, &str)] = &[
        ("in_layers.0.", "norm1."),
        ("in_layers.2.", "conv1."),
        ("emb_layers.1.", "time_emb_proj."),
        ("out_layers.0.", "norm2."),
        ("out_layers.3.", "conv2."),
        ("skip_connection.", "conv_shortcut."),
    ];
    MAP.iter()
        .find_map(|(from, to)| rest.strip_prefix(from).map(|r| format!("{to}{r}")))
}

/// Splits `"<index>.<rest>"`.
fn index(s: &str) -> Option<(usize, &str)> {
    let (i, rest) = s.split_once('.')?;
    Some((i.parse().ok()?, rest))
}

/// An LDM UNet key (without `model.diffusion_model.`) in diffusers' layout.
/// Input block i > 0 is layer (i-1) % (layers+1) of down block (i-1) / (layers+1),
/// the last of each block's slots being its downsampler; output block i is
/// layer i % (layers+1) of up block i / (layers+1).
fn unet_key(key: &str, layers: usize) -> Option<String> {
    let per = layers + 1;
    for (from, to) in [
        ("time_embed.0.", "time_embedding.linear_1."),
        ("time_embed.2.", "time_embedding.linear_2."),
        ("input_blocks.0.0.", "conv_in."),
        ("out.0.", "conv_norm_out."),
        ("out.2.", "conv_out."),
    ] {
        if let Some(rest) = key.strip_prefix(from) {
            return Some(format!("{to}{rest}"));
        }
    }
    if let Some(s) = key.strip_prefix("input_blocks.") {
        let (i, s) = index(s)?;
        let (j, rest) = index(s)?;
        let (block, layer) = ((i - 1) / per, (i - 1) % per);
        return match (j, rest.strip_prefix("op.")) {
            (0, Some(op)) => Some(format!("down_blocks.{block}.downsamplers.0.conv.{op}")),
            (0, None) => Some(format!(
                "down_blocks.{block}.resnets.{layer}.{}",
                resnet(rest)?
            )),
            (1, _) => Some(format!("down_blocks.{block}.attentions.{layer}.{rest}")),
            _ => None,
        };
    }
    if let Some(s) = key.strip_prefix("middle_block.") {
        return match index(s)? {
            (0, rest) => Some(format!("mid_block.resnets.0.{}", resnet(rest)?)),
            (1, rest) => Some(format!("mid_block.attentions.0.{rest}")),
            (2, rest) => Some(format!("mid_block.resnets.1.{}", resnet(rest)?)),
            _ => None,
        };
    }
    if let Some(s) = key.strip_prefix("output_blocks.") {
        let (i, s) = index(s)?;
        let (j, rest) = index(s)?;
        let (block, layer) = (i / per, i % per);
        return match (j, rest.strip_prefix("conv.")) {
            (0, _) => Some(format!(
                "up_blocks.{block}.resnets.{layer}.{}",
                resnet(rest)?
            )),
            (1 | 2, Some(conv)) => Some(format!("up_blocks.{block}.upsamplers.0.conv.{conv}")),
            (1, None) => Some(format!("up_blocks.{block}.attentions.{layer}.{rest}")),
            _ => None,
        };
    }
    None
}

/// An LDM VAE key (without `first_stage_model.`) in diffusers' layout; the
/// decoder's `up.i` is diffusers' `up_blocks.(n-1-i)`.
fn vae_key(key: &str, blocks: usize) -> Option<String> {
    let (side, s) = key.split_once('.')?;
    if !matches!(side, "encoder" | "decoder") {
        return matches!(side, "quant_conv" | "post_quant_conv").then(|| key.to_string());
    }
    let res = |rest: &str| rest.replace("nin_shortcut.", "conv_shortcut.");
    if let Some(s) = s.strip_prefix("down.") {
        let (i, s) = index(s)?;
        if let Some(rest) = s.strip_prefix("downsample.conv.") {
            return Some(format!("{side}.down_blocks.{i}.downsamplers.0.conv.{rest}"));
        }
        let (j, rest) = index(s.strip_prefix("block.")?)?;
        return Some(format!("{side}.down_blocks.{i}.resnets.{j}.{}", res(rest)));
    }
    if let Some(s) = s.strip_prefix("up.") {
        let (i, s) = index(s)?;
        let b = blocks.checked_sub(1 + i)?;
        if let Some(rest) = s.strip_prefix("upsample.conv.") {
            return Some(format!("{side}.up_blocks.{b}.upsamplers.0.conv.{rest}"));
        }
        let (j, rest) = index(s.strip_prefix("block.")?)?;
        return Some(format!("{side}.up_blocks.{b}.resnets.{j}.{}", res(rest)));
    }
    if let Some(rest) = s.strip_prefix("mid.block_1.") {
        return Some(format!("{side}.mid_block.resnets.0.{}", res(rest)));
    }
    if let Some(rest) = s.strip_prefix("mid.block_2.") {
        return Some(format!("{side}.mid_block.resnets.1.{}", res(rest)));
    }
    if let Some(rest) = s.strip_prefix("mid.attn_1.") {
        let (part, tail) = rest.split_once('.')?;
        let to = match part {
            "norm" => "group_norm",
            "q" => "to_q",
            "k" => "to_k",
            "v" => "to_v",
            "proj_out" => "to_out.0",
            _ => return None,
        };
        return Some(format!("{side}.mid_block.attentions.0.{to}.{tail}"));
    }
    // conv_in, norm_out, conv_out keep their names.
    Some(key.to_string())
}

/// CLIP keys are transformers' already; older exports lack the `text_model.` level.
fn text_key(key: &str) -> Option<String> {
    if key.ends_with("position_ids") {
        return None;
    }
    Some(if key.starts_with("text_model.") {
        key.to_string()
    } else {
        format!("text_model.{key}")
    })
}

/// An LDM key (without its component prefix) to its diffusers name, or `None`
/// for tensors diffusers does not keep.
type Rename = dyn Fn(&str) -> Option<String>;

type ShapeOf<'a> = dyn Fn(&str) -> Result<Vec<usize>> + 'a;

/// Indices `i` of the keys `<prefix><i>.<suffix>`.
fn indices(names: &BTreeSet<String>, prefix: &str, suffix: &str) -> BTreeSet<usize> {
    names
        .iter()
        .filter_map(|n| {
            let (i, rest) = index(n.strip_prefix(prefix)?)?;
            rest.starts_with(suffix).then_some(i)
        })
        .collect()
}

fn infer_unet(names: &BTreeSet<String>, shape: &ShapeOf) -> Result<UNetConfig> {
    let p = |k: &str| format!("{UNET}{k}");
    let conv_in = shape(&p("input_blocks.0.0.weight"))?;
    let conv_out = shape(&p("out.2.weight"))?;
    let inputs = indices(names, &p("input_blocks."), "");
    let downsamplers: Vec<usize> = indices(names, &p("input_blocks."), "0.op.")
        .into_iter()
        .collect();
    let last = *inputs
        .iter()
        .max()
        .context("the UNet has no input blocks")?;
    // Input blocks: conv_in, then per block `layers` resnets and a downsampler
    // (none after the last block).
    let layers = match downsamplers.first() {
        Some(first) => first - 1,
        None => last,
    };
    let n = downsamplers.len() + 1;
    if layers == 0 || last != n * layers + (n - 1) {
        bail!("the UNet's input blocks do not form a Stable Diffusion UNet");
    }
    let mut channels = Vec::with_capacity(n);
    let mut down_types = Vec::with_capacity(n);
    let mut depth = Vec::with_capacity(n);
    let mut cross_dim = None;
    let mut linear_proj = false;
    for k in 0..n {
        let i = k * (layers + 1) + 1;
        channels.push(shape(&p(&format!("input_blocks.{i}.0.out_layers.3.weight")))?[0]);
        let attn = p(&format!("input_blocks.{i}.1."));
        if names.contains(&format!("{attn}proj_in.weight")) {
            down_types.push("CrossAttnDownBlock2D".to_string());
            depth.push(indices(names, &format!("{attn}transformer_blocks."), "").len());
            linear_proj = shape(&format!("{attn}proj_in.weight"))?.len() == 2;
            cross_dim = Some(shape(&format!("{attn}transformer_blocks.0.attn2.to_k.weight"))?[1]);
        } else {
            down_types.push("DownBlock2D".to_string());
            depth.push(1);
        }
    }
    let cross = cross_dim.context("the UNet has no cross-attention")?;
    // Head counts are not in the weights: SD 1.x uses 8 heads everywhere.
    let heads = PerBlock::All(8);
    let mut cfg = ModelShape::sd15().unet;
    cfg.in_channels = conv_in[1];
    cfg.out_channels = conv_out[0];
    cfg.block_out_channels = channels;
    cfg.up_block_types = down_types
        .iter()
        .rev()
        .map(|d| d.replace("Down", "Up"))
        .collect();
    cfg.down_block_types = down_types;
    cfg.layers_per_block = layers;
    cfg.attention_head_dim = heads;
    cfg.cross_attention_dim = PerBlock::All(cross);
    cfg.transformer_layers_per_block = PerBlock::Each(depth);
    cfg.use_linear_projection = linear_proj;
    cfg.sample_size = Some(64);
    cfg.to_candle().context("the checkpoint's UNet")?;
    Ok(cfg)
}

fn infer_vae(names: &BTreeSet<String>, shape: &ShapeOf) -> Result<VaeConfig> {
    let p = |k: &str| format!("{VAE}{k}");
    let blocks = indices(names, &p("encoder.down."), "").len();
    let channels = (0..blocks)
        .map(|i| Ok(shape(&p(&format!("encoder.down.{i}.block.0.conv1.weight")))?[0]))
        .collect::<Result<Vec<_>>>()?;
    let mut cfg = ModelShape::sd15().vae;
    cfg.down_block_types = vec!["DownEncoderBlock2D".into(); channels.len()];
    cfg.up_block_types = vec!["UpDecoderBlock2D".into(); channels.len()];
    cfg.block_out_channels = channels;
    cfg.layers_per_block = indices(names, &p("encoder.down.0.block."), "").len();
    cfg.latent_channels = shape(&p("decoder.conv_in.weight"))?[1];
    cfg.norm_num_groups = 32;
    cfg.use_quant_conv = names.contains(&p("quant_conv.weight"));
    cfg.use_post_quant_conv = names.contains(&p("post_quant_conv.weight"));
    cfg.to_candle().context("the checkpoint's VAE")?;
    Ok(cfg)
}

fn infer_text(names: &BTreeSet<String>, shape: &ShapeOf) -> Result<TextEncoderConfig> {
    let root = if names
        .iter()
        .any(|n| n.starts_with(&format!("{CLIP}text_model.")))
    {
        format!("{CLIP}text_model.")
    } else {
        CLIP.to_string()
    };
    let tokens = shape(&format!("{root}embeddings.token_embedding.weight"))?;
    let positions = shape(&format!("{root}embeddings.position_embedding.weight"))?;
    let fc1 = shape(&format!("{root}encoder.layers.0.mlp.fc1.weight"))?;
    let mut cfg = ModelShape::sd15().text_encoder;
    cfg.vocab_size = tokens[0];
    cfg.hidden_size = tokens[1];
    cfg.max_position_embeddings = positions[0];
    cfg.intermediate_size = fc1[0];
    cfg.num_hidden_layers = indices(names, &format!("{root}encoder.layers."), "").len();
    // CLIP ViT-L/14: 64-wide heads.
    cfg.num_attention_heads = (cfg.hidden_size / 64).max(1);
    cfg.projection_dim = Some(cfg.hidden_size);
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unet_keys_follow_diffusers_layout() {
        let cases = [
            ("time_embed.0.weight", "time_embedding.linear_1.weight"),
            ("input_blocks.0.0.bias", "conv_in.bias"),
            (
                "input_blocks.1.0.in_layers.0.weight",
                "down_blocks.0.resnets.0.norm1.weight",
            ),
            (
                "input_blocks.2.1.proj_in.weight",
                "down_blocks.0.attentions.1.proj_in.weight",
            ),
            (
                "input_blocks.3.0.op.weight",
                "down_blocks.0.downsamplers.0.conv.weight",
            ),
            (
                "input_blocks.4.0.skip_connection.bias",
                "down_blocks.1.resnets.0.conv_shortcut.bias",
            ),
            (
                "middle_block.2.emb_layers.1.weight",
                "mid_block.resnets.1.time_emb_proj.weight",
            ),
            (
                "middle_block.1.transformer_blocks.0.attn2.to_k.weight",
                "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight",
            ),
            (
                "output_blocks.2.1.conv.weight",
                "up_blocks.0.upsamplers.0.conv.weight",
            ),
            (
                "output_blocks.5.2.conv.bias",
                "up_blocks.1.upsamplers.0.conv.bias",
            ),
            (
                "output_blocks.5.1.norm.weight",
                "up_blocks.1.attentions.2.norm.weight",
            ),
            (
                "output_blocks.11.0.out_layers.3.weight",
                "up_blocks.3.resnets.2.conv2.weight",
            ),
            ("out.2.weight", "conv_out.weight"),
        ];
        for (ldm, diffusers) in cases {
            assert_eq!(unet_key(ldm, 2).as_deref(), Some(diffusers), "{ldm}");
        }
    }

    #[test]
    fn vae_keys_follow_diffusers_layout() {
        let cases = [
            (
                "encoder.down.0.block.1.conv2.weight",
                "encoder.down_blocks.0.resnets.1.conv2.weight",
            ),
            (
                "encoder.down.1.block.0.nin_shortcut.weight",
                "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
            ),
            (
                "encoder.down.2.downsample.conv.bias",
                "encoder.down_blocks.2.downsamplers.0.conv.bias",
            ),
            (
                "decoder.up.3.block.2.norm1.weight",
                "decoder.up_blocks.0.resnets.2.norm1.weight",
            ),
            (
                "decoder.up.1.upsample.conv.weight",
                "decoder.up_blocks.2.upsamplers.0.conv.weight",
            ),
            (
                "decoder.mid.attn_1.proj_out.bias",
                "decoder.mid_block.attentions.0.to_out.0.bias",
            ),
            (
                "encoder.mid.attn_1.norm.weight",
                "encoder.mid_block.attentions.0.group_norm.weight",
            ),
            (
                "encoder.mid.block_2.conv1.weight",
                "encoder.mid_block.resnets.1.conv1.weight",
            ),
            ("post_quant_conv.weight", "post_quant_conv.weight"),
            ("decoder.norm_out.weight", "decoder.norm_out.weight"),
        ];
        for (ldm, diffusers) in cases {
            assert_eq!(vae_key(ldm, 4).as_deref(), Some(diffusers), "{ldm}");
        }
        assert_eq!(text_key("embeddings.position_ids"), None);
        assert_eq!(
            text_key("encoder.layers.0.mlp.fc1.weight").as_deref(),
            Some("text_model.encoder.layers.0.mlp.fc1.weight")
        );
    }
}
