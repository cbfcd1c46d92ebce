//! The layers of diffusers' `EncoderTiny` and `DecoderTiny` (vae.py) and
//! their `AutoencoderTinyBlock` (unet_2d_blocks.py), under diffusers' weight
//! names: each is an `nn.Sequential` named `layers`, whose convs and blocks
//! keep their index in it (activations and upsamplings take an index too,
//! without weights).

use anyhow::Result;
use candle_core::{Module, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use crate::model::conv::{conv2d, conv2d_no_bias, Conv2d};

use super::config::{Act, TaesdConfig};

fn act(xs: &Tensor, act: Act) -> candle_core::Result<Tensor> {
    match act {
        Act::Relu => xs.relu(),
        Act::Silu => candle_nn::ops::silu(xs),
        Act::Gelu => xs.gelu_erf(),
    }
}

/// `AutoencoderTinyBlock` with equal input and output widths (the only kind
/// `EncoderTiny`/`DecoderTiny` build): `relu(conv(x) + x)`, where `conv` is
/// three 3x3 convs with the configured activation between them (`conv.0`,
/// `conv.2`, `conv.4`) and the skip is the identity.
#[derive(Debug)]
struct Block {
    convs: [Conv2d; 3],
    act: Act,
}

impl Block {
    fn new(vb: VarBuilder, channels: usize, act: Act) -> Result<Self> {
        let c = |i: usize| conv2d(channels, channels, 3, pad(1), vb.pp("conv").pp(i));
        Ok(Self {
            convs: [c(0)?, c(2)?, c(4)?],
            act,
        })
    }

    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let h = act(&self.convs[0].forward(xs)?, self.act)?;
        let h = act(&self.convs[1].forward(&h)?, self.act)?;
        let h = self.convs[2].forward(&h)?;
        (h + xs)?.relu()
    }
}

fn pad(stride: usize) -> Conv2dConfig {
    Conv2dConfig {
        padding: 1,
        stride,
        ..Default::default()
    }
}

#[derive(Debug)]
enum Layer {
    Conv(Conv2d),
    Block(Block),
    Act(Act),
    /// Nearest-neighbour upsampling by this factor.
    Upsample(usize),
}

/// An `nn.Sequential` of [`Layer`]s, indexed as diffusers indexes it.
#[derive(Debug)]
pub(super) struct Layers(Vec<Layer>);

impl Layers {
    fn forward(&self, mut xs: Tensor) -> candle_core::Result<Tensor> {
        for layer in &self.0 {
            xs = match layer {
                Layer::Conv(c) => c.forward(&xs)?,
                Layer::Block(b) => b.forward(&xs)?,
                Layer::Act(a) => act(&xs, *a)?,
                Layer::Upsample(f) => {
                    let (_, _, h, w) = xs.dims4()?;
                    xs.upsample_nearest2d(h * f, w * f)?
                }
            };
        }
        Ok(xs)
    }

    /// Next index in the sequence, under which the next layer's weights live.
    fn vb<'a>(&self, vb: &VarBuilder<'a>) -> VarBuilder<'a> {
        vb.pp(self.0.len())
    }
}

/// `EncoderTiny`: per stage a 3x3 conv (the first from the image's channels
/// with a bias, the others stride 2 without), then the stage's blocks; a
/// 3x3 conv out to the latent channels. Takes pixels in [0, 1].
#[derive(Debug)]
pub(super) struct Encoder(Layers);

impl Encoder {
    /// `vb` at `encoder`; `cfg` validated.
    pub(super) fn new(vb: VarBuilder, cfg: &TaesdConfig) -> Result<Self> {
        let vb = vb.pp("layers");
        let a = cfg.activation()?;
        let mut layers = Layers(Vec::new());
        for (i, (&c, &blocks)) in cfg
            .encoder_block_out_channels
            .iter()
            .zip(&cfg.num_encoder_blocks)
            .enumerate()
        {
            let conv = if i == 0 {
                conv2d(cfg.in_channels, c, 3, pad(1), layers.vb(&vb))?
            } else {
                conv2d_no_bias(c, c, 3, pad(2), layers.vb(&vb))?
            };
            layers.0.push(Layer::Conv(conv));
            for _ in 0..blocks {
                let block = Block::new(layers.vb(&vb), c, a)?;
                layers.0.push(Layer::Block(block));
            }
        }
        let last = *cfg.encoder_block_out_channels.last().expect("validated");
        let out = conv2d(last, cfg.latent_channels, 3, pad(1), layers.vb(&vb))?;
        layers.0.push(Layer::Conv(out));
        Ok(Self(layers))
    }

    /// Pixels [B, C, H, W] in [0, 1] -> raw latents [B, latent, ceil(H/8), ceil(W/8)].
    pub(super) fn forward(&self, pixels01: &Tensor) -> candle_core::Result<Tensor> {
        self.0.forward(pixels01.clone())
    }
}

/// `DecoderTiny`: a 3x3 conv from the latent channels and the activation;
/// per stage its blocks, then (all but the last) an upsampling and a 3x3
/// conv without bias, the last a 3x3 conv with bias to the image channels.
#[derive(Debug)]
pub(super) struct Decoder(Layers);

impl Decoder {
    /// `vb` at `decoder`; `cfg` validated.
    pub(super) fn new(vb: VarBuilder, cfg: &TaesdConfig) -> Result<Self> {
        let vb = vb.pp("layers");
        let a = cfg.activation()?;
        let widths = &cfg.decoder_block_out_channels;
        let mut layers = Layers(Vec::new());
        let first = conv2d(cfg.latent_channels, widths[0], 3, pad(1), layers.vb(&vb))?;
        layers.0.push(Layer::Conv(first));
        layers.0.push(Layer::Act(a));
        let stages = widths.len();
        for (i, (&c, &blocks)) in widths.iter().zip(&cfg.num_decoder_blocks).enumerate() {
            for _ in 0..blocks {
                let block = Block::new(layers.vb(&vb), c, a)?;
                layers.0.push(Layer::Block(block));
            }
            let conv = if i + 1 < stages {
                layers
                    .0
                    .push(Layer::Upsample(cfg.upsampling_scaling_factor));
                conv2d_no_bias(c, c, 3, pad(1), layers.vb(&vb))?
            } else {
                conv2d(c, cfg.out_channels, 3, pad(1), layers.vb(&vb))?
            };
            layers.0.push(Layer::Conv(conv));
        }
        Ok(Self(layers))
    }

    /// Raw latents [B, latent, h, w] -> pixels [B, 3, f h, f w] in about
    /// [0, 1], after diffusers' soft clamp of the input, `tanh(x / 3) * 3`.
    pub(super) fn forward(&self, latents: &Tensor) -> candle_core::Result<Tensor> {
        let xs = ((latents / 3.0)?.tanh()? * 3.0)?;
        self.0.forward(xs)
    }
}
