//! `config.json` of a diffusers `AutoencoderTiny` folder (TAESD, TAESDXL,
//! TAESD3, TAEF1): the fields and defaults of `AutoencoderTiny.__init__`,
//! and what this implementation refuses ([`TaesdConfig::validate`]).

use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};

/// The class a TAESD folder's `config.json` names (`_class_name`).
pub const CLASS_NAME: &str = "AutoencoderTiny";

/// The fields of diffusers' `AutoencoderTiny` config, with its defaults
/// (which are the published TAESD's: 64 channels everywhere, encoder stages
/// of 1, 3, 3, 3 blocks and decoder stages of 3, 3, 3, 1, three 2x
/// upsamplings). Unknown fields are ignored, as diffusers ignores them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaesdConfig {
    /// `_class_name`: `AutoencoderTiny` when present.
    #[serde(rename = "_class_name", skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Image channels the encoder takes (3).
    pub in_channels: usize,
    /// Image channels the decoder returns (3).
    pub out_channels: usize,
    /// Width of each encoder stage (diffusers' `EncoderTiny` needs them equal).
    pub encoder_block_out_channels: Vec<usize>,
    /// Width of each decoder stage (diffusers' `DecoderTiny` needs them equal).
    pub decoder_block_out_channels: Vec<usize>,
    /// Activation inside the blocks: `relu` (published), `silu`/`swish`, `gelu`.
    pub act_fn: String,
    /// Upsampling mode of the decoder: only `nearest` (published).
    pub upsample_fn: String,
    /// Channels of the latents: 4 (SD 1/2, SDXL) or 16 (SD 3, FLUX.1).
    pub latent_channels: usize,
    /// Upsampling factor between decoder stages (2).
    pub upsampling_scaling_factor: usize,
    /// Residual blocks per encoder stage, after its (strided) conv.
    pub num_encoder_blocks: Vec<usize>,
    /// Residual blocks per decoder stage, before its upsampling and conv.
    pub num_decoder_blocks: Vec<usize>,
    /// Used only by diffusers' 8-bit latent quantisation (`scale_latents`),
    /// which encode and decode do not apply; kept for the round trip.
    pub latent_magnitude: f64,
    /// As `latent_magnitude`.
    pub latent_shift: f64,
    /// diffusers registers it as false whatever the file says: TAESD runs in
    /// the dtype it is loaded in.
    pub force_upcast: bool,
    /// Pipelines divide latents by it before decoding, multiply after
    /// encoding (1.0 in the published configs).
    pub scaling_factor: f64,
    /// SD 3 pipelines add it after the division, subtract it before the
    /// multiplication (0.0 or absent in the published configs; null reads as 0).
    #[serde(deserialize_with = "null_as_zero")]
    pub shift_factor: f64,
}

fn null_as_zero<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(0.0))
}

impl Default for TaesdConfig {
    /// diffusers' `AutoencoderTiny()` defaults: the published TAESD's shape.
    fn default() -> Self {
        Self {
            class_name: None,
            in_channels: 3,
            out_channels: 3,
            encoder_block_out_channels: vec![64; 4],
            decoder_block_out_channels: vec![64; 4],
            act_fn: "relu".into(),
            upsample_fn: "nearest".into(),
            latent_channels: 4,
            upsampling_scaling_factor: 2,
            num_encoder_blocks: vec![1, 3, 3, 3],
            num_decoder_blocks: vec![3, 3, 3, 1],
            latent_magnitude: 3.0,
            latent_shift: 0.5,
            force_upcast: false,
            scaling_factor: 1.0,
            shift_factor: 0.0,
        }
    }
}

/// Activations diffusers' `get_activation` knows and this implementation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Relu,
    Silu,
    /// The exact (erf) GELU, as `torch.nn.GELU()`.
    Gelu,
}

impl TaesdConfig {
    /// The published shape (diffusers' defaults) with `latent_channels`:
    /// 4 for `madebyollin/taesd` and `taesdxl`, 16 for `taesd3` and `taef1`.
    pub fn published(latent_channels: usize) -> Self {
        Self {
            class_name: Some(CLASS_NAME.into()),
            latent_channels,
            ..Self::default()
        }
    }

    /// The test generator's shape: the published structure (stages of 1, 3,
    /// 3, 3 and 3, 3, 3, 1 blocks, three 2x upsamplings) 8 channels wide.
    pub fn tiny(latent_channels: usize) -> Self {
        Self {
            encoder_block_out_channels: vec![8; 4],
            decoder_block_out_channels: vec![8; 4],
            ..Self::published(latent_channels)
        }
    }

    /// [`Self::tiny`] with `scale_factor` (a power of two, at least 2)
    /// pixels per latent: one stage per factor of two, plus the first (the
    /// project's tiny test models have 4-pixel latents).
    pub fn tiny_scaled(latent_channels: usize, scale_factor: usize) -> Self {
        let stages = scale_factor.max(2).ilog2() as usize + 1;
        let mut encoder = vec![3; stages];
        encoder[0] = 1;
        let mut decoder = vec![3; stages];
        decoder[stages - 1] = 1;
        Self {
            encoder_block_out_channels: vec![8; stages],
            decoder_block_out_channels: vec![8; stages],
            num_encoder_blocks: encoder,
            num_decoder_blocks: decoder,
            ..Self::published(latent_channels)
        }
    }

    /// Errors for configs diffusers' `AutoencoderTiny` cannot run or this
    /// implementation does not support, naming the field.
    pub fn validate(&self) -> Result<()> {
        if let Some(class) = &self.class_name {
            ensure!(
                class == CLASS_NAME,
                "a TAESD folder's config.json names `{CLASS_NAME}`, this one `{class}`"
            );
        }
        ensure!(
            self.in_channels > 0 && self.out_channels > 0 && self.latent_channels > 0,
            "in_channels, out_channels and latent_channels must be positive"
        );
        for (what, widths, blocks) in [
            (
                "encoder",
                &self.encoder_block_out_channels,
                &self.num_encoder_blocks,
            ),
            (
                "decoder",
                &self.decoder_block_out_channels,
                &self.num_decoder_blocks,
            ),
        ] {
            ensure!(
                !widths.is_empty() && widths.len() == blocks.len(),
                "{what}_block_out_channels ({}) and num_{what}_blocks ({}) must have one entry per stage",
                widths.len(),
                blocks.len()
            );
            ensure!(widths[0] > 0, "{what}_block_out_channels must be positive");
            // Each stage's convs are widths[i] -> widths[i] wide but are fed
            // the previous stage's output: diffusers fails on unequal widths.
            ensure!(
                widths.iter().all(|w| *w == widths[0]),
                "{what}_block_out_channels must all be equal (diffusers' {}Tiny feeds each stage's output to the next stage's own width), got {widths:?}",
                if what == "encoder" { "Encoder" } else { "Decoder" }
            );
        }
        ensure!(
            self.upsampling_scaling_factor >= 1,
            "upsampling_scaling_factor must be at least 1"
        );
        ensure!(
            self.scale_factor() == self.encoder_factor(),
            "the decoder upsamples {}x but the encoder downsamples {}x",
            self.scale_factor(),
            self.encoder_factor()
        );
        if self.upsample_fn != "nearest" {
            bail!(
                "upsample_fn `{}` is not supported (only `nearest`)",
                self.upsample_fn
            );
        }
        self.activation()?;
        ensure!(
            self.scaling_factor.is_finite() && self.scaling_factor != 0.0,
            "scaling_factor must be finite and non-zero, got {}",
            self.scaling_factor
        );
        ensure!(self.shift_factor.is_finite(), "shift_factor must be finite");
        Ok(())
    }

    /// `act_fn` as an [`Act`]; errors for the ones not supported.
    pub fn activation(&self) -> Result<Act> {
        Ok(match self.act_fn.as_str() {
            "relu" => Act::Relu,
            "silu" | "swish" => Act::Silu,
            "gelu" => Act::Gelu,
            other => bail!("act_fn `{other}` is not supported (relu, silu, swish or gelu)"),
        })
    }

    /// Pixels per latent along each side: the decoder's upsampling factor to
    /// the power of its stages less one (8 for the published shape), which
    /// [`Self::validate`] requires the encoder's to equal.
    pub fn scale_factor(&self) -> usize {
        self.upsampling_scaling_factor
            .pow(self.num_decoder_blocks.len().saturating_sub(1) as u32)
    }

    /// Downsampling factor of the encoder: 2 per stage after the first.
    pub fn encoder_factor(&self) -> usize {
        1 << self.num_encoder_blocks.len().saturating_sub(1)
    }
}
