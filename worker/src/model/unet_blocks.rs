//! The UNet's down, mid and up blocks in diffusers' layout (`DownBlock2D`,
//! `CrossAttnDownBlock2D`, `UNetMidBlock2DCrossAttn`, `UpBlock2D`,
//! `CrossAttnUpBlock2D`), built from Candle's public `ResnetBlock2D` and our
//! [`SpatialTransformer`] (Candle's blocks hold theirs privately, with a tanh
//! GELU). A block without cross-attention is the same block with no
//! transformers: the weight names are diffusers' either way
//! (`resnets.{i}`, `attentions.{i}`, `downsamplers.0.conv`,
//! `upsamplers.0.conv`).

use anyhow::Result;
use candle_core::{Module, Tensor, D};
use candle_nn::{Conv2dConfig, VarBuilder};

use super::conv::{conv2d, Conv2d};
use super::resnet::{ResnetBlock2D, ResnetBlock2DConfig};

use super::transformer::{SpatialTransformer, SpatialTransformerConfig};

/// What every block of one UNet shares.
#[derive(Debug, Clone, Copy)]
pub struct BlockSettings {
    /// Width of the time embedding the resnets add (`4 x` the first block's channels).
    pub temb_channels: usize,
    /// `norm_num_groups`: the resnets' and transformers' GroupNorms.
    pub groups: usize,
    /// `norm_eps`: the resnets' GroupNorms.
    pub eps: f64,
    /// Width of the text embedding the transformers attend to.
    pub context_dim: usize,
    /// The transformers' `proj_in`/`proj_out` are Linear (SD 2.x, SDXL), not 1x1 convs.
    pub use_linear_projection: bool,
    /// Candle's flash-attention kernel (the `flash-attn` feature on CUDA).
    pub flash_attn: bool,
}

/// The cross-attention of one block: heads and transformer layers.
#[derive(Debug, Clone, Copy)]
pub struct CrossAttn {
    /// Attention heads, each `channels / heads` wide.
    pub heads: usize,
    /// `transformer_layers_per_block` of this block.
    pub depth: usize,
}

impl BlockSettings {
    fn resnet(&self, out_channels: usize, output_scale_factor: f64) -> ResnetBlock2DConfig {
        ResnetBlock2DConfig {
            out_channels: Some(out_channels),
            temb_channels: Some(self.temb_channels),
            groups: self.groups,
            groups_out: None,
            eps: self.eps,
            use_in_shortcut: None,
            output_scale_factor,
        }
    }

    fn transformers(
        &self,
        vb: &VarBuilder,
        count: usize,
        channels: usize,
        attn: Option<CrossAttn>,
    ) -> Result<Vec<SpatialTransformer>> {
        let Some(attn) = attn else {
            return Ok(Vec::new());
        };
        let cfg = SpatialTransformerConfig {
            heads: attn.heads,
            depth: attn.depth,
            groups: self.groups,
            context_dim: self.context_dim,
            use_linear_projection: self.use_linear_projection,
            flash_attn: self.flash_attn,
        };
        (0..count)
            .map(|i| SpatialTransformer::new(vb.pp(format!("attentions.{i}")), channels, cfg))
            .collect()
    }
}

fn conv3(vb: VarBuilder, channels: usize, stride: usize, padding: usize) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        stride,
        padding,
        ..Default::default()
    };
    Ok(conv2d(channels, channels, 3, cfg, vb)?)
}

/// `DownBlock2D` / `CrossAttnDownBlock2D`: resnets (each followed by its
/// transformer when there are any), then a stride-2 conv (diffusers'
/// `Downsample2D`; with `downsample_padding` 0 it pads right and bottom).
#[derive(Debug)]
pub struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<SpatialTransformer>,
    downsampler: Option<(Conv2d, usize)>,
}

impl DownBlock {
    /// `layers` resnets from `in_channels` to `out_channels`; a downsampler
    /// unless it is the last block.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        layers: usize,
        add_downsample: bool,
        downsample_padding: usize,
        attn: Option<CrossAttn>,
        s: &BlockSettings,
    ) -> Result<Self> {
        let resnets = (0..layers)
            .map(|i| {
                let input = if i == 0 { in_channels } else { out_channels };
                ResnetBlock2D::new(
                    vb.pp(format!("resnets.{i}")),
                    input,
                    s.resnet(out_channels, 1.0),
                )
                .map_err(Into::into)
            })
            .collect::<Result<Vec<_>>>()?;
        let attentions = s.transformers(&vb, layers, out_channels, attn)?;
        let downsampler = add_downsample
            .then(|| -> Result<_> {
                let conv = conv3(
                    vb.pp("downsamplers.0.conv"),
                    out_channels,
                    2,
                    downsample_padding,
                )?;
                Ok((conv, downsample_padding))
            })
            .transpose()?;
        Ok(Self {
            resnets,
            attentions,
            downsampler,
        })
    }

    /// The block's output and the states it hands to the up blocks' skip
    /// connections (one per resnet, and the downsampled one).
    pub fn forward(
        &self,
        xs: &Tensor,
        temb: &Tensor,
        context: &Tensor,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let mut xs = xs.clone();
        let mut states = Vec::with_capacity(self.resnets.len() + 1);
        for (i, resnet) in self.resnets.iter().enumerate() {
            xs = resnet.forward(&xs, Some(temb))?;
            if let Some(attn) = self.attentions.get(i) {
                xs = attn.forward(&xs, context)?;
            }
            states.push(xs.clone());
        }
        if let Some((conv, padding)) = &self.downsampler {
            if *padding == 0 {
                xs = xs
                    .pad_with_zeros(D::Minus1, 0, 1)?
                    .pad_with_zeros(D::Minus2, 0, 1)?;
            }
            xs = conv.forward(&xs)?;
            states.push(xs.clone());
        }
        Ok((xs, states))
    }
}

/// `UNetMidBlock2DCrossAttn`: a resnet, then (transformer, resnet) pairs;
/// its resnets scale their output by `1 / mid_block_scale_factor`.
#[derive(Debug)]
pub struct MidBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<SpatialTransformer>,
}

impl MidBlock {
    /// Two resnets and one transformer over `channels`.
    pub fn new(
        vb: VarBuilder,
        channels: usize,
        output_scale_factor: f64,
        attn: CrossAttn,
        s: &BlockSettings,
    ) -> Result<Self> {
        let cfg = s.resnet(channels, output_scale_factor);
        let resnets = (0..2)
            .map(|i| ResnetBlock2D::new(vb.pp(format!("resnets.{i}")), channels, cfg))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let attentions = s.transformers(&vb, 1, channels, Some(attn))?;
        Ok(Self {
            resnets,
            attentions,
        })
    }

    /// `xs` [batch, channels, h, w] with the time embedding `temb` [batch,
    /// temb_channels] and the text `context`; same shape out.
    pub fn forward(&self, xs: &Tensor, temb: &Tensor, context: &Tensor) -> Result<Tensor> {
        let mut xs = self.resnets[0].forward(xs, Some(temb))?;
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            xs = resnet.forward(&attn.forward(&xs, context)?, Some(temb))?;
        }
        Ok(xs)
    }
}

/// `UpBlock2D` / `CrossAttnUpBlock2D`: each resnet takes the running state
/// concatenated with one skip connection (the last first), followed by its
/// transformer when there are any; then nearest-neighbour upsampling and a
/// conv (diffusers' `Upsample2D`), unless it is the last block.
#[derive(Debug)]
pub struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<SpatialTransformer>,
    upsampler: Option<Conv2d>,
}

impl UpBlock {
    /// `skip_channels`: the matching down block's input channels (the last
    /// resnet's skip); `prev_channels`: the previous up block's output.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vb: VarBuilder,
        skip_channels: usize,
        prev_channels: usize,
        out_channels: usize,
        layers: usize,
        add_upsample: bool,
        attn: Option<CrossAttn>,
        s: &BlockSettings,
    ) -> Result<Self> {
        let resnets = (0..layers)
            .map(|i| {
                let skip = if i + 1 == layers {
                    skip_channels
                } else {
                    out_channels
                };
                let input = if i == 0 { prev_channels } else { out_channels };
                ResnetBlock2D::new(
                    vb.pp(format!("resnets.{i}")),
                    input + skip,
                    s.resnet(out_channels, 1.0),
                )
                .map_err(Into::into)
            })
            .collect::<Result<Vec<_>>>()?;
        let attentions = s.transformers(&vb, layers, out_channels, attn)?;
        let upsampler = add_upsample
            .then(|| conv3(vb.pp("upsamplers.0.conv"), out_channels, 1, 1))
            .transpose()?;
        Ok(Self {
            resnets,
            attentions,
            upsampler,
        })
    }

    /// Number of skip connections the block takes.
    pub fn skips(&self) -> usize {
        self.resnets.len()
    }

    /// `skips` in the order the down blocks produced them; `upsample_size`
    /// overrides the doubled size (inputs that do not divide evenly).
    pub fn forward(
        &self,
        xs: &Tensor,
        skips: &[Tensor],
        temb: &Tensor,
        upsample_size: Option<(usize, usize)>,
        context: &Tensor,
    ) -> Result<Tensor> {
        anyhow::ensure!(
            skips.len() == self.resnets.len(),
            "unet up block: {} skip connections for {} resnets",
            skips.len(),
            self.resnets.len()
        );
        let mut xs = xs.clone();
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = &skips[skips.len() - 1 - i];
            xs = Tensor::cat(&[&xs, skip], 1)?;
            xs = resnet.forward(&xs, Some(temb))?;
            if let Some(attn) = self.attentions.get(i) {
                xs = attn.forward(&xs, context)?;
            }
        }
        if let Some(conv) = &self.upsampler {
            let (_, _, h, w) = xs.dims4()?;
            let (h, w) = upsample_size.unwrap_or((2 * h, 2 * w));
            xs = conv.forward(&xs.upsample_nearest2d(h, w)?)?;
        }
        Ok(xs)
    }
}
