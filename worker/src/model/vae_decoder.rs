//! The VAE's decoder half, diffusers' `AutoencoderKL.decode`
//! (`models/autoencoders/autoencoder_kl.py` + `vae.py`'s `Decoder`):
//! `post_quant_conv` (1x1, when the config has it), `conv_in`, the mid block,
//! the up blocks (`layers_per_block + 1` ResNets each, nearest 2x upsampling
//! between), GroupNorm, SiLU, `conv_out`. Tensor names `decoder.*` and
//! `post_quant_conv.*`, as the diffusers folder has them.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKLConfig;

use super::conv::{conv2d, Conv2d};
use super::norm::{group_norm, GroupNorm};
use super::vae_blocks::{
    UNetMidBlock2D, UNetMidBlock2DConfig, UpDecoderBlock2D, UpDecoderBlock2DConfig,
};

#[derive(Debug)]
pub struct VaeDecoder {
    post_quant_conv: Option<Conv2d>,
    conv_in: Conv2d,
    mid: UNetMidBlock2D,
    up: Vec<UpDecoderBlock2D>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl VaeDecoder {
    /// `vb` points at the VAE checkpoint root; `out_channels` is the image's
    /// (3). Errors: a tensor missing or of another shape than `cfg` implies.
    pub fn new(vb: VarBuilder, out_channels: usize, cfg: &AutoEncoderKLConfig) -> Result<Self> {
        let latent = cfg.latent_channels;
        let groups = cfg.norm_num_groups;
        let same = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let post_quant_conv = if cfg.use_post_quant_conv {
            Some(conv2d(
                latent,
                latent,
                1,
                Conv2dConfig::default(),
                vb.pp("post_quant_conv"),
            )?)
        } else {
            None
        };
        let dec = vb.pp("decoder");
        let reversed: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
        let Some(&widest) = reversed.first() else {
            candle_core::bail!("the VAE config has no block_out_channels")
        };
        let conv_in = conv2d(latent, widest, 3, same, dec.pp("conv_in"))?;
        let mid_cfg = UNetMidBlock2DConfig {
            resnet_eps: 1e-6,
            output_scale_factor: 1.0,
            attn_num_head_channels: None,
            resnet_groups: Some(groups),
            ..Default::default()
        };
        let mid = UNetMidBlock2D::new(dec.pp("mid_block"), widest, mid_cfg)?;
        let up = reversed
            .iter()
            .enumerate()
            .map(|(i, &out)| {
                let cfg = UpDecoderBlock2DConfig {
                    num_layers: cfg.layers_per_block + 1,
                    resnet_eps: 1e-6,
                    resnet_groups: groups,
                    add_upsample: i + 1 < reversed.len(),
                    ..Default::default()
                };
                let input = if i == 0 { widest } else { reversed[i - 1] };
                UpDecoderBlock2D::new(dec.pp(format!("up_blocks.{i}")), input, out, cfg)
            })
            .collect::<Result<Vec<_>>>()?;
        let narrowest = cfg.block_out_channels[0];
        let norm_out = group_norm(groups, narrowest, 1e-6, dec.pp("conv_norm_out"))?;
        let conv_out = conv2d(narrowest, out_channels, 3, same, dec.pp("conv_out"))?;
        Ok(Self {
            post_quant_conv,
            conv_in,
            mid,
            up,
            norm_out,
            conv_out,
        })
    }

    /// Scaled latents `z [b, latent, h, w]` (already divided by the scaling
    /// factor) -> pixels `[b, out_channels, 8h, 8w]` in about [-1, 1].
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let z = match &self.post_quant_conv {
            Some(conv) => conv.forward(z)?,
            None => z.clone(),
        };
        let mut x = self.mid.forward(&self.conv_in.forward(&z)?)?;
        for block in &self.up {
            x = block.forward(&x)?;
        }
        let x = self.norm_out.forward_silu(&x)?;
        self.conv_out.forward(&x)
    }
}
