//! Configs of a single-file checkpoint's networks, inferred from the tensor
//! shapes. What the weights do not record (attention head counts, native
//! size, VAE scale) follows the family's published configs.

use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;

use super::keys::index;
use super::{Kind, UNET, VAE};
use crate::model::config::{PerBlock, TextEncoderConfig, UNetConfig, VaeConfig};
use crate::model::shapes::ModelShape;

pub(super) type ShapeOf<'a> = dyn Fn(&str) -> Result<Vec<usize>> + 'a;

/// Indices `i` of the keys `<prefix><i>.<suffix>`.
pub(super) fn indices(names: &BTreeSet<String>, prefix: &str, suffix: &str) -> BTreeSet<usize> {
    names
        .iter()
        .filter_map(|n| {
            let (i, rest) = index(n.strip_prefix(prefix)?)?;
            rest.starts_with(suffix).then_some(i)
        })
        .collect()
}

/// `pooled`: the width of SDXL's pooled text embedding (its second encoder's
/// projection); `native_latent`: the family's native latent size.
pub(super) fn infer_unet(
    names: &BTreeSet<String>,
    shape: &ShapeOf,
    kind: Kind,
    pooled: Option<usize>,
    native_latent: usize,
) -> Result<UNetConfig> {
    let mut cfg = infer_down_path(names, shape, UNET, kind, pooled)?;
    cfg.out_channels = shape(&format!("{UNET}out.2.weight"))?[0];
    cfg.sample_size = Some(native_latent);
    cfg.to_candle().context("the checkpoint's UNet")?;
    Ok(cfg)
}

/// The part of a UNet config its encoder half (time and SDXL `label_emb`
/// embeddings, `input_blocks`, `middle_block`) under `prefix` determines; a
/// ControlNet is that half. Up blocks mirror the down blocks; `out_channels`
/// and `sample_size` are left at SD 1.5's.
pub(super) fn infer_down_path(
    names: &BTreeSet<String>,
    shape: &ShapeOf,
    prefix: &str,
    kind: Kind,
    pooled: Option<usize>,
) -> Result<UNetConfig> {
    let p = |k: &str| format!("{prefix}{k}");
    let conv_in = shape(&p("input_blocks.0.0.weight"))?;
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
    let mut cfg = ModelShape::sd15().unet;
    // Head counts are not in the weights: SD 1.x uses 8 heads everywhere,
    // SD 2.x and SDXL 64-wide heads.
    cfg.attention_head_dim = match kind {
        Kind::Sd1 => PerBlock::All(8),
        Kind::Sd2 { .. } | Kind::Sdxl => {
            PerBlock::Each(channels.iter().map(|c| (c / 64).max(1)).collect())
        }
    };
    if kind == Kind::Sdxl {
        let input = shape(&p("label_emb.0.0.weight"))
            .context("an SDXL UNet has `label_emb` (pooled text and time ids)")?[1];
        let pooled = pooled.context("SDXL's pooled text width")?;
        if input <= pooled || (input - pooled) % 6 != 0 {
            bail!("the UNet's label_emb takes {input} values, not pooled text ({pooled}) + 6 time ids (refiner checkpoints are not supported)");
        }
        cfg.addition_embed_type = Some("text_time".into());
        cfg.addition_time_embed_dim = Some((input - pooled) / 6);
        cfg.projection_class_embeddings_input_dim = Some(input);
    }
    cfg.in_channels = conv_in[1];
    cfg.block_out_channels = channels;
    cfg.up_block_types = down_types
        .iter()
        .rev()
        .map(|d| d.replace("Down", "Up"))
        .collect();
    cfg.down_block_types = down_types;
    cfg.layers_per_block = layers;
    cfg.cross_attention_dim = PerBlock::All(cross);
    cfg.transformer_layers_per_block = PerBlock::Each(depth);
    cfg.use_linear_projection = linear_proj;
    Ok(cfg)
}

pub(super) fn infer_vae(names: &BTreeSet<String>, shape: &ShapeOf) -> Result<VaeConfig> {
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

/// A transformers-style CLIP text model under `prefix` (SD 1.x's, SDXL's first).
pub(super) fn infer_text(
    names: &BTreeSet<String>,
    shape: &ShapeOf,
    prefix: &str,
) -> Result<TextEncoderConfig> {
    let root = if names
        .iter()
        .any(|n| n.starts_with(&format!("{prefix}text_model.")))
    {
        format!("{prefix}text_model.")
    } else {
        prefix.to_string()
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

/// An OpenCLIP text tower under `prefix`: SD 2.x's ViT-H (`layers_dropped`
/// 1: it conditions on the penultimate layer, and diffusers' config keeps
/// only the layers it uses) or SDXL's bigG (all layers, with its projection).
pub(super) fn infer_open_clip(
    names: &BTreeSet<String>,
    shape: &ShapeOf,
    prefix: &str,
    layers_dropped: usize,
    with_projection: bool,
) -> Result<TextEncoderConfig> {
    let tokens = shape(&format!("{prefix}token_embedding.weight"))?;
    let positions = shape(&format!("{prefix}positional_embedding"))?;
    let fc = shape(&format!("{prefix}transformer.resblocks.0.mlp.c_fc.weight"))?;
    let layers = indices(names, &format!("{prefix}transformer.resblocks."), "").len();
    let mut cfg = ModelShape::sd15().text_encoder;
    cfg.vocab_size = tokens[0];
    cfg.hidden_size = tokens[1];
    cfg.max_position_embeddings = positions[0];
    cfg.intermediate_size = fc[0];
    cfg.num_hidden_layers = layers
        .checked_sub(layers_dropped)
        .filter(|&l| l > 0)
        .context("the OpenCLIP text tower has too few layers")?;
    // OpenCLIP ViT-H and bigG: 64-wide heads, exact GELU.
    cfg.num_attention_heads = (cfg.hidden_size / 64).max(1);
    cfg.hidden_act = "gelu".into();
    if with_projection {
        cfg.architectures = vec!["CLIPTextModelWithProjection".into()];
        cfg.projection_dim = Some(shape(&format!("{prefix}text_projection"))?[1]);
    } else {
        cfg.projection_dim = Some(cfg.hidden_size);
    }
    Ok(cfg)
}
