//! LDM (CompVis / Stability) tensor names to diffusers' names: the UNet
//! (SDXL's `label_emb` included), the VAE, transformers-style CLIP, and
//! OpenCLIP text towers (SD 2.x, SDXL's second encoder), whose fused
//! attention projections are split and whose `text_projection` is
//! transposed.

use anyhow::{bail, Result};
use candle_core::Tensor;

/// LDM's `ResBlock` tensor names and diffusers' `ResnetBlock2D` ones.
pub(crate) const RESNET_RENAMES: &[(&str, &str)] = &[
    ("in_layers.0.", "norm1."),
    ("in_layers.2.", "conv1."),
    ("emb_layers.1.", "time_emb_proj."),
    ("out_layers.0.", "norm2."),
    ("out_layers.3.", "conv2."),
    ("skip_connection.", "conv_shortcut."),
];

/// The ResNet names of LDM's `ResBlock` in diffusers' `ResnetBlock2D`.
fn resnet(rest: &str) -> Option<String> {
    RESNET_RENAMES
        .iter()
        .find_map(|(from, to)| rest.strip_prefix(from).map(|r| format!("{to}{r}")))
}

/// Splits `"<index>.<rest>"`.
pub(super) fn index(s: &str) -> Option<(usize, &str)> {
    let (i, rest) = s.split_once('.')?;
    Some((i.parse().ok()?, rest))
}

/// An LDM UNet key (without `model.diffusion_model.`) in diffusers' layout.
/// Input block i > 0 is layer (i-1) % (layers+1) of down block (i-1) / (layers+1),
/// the last of each block's slots being its downsampler; output block i is
/// layer i % (layers+1) of up block i / (layers+1).
pub(crate) fn unet_key(key: &str, layers: usize) -> Option<String> {
    let per = layers + 1;
    for (from, to) in [
        ("time_embed.0.", "time_embedding.linear_1."),
        ("time_embed.2.", "time_embedding.linear_2."),
        // SDXL's pooled-text + time-ids embedding.
        ("label_emb.0.0.", "add_embedding.linear_1."),
        ("label_emb.0.2.", "add_embedding.linear_2."),
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
pub(super) fn vae_key(key: &str, blocks: usize) -> Option<String> {
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
pub(super) fn text_key(key: &str) -> Option<String> {
    if key.ends_with("position_ids") {
        return None;
    }
    Some(if key.starts_with("text_model.") {
        key.to_string()
    } else {
        format!("text_model.{key}")
    })
}

/// An OpenCLIP text-tower tensor (without its component prefix) in
/// transformers' `CLIPTextModel(WithProjection)` layout, as one or more
/// (name, tensor) pairs; `None` for tensors transformers does not keep (and
/// for layers at or past `layers`, which SD 2.x drops: it conditions on the
/// penultimate layer).
pub(super) fn open_clip(
    key: &str,
    t: Tensor,
    layers: usize,
) -> Result<Option<Vec<(String, Tensor)>>> {
    let tm = "text_model.";
    let one = |name: String, t: Tensor| Ok(Some(vec![(name, t)]));
    match key {
        "token_embedding.weight" => {
            return one(format!("{tm}embeddings.token_embedding.weight"), t)
        }
        "positional_embedding" => {
            return one(format!("{tm}embeddings.position_embedding.weight"), t)
        }
        "ln_final.weight" | "ln_final.bias" => {
            return one(format!("{tm}final_layer_norm.{}", &key[9..]), t)
        }
        // OpenCLIP multiplies x @ P; a linear layer stores P transposed.
        "text_projection" => return one("text_projection.weight".into(), t.t()?.contiguous()?),
        _ => {}
    }
    let Some(s) = key.strip_prefix("transformer.resblocks.") else {
        // logit_scale, attn_mask: not part of the text model.
        return Ok(None);
    };
    let Some((i, rest)) = index(s) else {
        bail!("unexpected OpenCLIP tensor `{key}`");
    };
    if i >= layers {
        return Ok(None);
    }
    let layer = format!("{tm}encoder.layers.{i}.");
    let renamed = |to: &str, tail: &str| format!("{layer}{to}{tail}");
    for (from, to) in [
        ("ln_1.", "layer_norm1."),
        ("ln_2.", "layer_norm2."),
        ("mlp.c_fc.", "mlp.fc1."),
        ("mlp.c_proj.", "mlp.fc2."),
        ("attn.out_proj.", "self_attn.out_proj."),
    ] {
        if let Some(tail) = rest.strip_prefix(from) {
            return one(renamed(to, tail), t);
        }
    }
    // The fused [q; k; v] projection, split in three.
    let tail = match rest {
        "attn.in_proj_weight" => "weight",
        "attn.in_proj_bias" => "bias",
        _ => bail!("unexpected OpenCLIP tensor `{key}`"),
    };
    let third = t.dim(0)? / 3;
    let parts = ["q_proj", "k_proj", "v_proj"]
        .iter()
        .enumerate()
        .map(|(k, p)| {
            Ok((
                renamed(&format!("self_attn.{p}."), tail),
                t.narrow(0, k * third, third)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unet_keys_follow_diffusers_layout() {
        let cases = [
            ("time_embed.0.weight", "time_embedding.linear_1.weight"),
            ("label_emb.0.2.bias", "add_embedding.linear_2.bias"),
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

    #[test]
    fn open_clip_splits_fused_attention_and_transposes_the_projection() {
        use candle_core::Device;
        let qkv = Tensor::arange(0f32, 6.0, &Device::Cpu)
            .unwrap()
            .reshape((6, 1))
            .unwrap();
        let parts = open_clip("transformer.resblocks.1.attn.in_proj_weight", qkv, 2)
            .unwrap()
            .unwrap();
        let names: Vec<&str> = parts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "text_model.encoder.layers.1.self_attn.q_proj.weight",
                "text_model.encoder.layers.1.self_attn.k_proj.weight",
                "text_model.encoder.layers.1.self_attn.v_proj.weight"
            ]
        );
        let v: Vec<f32> = parts[2].1.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v, [4.0, 5.0]);
        let proj = Tensor::arange(0f32, 6.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 3))
            .unwrap();
        let out = open_clip("text_projection", proj, 2).unwrap().unwrap();
        assert_eq!(out[0].0, "text_projection.weight");
        assert_eq!(out[0].1.dims(), [3, 2]);
        let t = Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu).unwrap();
        // SD 2.x drops its last layer; logit_scale is not part of the text model.
        assert!(
            open_clip("transformer.resblocks.2.ln_1.weight", t.clone(), 2)
                .unwrap()
                .is_none()
        );
        assert!(open_clip("logit_scale", t.clone(), 2).unwrap().is_none());
        let ln = open_clip("transformer.resblocks.0.mlp.c_proj.bias", t, 2)
            .unwrap()
            .unwrap();
        assert_eq!(ln[0].0, "text_model.encoder.layers.0.mlp.fc2.bias");
    }
}
