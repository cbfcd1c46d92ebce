//! SD 3's third text encoder: T5 v1.1 (`text_encoder_3`, a `T5EncoderModel`)
//! with its SentencePiece tokenizer (`tokenizer_3/tokenizer.json`), on Candle's
//! T5. Prompts are tokenized as diffusers does (end-of-text appended, cut at
//! 256 tokens, padded), and encoded without an attention mask.
//!
//! T5 overflows f16 (transformers clamps its activations in f16; Candle does
//! not), so an f16 model runs T5 in bf16 on CUDA and in f32 elsewhere.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::t5::{Config, T5EncoderModel};
use std::path::{Path, PathBuf};
use tokenizers::models::unigram::Unigram;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

/// diffusers' `max_sequence_length` default for SD 3.
pub const MAX_TOKENS: usize = 256;

pub struct T5TextEncoder {
    tokenizer: Tokenizer,
    model: T5EncoderModel,
    eos_id: u32,
    pad_id: u32,
    d_model: usize,
    dtype: DType,
}

/// A prompt's T5 tokens, already cut and padded to [`MAX_TOKENS`].
pub struct T5Tokens {
    pub ids: Vec<u32>,
    /// Tokens the prompt had (end-of-text included), before cutting.
    pub count: usize,
}

impl T5Tokens {
    pub fn truncated(&self) -> bool {
        self.count > MAX_TOKENS
    }
}

impl T5TextEncoder {
    pub fn load(
        config: &Path,
        weights: &[PathBuf],
        tokenizer_dir: &Path,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let cfg: Config = super::config::read_json(config)?;
        let path = tokenizer_dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        if tokenizer.get_vocab_size(true) > cfg.vocab_size {
            bail!(
                "tokenizer_3 has {} tokens but text_encoder_3 only {}",
                tokenizer.get_vocab_size(true),
                cfg.vocab_size
            );
        }
        let dtype = match dtype {
            DType::F16 if device.is_cuda() => DType::BF16,
            DType::F16 => DType::F32,
            other => other,
        };
        // Safety: read-only memory map of the model files (see `LoadedModel`).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(weights, dtype, device) }
            .context("opening the text_encoder_3 weights")?;
        let model = T5EncoderModel::load(vb, &cfg).context("building text_encoder_3 (T5)")?;
        Ok(Self {
            tokenizer,
            model,
            eos_id: cfg.eos_token_id as u32,
            pad_id: cfg.pad_token_id as u32,
            d_model: cfg.d_model,
            dtype,
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.d_model
    }

    pub fn tokenize(&self, text: &str) -> Result<T5Tokens> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| anyhow::anyhow!("tokenizing for T5: {e}"))?;
        let mut ids: Vec<u32> = enc.get_ids().to_vec();
        let count = ids.len() + 1;
        ids.truncate(MAX_TOKENS - 1);
        ids.push(self.eos_id);
        ids.resize(MAX_TOKENS, self.pad_id);
        Ok(T5Tokens { ids, count })
    }

    /// [1, MAX_TOKENS, d_model] in `out_dtype`.
    pub fn encode(&self, tokens: &T5Tokens, out_dtype: DType) -> Result<Tensor> {
        let ids = Tensor::new(tokens.ids.as_slice(), self.model.device())?.unsqueeze(0)?;
        // `forward` takes `&mut self` for the decoder's cache; the encoder has
        // none, and a clone shares the weights.
        let mut model = self.model.clone();
        let out = model.forward_dt(&ids, Some(self.dtype))?;
        Ok(out.to_dtype(out_dtype)?)
    }
}

/// Writes a small SentencePiece-style (Unigram) `tokenizer.json` with T5's
/// special tokens (`<pad>` 0, `</s>` 1, `<unk>` 2) and the settings files
/// transformers reads; returns the vocabulary size. For generated models.
pub fn write_tiny_tokenizer(dir: &Path, words: &[&str]) -> Result<usize> {
    let mut vocab: Vec<(String, f64)> = ["<pad>", "</s>", "<unk>"]
        .iter()
        .map(|t| (t.to_string(), 0.0))
        .collect();
    vocab.push(("\u{2581}".into(), -3.0));
    for c in 'a'..='z' {
        vocab.push((c.to_string(), -5.0));
    }
    for w in words {
        let piece = format!("\u{2581}{w}");
        if !vocab.iter().any(|(t, _)| *t == piece) {
            vocab.push((piece, -2.0));
        }
    }
    let n = vocab.len();
    let err = |e: tokenizers::Error| anyhow::anyhow!("building the tiny T5 tokenizer: {e}");
    let model = Unigram::from(vocab, Some(2), false).map_err(err)?;
    let mut tokenizer = Tokenizer::new(model);
    let metaspace = Metaspace::new('\u{2581}', PrependScheme::Always, true);
    tokenizer.with_pre_tokenizer(Some(metaspace.clone()));
    tokenizer.with_decoder(Some(metaspace));
    let template = TemplateProcessing::builder()
        .try_single("$A </s>")
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .try_pair("$A </s> $B </s>")
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .special_tokens(vec![("</s>", 1)])
        .build()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    tokenizer.with_post_processor(Some(template));
    let specials: Vec<AddedToken> = ["<pad>", "</s>", "<unk>"]
        .iter()
        .map(|t| AddedToken::from(t.to_string(), true))
        .collect();
    tokenizer.add_special_tokens(specials).map_err(err)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    tokenizer
        .save(dir.join("tokenizer.json"), true)
        .map_err(err)?;
    let config = serde_json::json!({
        "tokenizer_class": "T5Tokenizer",
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "extra_ids": 0,
        "additional_special_tokens": [],
        "model_max_length": 512,
    });
    let special =
        serde_json::json!({"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"});
    for (name, value) in [
        ("tokenizer_config.json", config),
        ("special_tokens_map.json", special),
    ] {
        std::fs::write(dir.join(name), serde_json::to_string_pretty(&value)?)
            .with_context(|| format!("writing {name}"))?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_tokenizer_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let n = write_tiny_tokenizer(dir.path(), &["red", "circle"]).unwrap();
        assert_eq!(n, 3 + 1 + 26 + 2);
        let tok = Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap();
        let enc = tok.encode("a red circle", true).unwrap();
        let pieces = enc.get_tokens().to_vec();
        assert_eq!(
            pieces,
            ["\u{2581}", "a", "\u{2581}red", "\u{2581}circle", "</s>"]
        );
        assert_eq!(*enc.get_ids().last().unwrap(), 1);
    }
}
