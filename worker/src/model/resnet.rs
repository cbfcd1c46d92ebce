//! diffusers' `ResnetBlock2D` (`models/resnet.py`, default
//! `time_embedding_norm`): GroupNorm, SiLU, 3x3 conv, plus the projected time
//! embedding, GroupNorm, SiLU, 3x3 conv, added to the (1x1-projected when the
//! width changes) input and divided by `output_scale_factor`. The same
//! configuration and tensor names as Candle's block, with our convolution
//! ([`super::conv`]).

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{Conv2dConfig, VarBuilder};

use super::linear::{linear, Linear};
pub use candle_transformers::models::stable_diffusion::resnet::ResnetBlock2DConfig;

use super::conv::{conv2d, Conv2d};
use super::norm::{group_norm, GroupNorm};

#[derive(Debug)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    time_emb_proj: Option<Linear>,
    conv_shortcut: Option<Conv2d>,
    output_scale_factor: f64,
}

impl ResnetBlock2D {
    /// Reads `norm1`, `conv1`, `norm2`, `conv2`, and when present
    /// `time_emb_proj` (`temb_channels`) and `conv_shortcut` (1x1, when
    /// `use_in_shortcut` or the width changes) from `vb`.
    pub fn new(vb: VarBuilder, in_channels: usize, cfg: ResnetBlock2DConfig) -> Result<Self> {
        let out_channels = cfg.out_channels.unwrap_or(in_channels);
        let same = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let norm1 = group_norm(cfg.groups, in_channels, cfg.eps, vb.pp("norm1"))?;
        let conv1 = conv2d(in_channels, out_channels, 3, same, vb.pp("conv1"))?;
        let groups_out = cfg.groups_out.unwrap_or(cfg.groups);
        let norm2 = group_norm(groups_out, out_channels, cfg.eps, vb.pp("norm2"))?;
        let conv2 = conv2d(out_channels, out_channels, 3, same, vb.pp("conv2"))?;
        let conv_shortcut = if cfg.use_in_shortcut.unwrap_or(in_channels != out_channels) {
            let one = Conv2dConfig::default();
            Some(conv2d(
                in_channels,
                out_channels,
                1,
                one,
                vb.pp("conv_shortcut"),
            )?)
        } else {
            None
        };
        let time_emb_proj = cfg
            .temb_channels
            .map(|t| linear(t, out_channels, vb.pp("time_emb_proj")))
            .transpose()?;
        Ok(Self {
            norm1,
            conv1,
            norm2,
            conv2,
            time_emb_proj,
            conv_shortcut,
            output_scale_factor: cfg.output_scale_factor,
        })
    }

    /// `x [b, c_in, h, w]`, `temb [b, temb_channels]` -> `[b, c_out, h, w]`.
    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        let h = match (temb, &self.time_emb_proj) {
            (Some(temb), Some(proj)) => proj
                .forward(&candle_nn::ops::silu(temb)?)?
                .unsqueeze(D::Minus1)?
                .unsqueeze(D::Minus1)?
                .broadcast_add(&h)?,
            _ => h,
        };
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        let out = (shortcut + h)?;
        if self.output_scale_factor == 1.0 {
            Ok(out)
        } else {
            out / self.output_scale_factor
        }
    }
}
