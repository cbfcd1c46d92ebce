//! CLIP text encoder (transformers' `CLIPTextModel`), built from its own
//! `config.json`.
//!
//! Ours rather than Candle's because neither of Candle's fits: the
//! `stable_diffusion::clip` config has private fields (only preset sizes) and
//! maps `hidden_act: "gelu"` to the tanh approximation, while transformers uses
//! the exact erf form; `models::clip` only knows quick_gelu. Weight names follow
//! transformers, so hub checkpoints load unchanged.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, VarBuilder};

use super::config::TextEncoderConfig;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    QuickGelu,
    /// Exact GELU, transformers' "gelu".
    GeluErf,
    /// tanh approximation, transformers' "gelu_new" / "gelu_pytorch_tanh".
    GeluTanh,
}

impl Activation {
    pub fn from_config(name: &str) -> Result<Self> {
        Ok(match name {
            "quick_gelu" => Activation::QuickGelu,
            "gelu" => Activation::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            other => bail!("text encoder config: hidden_act `{other}` is not supported"),
        })
    }

    fn apply(self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
            Activation::GeluErf => xs.gelu_erf(),
            Activation::GeluTanh => xs.gelu(),
        }
    }
}

#[derive(Debug)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn forward(&self, xs: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, c) = xs.dims3()?;
        let split = |x: Tensor| -> candle_core::Result<Tensor> {
            x.reshape((b, t, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let scale = (self.head_dim as f64).powf(-0.5);
        let q = split((self.q.forward(xs)? * scale)?)?;
        let k = split(self.k.forward(xs)?)?;
        let v = split(self.v.forward(xs)?)?;
        // Scores and softmax in f32: half-precision CLIP overflows otherwise.
        let in_dtype = q.dtype();
        let scores = q
            .to_dtype(DType::F32)?
            .matmul(&k.to_dtype(DType::F32)?.t()?)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(mask)?)?;
        let ctx = probs.matmul(&v.to_dtype(DType::F32)?)?.to_dtype(in_dtype)?;
        let ctx = ctx.transpose(1, 2)?.reshape((b, t, c))?;
        self.out.forward(&ctx)
    }
}

#[derive(Debug)]
struct EncoderLayer {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl EncoderLayer {
    fn forward(&self, xs: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let h = (xs + self.attn.forward(&self.norm1.forward(xs)?, mask)?)?;
        let m = self.fc2.forward(
            &self
                .act
                .apply(&self.fc1.forward(&self.norm2.forward(&h)?)?)?,
        )?;
        h + m
    }
}

/// Output of one encoder pass.
pub struct TextEncoding {
    /// After the final layer norm: what SD 1.x/2.x condition on. [batch, tokens, hidden]
    pub last_hidden_state: Tensor,
    /// Output of the second-to-last layer, before any norm (SDXL conditions on this).
    pub penultimate_hidden_state: Tensor,
}

#[derive(Debug)]
pub struct ClipTextEncoder {
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<EncoderLayer>,
    final_norm: LayerNorm,
    /// `text_projection` of a `CLIPTextModelWithProjection` (SDXL's second
    /// encoder): maps the pooled token to the pooled embedding.
    projection: Option<Linear>,
    max_positions: usize,
    hidden_size: usize,
    vocab_size: usize,
}

impl ClipTextEncoder {
    /// `vb` points at the checkpoint root (it contains `text_model.`, and
    /// `text_projection` when the config names `CLIPTextModelWithProjection`).
    pub fn new(vb: VarBuilder, cfg: &TextEncoderConfig) -> Result<Self> {
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads)
        {
            bail!("text encoder config: hidden_size must be a multiple of num_attention_heads");
        }
        let act = Activation::from_config(&cfg.hidden_act)?;
        let projection = cfg
            .architectures
            .iter()
            .any(|a| a == "CLIPTextModelWithProjection")
            .then(|| {
                let dim = cfg.projection_dim.unwrap_or(cfg.hidden_size);
                candle_nn::linear_no_bias(cfg.hidden_size, dim, vb.pp("text_projection"))
            })
            .transpose()?;
        let vb = vb.pp("text_model");
        let emb = vb.pp("embeddings");
        let token_embedding =
            embedding(cfg.vocab_size, cfg.hidden_size, emb.pp("token_embedding"))?;
        let position_embedding = embedding(
            cfg.max_position_embeddings,
            cfg.hidden_size,
            emb.pp("position_embedding"),
        )?;
        let eps = cfg.layer_norm_eps;
        let head_dim = cfg.hidden_size / cfg.num_attention_heads;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = vb.pp(format!("encoder.layers.{i}"));
                let a = l.pp("self_attn");
                let h = cfg.hidden_size;
                Ok(EncoderLayer {
                    norm1: layer_norm(h, eps, l.pp("layer_norm1"))?,
                    attn: Attention {
                        q: linear(h, h, a.pp("q_proj"))?,
                        k: linear(h, h, a.pp("k_proj"))?,
                        v: linear(h, h, a.pp("v_proj"))?,
                        out: linear(h, h, a.pp("out_proj"))?,
                        heads: cfg.num_attention_heads,
                        head_dim,
                    },
                    norm2: layer_norm(h, eps, l.pp("layer_norm2"))?,
                    fc1: linear(h, cfg.intermediate_size, l.pp("mlp.fc1"))?,
                    fc2: linear(cfg.intermediate_size, h, l.pp("mlp.fc2"))?,
                    act,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let final_norm = layer_norm(cfg.hidden_size, eps, vb.pp("final_layer_norm"))?;
        Ok(Self {
            token_embedding,
            position_embedding,
            layers,
            final_norm,
            projection,
            max_positions: cfg.max_position_embeddings,
            hidden_size: cfg.hidden_size,
            vocab_size: cfg.vocab_size,
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// Rows of the token embedding table; ids from here on are placeholders
    /// for textual-inversion vectors ([`Self::encode_with`]).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.token_embedding.embeddings().dtype()
    }

    /// The pooled embedding transformers' CLIP gives: the final hidden state
    /// of the end-of-text token at `eos` [batch], through `text_projection`
    /// when the model has one. [batch, projection_dim]
    pub fn pooled(&self, enc: &TextEncoding, eos: &[usize]) -> candle_core::Result<Tensor> {
        let rows = eos
            .iter()
            .enumerate()
            .map(|(b, &i)| enc.last_hidden_state.get(b)?.get(i))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let pooled = Tensor::stack(&rows, 0)?;
        match &self.projection {
            Some(p) => p.forward(&pooled),
            None => Ok(pooled),
        }
    }

    /// Encodes token ids of shape [batch, tokens] (tokens <= max positions).
    pub fn encode(&self, ids: &Tensor) -> candle_core::Result<TextEncoding> {
        self.encode_with(ids, None)
    }

    /// [`Self::encode`] where id `vocab_size + k` stands for row k of
    /// `extra` [rows, hidden] (textual-inversion vectors, in the weights'
    /// dtype): the token embedding of those positions is taken from `extra`,
    /// then the position embeddings are added as for any token (what
    /// diffusers' `load_textual_inversion` gets by appending rows to the
    /// table; the table itself is never changed). `extra` None is `encode`.
    ///
    /// Errors: a placeholder id past `extra`'s rows.
    pub fn encode_with(
        &self,
        ids: &Tensor,
        extra: Option<&Tensor>,
    ) -> candle_core::Result<TextEncoding> {
        let (_, t) = ids.dims2()?;
        let device = ids.device();
        let positions = Tensor::arange(0u32, t as u32, device)?.unsqueeze(0)?;
        let tokens = match extra {
            None => self.token_embedding.forward(ids)?,
            Some(extra) => self.embed_with(ids, extra)?,
        };
        let mut xs = tokens.broadcast_add(&self.position_embedding.forward(&positions)?)?;
        let mask = causal_mask(t, device)?;
        let mut penultimate = xs.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            xs = layer.forward(&xs, &mask)?;
            if i + 2 == self.layers.len() {
                penultimate = xs.clone();
            }
        }
        Ok(TextEncoding {
            last_hidden_state: self.final_norm.forward(&xs)?,
            penultimate_hidden_state: penultimate,
        })
    }
}

impl ClipTextEncoder {
    /// Token embeddings [batch, tokens, hidden] with placeholder ids looked
    /// up in `extra`.
    fn embed_with(&self, ids: &Tensor, extra: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let device = ids.device();
        let vocab = self.vocab_size as u32;
        let rows = extra.dim(0)? as u32;
        let flat: Vec<u32> = ids.flatten_all()?.to_vec1()?;
        if let Some(&bad) = flat.iter().find(|&&id| id >= vocab + rows) {
            candle_core::bail!(
                "token id {bad} is past the vocabulary ({vocab}) and the {rows} embedding vectors"
            );
        }
        let base: Vec<u32> = flat
            .iter()
            .map(|&id| if id < vocab { id } else { 0 })
            .collect();
        let rows_of: Vec<u32> = flat.iter().map(|&id| id.saturating_sub(vocab)).collect();
        let mask: Vec<u8> = flat.iter().map(|&id| u8::from(id >= vocab)).collect();
        let base = self
            .token_embedding
            .forward(&Tensor::from_vec(base, (b, t), device)?)?;
        let vectors = extra
            .to_dtype(base.dtype())?
            .index_select(&Tensor::from_vec(rows_of, b * t, device)?, 0)?
            .reshape((b, t, self.hidden_size))?;
        Tensor::from_vec(mask, (b, t, 1), device)?
            .broadcast_as((b, t, self.hidden_size))?
            .where_cond(&vectors, &base)
    }
}

/// [t, t] additive mask: a token attends to itself and earlier tokens only.
fn causal_mask(t: usize, device: &Device) -> candle_core::Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (t, t), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_util::max_diff;

    #[test]
    fn maps_activations_like_transformers() {
        assert_eq!(
            Activation::from_config("gelu").unwrap(),
            Activation::GeluErf
        );
        assert_eq!(
            Activation::from_config("quick_gelu").unwrap(),
            Activation::QuickGelu
        );
        assert!(Activation::from_config("relu6").is_err());
    }

    #[test]
    fn causal_mask_blocks_future_tokens() {
        let m = causal_mask(3, &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(m[0][0], 0.0);
        assert!(m[0][1].is_infinite() && m[1][2].is_infinite());
        assert_eq!(m[2][1], 0.0);
    }

    #[test]
    fn changing_a_later_token_leaves_earlier_outputs_unchanged() {
        let cfg = TextEncoderConfig {
            architectures: vec![],
            vocab_size: 16,
            hidden_size: 8,
            intermediate_size: 16,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            max_position_embeddings: 6,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            projection_dim: None,
            model_type: None,
            bos_token_id: None,
            eos_token_id: None,
            pad_token_id: None,
        };
        let vm = candle_nn::VarMap::new();
        let enc =
            ClipTextEncoder::new(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu), &cfg)
                .unwrap();
        let a = Tensor::new(&[[1u32, 2, 3, 4]], &Device::Cpu).unwrap();
        let b = Tensor::new(&[[1u32, 2, 3, 9]], &Device::Cpu).unwrap();
        let ea = enc.encode(&a).unwrap().last_hidden_state;
        let eb = enc.encode(&b).unwrap().last_hidden_state;
        let part = |t: &Tensor, start, len| t.narrow(1, start, len).unwrap();
        let diff_first = max_diff(&part(&ea, 0, 3), &part(&eb, 0, 3));
        let diff_last = max_diff(&part(&ea, 3, 1), &part(&eb, 3, 1));
        assert_eq!(diff_first, 0.0);
        assert!(diff_last > 0.0);
    }
}
