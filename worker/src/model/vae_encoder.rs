//! The VAE's encoder half, returning the latent posterior's mean and log
//! variance. Candle's `AutoEncoderKL::encode` hides both and samples with the
//! device RNG, which is not reproducible; we sample with the job's seeded noise.
//! Built from our VAE blocks ([`super::vae_blocks`]) and the same weights (`encoder.*`, `quant_conv`).

use anyhow::Result;
use candle_core::{Module, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use super::conv::{conv2d, Conv2d};
use super::norm::{group_norm, GroupNorm};
use super::vae_blocks::{
    DownEncoderBlock2D, DownEncoderBlock2DConfig, UNetMidBlock2D, UNetMidBlock2DConfig,
};

use super::config::VaeConfig;

#[derive(Debug)]
pub struct VaeEncoder {
    conv_in: Conv2d,
    down: Vec<DownEncoderBlock2D>,
    mid: UNetMidBlock2D,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    quant_conv: Option<Conv2d>,
}

impl VaeEncoder {
    /// `vb` points at the VAE checkpoint root.
    pub fn new(vb: VarBuilder, cfg: &VaeConfig) -> Result<Self> {
        let enc = vb.pp("encoder");
        let channels = &cfg.block_out_channels;
        let groups = cfg.norm_num_groups;
        let pad1 = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let conv_in = conv2d(cfg.in_channels, channels[0], 3, pad1, enc.pp("conv_in"))?;
        let mut down = Vec::with_capacity(channels.len());
        for (i, &out) in channels.iter().enumerate() {
            let block_cfg = DownEncoderBlock2DConfig {
                num_layers: cfg.layers_per_block,
                resnet_eps: 1e-6,
                resnet_groups: groups,
                output_scale_factor: 1.0,
                // Every block but the last halves the resolution (diffusers pads asymmetrically itself).
                add_downsample: i + 1 < channels.len(),
                downsample_padding: 0,
            };
            let input = channels[i.saturating_sub(1)];
            down.push(DownEncoderBlock2D::new(
                enc.pp(format!("down_blocks.{i}")),
                input,
                out,
                block_cfg,
            )?);
        }
        let last = *channels.last().expect("validated non-empty");
        let mid_cfg = UNetMidBlock2DConfig {
            num_layers: 1,
            resnet_eps: 1e-6,
            resnet_groups: Some(groups),
            attn_num_head_channels: None,
            output_scale_factor: 1.0,
        };
        let mid = UNetMidBlock2D::new(enc.pp("mid_block"), last, mid_cfg)?;
        let norm_out = group_norm(groups, last, 1e-6, enc.pp("conv_norm_out"))?;
        let conv_out = conv2d(last, 2 * cfg.latent_channels, 3, pad1, enc.pp("conv_out"))?;
        let quant_conv = cfg
            .use_quant_conv
            .then(|| {
                conv2d(
                    2 * cfg.latent_channels,
                    2 * cfg.latent_channels,
                    1,
                    Default::default(),
                    vb.pp("quant_conv"),
                )
            })
            .transpose()?;
        Ok(Self {
            conv_in,
            down,
            mid,
            norm_out,
            conv_out,
            quant_conv,
        })
    }

    /// Pixels in [-1, 1], [batch, 3, H, W] -> (mean, log variance), each [batch, latent channels, H/f, W/f].
    pub fn posterior(&self, pixels: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        split_moments(&self.moments(pixels)?)
    }

    /// Pixels in [-1, 1], [batch, 3, H, W] -> the posterior's moments
    /// [batch, 2 x latent channels, H/f, W/f] (mean, then the unclamped log
    /// variance), as diffusers' `encoder` + `quant_conv`.
    pub fn moments(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        let mut xs = self.conv_in.forward(pixels)?;
        for block in &self.down {
            xs = block.forward(&xs)?;
        }
        let xs = self.mid.forward(&xs)?;
        let xs = self.norm_out.forward_silu(&xs)?;
        let mut moments = self.conv_out.forward(&xs)?;
        if let Some(q) = &self.quant_conv {
            moments = q.forward(&moments)?;
        }
        Ok(moments)
    }
}

/// Moments [batch, 2c, h, w] -> (mean, log variance clamped to [-30, 20]),
/// each [batch, c, h, w], as diffusers' `DiagonalGaussianDistribution`.
pub fn split_moments(moments: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let half = moments.dim(1)? / 2;
    Ok((
        moments.narrow(1, 0, half)?,
        moments.narrow(1, half, half)?.clamp(-30f32, 20f32)?,
    ))
}
