//! A ControlNet's `config.json` (diffusers' `ControlNetModel`), read as
//! diffusers writes it, mapped onto the UNet config our blocks are built
//! from, and checked against the UNet it is to steer.

use anyhow::{bail, ensure, Context, Result};
use candle_transformers::models::stable_diffusion::unet_2d::UNet2DConditionModelConfig;
use serde::{Deserialize, Serialize};

// The serde defaults shared with the UNet's config.
use crate::model::config::{four, one, one_f, one_per_block, three, two, yes};
use crate::model::config::{PerBlock, TextTimeConfig, UNetConfig};
use crate::model::shapes::ModelShape;
use crate::model::Family;

/// `config.json` of a diffusers `ControlNetModel`. Defaults are diffusers'
/// (`ControlNetModel.__init__`), so a config that leaves a field out reads
/// as diffusers reads it.
///
/// Supported: what SD 1.x, 2.x and SDXL ControlNets ship (cross-attention
/// down blocks and mid block, SDXL's `text_time` conditioning, both channel
/// orders, `global_pool_conditions`). Refused by [`ControlNetConfig::validate`]
/// with an error naming the field: `only_cross_attention`, class or
/// encoder-hidden-state embeddings, `resnet_time_scale_shift` other than
/// `default`, the attention-free `UNetMidBlock2D`, and what our UNet blocks
/// refuse (`UNetConfig::to_candle`: `act_fn` other than silu,
/// `norm_num_groups` other than 32).
///
/// `upcast_attention` is read and needs nothing: our attention computes in
/// f32 whatever the model's dtype (`model/attention.rs`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ControlNetConfig {
    #[serde(rename = "_class_name", default = "class_name")]
    pub class_name: String,
    #[serde(
        rename = "_diffusers_version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub diffusers_version: Option<String>,
    /// Latent channels of the sample (4; an inpainting UNet's ControlNets
    /// also take 4).
    #[serde(default = "four")]
    pub in_channels: usize,
    /// Channels of the control image (3).
    #[serde(default = "three")]
    pub conditioning_channels: usize,
    /// Widths of `controlnet_cond_embedding`: every entry after the first
    /// halves the control image, so it is `2^(len - 1)` pixels per latent
    /// (SD: (16, 32, 96, 256), 8 pixels per latent).
    #[serde(default = "cond_embedding_channels")]
    pub conditioning_embedding_out_channels: Vec<usize>,
    #[serde(default = "yes")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default = "down_block_types")]
    pub down_block_types: Vec<String>,
    #[serde(default = "mid_block_type")]
    pub mid_block_type: Option<String>,
    #[serde(default = "no_per_block")]
    pub only_cross_attention: PerBlock<bool>,
    #[serde(default = "block_out_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "two")]
    pub layers_per_block: usize,
    #[serde(default = "one")]
    pub downsample_padding: usize,
    #[serde(default = "one_f")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "silu")]
    pub act_fn: String,
    #[serde(default = "thirty_two")]
    pub norm_num_groups: usize,
    #[serde(default = "eps")]
    pub norm_eps: f64,
    #[serde(default = "cross_attention_dim")]
    pub cross_attention_dim: usize,
    #[serde(default = "one_per_block")]
    pub transformer_layers_per_block: PerBlock<usize>,
    /// diffusers' misnomer: the number of heads (unless `num_attention_heads` is set).
    #[serde(default = "heads")]
    pub attention_head_dim: PerBlock<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_attention_heads: Option<PerBlock<usize>>,
    #[serde(default)]
    pub use_linear_projection: bool,
    /// Some published configs write `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upcast_attention: Option<bool>,
    /// SDXL: "text_time".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addition_embed_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addition_time_embed_dim: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projection_class_embeddings_input_dim: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_embed_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_class_embeds: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_hid_dim: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_hid_dim_type: Option<String>,
    #[serde(default = "time_scale_shift")]
    pub resnet_time_scale_shift: String,
    /// "rgb", or "bgr": the control image's channels are reversed before
    /// the conditioning embedding (as diffusers' `forward` does).
    #[serde(default = "rgb")]
    pub controlnet_conditioning_channel_order: String,
    /// Residuals mean-pooled over height and width (shuffle ControlNets).
    #[serde(default)]
    pub global_pool_conditions: bool,
}

impl ControlNetConfig {
    /// The ControlNet diffusers' `ControlNetModel.from_unet` derives from
    /// `unet`, with `in_channels` set to the latent channels (diffusers
    /// copies the UNet's, 9 for an inpainting UNet, where published
    /// inpainting ControlNets take 4) and the given conditioning embedding.
    pub fn from_unet(
        unet: &UNetConfig,
        latent_channels: usize,
        conditioning_embedding_out_channels: &[usize],
    ) -> Result<Self> {
        let cross_attention_dim = match &unet.cross_attention_dim {
            PerBlock::All(d) => *d,
            PerBlock::Each(v) => *v
                .first()
                .context("unet config: empty cross_attention_dim")?,
        };
        let cfg = Self {
            class_name: class_name(),
            diffusers_version: Some("0.30.0".into()),
            in_channels: latent_channels,
            conditioning_channels: 3,
            conditioning_embedding_out_channels: conditioning_embedding_out_channels.to_vec(),
            flip_sin_to_cos: unet.flip_sin_to_cos,
            freq_shift: unet.freq_shift,
            down_block_types: unet.down_block_types.clone(),
            mid_block_type: unet.mid_block_type.clone(),
            only_cross_attention: no_per_block(),
            block_out_channels: unet.block_out_channels.clone(),
            layers_per_block: unet.layers_per_block,
            downsample_padding: unet.downsample_padding,
            mid_block_scale_factor: unet.mid_block_scale_factor,
            act_fn: unet.act_fn.clone(),
            norm_num_groups: unet.norm_num_groups,
            norm_eps: unet.norm_eps,
            cross_attention_dim,
            transformer_layers_per_block: unet.transformer_layers_per_block.clone(),
            attention_head_dim: unet.attention_head_dim.clone(),
            num_attention_heads: unet.num_attention_heads.clone(),
            use_linear_projection: unet.use_linear_projection,
            upcast_attention: Some(false),
            addition_embed_type: unet.addition_embed_type.clone(),
            addition_time_embed_dim: unet.addition_time_embed_dim,
            projection_class_embeddings_input_dim: unet.projection_class_embeddings_input_dim,
            class_embed_type: unet.class_embed_type.clone(),
            num_class_embeds: None,
            encoder_hid_dim: None,
            encoder_hid_dim_type: unet.encoder_hid_dim_type.clone(),
            resnet_time_scale_shift: time_scale_shift(),
            controlnet_conditioning_channel_order: rgb(),
            global_pool_conditions: false,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// A ControlNet for a model shape's UNet ([`Self::from_unet`]): its
    /// conditioning embedding downsamples by the shape's VAE factor, with
    /// diffusers' widths (16, 32, 96, 256) for full-size shapes and (8, 16,
    /// 32, ...) for the tiny ones. Errors for shapes without a UNet (SD 3).
    pub fn for_shape(shape: &ModelShape) -> Result<Self> {
        ensure!(
            shape.transformer.is_none(),
            "shape `{}` has no UNet: ControlNets here are UNet ControlNets",
            shape.name
        );
        let scale = shape.vae.scale_factor();
        let stages = scale.trailing_zeros() as usize + 1;
        let widths: &[usize] = if shape.unet.block_out_channels[0] >= 256 {
            &[16, 32, 96, 256]
        } else {
            &[8, 16, 32, 64]
        };
        ensure!(
            stages <= widths.len(),
            "shape `{}`: VAE factor {scale} is deeper than a conditioning embedding of {} stages",
            shape.name,
            widths.len()
        );
        Self::from_unet(&shape.unet, shape.vae.latent_channels, &widths[..stages])
    }

    /// Refuses what the network cannot compute as diffusers does, naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.class_name != "ControlNetModel" {
            bail!(
                "controlnet config: `{}` is not supported (only diffusers' ControlNetModel)",
                self.class_name
            );
        }
        let only_cross = match &self.only_cross_attention {
            PerBlock::All(b) => *b,
            PerBlock::Each(v) => v.iter().any(|b| *b),
        };
        ensure!(
            !only_cross,
            "controlnet config: only_cross_attention is not supported"
        );
        if self.encoder_hid_dim.is_some() || self.encoder_hid_dim_type.is_some() {
            bail!("controlnet config: encoder_hid_dim / encoder_hid_dim_type are not supported");
        }
        if self.class_embed_type.is_some() || self.num_class_embeds.is_some() {
            bail!("controlnet config: class embeddings (class_embed_type, num_class_embeds) are not supported");
        }
        ensure!(
            self.resnet_time_scale_shift == "default",
            "controlnet config: resnet_time_scale_shift `{}` is not supported (only `default`)",
            self.resnet_time_scale_shift
        );
        match self.controlnet_conditioning_channel_order.as_str() {
            "rgb" | "bgr" => {}
            other => bail!("controlnet config: controlnet_conditioning_channel_order `{other}` is neither rgb nor bgr"),
        }
        if self.mid_block_type.as_deref() == Some("UNetMidBlock2D") {
            bail!("controlnet config: mid_block_type UNetMidBlock2D (no attention) is not supported yet");
        }
        ensure!(
            !self.conditioning_embedding_out_channels.is_empty()
                && self.conditioning_channels > 0
                && self.in_channels > 0,
            "controlnet config: conditioning_embedding_out_channels, conditioning_channels and in_channels must not be empty or zero"
        );
        for kind in &self.down_block_types {
            ensure!(
                kind == "CrossAttnDownBlock2D" || kind == "DownBlock2D",
                "controlnet config: down block `{kind}` is not supported"
            );
        }
        self.unet_config().to_candle()?;
        Ok(())
    }

    /// The UNet config whose down and mid blocks this ControlNet has (up
    /// blocks mirrored, unused), for our blocks and for comparisons.
    pub fn unet_config(&self) -> UNetConfig {
        UNetConfig {
            class_name: "UNet2DConditionModel".into(),
            in_channels: self.in_channels,
            out_channels: self.in_channels,
            sample_size: None,
            block_out_channels: self.block_out_channels.clone(),
            down_block_types: self.down_block_types.clone(),
            up_block_types: self
                .down_block_types
                .iter()
                .rev()
                .map(|d| d.replace("Down", "Up"))
                .collect(),
            mid_block_type: self.mid_block_type.clone(),
            layers_per_block: self.layers_per_block,
            attention_head_dim: self.attention_head_dim.clone(),
            num_attention_heads: self.num_attention_heads.clone(),
            cross_attention_dim: PerBlock::All(self.cross_attention_dim),
            transformer_layers_per_block: self.transformer_layers_per_block.clone(),
            use_linear_projection: self.use_linear_projection,
            center_input_sample: false,
            flip_sin_to_cos: self.flip_sin_to_cos,
            freq_shift: self.freq_shift,
            downsample_padding: self.downsample_padding,
            mid_block_scale_factor: self.mid_block_scale_factor,
            norm_num_groups: self.norm_num_groups,
            norm_eps: self.norm_eps,
            act_fn: self.act_fn.clone(),
            addition_embed_type: self.addition_embed_type.clone(),
            addition_time_embed_dim: self.addition_time_embed_dim,
            projection_class_embeddings_input_dim: self.projection_class_embeddings_input_dim,
            class_embed_type: self.class_embed_type.clone(),
            time_cond_proj_dim: None,
            encoder_hid_dim_type: self.encoder_hid_dim_type.clone(),
        }
    }

    /// The block layout for our UNet blocks and SDXL's conditioning, checked.
    pub fn to_candle(&self) -> Result<(UNet2DConditionModelConfig, Option<TextTimeConfig>)> {
        self.validate()?;
        let unet = self.unet_config();
        Ok((unet.to_candle()?, unet.text_time()?))
    }

    /// Control-image pixels per latent: `2^(stages - 1)` of the
    /// conditioning embedding (8 for published ControlNets).
    pub fn pixels_per_latent(&self) -> usize {
        1 << self
            .conditioning_embedding_out_channels
            .len()
            .saturating_sub(1)
    }

    /// The family this ControlNet was trained for, read from its config as
    /// the model's is (`Family::detect_unet`): SDXL's `text_time`, SD 2.x's
    /// 1024-wide context or linear projections, otherwise SD 1.x.
    pub fn family(&self) -> Family {
        family_of(
            self.addition_embed_type.as_deref(),
            self.cross_attention_dim,
            self.use_linear_projection,
        )
    }

    /// Whether this ControlNet can steer `unet`: the same blocks (widths,
    /// layers, which have cross-attention, heads and transformer depth), the
    /// same context width and SDXL conditioning, and a sample of the UNet's
    /// latent channels (its `out_channels`: an inpainting UNet takes 9
    /// channels in, its ControlNets 4). The error names every difference and
    /// both families.
    pub fn check_compatible(&self, unet: &UNetConfig) -> Result<()> {
        let ours = self.to_candle()?.0;
        let theirs = unet.to_candle()?;
        let mut diffs = Vec::new();
        let mut differ = |what: &str, a: String, b: String| {
            if a != b {
                diffs.push(format!("{what} {a} vs {b}"));
            }
        };
        differ(
            "block_out_channels",
            format!("{:?}", self.block_out_channels),
            format!("{:?}", unet.block_out_channels),
        );
        differ(
            "layers_per_block",
            self.layers_per_block.to_string(),
            unet.layers_per_block.to_string(),
        );
        differ(
            "cross_attention_dim",
            ours.cross_attention_dim.to_string(),
            theirs.cross_attention_dim.to_string(),
        );
        // Heads only count where there is attention.
        let attn = |c: &UNet2DConditionModelConfig| -> Vec<String> {
            c.blocks
                .iter()
                .map(|b| match b.use_cross_attn {
                    Some(depth) => format!("{}x{}", b.attention_head_dim, depth),
                    None => "-".into(),
                })
                .collect()
        };
        differ(
            "attention (heads x transformer layers per block)",
            attn(&ours).join(","),
            attn(&theirs).join(","),
        );
        let kind = |k: Option<&str>| k.unwrap_or("none").to_string();
        differ(
            "addition_embed_type",
            kind(self.addition_embed_type.as_deref()),
            kind(unet.addition_embed_type.as_deref()),
        );
        differ(
            "latent channels",
            self.in_channels.to_string(),
            unet.out_channels.to_string(),
        );
        // SD 1.x and 2.x differ in their transformers' projections even
        // where the widths agree: a ControlNet of the other family was
        // trained on another text encoder's embeddings.
        differ(
            "use_linear_projection",
            self.use_linear_projection.to_string(),
            unet.use_linear_projection.to_string(),
        );
        let unet_family = family_of(
            unet.addition_embed_type.as_deref(),
            theirs.cross_attention_dim,
            unet.use_linear_projection,
        );
        if diffs.is_empty() {
            return Ok(());
        }
        bail!(
            "this {} ControlNet does not fit the {} UNet (ControlNet vs UNet): {}",
            self.family().name(),
            unet_family.name(),
            diffs.join("; ")
        )
    }
}

fn family_of(addition: Option<&str>, cross_attention_dim: usize, linear: bool) -> Family {
    if addition == Some("text_time") {
        Family::StableDiffusionXl
    } else if cross_attention_dim == 1024 || linear {
        Family::StableDiffusion2
    } else {
        Family::StableDiffusion1
    }
}

fn class_name() -> String {
    "ControlNetModel".into()
}
fn thirty_two() -> usize {
    32
}
fn eps() -> f64 {
    1e-5
}
fn silu() -> String {
    "silu".into()
}
fn rgb() -> String {
    "rgb".into()
}
fn time_scale_shift() -> String {
    "default".into()
}
fn cond_embedding_channels() -> Vec<usize> {
    vec![16, 32, 96, 256]
}
fn down_block_types() -> Vec<String> {
    [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ]
    .map(String::from)
    .to_vec()
}
fn mid_block_type() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}
fn no_per_block() -> PerBlock<bool> {
    PerBlock::All(false)
}
fn block_out_channels() -> Vec<usize> {
    vec![320, 640, 1280, 1280]
}
fn cross_attention_dim() -> usize {
    1280
}
fn heads() -> PerBlock<usize> {
    PerBlock::All(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    // lllyasviel/control_v11p_sd15_canny's config.json, verbatim in the fields that matter.
    const SD15_CANNY: &str = r#"{
      "_class_name": "ControlNetModel", "_diffusers_version": "0.16.0.dev0",
      "_name_or_path": "/home/patrick/controlnet_v1_1/control_v11p_sd15_canny",
      "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
      "class_embed_type": null, "conditioning_embedding_out_channels": [16, 32, 96, 256],
      "controlnet_conditioning_channel_order": "rgb", "cross_attention_dim": 768,
      "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
      "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "global_pool_conditions": false,
      "in_channels": 4, "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05,
      "norm_num_groups": 32, "num_class_embeds": null, "only_cross_attention": false,
      "projection_class_embeddings_input_dim": null, "resnet_time_scale_shift": "default",
      "upcast_attention": false, "use_linear_projection": false
    }"#;

    // diffusers/controlnet-canny-sdxl-1.0's config.json, likewise.
    const SDXL_CANNY: &str = r#"{
      "_class_name": "ControlNetModel", "_diffusers_version": "0.20.0.dev0",
      "act_fn": "silu", "addition_embed_type": "text_time", "addition_embed_type_num_heads": 64,
      "addition_time_embed_dim": 256, "attention_head_dim": [5, 10, 20],
      "block_out_channels": [320, 640, 1280], "class_embed_type": null, "conditioning_channels": 3,
      "conditioning_embedding_out_channels": [16, 32, 96, 256],
      "controlnet_conditioning_channel_order": "rgb", "cross_attention_dim": 2048,
      "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
      "downsample_padding": 1, "encoder_hid_dim": null, "encoder_hid_dim_type": null,
      "flip_sin_to_cos": true, "freq_shift": 0, "global_pool_conditions": false, "in_channels": 4,
      "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
      "num_attention_heads": null, "num_class_embeds": null, "only_cross_attention": false,
      "projection_class_embeddings_input_dim": 2816, "resnet_time_scale_shift": "default",
      "transformer_layers_per_block": [1, 2, 10], "upcast_attention": null,
      "use_linear_projection": true
    }"#;

    fn parse(text: &str) -> ControlNetConfig {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn reads_published_configs_and_fits_their_unets() {
        let sd15 = parse(SD15_CANNY);
        sd15.validate().unwrap();
        assert_eq!(sd15.pixels_per_latent(), 8);
        assert_eq!(sd15.family(), Family::StableDiffusion1);
        sd15.check_compatible(&ModelShape::sd15().unet).unwrap();
        // What `from_unet` derives is what was published, up to versions.
        let mut derived = ControlNetConfig::for_shape(&ModelShape::sd15()).unwrap();
        derived.diffusers_version = sd15.diffusers_version.clone();
        assert_eq!(derived, sd15);

        let xl = parse(SDXL_CANNY);
        xl.validate().unwrap();
        assert_eq!(xl.family(), Family::StableDiffusionXl);
        assert!(xl.to_candle().unwrap().1.is_some());
        xl.check_compatible(&ModelShape::sdxl().unet).unwrap();
    }

    #[test]
    fn bgr_is_read_other_orders_and_unsupported_fields_are_refused() {
        let bgr = parse(&SD15_CANNY.replace("\"rgb\"", "\"bgr\""));
        bgr.validate().unwrap();
        for (from, to, field) in [
            (
                "\"rgb\"",
                "\"brg\"",
                "controlnet_conditioning_channel_order",
            ),
            (
                "\"only_cross_attention\": false",
                "\"only_cross_attention\": true",
                "only_cross_attention",
            ),
            (
                "\"class_embed_type\": null",
                "\"class_embed_type\": \"timestep\"",
                "class",
            ),
            ("\"default\"", "\"scale_shift\"", "resnet_time_scale_shift"),
            (
                "\"norm_num_groups\": 32",
                "\"norm_num_groups\": 16",
                "norm_num_groups",
            ),
            (
                "\"_class_name\": \"ControlNetModel\"",
                "\"_class_name\": \"ControlNetXSAdapter\"",
                "ControlNetXSAdapter",
            ),
            (
                "\"down_block_types\"",
                "\"mid_block_type\": \"UNetMidBlock2D\", \"down_block_types\"",
                "UNetMidBlock2D",
            ),
        ] {
            let text = SD15_CANNY.replace(from, to);
            assert_ne!(text, SD15_CANNY, "{field}");
            let err = parse(&text).validate().unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }
}
