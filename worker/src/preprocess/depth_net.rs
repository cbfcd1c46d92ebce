//! The Depth Anything V2 network: a DINOv2 ViT encoder and a DPT head
//! ("Depth Anything V2", Yang et al. 2024; the original `depth_anything_v2/dpt.py`
//! and `dinov2.py`, and transformers' `DepthAnythingForDepthEstimation` with
//! its `Dinov2Backbone`, which the parity test runs).
//!
//! Written here rather than taken from candle-transformers 0.11.1, whose
//! `depth_anything_v2` / `dinov2` differ from the reference: square 518x518
//! input only (the head reshapes and upsamples to fixed square sizes), nearest
//! instead of bilinear (align_corners) upsampling in the fusion blocks and the
//! head, nearest instead of bicubic position-embedding interpolation, tanh
//! instead of erf GELU, LayerNorm eps 1e-5 instead of 1e-6, a required
//! classifier `head`, and (in its example) the encoder taken from the generic
//! DINOv2 checkpoint rather than the fine-tuned `pretrained.*` weights.
//!
//! Weight names are the original checkpoint's (`pretrained.*`, `depth_head.*`);
//! `depth_weights` renames transformers' `-hf` layout into them.

use crate::model::attention::{attention_in_groups, Upcast, SCORE_BUDGET};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{
    conv_transpose2d, layer_norm, linear, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig,
    LayerNorm, Linear, VarBuilder,
};

use crate::model::conv::{conv2d, conv2d_no_bias, Conv2d};

/// Shapes of a Depth Anything V2 model, read from the weights (and, for the
/// head count and the tapped layers, from `config.json` or the standard table).
#[derive(Debug, Clone, PartialEq)]
pub struct DepthNetConfig {
    /// ViT width (384 for ViT-S).
    pub embed_dim: usize,
    /// Number of transformer blocks (12 for ViT-S).
    pub depth: usize,
    /// Attention heads (6 for ViT-S; head size `embed_dim / num_heads`).
    pub num_heads: usize,
    /// Hidden width of each block's MLP (4 x `embed_dim`).
    pub mlp_hidden: usize,
    /// Patch side in pixels (14).
    pub patch_size: usize,
    /// Side of the square grid the position embedding was trained at (37 = 518 / 14).
    pub pos_grid: usize,
    /// The four blocks (0-based) whose normalised outputs feed the head ([2, 5, 8, 11]).
    pub layer_ids: [usize; 4],
    /// Channels of the four reassembled feature maps ([48, 96, 192, 384]).
    pub out_channels: [usize; 4],
    /// Channels of the fusion blocks (64).
    pub features: usize,
    /// Channels of the last hidden head conv (32).
    pub head_hidden: usize,
    /// LayerNorm epsilon (DINOv2: 1e-6).
    pub layer_norm_eps: f64,
}

impl DepthNetConfig {
    /// Depth Anything V2 Small (ViT-S/14), the default model.
    pub fn vit_small() -> Self {
        Self {
            embed_dim: 384,
            depth: 12,
            num_heads: 6,
            mlp_hidden: 1536,
            patch_size: 14,
            pos_grid: 37,
            layer_ids: [2, 5, 8, 11],
            out_channels: [48, 96, 192, 384],
            features: 64,
            head_hidden: 32,
            layer_norm_eps: 1e-6,
        }
    }
}

struct Block {
    norm1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    ls1: Tensor,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    ls2: Tensor,
    num_heads: usize,
}

impl Block {
    fn new(cfg: &DepthNetConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.embed_dim;
        Ok(Self {
            norm1: layer_norm(d, cfg.layer_norm_eps, vb.pp("norm1"))?,
            qkv: linear(d, 3 * d, vb.pp("attn.qkv"))?,
            proj: linear(d, d, vb.pp("attn.proj"))?,
            ls1: vb.get(d, "ls1.gamma")?,
            norm2: layer_norm(d, cfg.layer_norm_eps, vb.pp("norm2"))?,
            fc1: linear(d, cfg.mlp_hidden, vb.pp("mlp.fc1"))?,
            fc2: linear(cfg.mlp_hidden, d, vb.pp("mlp.fc2"))?,
            ls2: vb.get(d, "ls2.gamma")?,
            num_heads: cfg.num_heads,
        })
    }

    /// x [batch, tokens, dim] -> same shape.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        let h = self.num_heads;
        let qkv = self
            .qkv
            .forward(&self.norm1.forward(x)?)?
            .reshape((b, n, 3, h, c / h))?
            .permute((2, 0, 3, 1, 4))?;
        let (q, k, v) = (
            qkv.get(0)?.contiguous()?,
            qkv.get(1)?.contiguous()?,
            qkv.get(2)?.contiguous()?,
        );
        let attn = attention_in_groups(&q, &k, &v, SCORE_BUDGET, Upcast::Softmax)?;
        let x = (x + self.proj.forward(&attn)?.broadcast_mul(&self.ls1)?)?;
        let mlp = self
            .fc2
            .forward(&self.fc1.forward(&self.norm2.forward(&x)?)?.gelu_erf()?)?;
        Ok((&x + mlp.broadcast_mul(&self.ls2)?)?)
    }
}

/// Pre-activation residual unit: `x + conv2(relu(conv1(relu(x))))`.
struct ResidualUnit {
    conv1: Conv2d,
    conv2: Conv2d,
}

impl ResidualUnit {
    fn new(features: usize, vb: VarBuilder) -> Result<Self> {
        let cfg = pad1();
        Ok(Self {
            conv1: conv2d(features, features, 3, cfg, vb.pp("conv1"))?,
            conv2: conv2d(features, features, 3, cfg, vb.pp("conv2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.conv1.forward(&x.relu()?)?;
        let y = self.conv2.forward(&y.relu()?)?;
        Ok((y + x)?)
    }
}

/// DPT feature fusion: `out_conv(upsample(rcu2(x + rcu1(skip))))`.
struct Fusion {
    unit1: ResidualUnit,
    unit2: ResidualUnit,
    out_conv: Conv2d,
}

impl Fusion {
    fn new(features: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            unit1: ResidualUnit::new(features, vb.pp("resConfUnit1"))?,
            unit2: ResidualUnit::new(features, vb.pp("resConfUnit2"))?,
            out_conv: conv2d(features, features, 1, Default::default(), vb.pp("out_conv"))?,
        })
    }

    /// Upsamples to `size` (h, w), bilinear with aligned corners.
    fn forward(&self, x: &Tensor, skip: Option<&Tensor>, size: (usize, usize)) -> Result<Tensor> {
        let x = match skip {
            Some(s) => (x + self.unit1.forward(s)?)?,
            None => x.clone(),
        };
        let x = self.unit2.forward(&x)?;
        self.out_conv
            .forward(&bilinear_align_corners(&x, size.0, size.1)?)
            .map_err(Into::into)
    }
}

enum Resize {
    Up(ConvTranspose2d),
    Same,
    Down(Conv2d),
}

/// Depth Anything V2: image [batch, 3, H, W] (H, W multiples of the patch
/// size, ImageNet-normalised) to relative depth [batch, H, W], larger = nearer.
pub struct DepthNet {
    cfg: DepthNetConfig,
    patch_embed: Conv2d,
    cls_token: Tensor,
    /// [1, 1 + grid^2, dim], f32 on the CPU (interpolated per input size).
    pos_embed: Vec<f32>,
    blocks: Vec<Block>,
    norm: LayerNorm,
    projects: Vec<Conv2d>,
    resize: Vec<Resize>,
    layer_rn: Vec<Conv2d>,
    /// refinenet1..4
    fusion: Vec<Fusion>,
    output_conv1: Conv2d,
    output_conv2_0: Conv2d,
    output_conv2_2: Conv2d,
}

fn pad1() -> Conv2dConfig {
    Conv2dConfig {
        padding: 1,
        ..Default::default()
    }
}

impl DepthNet {
    /// Builds the network from original-layout weights (`pretrained.*`, `depth_head.*`).
    pub fn new(cfg: DepthNetConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.embed_dim;
        let p = cfg.patch_size;
        let enc = vb.pp("pretrained");
        let patch_embed = conv2d(
            3,
            d,
            p,
            Conv2dConfig {
                stride: p,
                ..Default::default()
            },
            enc.pp("patch_embed.proj"),
        )?;
        let cls_token = enc.get((1, 1, d), "cls_token")?;
        let positions = 1 + cfg.pos_grid * cfg.pos_grid;
        let pos_embed = enc
            .get((1, positions, d), "pos_embed")?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let blocks = (0..cfg.depth)
            .map(|i| Block::new(&cfg, enc.pp(format!("blocks.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let norm = layer_norm(d, cfg.layer_norm_eps, enc.pp("norm"))?;

        let head = vb.pp("depth_head");
        let oc = cfg.out_channels;
        let projects = (0..4)
            .map(|i| {
                conv2d(
                    d,
                    oc[i],
                    1,
                    Default::default(),
                    head.pp(format!("projects.{i}")),
                )
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let up = |i: usize, k: usize| -> Result<Resize> {
            let cfg = ConvTranspose2dConfig {
                stride: k,
                ..Default::default()
            };
            let vb = head.pp(format!("resize_layers.{i}"));
            Ok(Resize::Up(conv_transpose2d(oc[i], oc[i], k, cfg, vb)?))
        };
        let down = Conv2dConfig {
            padding: 1,
            stride: 2,
            ..Default::default()
        };
        let resize = vec![
            up(0, 4)?,
            up(1, 2)?,
            Resize::Same,
            Resize::Down(conv2d(oc[3], oc[3], 3, down, head.pp("resize_layers.3"))?),
        ];
        let scratch = head.pp("scratch");
        let f = cfg.features;
        let layer_rn = (0..4)
            .map(|i| {
                conv2d_no_bias(
                    oc[i],
                    f,
                    3,
                    pad1(),
                    scratch.pp(format!("layer{}_rn", i + 1)),
                )
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let fusion = (1..=4)
            .map(|i| Fusion::new(f, scratch.pp(format!("refinenet{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let output_conv1 = conv2d(f, f / 2, 3, pad1(), scratch.pp("output_conv1"))?;
        let output_conv2_0 = conv2d(
            f / 2,
            cfg.head_hidden,
            3,
            pad1(),
            scratch.pp("output_conv2.0"),
        )?;
        let output_conv2_2 = conv2d(
            cfg.head_hidden,
            1,
            1,
            Default::default(),
            scratch.pp("output_conv2.2"),
        )?;
        Ok(Self {
            cfg,
            patch_embed,
            cls_token,
            pos_embed,
            blocks,
            norm,
            projects,
            resize,
            layer_rn,
            fusion,
            output_conv1,
            output_conv2_0,
            output_conv2_2,
        })
    }

    pub fn config(&self) -> &DepthNetConfig {
        &self.cfg
    }

    /// x [batch, 3, H, W], H and W multiples of the patch size, in the
    /// weights' dtype -> relative depth [batch, H, W] (ReLU'd, unnormalised),
    /// as transformers' `DepthAnythingForDepthEstimation(...).predicted_depth`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let p = self.cfg.patch_size;
        if c != 3 || h == 0 || w == 0 || h % p != 0 || w % p != 0 {
            bail!(
                "depth network input must be [batch, 3, H, W] with H, W multiples of {p}, got {:?}",
                x.dims()
            );
        }
        let (ph, pw) = (h / p, w / p);
        let d = self.cfg.embed_dim;
        // Encoder: patch tokens, class token, interpolated positions.
        let tokens = self
            .patch_embed
            .forward(x)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let cls = self.cls_token.broadcast_as((b, 1, d))?;
        let pos = self.position_embedding(ph, pw, x.device(), x.dtype())?;
        let mut xs = Tensor::cat(&[&cls, &tokens], 1)?.broadcast_add(&pos)?;
        let mut taps = Vec::with_capacity(4);
        for (i, block) in self.blocks.iter().enumerate() {
            xs = block.forward(&xs)?;
            if self.cfg.layer_ids.contains(&i) {
                taps.push(self.norm.forward(&xs)?);
            }
        }
        if taps.len() != 4 {
            bail!(
                "the depth model taps blocks {:?} but has {} blocks",
                self.cfg.layer_ids,
                self.cfg.depth
            );
        }
        // Reassemble: patch tokens to maps at 4x, 2x, 1x and 1/2 the grid.
        let mut maps = Vec::with_capacity(4);
        for (i, tap) in taps.iter().enumerate() {
            let m = tap
                .narrow(1, 1, ph * pw)?
                .transpose(1, 2)?
                .reshape((b, d, ph, pw))?;
            let m = self.projects[i].forward(&m)?;
            let m = match &self.resize[i] {
                Resize::Up(t) => t.forward(&m)?,
                Resize::Same => m,
                Resize::Down(cv) => cv.forward(&m)?,
            };
            maps.push(self.layer_rn[i].forward(&m)?);
        }
        let size = |t: &Tensor| -> Result<(usize, usize)> {
            let (_, _, h, w) = t.dims4()?;
            Ok((h, w))
        };
        // Fusion, coarse to fine (refinenet4 -> refinenet1).
        let path4 = self.fusion[3].forward(&maps[3], None, size(&maps[2])?)?;
        let path3 = self.fusion[2].forward(&path4, Some(&maps[2]), size(&maps[1])?)?;
        let path2 = self.fusion[1].forward(&path3, Some(&maps[1]), size(&maps[0])?)?;
        let (h1, w1) = size(&maps[0])?;
        let path1 = self.fusion[0].forward(&path2, Some(&maps[0]), (2 * h1, 2 * w1))?;
        let out = self.output_conv1.forward(&path1)?;
        let out = bilinear_align_corners(&out, ph * p, pw * p)?;
        let out = self.output_conv2_0.forward(&out)?.relu()?;
        let out = self.output_conv2_2.forward(&out)?.relu()?;
        Ok(out.squeeze(1)?)
    }

    /// The position embedding for a ph x pw grid: the class position, then the
    /// patch positions resized bicubically (A = -0.75, align_corners = False,
    /// in f32) to exactly ph x pw as transformers'
    /// `Dinov2Embeddings.interpolate_pos_encoding` (`size=`). The original
    /// DINOv2 passes `scale_factor=(ph + 0.1) / grid` instead, which samples
    /// at slightly different positions; at the 37x37 grid (518x518) both are
    /// the identity.
    fn position_embedding(
        &self,
        ph: usize,
        pw: usize,
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor> {
        let d = self.cfg.embed_dim;
        let g = self.cfg.pos_grid;
        let rows = bicubic_taps(g, ph);
        let cols = bicubic_taps(g, pw);
        let src = &self.pos_embed[d..];
        // Horizontal pass: [g, pw, d], then vertical: [ph, pw, d].
        let mut tmp = vec![0f32; g * pw * d];
        for y in 0..g {
            for (x, (idx, wt)) in cols.iter().enumerate() {
                let out = &mut tmp[(y * pw + x) * d..(y * pw + x + 1) * d];
                for k in 0..4 {
                    let s = &src[(y * g + idx[k]) * d..(y * g + idx[k] + 1) * d];
                    out.iter_mut().zip(s).for_each(|(o, v)| *o += wt[k] * v);
                }
            }
        }
        let mut all = Vec::with_capacity((1 + ph * pw) * d);
        all.extend_from_slice(&self.pos_embed[..d]);
        let mut row = vec![0f32; pw * d];
        for (idx, wt) in &rows {
            row.iter_mut().for_each(|v| *v = 0.0);
            for k in 0..4 {
                let s = &tmp[idx[k] * pw * d..(idx[k] + 1) * pw * d];
                row.iter_mut().zip(s).for_each(|(o, v)| *o += wt[k] * v);
            }
            all.extend_from_slice(&row);
        }
        Ok(Tensor::from_vec(all, (1, 1 + ph * pw, d), device)?.to_dtype(dtype)?)
    }
}

/// PyTorch's cubic convolution weights (A = -0.75) at fraction `t`.
pub(crate) fn cubic_weights(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// For each output index of a bicubic resize from `input` to `output`
/// samples (align_corners = False, half-pixel centres, edge samples
/// repeated): the four input indices and their weights.
fn bicubic_taps(input: usize, output: usize) -> Vec<([usize; 4], [f32; 4])> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|o| {
            let src = scale * (o as f32 + 0.5) - 0.5;
            let base = src.floor();
            let t = src - base;
            let idx = std::array::from_fn(|k| {
                (base as i64 - 1 + k as i64).clamp(0, input as i64 - 1) as usize
            });
            (idx, cubic_weights(t))
        })
        .collect()
}

/// Interpolation matrix [output, input] of a 1-D linear resize with aligned
/// corners (PyTorch `F.interpolate(mode="bilinear", align_corners=True)`).
pub(crate) fn linear_align_corners_weights(input: usize, output: usize) -> Vec<f32> {
    let mut m = vec![0f32; output * input];
    let scale = if output > 1 {
        (input as f32 - 1.0) / (output as f32 - 1.0)
    } else {
        0.0
    };
    for o in 0..output {
        let src = scale * o as f32;
        let i0 = (src.floor() as usize).min(input - 1);
        let i1 = (i0 + 1).min(input - 1);
        let t = src - i0 as f32;
        m[o * input + i0] += 1.0 - t;
        m[o * input + i1] += t;
    }
    m
}

/// x [b, c, h, w] -> [b, c, oh, ow], bilinear with aligned corners, as two
/// matrix products (device- and dtype-agnostic).
pub(crate) fn bilinear_align_corners(x: &Tensor, oh: usize, ow: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if (h, w) == (oh, ow) {
        return Ok(x.clone());
    }
    let dev = x.device();
    let rw = Tensor::from_vec(linear_align_corners_weights(w, ow), (ow, w), dev)?
        .to_dtype(x.dtype())?
        .t()?;
    let rh =
        Tensor::from_vec(linear_align_corners_weights(h, oh), (oh, h), dev)?.to_dtype(x.dtype())?;
    let x = x.contiguous()?.broadcast_matmul(&rw.contiguous()?)?; // [b, c, h, ow]
    let (b, c) = (x.dim(0)?, x.dim(1)?);
    let rh = rh.broadcast_left((b, c))?.contiguous()?;
    rh.matmul(&x).context("bilinear resize")
}
