//! The UNet's attention blocks, ours in diffusers' layout: `Transformer2DModel`
//! (Candle's `SpatialTransformer`), `BasicTransformerBlock`, `Attention` and
//! `FeedForward` with a GEGLU. Candle's own blocks gate the feed-forward with
//! the tanh approximation of GELU, where diffusers' `GEGLU` calls the exact
//! (erf) `F.gelu`; one UNet call then differs by ~1e-4, enough to move
//! sensitive samplers (LCM) by tens of levels. Candle keeps those blocks
//! private, hence these. Weight names are diffusers', so every checkpoint
//! loads as it is.

use anyhow::{bail, Result};
use candle_core::{Module, Tensor};
use candle_nn::{layer_norm, LayerNorm, VarBuilder};
use candle_transformers::models::stable_diffusion::attention::CrossAttention;

use super::conv::{conv2d, Conv2d};
use super::linear::{linear, linear_no_bias, Linear};
use super::norm::{group_norm, GroupNorm};

use super::attention::{attention_in_groups, Upcast, SCORE_BUDGET};

/// Attention with q, k, v and the scores in f32, as diffusers' `Attention`
/// with `upcast_attention` (SD 2.x's scores overflow f16) and as Candle's
/// UNet did; by groups of heads ([`super::attention`]).
fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    attention_in_groups(q, k, v, SCORE_BUDGET, Upcast::All)
}

/// Diffusers' `Attention` as the UNet builds it: q/k/v without bias,
/// `to_out.0` with bias; self-attention when `context_dim` is `None`.
#[derive(Debug)]
enum Attention {
    Ours {
        to_q: Linear,
        to_k: Linear,
        to_v: Linear,
        to_out: Linear,
        heads: usize,
    },
    /// With the `flash-attn` feature on CUDA: Candle's (same weights, its
    /// flash kernel in f16).
    Flash(CrossAttention),
}

impl Attention {
    fn new(
        vb: VarBuilder,
        query_dim: usize,
        context_dim: Option<usize>,
        heads: usize,
        head_dim: usize,
        flash_attn: bool,
    ) -> Result<Self> {
        if flash_attn {
            return Ok(Attention::Flash(CrossAttention::new(
                vb,
                query_dim,
                context_dim,
                heads,
                head_dim,
                None,
                true,
            )?));
        }
        let inner = heads * head_dim;
        let context_dim = context_dim.unwrap_or(query_dim);
        Ok(Attention::Ours {
            to_q: linear_no_bias(query_dim, inner, vb.pp("to_q"))?,
            to_k: linear_no_bias(context_dim, inner, vb.pp("to_k"))?,
            to_v: linear_no_bias(context_dim, inner, vb.pp("to_v"))?,
            to_out: linear(inner, query_dim, vb.pp("to_out.0"))?,
            heads,
        })
    }

    /// `xs` [batch, tokens, query_dim] attending to `context` [batch,
    /// context tokens, context_dim] (or to itself).
    fn forward(&self, xs: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let (to_q, to_k, to_v, to_out, heads) = match self {
            Attention::Flash(a) => return Ok(a.forward(xs, context)?),
            Attention::Ours {
                to_q,
                to_k,
                to_v,
                to_out,
                heads,
            } => (to_q, to_k, to_v, to_out, *heads),
        };
        let context = context.unwrap_or(xs);
        let split = |t: Tensor| -> Result<Tensor> {
            let (b, s, _) = t.dims3()?;
            Ok(t.reshape((b, s, heads, ()))?.transpose(1, 2)?)
        };
        let q = split(to_q.forward(xs)?)?;
        let k = split(to_k.forward(context)?)?;
        let v = split(to_v.forward(context)?)?;
        Ok(to_out.forward(&attention(&q, &k, &v)?)?)
    }
}

/// Diffusers' `FeedForward(activation_fn="geglu")`: `net.0` is a `GEGLU`
/// projecting to twice the 4x-wide inner size, `h * gelu(gate)` with the
/// exact (erf) GELU, as `F.gelu`'s default; `net.2` projects back.
#[derive(Debug)]
struct FeedForward {
    geglu: Linear,
    out: Linear,
}

impl FeedForward {
    fn new(vb: VarBuilder, dim: usize) -> Result<Self> {
        let inner = 4 * dim;
        Ok(Self {
            geglu: linear(dim, 2 * inner, vb.pp("net.0.proj"))?,
            out: linear(inner, dim, vb.pp("net.2"))?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let gated = crate::kernels::geglu::geglu(&self.geglu.forward(xs)?)?;
        Ok(self.out.forward(&gated)?)
    }
}

/// Diffusers' `BasicTransformerBlock` with the UNet's settings: pre-norm
/// self-attention, cross-attention and GEGLU feed-forward, each residual
/// (LayerNorms with eps 1e-5).
#[derive(Debug)]
struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    fn new(
        vb: VarBuilder,
        dim: usize,
        heads: usize,
        head_dim: usize,
        context_dim: usize,
        flash_attn: bool,
    ) -> Result<Self> {
        Ok(Self {
            norm1: layer_norm(dim, 1e-5, vb.pp("norm1"))?,
            attn1: Attention::new(vb.pp("attn1"), dim, None, heads, head_dim, flash_attn)?,
            norm2: layer_norm(dim, 1e-5, vb.pp("norm2"))?,
            attn2: Attention::new(
                vb.pp("attn2"),
                dim,
                Some(context_dim),
                heads,
                head_dim,
                flash_attn,
            )?,
            norm3: layer_norm(dim, 1e-5, vb.pp("norm3"))?,
            ff: FeedForward::new(vb.pp("ff"), dim)?,
        })
    }

    fn forward(&self, xs: &Tensor, context: &Tensor) -> Result<Tensor> {
        let xs = (self.attn1.forward(&self.norm1.forward(xs)?, None)? + xs)?;
        let xs = (self
            .attn2
            .forward(&self.norm2.forward(&xs)?, Some(context))?
            + xs)?;
        Ok((self.ff.forward(&self.norm3.forward(&xs)?)? + xs)?)
    }
}

#[derive(Debug)]
enum Proj {
    Conv(Conv2d),
    Linear(Linear),
}

/// How one [`SpatialTransformer`] is built.
#[derive(Debug, Clone, Copy)]
pub struct SpatialTransformerConfig {
    /// Attention heads (diffusers' UNet: `attention_head_dim`, or
    /// `num_attention_heads` when set); each head is `channels / heads` wide.
    pub heads: usize,
    /// `transformer_layers_per_block`.
    pub depth: usize,
    /// Groups of the input GroupNorm (the block's `resnet_groups`).
    pub groups: usize,
    /// Width of the text embedding attended to.
    pub context_dim: usize,
    /// `proj_in`/`proj_out` are Linear (SD 2.x, SDXL) rather than 1x1 convs.
    pub use_linear_projection: bool,
    /// Candle's flash-attention kernel (the `flash-attn` feature on CUDA).
    pub flash_attn: bool,
}

/// Diffusers' `Transformer2DModel` on continuous inputs (Candle's
/// `SpatialTransformer`): GroupNorm (eps 1e-6), `proj_in`, the
/// `transformer_blocks`, `proj_out`, plus the input.
#[derive(Debug)]
pub struct SpatialTransformer {
    norm: GroupNorm,
    proj_in: Proj,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Proj,
}

impl SpatialTransformer {
    /// Errors when `channels` does not divide into `cfg.heads` heads, or a
    /// weight is missing or misshapen.
    pub fn new(vb: VarBuilder, channels: usize, cfg: SpatialTransformerConfig) -> Result<Self> {
        if cfg.heads == 0 || !channels.is_multiple_of(cfg.heads) {
            bail!(
                "unet config: {channels} channels do not divide into {} attention heads",
                cfg.heads
            );
        }
        let head_dim = channels / cfg.heads;
        let norm = group_norm(cfg.groups, channels, 1e-6, vb.pp("norm"))?;
        let proj = |name: &str| -> Result<Proj> {
            Ok(if cfg.use_linear_projection {
                Proj::Linear(linear(channels, channels, vb.pp(name))?)
            } else {
                Proj::Conv(conv2d(
                    channels,
                    channels,
                    1,
                    Default::default(),
                    vb.pp(name),
                )?)
            })
        };
        let proj_in = proj("proj_in")?;
        let blocks = (0..cfg.depth)
            .map(|i| {
                BasicTransformerBlock::new(
                    vb.pp(format!("transformer_blocks.{i}")),
                    channels,
                    cfg.heads,
                    head_dim,
                    cfg.context_dim,
                    cfg.flash_attn,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let proj_out = proj("proj_out")?;
        Ok(Self {
            norm,
            proj_in,
            blocks,
            proj_out,
        })
    }

    /// `xs` [batch, channels, h, w] cross-attending to `context` [batch,
    /// tokens, context_dim]; same shape out.
    pub fn forward(&self, xs: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = xs.dims4()?;
        let normed = self.norm.forward(xs)?;
        // [b, c, h, w] <-> [b, h*w, c]
        let to_tokens = |t: &Tensor| -> Result<Tensor> {
            Ok(t.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous()?)
        };
        let to_image =
            |t: &Tensor| -> Result<Tensor> { Ok(t.transpose(1, 2)?.reshape((b, c, h, w))?) };
        let mut tokens = match &self.proj_in {
            Proj::Conv(p) => to_tokens(&p.forward(&normed)?)?,
            Proj::Linear(p) => p.forward(&to_tokens(&normed)?)?,
        };
        for block in &self.blocks {
            tokens = block.forward(&tokens, context)?;
        }
        let out = match &self.proj_out {
            Proj::Conv(p) => p.forward(&to_image(&tokens)?.contiguous()?)?,
            Proj::Linear(p) => to_image(&p.forward(&tokens)?)?,
        };
        Ok((out + xs)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    /// diffusers' GEGLU: `h * F.gelu(gate)`, the exact GELU
    /// `x/2 (1 + erf(x/sqrt 2))`; the tanh form differs by up to ~5e-4.
    #[test]
    fn the_feed_forward_gates_with_the_exact_gelu() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let ff = FeedForward::new(vb, 1).unwrap();
        // net.0.proj: h = x, gate = x; net.2: the sum of the 4 products / 4.
        let data = vm.data().lock().unwrap();
        let set = |name: &str, t: Tensor| data[name].set(&t).unwrap();
        set(
            "net.0.proj.weight",
            Tensor::ones((8, 1), DType::F32, &Device::Cpu).unwrap(),
        );
        set(
            "net.0.proj.bias",
            Tensor::zeros(8, DType::F32, &Device::Cpu).unwrap(),
        );
        set(
            "net.2.weight",
            Tensor::full(0.25f32, (1, 4), &Device::Cpu).unwrap(),
        );
        set(
            "net.2.bias",
            Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap(),
        );
        drop(data);
        let xs = [-3.0f64, -1.5, -0.5, 0.0, 0.7, 1.0, 2.0, 3.5];
        let input = Tensor::new(&xs.map(|x| x as f32), &Device::Cpu)
            .unwrap()
            .reshape((1, 8, 1))
            .unwrap();
        let got: Vec<f32> = ff
            .forward(&input)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (x, got) in xs.iter().zip(got) {
            let exact = x * 0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2));
            let tanh = 0.5
                * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh());
            let want = x * exact;
            assert!(
                (got as f64 - want).abs() < 2e-6,
                "x={x}: {got} vs exact {want}"
            );
            if x.abs() >= 1.0 {
                assert!((got as f64 - x * tanh).abs() > 1e-5, "x={x}: tanh form");
            }
        }
    }

    /// erf by its Maclaurin series, exact in f64 for the |x| < 3 used here.
    fn erf(x: f64) -> f64 {
        let mut sum = 0.0;
        let mut term = x;
        for n in 0..200 {
            sum += term / (2 * n + 1) as f64;
            term *= -x * x / (n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }
}
