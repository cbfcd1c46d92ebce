//! diffusers' `config.json` files, parsed as written on disk, and their mapping
//! onto Candle's model configs. Every network is sized from these files, never
//! from a hard-coded model version.

use anyhow::{bail, Context, Result};
use candle_transformers::models::stable_diffusion::unet_2d::{
    BlockConfig, UNet2DConditionModelConfig,
};
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKLConfig;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::path::Path;

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// A value diffusers writes either once for all blocks or once per block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    All(T),
    Each(Vec<T>),
}

impl<T: Copy> PerBlock<T> {
    fn get(&self, i: usize, field: &str) -> Result<T> {
        match self {
            PerBlock::All(v) => Ok(*v),
            PerBlock::Each(v) => v
                .get(i)
                .copied()
                .with_context(|| format!("unet config `{field}` has no entry for block {i}")),
        }
    }
}

/// `model_index.json`: names the pipeline class and its components.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ModelIndex {
    #[serde(rename = "_class_name")]
    pub class_name: String,
    #[serde(
        rename = "_diffusers_version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub diffusers_version: Option<String>,
    #[serde(flatten)]
    pub components: serde_json::Map<String, serde_json::Value>,
}

/// `unet/config.json` (UNet2DConditionModel).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct UNetConfig {
    #[serde(rename = "_class_name", default = "default_unet_class")]
    pub class_name: String,
    #[serde(default = "four")]
    pub in_channels: usize,
    #[serde(default = "four")]
    pub out_channels: usize,
    pub sample_size: Option<usize>,
    pub block_out_channels: Vec<usize>,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    #[serde(default = "default_mid_block")]
    pub mid_block_type: Option<String>,
    #[serde(default = "two")]
    pub layers_per_block: usize,
    /// diffusers' misnomer: for SD models this is the number of heads.
    #[serde(default = "default_heads")]
    pub attention_head_dim: PerBlock<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_attention_heads: Option<PerBlock<usize>>,
    pub cross_attention_dim: PerBlock<usize>,
    #[serde(default = "one_per_block")]
    pub transformer_layers_per_block: PerBlock<usize>,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "yes")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default = "one")]
    pub downsample_padding: usize,
    #[serde(default = "one_f")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "default_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "default_eps")]
    pub norm_eps: f64,
    #[serde(default = "default_act")]
    pub act_fn: String,
    /// SDXL's pooled-text + time-ids conditioning ("text_time").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addition_embed_type: Option<String>,
    /// Width of each time id's sinusoidal embedding (SDXL: 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addition_time_embed_dim: Option<usize>,
    /// Input width of `add_embedding`: pooled text + 6 x addition_time_embed_dim
    /// (SDXL: 1280 + 1536 = 2816).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projection_class_embeddings_input_dim: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_embed_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_cond_proj_dim: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_hid_dim_type: Option<String>,
}

/// SDXL's `add_embedding` input: the pooled text embedding followed by the
/// sinusoidal embeddings of the time ids, `time_embed_dim` wide each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextTimeConfig {
    pub time_embed_dim: usize,
    pub input_dim: usize,
}

/// `vae/config.json` (AutoencoderKL).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct VaeConfig {
    #[serde(rename = "_class_name", default = "default_vae_class")]
    pub class_name: String,
    #[serde(default = "three")]
    pub in_channels: usize,
    #[serde(default = "three")]
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    /// One `DownEncoderBlock2D` / `UpDecoderBlock2D` per entry of
    /// `block_out_channels` (the only kinds there are); written so diffusers
    /// reads generated configs with the right depth.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub down_block_types: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub up_block_types: Vec<String>,
    #[serde(default = "one")]
    pub layers_per_block: usize,
    #[serde(default = "four")]
    pub latent_channels: usize,
    #[serde(default = "default_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "default_act")]
    pub act_fn: String,
    #[serde(default = "default_scaling")]
    pub scaling_factor: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift_factor: Option<f64>,
    #[serde(default = "yes")]
    pub use_quant_conv: bool,
    #[serde(default = "yes")]
    pub use_post_quant_conv: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_upcast: Option<bool>,
}

/// `text_encoder/config.json` (transformers' CLIPTextConfig).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TextEncoderConfig {
    #[serde(default)]
    pub architectures: Vec<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_clip_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projection_dim: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
    /// As Stable Diffusion's CLIP configs write them (0, 2, 1): transformers
    /// reads `eos_token_id: 2` as "pool at the highest id", the end-of-text
    /// token of CLIP's vocabularies. The worker pools at the tokenizer's own
    /// end-of-text token, which is the same position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<u32>,
}

impl UNetConfig {
    /// Checks that Candle's UNet can represent this config exactly, then maps it.
    /// Anything it cannot represent is an error rather than a silently wrong model.
    pub fn to_candle(&self) -> Result<UNet2DConditionModelConfig> {
        let n = self.block_out_channels.len();
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            bail!("unet config: block_out_channels, down_block_types and up_block_types must have the same, non-zero length");
        }
        if self.act_fn != "silu" {
            bail!(
                "unet config: act_fn `{}` is not supported (only silu)",
                self.act_fn
            );
        }
        // Candle's DownBlock2D/UpBlock2D build their resnets with 32 groups
        // whatever the config says; refuse rather than compute other norms.
        if self.norm_num_groups != 32 {
            bail!("unet config: norm_num_groups {} is not supported (Candle's UNet blocks always use 32)", self.norm_num_groups);
        }
        self.text_time()?;
        if let Some(kind) = &self.class_embed_type {
            bail!("unet config: class_embed_type `{kind}` is not supported");
        }
        if let Some(kind) = &self.encoder_hid_dim_type {
            bail!("unet config: encoder_hid_dim_type `{kind}` is not supported");
        }
        if self.time_cond_proj_dim.is_some() {
            bail!("unet config: time_cond_proj_dim (LCM-distilled UNets) is not supported yet");
        }
        match self.mid_block_type.as_deref() {
            Some("UNetMidBlock2DCrossAttn") => {}
            other => bail!("unet config: mid_block_type {other:?} is not supported"),
        }
        let cross = match &self.cross_attention_dim {
            PerBlock::All(d) => *d,
            PerBlock::Each(v) => {
                let first = *v
                    .first()
                    .context("unet config: empty cross_attention_dim")?;
                if v.iter().any(|d| *d != first) {
                    bail!("unet config: per-block cross_attention_dim values that differ are not supported");
                }
                first
            }
        };
        let heads = self
            .num_attention_heads
            .as_ref()
            .unwrap_or(&self.attention_head_dim);
        let mut blocks = Vec::with_capacity(n);
        for (i, down) in self.down_block_types.iter().enumerate() {
            // Candle builds up block i from down block n-1-i: they must mirror each other.
            let up = &self.up_block_types[n - 1 - i];
            let use_cross_attn = match (down.as_str(), up.as_str()) {
                ("CrossAttnDownBlock2D", "CrossAttnUpBlock2D") => Some(
                    self.transformer_layers_per_block
                        .get(i, "transformer_layers_per_block")?,
                ),
                ("DownBlock2D", "UpBlock2D") => None,
                _ => bail!(
                    "unet config: down block `{down}` with up block `{up}` is not a supported pair"
                ),
            };
            blocks.push(BlockConfig {
                out_channels: self.block_out_channels[i],
                use_cross_attn,
                attention_head_dim: heads.get(i, "attention_head_dim")?,
            });
        }
        Ok(UNet2DConditionModelConfig {
            center_input_sample: self.center_input_sample,
            flip_sin_to_cos: self.flip_sin_to_cos,
            freq_shift: self.freq_shift,
            blocks,
            layers_per_block: self.layers_per_block,
            downsample_padding: self.downsample_padding,
            mid_block_scale_factor: self.mid_block_scale_factor,
            norm_num_groups: self.norm_num_groups,
            norm_eps: self.norm_eps,
            cross_attention_dim: cross,
            // Candle's sliced attention is broken (stack instead of cat); never enable it.
            sliced_attention_size: None,
            use_linear_projection: self.use_linear_projection,
        })
    }

    /// SDXL's extra conditioning, when the config asks for it; any other
    /// `addition_embed_type` is refused.
    pub fn text_time(&self) -> Result<Option<TextTimeConfig>> {
        match self.addition_embed_type.as_deref() {
            None => Ok(None),
            Some("text_time") => {
                let time_embed_dim = self.addition_time_embed_dim.context(
                    "unet config: addition_embed_type `text_time` needs addition_time_embed_dim",
                )?;
                let input_dim = self.projection_class_embeddings_input_dim.context(
                    "unet config: addition_embed_type `text_time` needs projection_class_embeddings_input_dim",
                )?;
                Ok(Some(TextTimeConfig {
                    time_embed_dim,
                    input_dim,
                }))
            }
            Some(kind) => bail!("unet config: addition_embed_type `{kind}` is not supported"),
        }
    }

    /// How many times the UNet halves the latent resolution.
    pub fn downsamples(&self) -> usize {
        self.block_out_channels.len().saturating_sub(1)
    }
}

impl VaeConfig {
    pub fn to_candle(&self) -> Result<AutoEncoderKLConfig> {
        if self.block_out_channels.is_empty() {
            bail!("vae config: empty block_out_channels");
        }
        let n = self.block_out_channels.len();
        for (field, kinds, kind) in [
            (
                "down_block_types",
                &self.down_block_types,
                "DownEncoderBlock2D",
            ),
            ("up_block_types", &self.up_block_types, "UpDecoderBlock2D"),
        ] {
            if !kinds.is_empty() && (kinds.len() != n || kinds.iter().any(|k| k != kind)) {
                bail!("vae config: {field} must be {n} x `{kind}`");
            }
        }
        if self.act_fn != "silu" {
            bail!(
                "vae config: act_fn `{}` is not supported (only silu)",
                self.act_fn
            );
        }
        if !(self.scaling_factor.is_finite() && self.scaling_factor > 0.0) {
            bail!("vae config: scaling_factor must be a positive number");
        }
        Ok(AutoEncoderKLConfig {
            block_out_channels: self.block_out_channels.clone(),
            layers_per_block: self.layers_per_block,
            latent_channels: self.latent_channels,
            norm_num_groups: self.norm_num_groups,
            use_quant_conv: self.use_quant_conv,
            use_post_quant_conv: self.use_post_quant_conv,
        })
    }

    /// Pixels per latent along each axis: 2^(number of blocks - 1).
    pub fn scale_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

fn default_unet_class() -> String {
    "UNet2DConditionModel".into()
}
fn default_vae_class() -> String {
    "AutoencoderKL".into()
}
fn default_mid_block() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}
fn default_heads() -> PerBlock<usize> {
    PerBlock::All(8)
}
pub(crate) fn one_per_block() -> PerBlock<usize> {
    PerBlock::All(1)
}
fn default_groups() -> usize {
    32
}
fn default_eps() -> f64 {
    1e-5
}
fn default_act() -> String {
    "silu".into()
}
fn default_clip_act() -> String {
    "quick_gelu".into()
}
fn default_scaling() -> f64 {
    0.18215
}
fn default_positions() -> usize {
    77
}
pub(crate) fn one() -> usize {
    1
}
pub(crate) fn two() -> usize {
    2
}
pub(crate) fn three() -> usize {
    3
}
pub(crate) fn four() -> usize {
    4
}
pub(crate) fn one_f() -> f64 {
    1.0
}
pub(crate) fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    // The published stable-diffusion-v1-5 unet/config.json, verbatim in the fields that matter.
    const SD15_UNET: &str = r#"{
      "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.6.0",
      "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
      "center_input_sample": false, "cross_attention_dim": 768,
      "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
      "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4,
      "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
      "out_channels": 4, "sample_size": 64,
      "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
    }"#;

    #[test]
    fn maps_sd15_unet() {
        let c: UNetConfig = serde_json::from_str(SD15_UNET).unwrap();
        let m = c.to_candle().unwrap();
        assert_eq!(m.blocks.len(), 4);
        assert_eq!(m.blocks[0].use_cross_attn, Some(1));
        assert_eq!(m.blocks[3].use_cross_attn, None);
        assert_eq!(m.blocks[2].attention_head_dim, 8);
        assert_eq!(m.cross_attention_dim, 768);
        assert_eq!(m.sliced_attention_size, None);
        assert_eq!(c.downsamples(), 3);
    }

    #[test]
    fn per_block_heads_like_sd2() {
        let text = SD15_UNET
            .replace(
                "\"attention_head_dim\": 8",
                "\"attention_head_dim\": [5, 10, 20, 20], \"use_linear_projection\": true",
            )
            .replace(
                "\"cross_attention_dim\": 768",
                "\"cross_attention_dim\": 1024",
            );
        let m = serde_json::from_str::<UNetConfig>(&text)
            .unwrap()
            .to_candle()
            .unwrap();
        let heads: Vec<_> = m.blocks.iter().map(|b| b.attention_head_dim).collect();
        assert_eq!(heads, [5, 10, 20, 20]);
        assert!(m.use_linear_projection);
    }

    #[test]
    fn reads_sdxl_text_time_conditioning() {
        let sdxl = SD15_UNET.replace(
            "\"act_fn\"",
            "\"addition_embed_type\": \"text_time\", \"addition_time_embed_dim\": 256, \"projection_class_embeddings_input_dim\": 2816, \"act_fn\"",
        );
        let c = serde_json::from_str::<UNetConfig>(&sdxl).unwrap();
        c.to_candle().unwrap();
        assert_eq!(
            c.text_time().unwrap(),
            Some(TextTimeConfig {
                time_embed_dim: 256,
                input_dim: 2816
            })
        );
        let incomplete = SD15_UNET.replace(
            "\"act_fn\"",
            "\"addition_embed_type\": \"text_time\", \"act_fn\"",
        );
        let err = serde_json::from_str::<UNetConfig>(&incomplete)
            .unwrap()
            .to_candle()
            .unwrap_err();
        assert!(err.to_string().contains("addition_time_embed_dim"), "{err}");
    }

    #[test]
    fn rejects_what_candle_cannot_represent() {
        let other = SD15_UNET.replace(
            "\"act_fn\"",
            "\"addition_embed_type\": \"image\", \"act_fn\"",
        );
        let err = serde_json::from_str::<UNetConfig>(&other)
            .unwrap()
            .to_candle()
            .unwrap_err();
        assert!(err.to_string().contains("addition_embed_type"), "{err}");
        let unmirrored = SD15_UNET.replace(
            "[\"UpBlock2D\", \"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\"]",
            "[\"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\", \"UpBlock2D\"]",
        );
        assert!(serde_json::from_str::<UNetConfig>(&unmirrored)
            .unwrap()
            .to_candle()
            .is_err());
    }

    #[test]
    fn refuses_group_counts_candle_would_ignore() {
        let text = SD15_UNET.replace("\"norm_num_groups\": 32", "\"norm_num_groups\": 16");
        let err = serde_json::from_str::<UNetConfig>(&text)
            .unwrap()
            .to_candle()
            .unwrap_err();
        assert!(err.to_string().contains("norm_num_groups"), "{err}");
    }

    #[test]
    fn vae_scale_comes_from_config() {
        let c: VaeConfig = serde_json::from_str(
            r#"{"block_out_channels": [128, 256, 512, 512], "latent_channels": 4, "scaling_factor": 0.13025}"#,
        )
        .unwrap();
        assert_eq!(c.scale_factor(), 8);
        assert_eq!(c.scaling_factor, 0.13025);
        assert!(c.use_post_quant_conv);
    }
}
