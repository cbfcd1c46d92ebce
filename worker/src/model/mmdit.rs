//! Stable Diffusion 3 / 3.5's denoiser: the MMDiT (diffusers'
//! `SD3Transformer2DModel`), read in diffusers' layout (`transformer/`).
//!
//! Candle ships an MMDiT (`candle_transformers::models::mmdit`), but it cannot
//! serve here: it reads Stability's single-file names (fused `qkv`), its
//! blocks hold `nn::Sequential` and so cannot move to the generation thread,
//! its timestep embedding is always cast to f16, and its last block drops the
//! context's q/k RMS norms that SD 3.5 applies (the image tokens would attend
//! to unnormalised context keys). So this is ours, on candle-nn's layers, and
//! checked against diffusers (`pipeline/reference_tests.rs`).

use anyhow::{bail, Result};
use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;
use candle_nn::{linear, rms_norm, Conv2dConfig, LayerNorm, Linear, RmsNorm};

use super::conv::{conv2d, Conv2d};
use candle_transformers::models::stable_diffusion::embeddings::Timesteps;
use serde::{Deserialize, Serialize};

use super::attention::{attention_in_groups, Upcast, SCORE_BUDGET};

/// `transformer/config.json` (SD3Transformer2DModel).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TransformerConfig {
    #[serde(rename = "_class_name", default = "default_class")]
    pub class_name: String,
    #[serde(default = "default_sample_size")]
    pub sample_size: usize,
    #[serde(default = "two")]
    pub patch_size: usize,
    #[serde(default = "sixteen")]
    pub in_channels: usize,
    pub num_layers: usize,
    pub attention_head_dim: usize,
    pub num_attention_heads: usize,
    pub joint_attention_dim: usize,
    pub caption_projection_dim: usize,
    pub pooled_projection_dim: usize,
    #[serde(default = "sixteen")]
    pub out_channels: usize,
    pub pos_embed_max_size: usize,
    /// Blocks with a second, image-only attention (SD 3.5 Medium's MMDiT-X).
    #[serde(default)]
    pub dual_attention_layers: Vec<usize>,
    /// `"rms_norm"` on queries and keys (SD 3.5), or none (SD 3).
    #[serde(default)]
    pub qk_norm: Option<String>,
}

fn default_class() -> String {
    "SD3Transformer2DModel".into()
}
fn default_sample_size() -> usize {
    128
}
fn two() -> usize {
    2
}
fn sixteen() -> usize {
    16
}

impl TransformerConfig {
    pub fn hidden_size(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    pub fn validate(&self) -> Result<()> {
        let hidden = self.hidden_size();
        if self.class_name != "SD3Transformer2DModel" {
            bail!(
                "transformer `{}` is not an SD3Transformer2DModel (Flux and other transformers are not supported)",
                self.class_name
            );
        }
        if hidden == 0 || self.num_layers == 0 || self.patch_size == 0 {
            bail!("transformer config: heads, head size, layers and patch size must be > 0");
        }
        if self.caption_projection_dim != hidden {
            bail!(
                "transformer config: caption_projection_dim {} must equal heads x head size {hidden}",
                self.caption_projection_dim
            );
        }
        match self.qk_norm.as_deref() {
            None | Some("rms_norm") => {}
            Some(other) => {
                bail!("transformer config: qk_norm `{other}` is not supported (rms_norm or none)")
            }
        }
        if let Some(&bad) = self
            .dual_attention_layers
            .iter()
            .find(|&&i| i + 1 >= self.num_layers)
        {
            bail!(
                "transformer config: dual attention in block {bad} (only blocks before the last of {} can have it)",
                self.num_layers
            );
        }
        Ok(())
    }
}

/// A LayerNorm without scale or shift (diffusers' `elementwise_affine=False`);
/// a zero bias keeps it on Candle's fused kernel.
fn plain_norm(hidden: usize, vb: &VarBuilder) -> Result<LayerNorm> {
    let ones = Tensor::ones(hidden, vb.dtype(), vb.device())?;
    let zeros = Tensor::zeros(hidden, vb.dtype(), vb.device())?;
    Ok(LayerNorm::new(ones, zeros, 1e-6))
}

/// x * (1 + scale) + shift, with scale and shift per batch row.
fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    let scale = (scale.unsqueeze(1)? + 1.0)?;
    Ok(x.broadcast_mul(&scale)?
        .broadcast_add(&shift.unsqueeze(1)?)?)
}

/// `FeedForward(activation_fn="gelu-approximate")`: 4x wide, tanh GELU.
struct FeedForward {
    proj_in: Linear,
    proj_out: Linear,
}

impl FeedForward {
    fn new(hidden: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            proj_in: linear(hidden, 4 * hidden, vb.pp("net.0.proj"))?,
            proj_out: linear(4 * hidden, hidden, vb.pp("net.2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.proj_out.forward(&self.proj_in.forward(x)?.gelu()?)?)
    }
}

/// Query, key and value projections of one token stream, with the optional
/// per-head RMS norms on queries and keys.
struct Projections {
    q: Linear,
    k: Linear,
    v: Linear,
    norm_q: Option<RmsNorm>,
    norm_k: Option<RmsNorm>,
}

impl Projections {
    /// `names`: the q, k, v and q-norm, k-norm names inside `vb`.
    fn new(cfg: &TransformerConfig, vb: &VarBuilder, names: [&str; 5]) -> Result<Self> {
        let (hidden, d) = (cfg.hidden_size(), cfg.attention_head_dim);
        let norm = |name: &str| -> Result<Option<RmsNorm>> {
            cfg.qk_norm
                .is_some()
                .then(|| rms_norm(d, 1e-6, vb.pp(name)))
                .transpose()
                .map_err(Into::into)
        };
        Ok(Self {
            q: linear(hidden, hidden, vb.pp(names[0]))?,
            k: linear(hidden, hidden, vb.pp(names[1]))?,
            v: linear(hidden, hidden, vb.pp(names[2]))?,
            norm_q: norm(names[3])?,
            norm_k: norm(names[4])?,
        })
    }

    /// [batch, heads, tokens, head] each.
    fn forward(&self, x: &Tensor, heads: usize) -> Result<(Tensor, Tensor, Tensor)> {
        let split = |t: Tensor, norm: &Option<RmsNorm>| -> Result<Tensor> {
            let (b, s, _) = t.dims3()?;
            let t = t.reshape((b, s, heads, ()))?;
            let t = match norm {
                Some(n) => n.forward(&t)?,
                None => t,
            };
            Ok(t.transpose(1, 2)?.contiguous()?)
        };
        Ok((
            split(self.q.forward(x)?, &self.norm_q)?,
            split(self.k.forward(x)?, &self.norm_k)?,
            split(self.v.forward(x)?, &None)?,
        ))
    }
}

/// Attention with the softmax in f32 and the products in the model's dtype,
/// by groups of heads ([`super::attention`]; at 1024x1024, 4429 joint
/// tokens, one head of a guided batch is 150 MiB of scores).
fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    attention_in_groups(q, k, v, SCORE_BUDGET, Upcast::Softmax)
}

/// One `JointTransformerBlock`: image and context tokens attend jointly, each
/// stream with its own adaLN modulation, projections and MLP. The last block
/// (`context_pre_only`) only feeds the context's keys and values.
struct JointBlock {
    heads: usize,
    norm1: Linear,
    norm1_context: Linear,
    norm: LayerNorm,
    x_proj: Projections,
    x_out: Linear,
    ctx_proj: Projections,
    /// Absent in the last block.
    ctx_out: Option<(Linear, FeedForward)>,
    /// SD 3.5 Medium: a second, image-only attention.
    attn2: Option<(Projections, Linear)>,
    ff: FeedForward,
}

impl JointBlock {
    fn new(cfg: &TransformerConfig, i: usize, vb: VarBuilder) -> Result<Self> {
        let hidden = cfg.hidden_size();
        let last = i + 1 == cfg.num_layers;
        let dual = cfg.dual_attention_layers.contains(&i);
        let attn = vb.pp("attn");
        let x_names = ["to_q", "to_k", "to_v", "norm_q", "norm_k"];
        let ctx_names = [
            "add_q_proj",
            "add_k_proj",
            "add_v_proj",
            "norm_added_q",
            "norm_added_k",
        ];
        let ctx_out = (!last)
            .then(|| -> Result<_> {
                Ok((
                    linear(hidden, hidden, attn.pp("to_add_out"))?,
                    FeedForward::new(hidden, vb.pp("ff_context"))?,
                ))
            })
            .transpose()?;
        let attn2 = dual
            .then(|| -> Result<_> {
                let a2 = vb.pp("attn2");
                Ok((
                    Projections::new(cfg, &a2, x_names)?,
                    linear(hidden, hidden, a2.pp("to_out.0"))?,
                ))
            })
            .transpose()?;
        Ok(Self {
            heads: cfg.num_attention_heads,
            norm1: linear(
                hidden,
                if dual { 9 } else { 6 } * hidden,
                vb.pp("norm1.linear"),
            )?,
            norm1_context: linear(
                hidden,
                if last { 2 } else { 6 } * hidden,
                vb.pp("norm1_context.linear"),
            )?,
            norm: plain_norm(hidden, &vb)?,
            x_proj: Projections::new(cfg, &attn, x_names)?,
            x_out: linear(hidden, hidden, attn.pp("to_out.0"))?,
            ctx_proj: Projections::new(cfg, &attn, ctx_names)?,
            ctx_out,
            attn2,
            ff: FeedForward::new(hidden, vb.pp("ff"))?,
        })
    }

    /// `temb` is already through SiLU (every adaLN starts with it).
    fn forward(&self, x: &Tensor, ctx: &Tensor, temb: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let m = self
            .norm1
            .forward(temb)?
            .chunk(if self.attn2.is_some() { 9 } else { 6 }, 1)?;
        let x_norm = self.norm.forward(x)?;
        let x_in = modulate(&x_norm, &m[0], &m[1])?;
        let cm = self.norm1_context.forward(temb)?;
        let ctx_norm = self.norm.forward(ctx)?;
        let cm = if self.ctx_out.is_some() {
            cm.chunk(6, 1)?
        } else {
            // AdaLayerNormContinuous: scale first, then shift.
            let c = cm.chunk(2, 1)?;
            vec![c[1].clone(), c[0].clone()]
        };
        let ctx_in = modulate(&ctx_norm, &cm[0], &cm[1])?;

        let (xq, xk, xv) = self.x_proj.forward(&x_in, self.heads)?;
        let (cq, ck, cv) = self.ctx_proj.forward(&ctx_in, self.heads)?;
        let joint = attention(
            &Tensor::cat(&[&xq, &cq], 2)?,
            &Tensor::cat(&[&xk, &ck], 2)?,
            &Tensor::cat(&[&xv, &cv], 2)?,
        )?;
        let sx = x.dim(1)?;
        let x_attn = self.x_out.forward(&joint.narrow(1, 0, sx)?)?;
        let gate = |t: &Tensor, g: &Tensor| t.broadcast_mul(&g.unsqueeze(1)?);
        let mut x = (x + gate(&x_attn, &m[2])?)?;
        if let Some((proj, out)) = &self.attn2 {
            let x2_in = modulate(&x_norm, &m[6], &m[7])?;
            let (q, k, v) = proj.forward(&x2_in, self.heads)?;
            let a2 = out.forward(&attention(&q, &k, &v)?)?;
            x = (x + gate(&a2, &m[8])?)?;
        }
        let ff_in = modulate(&self.norm.forward(&x)?, &m[3], &m[4])?;
        let x = (&x + gate(&self.ff.forward(&ff_in)?, &m[5])?)?;

        let Some((ctx_attn_out, ff_context)) = &self.ctx_out else {
            return Ok((x, None));
        };
        let sc = ctx.dim(1)?;
        let c_attn = ctx_attn_out.forward(&joint.narrow(1, sx, sc)?)?;
        let ctx = (ctx + gate(&c_attn, &cm[2])?)?;
        let ff_in = modulate(&self.norm.forward(&ctx)?, &cm[3], &cm[4])?;
        let ctx = (&ctx + gate(&ff_context.forward(&ff_in)?, &cm[5])?)?;
        Ok((x, Some(ctx)))
    }
}

pub struct Mmdit {
    cfg: TransformerConfig,
    patch_embed: Conv2d,
    /// [max x max, hidden]: sinusoidal table, centre-cropped to the latent size.
    pos_embed: Tensor,
    time_proj: Timesteps,
    time_1: Linear,
    time_2: Linear,
    pooled_1: Linear,
    pooled_2: Linear,
    context_embedder: Linear,
    blocks: Vec<JointBlock>,
    norm_out: Linear,
    norm: LayerNorm,
    proj_out: Linear,
}

impl Mmdit {
    /// `vb` points at the transformer checkpoint root (diffusers names).
    pub fn new(vb: VarBuilder, cfg: &TransformerConfig) -> Result<Self> {
        cfg.validate()?;
        let hidden = cfg.hidden_size();
        let p = cfg.patch_size;
        let patch_embed = conv2d(
            cfg.in_channels,
            hidden,
            p,
            Conv2dConfig {
                stride: p,
                ..Default::default()
            },
            vb.pp("pos_embed.proj"),
        )?;
        let max = cfg.pos_embed_max_size;
        let pos_embed = vb
            .get((1, max * max, hidden), "pos_embed.pos_embed")?
            .squeeze(0)?;
        let te = vb.pp("time_text_embed");
        let blocks = (0..cfg.num_layers)
            .map(|i| JointBlock::new(cfg, i, vb.pp(format!("transformer_blocks.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            patch_embed,
            pos_embed,
            time_proj: Timesteps::new(256, true, 0.0),
            time_1: linear(256, hidden, te.pp("timestep_embedder.linear_1"))?,
            time_2: linear(hidden, hidden, te.pp("timestep_embedder.linear_2"))?,
            pooled_1: linear(
                cfg.pooled_projection_dim,
                hidden,
                te.pp("text_embedder.linear_1"),
            )?,
            pooled_2: linear(hidden, hidden, te.pp("text_embedder.linear_2"))?,
            context_embedder: linear(cfg.joint_attention_dim, hidden, vb.pp("context_embedder"))?,
            blocks,
            norm_out: linear(hidden, 2 * hidden, vb.pp("norm_out.linear"))?,
            norm: plain_norm(hidden, &vb)?,
            proj_out: linear(hidden, p * p * cfg.out_channels, vb.pp("proj_out"))?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &TransformerConfig {
        &self.cfg
    }

    /// Predicts the flow velocity for `xs` [batch, channels, h, w] at
    /// `timestep` (sigma x 1000), given the joint text tokens `context`
    /// [batch, tokens, joint_attention_dim] and the pooled CLIP embeddings
    /// `pooled` [batch, pooled_projection_dim].
    pub fn forward(
        &self,
        xs: &Tensor,
        timestep: f64,
        context: &Tensor,
        pooled: &Tensor,
    ) -> Result<Tensor> {
        let (b, _, h, w) = xs.dims4()?;
        let p = self.cfg.patch_size;
        let max = self.cfg.pos_embed_max_size;
        let (hp, wp) = (h / p, w / p);
        if h % p != 0 || w % p != 0 {
            bail!("latent size {h}x{w} is not a multiple of the patch size {p}");
        }
        if hp > max || wp > max {
            bail!(
                "latent size {h}x{w} exceeds the position table ({} latent pixels a side)",
                max * p
            );
        }
        let dtype = xs.dtype();

        // Patches, plus the centre crop of the position table.
        let x = self
            .patch_embed
            .forward(xs)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let (top, left) = ((max - hp) / 2, (max - wp) / 2);
        let pos = self
            .pos_embed
            .reshape((max, max, ()))?
            .narrow(0, top, hp)?
            .narrow(1, left, wp)?
            .reshape((1, hp * wp, ()))?;
        let mut x = x.broadcast_add(&pos.to_dtype(dtype)?)?;

        // Sinusoids in f32, then the model's dtype (as diffusers).
        let t = Tensor::full(timestep as f32, b, xs.device())?;
        let t_emb = self.time_proj.forward(&t)?.to_dtype(dtype)?;
        let t_emb = self.time_2.forward(&self.time_1.forward(&t_emb)?.silu()?)?;
        let p_emb = self.pooled_1.forward(&pooled.to_dtype(dtype)?)?.silu()?;
        let temb = (t_emb + self.pooled_2.forward(&p_emb)?)?;
        let temb_act = temb.silu()?;

        let mut ctx = self.context_embedder.forward(&context.to_dtype(dtype)?)?;
        for block in &self.blocks {
            let (nx, nctx) = block.forward(&x, &ctx, &temb_act)?;
            x = nx;
            if let Some(c) = nctx {
                ctx = c;
            }
        }

        // AdaLayerNormContinuous (scale, then shift), then back to patches.
        let m = self.norm_out.forward(&temb_act)?.chunk(2, 1)?;
        let x = modulate(&self.norm.forward(&x)?, &m[1], &m[0])?;
        let x = self.proj_out.forward(&x)?;
        let c = self.cfg.out_channels;
        let x = x
            .reshape((b, hp, wp, p, p, c))?
            .permute((0, 5, 1, 3, 2, 4))?
            .reshape((b, c, hp * p, wp * p))?;
        Ok(x.contiguous()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_util::max_diff;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn tiny(dual: Vec<usize>, qk_norm: Option<&str>) -> TransformerConfig {
        serde_json::from_value(serde_json::json!({
            "num_layers": 3, "attention_head_dim": 8, "num_attention_heads": 2,
            "joint_attention_dim": 12, "caption_projection_dim": 16, "pooled_projection_dim": 10,
            "pos_embed_max_size": 8, "in_channels": 4, "out_channels": 4,
            "dual_attention_layers": dual, "qk_norm": qk_norm
        }))
        .unwrap()
    }

    fn build(cfg: &TransformerConfig) -> (VarMap, Mmdit) {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let m = Mmdit::new(vb, cfg).unwrap();
        (map, m)
    }

    #[test]
    fn reads_diffusers_names_including_the_last_blocks_context_norms() {
        let (map, _) = build(&tiny(vec![0], Some("rms_norm")));
        let names: Vec<String> = map.data().lock().unwrap().keys().cloned().collect();
        let has = |n: &str| names.iter().any(|k| k == n);
        assert!(has("transformer_blocks.0.attn2.to_q.weight"));
        assert!(has("transformer_blocks.0.norm1.linear.weight"));
        assert!(!has("transformer_blocks.1.attn2.to_q.weight"));
        // The last block keeps its context's q/k norms but has no context output.
        assert!(has("transformer_blocks.2.attn.norm_added_k.weight"));
        assert!(!has("transformer_blocks.2.attn.to_add_out.weight"));
        assert!(!has("transformer_blocks.2.ff_context.net.2.weight"));
        assert!(has("pos_embed.pos_embed") && has("time_text_embed.text_embedder.linear_2.bias"));
    }

    #[test]
    fn output_has_the_input_shape_and_depends_on_every_input() {
        let cfg = tiny(vec![0], Some("rms_norm"));
        let (map, m) = build(&cfg);
        // VarMap starts at zeros for some tensors: randomise everything.
        for var in map.data().lock().unwrap().values() {
            let t = Tensor::randn(0f32, 0.2, var.shape(), &Device::Cpu).unwrap();
            var.set(&t).unwrap();
        }
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 4, 6, 4), &dev).unwrap();
        let ctx = Tensor::randn(0f32, 1.0, (2, 5, 12), &dev).unwrap();
        let pooled = Tensor::randn(0f32, 1.0, (2, 10), &dev).unwrap();
        let out = m.forward(&x, 500.0, &ctx, &pooled).unwrap();
        assert_eq!(out.dims(), x.dims());
        let diff = |a: &Tensor| max_diff(a, &out);
        assert!(diff(&m.forward(&x, 400.0, &ctx, &pooled).unwrap()) > 1e-3);
        assert!(
            diff(
                &m.forward(&x, 500.0, &(&ctx * 2.0).unwrap(), &pooled)
                    .unwrap()
            ) > 1e-3
        );
        assert!(
            diff(
                &m.forward(&x, 500.0, &ctx, &(&pooled * 2.0).unwrap())
                    .unwrap()
            ) > 1e-3
        );
        // Batch rows are independent.
        let one = m
            .forward(
                &x.narrow(0, 1, 1).unwrap(),
                500.0,
                &ctx.narrow(0, 1, 1).unwrap(),
                &pooled.narrow(0, 1, 1).unwrap(),
            )
            .unwrap();
        let d = max_diff(&one, &out.narrow(0, 1, 1).unwrap());
        let scale = max_diff(&out, &out.zeros_like().unwrap());
        assert!(d < 1e-5 * scale.max(1.0), "{d} of {scale}");
    }

    #[test]
    fn refuses_sizes_past_the_position_table_and_odd_configs() {
        let (_, m) = build(&tiny(vec![], None));
        let dev = Device::Cpu;
        let ctx = Tensor::zeros((1, 3, 12), DType::F32, &dev).unwrap();
        let pooled = Tensor::zeros((1, 10), DType::F32, &dev).unwrap();
        let big = Tensor::zeros((1, 4, 18, 4), DType::F32, &dev).unwrap();
        assert!(m.forward(&big, 1.0, &ctx, &pooled).is_err());
        let odd = Tensor::zeros((1, 4, 5, 4), DType::F32, &dev).unwrap();
        assert!(m.forward(&odd, 1.0, &ctx, &pooled).is_err());
        let mut cfg = tiny(vec![2], None);
        assert!(cfg.validate().is_err());
        cfg.dual_attention_layers.clear();
        cfg.qk_norm = Some("layer_norm".into());
        assert!(cfg.validate().is_err());
    }
}
