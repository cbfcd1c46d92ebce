//! Real-ESRGAN's SRVGGNetCompact (basicsr / Real-ESRGAN
//! `archs/srvgg_arch.py`, spandrel 0.4.2 `architectures/Compact`): a plain
//! stack of 3x3 convs with per-channel PReLU, a last conv to
//! `out_nc * upscale^2` channels, a pixel shuffle, plus the nearest-upsampled
//! input (the network learns the residual).
//!
//! Weights: `body.{2i}` convs, `body.{2i+1}.weight` PReLU slopes [nf].

use super::arch::CompactConfig;
use anyhow::Result;
use candle_core::{Module, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use crate::model::conv::{conv2d, Conv2d};

/// Per-channel PReLU: `max(x, 0) + a_c * min(x, 0)` on x [B, C, H, W], a [C]
/// (`torch.nn.PReLU(num_parameters=C)`).
pub fn prelu(x: &Tensor, a: &Tensor) -> Result<Tensor> {
    let c = a.dim(0)?;
    let a = a.reshape((1, c, 1, 1))?;
    let zeros = x.zeros_like()?;
    let neg = x.minimum(&zeros)?.broadcast_mul(&a)?;
    Ok((x.maximum(&zeros)? + neg)?)
}

/// The network.
pub struct SrvggNet {
    cfg: CompactConfig,
    convs: Vec<Conv2d>,
    slopes: Vec<Tensor>,
}

impl SrvggNet {
    /// Loads the weights of `cfg` from `vb`.
    pub fn new(cfg: &CompactConfig, vb: VarBuilder) -> Result<Self> {
        let pad = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let mut convs = Vec::new();
        let mut slopes = Vec::new();
        for i in 0..=cfg.num_conv {
            let in_c = if i == 0 { cfg.in_nc } else { cfg.nf };
            convs.push(conv2d(
                in_c,
                cfg.nf,
                3,
                pad,
                vb.pp(format!("body.{}", 2 * i)),
            )?);
            slopes.push(vb.get(cfg.nf, &format!("body.{}.weight", 2 * i + 1))?);
        }
        let out = cfg.out_nc * cfg.upscale * cfg.upscale;
        let last = format!("body.{}", 2 * cfg.num_conv + 2);
        convs.push(conv2d(cfg.nf, out, 3, pad, vb.pp(last))?);
        Ok(Self {
            cfg: cfg.clone(),
            convs,
            slopes,
        })
    }

    /// x [B, in_nc, H, W] -> [B, out_nc, H * upscale, W * upscale] (no clamping).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let mut y = x.clone();
        for (conv, a) in self.convs.iter().zip(&self.slopes) {
            y = prelu(&conv.forward(&y)?, a)?;
        }
        let last = self.convs.last().expect("last conv");
        let s = self.cfg.upscale;
        let y = candle_nn::ops::pixel_shuffle(&last.forward(&y)?, s)?;
        let base = x.upsample_nearest2d(h * s, w * s)?;
        Ok((y + base)?)
    }
}
