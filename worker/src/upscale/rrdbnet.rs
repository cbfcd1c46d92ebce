//! ESRGAN's RRDBNet (Wang et al. 2018, "ESRGAN: Enhanced Super-Resolution
//! Generative Adversarial Networks"), as basicsr's `archs/rrdbnet_arch.py` and
//! spandrel 0.4.2's `architectures/ESRGAN/__arch/RRDB.py` define it: a 3x3
//! conv, `nb` residual-in-residual dense blocks with a long skip, nearest 2x
//! upsampling stages each followed by a conv and LeakyReLU(0.2), an HR conv
//! and a last conv. Real-ESRGAN's x2 / x1 models pixel-unshuffle the input
//! first (reflect-padding it to a multiple of the factor) and crop the output.
//!
//! Weights use the canonical names of [`super::arch`].

use super::arch::RrdbConfig;
use anyhow::Result;
use candle_core::{Module, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use crate::model::conv::{conv2d, conv2d_no_bias, Conv2d};

/// LeakyReLU slope of every activation.
const SLOPE: f64 = 0.2;
/// Residual scaling of each dense block and each RRDB (basicsr's 0.2).
const RES_SCALE: f64 = 0.2;

fn conv3(i: usize, o: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    Ok(conv2d(i, o, 3, cfg, vb)?)
}

fn lrelu(x: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::leaky_relu(x, SLOPE)?)
}

/// Residual dense block: five 3x3 convs, each fed the concatenation of the
/// block input and all earlier outputs; `x + 0.2 * conv5(...)`.
struct DenseBlock {
    convs: Vec<Conv2d>,
    /// ESRGAN+: a bias-free 1x1 conv of the input added to the second output.
    conv1x1: Option<Conv2d>,
}

impl DenseBlock {
    fn new(nf: usize, gc: usize, plus: bool, vb: VarBuilder) -> Result<Self> {
        let mut convs = Vec::with_capacity(5);
        for j in 0..5 {
            let out = if j == 4 { nf } else { gc };
            convs.push(conv3(nf + j * gc, out, vb.pp(format!("conv{}", j + 1)))?);
        }
        let conv1x1 = if plus {
            Some(conv2d_no_bias(
                nf,
                gc,
                1,
                Default::default(),
                vb.pp("conv1x1"),
            )?)
        } else {
            None
        };
        Ok(Self { convs, conv1x1 })
    }

    /// x [B, nf, H, W] -> same shape.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut feats = vec![x.clone()];
        for (j, conv) in self.convs.iter().enumerate() {
            let input = Tensor::cat(&feats, 1)?;
            let mut y = conv.forward(&input)?;
            drop(input);
            if j == 4 {
                return Ok(((y * RES_SCALE)? + x)?);
            }
            y = lrelu(&y)?;
            if let Some(c) = &self.conv1x1 {
                // ESRGAN+: x2 += conv1x1(x); x4 += x2.
                if j == 1 {
                    y = (y + c.forward(x)?)?;
                } else if j == 3 {
                    y = (y + &feats[2])?;
                }
            }
            feats.push(y);
        }
        unreachable!("five convs")
    }
}

/// Residual in residual dense block: `x + 0.2 * rdb3(rdb2(rdb1(x)))`.
struct Rrdb {
    rdbs: [DenseBlock; 3],
}

impl Rrdb {
    fn new(cfg: &RrdbConfig, vb: VarBuilder) -> Result<Self> {
        let rdb = |k: usize| DenseBlock::new(cfg.nf, cfg.gc, cfg.plus, vb.pp(format!("rdb{k}")));
        Ok(Self {
            rdbs: [rdb(1)?, rdb(2)?, rdb(3)?],
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = self.rdbs[0].forward(x)?;
        y = self.rdbs[1].forward(&y)?;
        y = self.rdbs[2].forward(&y)?;
        Ok(((y * RES_SCALE)? + x)?)
    }
}

/// The network. Build with [`RrdbNet::new`] from canonical-name weights.
pub struct RrdbNet {
    cfg: RrdbConfig,
    conv_first: Conv2d,
    body: Vec<Rrdb>,
    conv_body: Conv2d,
    ups: Vec<Conv2d>,
    conv_hr: Conv2d,
    conv_last: Conv2d,
}

impl RrdbNet {
    /// Loads the weights of `cfg` from `vb` (canonical names).
    pub fn new(cfg: &RrdbConfig, vb: VarBuilder) -> Result<Self> {
        let nf = cfg.nf;
        let body = (0..cfg.nb)
            .map(|i| Rrdb::new(cfg, vb.pp(format!("body.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let ups = (1..=cfg.upsamples)
            .map(|k| conv3(nf, nf, vb.pp(format!("conv_up{k}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            conv_first: conv3(cfg.in_nc, nf, vb.pp("conv_first"))?,
            body,
            conv_body: conv3(nf, nf, vb.pp("conv_body"))?,
            ups,
            conv_hr: conv3(nf, nf, vb.pp("conv_hr"))?,
            conv_last: conv3(nf, cfg.out_nc, vb.pp("conv_last"))?,
        })
    }

    /// x [B, in_nc / shuffle^2, H, W] -> [B, out_nc, H * scale, W * scale]
    /// (no clamping). With a pixel-unshuffle, H and W are first
    /// reflect-padded at the bottom / right to multiples of the factor, and
    /// the output cropped back (spandrel's `RRDBNet.forward`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let f = self.cfg.shuffle;
        if f == 1 {
            return self.trunk(x);
        }
        let (_, _, h, w) = x.dims4()?;
        let padded = reflect_pad_to_multiple(x, f)?;
        let y = self.trunk(&candle_nn::ops::pixel_unshuffle(&padded, f)?)?;
        let s = self.cfg.scale();
        Ok(y.narrow(2, 0, h * s)?.narrow(3, 0, w * s)?)
    }

    fn trunk(&self, x: &Tensor) -> Result<Tensor> {
        let fea = self.conv_first.forward(x)?;
        let mut t = fea.clone();
        for b in &self.body {
            t = b.forward(&t)?;
        }
        let mut fea = (self.conv_body.forward(&t)? + fea)?;
        drop(t);
        for up in &self.ups {
            let (_, _, h, w) = fea.dims4()?;
            let big = fea.upsample_nearest2d(2 * h, 2 * w)?;
            fea = lrelu(&up.forward(&big)?)?;
        }
        let hr = lrelu(&self.conv_hr.forward(&fea)?)?;
        drop(fea);
        Ok(self.conv_last.forward(&hr)?)
    }
}

/// Pads the last two dims of x [B, C, H, W] at the end (bottom, right) to
/// multiples of `m` (`pad_to_multiple(mode="reflect")` in spandrel).
pub fn reflect_pad_to_multiple(x: &Tensor, m: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    pad_end(x, (m - h % m) % m, (m - w % m) % m)
}

/// Pads x [B, C, H, W] by `ph` rows and `pw` columns at the end: reflection
/// without repeating the edge (`torch.nn.functional.pad(mode="reflect")`) up
/// to `side - 1`, then the last value (spandrel's `pad_tensor` falls back to
/// replicate there).
pub fn pad_end(x: &Tensor, ph: usize, pw: usize) -> Result<Tensor> {
    if ph == 0 && pw == 0 {
        return Ok(x.clone());
    }
    // index_select reads contiguous tensors only (a tile is a narrowed view).
    let mut x = x.contiguous()?;
    for (dim, pad) in [(2, ph), (3, pw)] {
        if pad == 0 {
            continue;
        }
        let n = x.dim(dim)?;
        // Index n - 2 - i, clamped to 0 past the reflection.
        let idx: Vec<u32> = (0..pad).map(|i| n.saturating_sub(2 + i) as u32).collect();
        let idx = Tensor::new(idx.as_slice(), x.device())?;
        let tail = x.index_select(&idx, dim)?;
        x = Tensor::cat(&[&x, &tail], dim)?;
    }
    Ok(x)
}
