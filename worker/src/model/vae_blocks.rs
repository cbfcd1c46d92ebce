//! The VAE's blocks, as diffusers' `DownEncoderBlock2D`, `UpDecoderBlock2D` and
//! `UNetMidBlock2D` (`models/unets/unet_2d_blocks.py`), on our ResNet block and
//! convolution ([`super::resnet`], [`super::conv`]). Configurations and tensor
//! names are Candle's (which follow diffusers'); the mid-block attention is
//! Candle's `AttentionBlock` (no convolution in it).

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{Conv2dConfig, VarBuilder};
use candle_transformers::models::stable_diffusion::attention::{
    AttentionBlock, AttentionBlockConfig,
};
pub use candle_transformers::models::stable_diffusion::unet_2d_blocks::{
    DownEncoderBlock2DConfig, UNetMidBlock2DConfig, UpDecoderBlock2DConfig,
};

use super::conv::{conv2d, Conv2d};
use super::resnet::{ResnetBlock2D, ResnetBlock2DConfig};

fn resnets(
    vb: VarBuilder,
    layers: usize,
    in_channels: usize,
    cfg: ResnetBlock2DConfig,
) -> Result<Vec<ResnetBlock2D>> {
    let out = cfg.out_channels.unwrap_or(in_channels);
    (0..layers)
        .map(|i| ResnetBlock2D::new(vb.pp(i), if i == 0 { in_channels } else { out }, cfg))
        .collect()
}

fn plain_resnet(out_channels: usize, eps: f64, groups: usize, scale: f64) -> ResnetBlock2DConfig {
    ResnetBlock2DConfig {
        out_channels: Some(out_channels),
        temb_channels: None,
        groups,
        eps,
        output_scale_factor: scale,
        ..Default::default()
    }
}

/// ResNets, then (unless last) a stride-2 3x3 conv; `downsample_padding` 0
/// pads one zero row and column at the bottom and right first (diffusers'
/// `Downsample2D` with `padding=0`).
#[derive(Debug)]
pub struct DownEncoderBlock2D {
    resnets: Vec<ResnetBlock2D>,
    downsampler: Option<(Conv2d, usize)>,
}

impl DownEncoderBlock2D {
    pub fn new(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        cfg: DownEncoderBlock2DConfig,
    ) -> Result<Self> {
        let r = plain_resnet(
            out_channels,
            cfg.resnet_eps,
            cfg.resnet_groups,
            cfg.output_scale_factor,
        );
        let resnets = resnets(vb.pp("resnets"), cfg.num_layers, in_channels, r)?;
        let downsampler = if cfg.add_downsample {
            let conv_cfg = Conv2dConfig {
                stride: 2,
                padding: cfg.downsample_padding,
                ..Default::default()
            };
            let conv = conv2d(
                out_channels,
                out_channels,
                3,
                conv_cfg,
                vb.pp("downsamplers.0.conv"),
            )?;
            Some((conv, cfg.downsample_padding))
        } else {
            None
        };
        Ok(Self {
            resnets,
            downsampler,
        })
    }
}

impl Module for DownEncoderBlock2D {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for resnet in &self.resnets {
            x = resnet.forward(&x, None)?;
        }
        match &self.downsampler {
            None => Ok(x),
            Some((conv, 0)) => conv.forward(&x.pad_with_zeros(D::Minus1, 0, 1)?.pad_with_zeros(
                D::Minus2,
                0,
                1,
            )?),
            Some((conv, _)) => conv.forward(&x),
        }
    }
}

/// ResNets, then (unless last) nearest 2x upsampling and a 3x3 conv.
#[derive(Debug)]
pub struct UpDecoderBlock2D {
    resnets: Vec<ResnetBlock2D>,
    upsampler: Option<Conv2d>,
}

impl UpDecoderBlock2D {
    pub fn new(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        cfg: UpDecoderBlock2DConfig,
    ) -> Result<Self> {
        let r = plain_resnet(
            out_channels,
            cfg.resnet_eps,
            cfg.resnet_groups,
            cfg.output_scale_factor,
        );
        let resnets = resnets(vb.pp("resnets"), cfg.num_layers, in_channels, r)?;
        let upsampler = if cfg.add_upsample {
            let same = Conv2dConfig {
                padding: 1,
                ..Default::default()
            };
            Some(conv2d(
                out_channels,
                out_channels,
                3,
                same,
                vb.pp("upsamplers.0.conv"),
            )?)
        } else {
            None
        };
        Ok(Self { resnets, upsampler })
    }
}

impl Module for UpDecoderBlock2D {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for resnet in &self.resnets {
            x = resnet.forward(&x, None)?;
        }
        match &self.upsampler {
            None => Ok(x),
            Some(conv) => {
                let (_, _, h, w) = x.dims4()?;
                conv.forward(&x.upsample_nearest2d(2 * h, 2 * w)?)
            }
        }
    }
}

/// ResNet, then `num_layers` x (self-attention, ResNet).
#[derive(Debug)]
pub struct UNetMidBlock2D {
    resnet: ResnetBlock2D,
    attn_resnets: Vec<(AttentionBlock, ResnetBlock2D)>,
}

impl UNetMidBlock2D {
    pub fn new(vb: VarBuilder, channels: usize, cfg: UNetMidBlock2DConfig) -> Result<Self> {
        let groups = cfg
            .resnet_groups
            .unwrap_or_else(|| usize::min(channels / 4, 32));
        let r = plain_resnet(channels, cfg.resnet_eps, groups, cfg.output_scale_factor);
        let resnet = ResnetBlock2D::new(vb.pp("resnets.0"), channels, r)?;
        let attn_cfg = AttentionBlockConfig {
            num_head_channels: cfg.attn_num_head_channels,
            num_groups: groups,
            rescale_output_factor: cfg.output_scale_factor,
            eps: cfg.resnet_eps,
        };
        let attn_resnets = (0..cfg.num_layers)
            .map(|i| {
                Ok((
                    AttentionBlock::new(vb.pp(format!("attentions.{i}")), channels, attn_cfg)?,
                    ResnetBlock2D::new(vb.pp(format!("resnets.{}", i + 1)), channels, r)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            resnet,
            attn_resnets,
        })
    }
}

impl Module for UNetMidBlock2D {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = self.resnet.forward(x, None)?;
        for (attn, resnet) in &self.attn_resnets {
            x = resnet.forward(&attn.forward(&x)?, None)?;
        }
        Ok(x)
    }
}
