//! SD 3: CLIP-L and CLIP-G side by side (penultimate hidden states)
//! zero-padded to the transformer's joint width, T5's tokens after them
//! (zeros in their place without T5), and both CLIPs' pooled embeddings side
//! by side (diffusers' `StableDiffusion3Pipeline.encode_prompt`).

use anyhow::{Context, Result};
use candle_core::Tensor;

use super::clip::{dual_clip, truncation_warning, ClipEncoder};
use super::{Encoded, EncoderRole, Encoders, PromptTokens, TextConditioner};
use crate::model::embeddings::TextualInversions;
use crate::model::t5::{self, T5TextEncoder};

pub struct Sd3 {
    clip_l: ClipEncoder,
    clip_g: ClipEncoder,
    t5: Option<T5TextEncoder>,
    /// The MMDiT's `joint_attention_dim`.
    joint_dim: usize,
}

impl Sd3 {
    pub fn new(enc: Encoders, joint_dim: usize) -> Result<Self> {
        Ok(Self {
            clip_l: enc.first,
            clip_g: enc.second.context("SD 3 needs its second text encoder")?,
            t5: enc.t5,
            joint_dim,
        })
    }
}

impl TextConditioner for Sd3 {
    fn roles(&self) -> Vec<EncoderRole> {
        let mut roles = vec![self.clip_l.role, self.clip_g.role];
        roles.extend(self.t5.as_ref().map(|_| EncoderRole::T5Xxl));
        roles
    }

    fn window(&self) -> usize {
        self.clip_l.window().min(self.clip_g.window())
    }

    /// Embeddings are not applied on SD 3 (no SD 3 textual inversions
    /// exist; T5 would read the name as text): a warning says so.
    fn tokenize_with(
        &self,
        text: &str,
        what: &str,
        embeddings: &TextualInversions,
    ) -> Result<PromptTokens> {
        let none = TextualInversions::default();
        let l = self.clip_l.tokenize(text, &none, true)?;
        let g = self.clip_g.tokenize(text, &none, true)?;
        let t5 = self.t5.as_ref().map(|e| e.tokenize(text)).transpose()?;
        let mut warnings: Vec<String> = truncation_warning(&l, self.window(), what)
            .into_iter()
            .collect();
        if let Some(t) = t5.as_ref().filter(|t| t.truncated()) {
            warnings.push(format!(
                "the {what} has {} T5 tokens; T5 read the first {}",
                t.count,
                t5::MAX_TOKENS
            ));
        }
        if !embeddings.is_empty() {
            let names: Vec<&str> = embeddings.iter().map(|e| e.name()).collect();
            warnings.push(format!(
                "textual-inversion embeddings are not applied on SD 3; the {what} reads {} as text",
                names.join(", ")
            ));
        }
        let warning = (!warnings.is_empty()).then(|| warnings.join("; "));
        Ok(PromptTokens {
            t5,
            ..PromptTokens::from_clip(vec![l, g], warning)
        })
    }

    fn encode(&self, tokens: &PromptTokens, windows: usize) -> Result<Encoded> {
        let (clip, pooled) = dual_clip(
            &self.clip_l,
            &self.clip_g,
            tokens,
            windows,
            self.window(),
            true,
        )?;
        let (_, _, width) = clip.dims3()?;
        let clip = clip.pad_with_zeros(2, 0, self.joint_dim - width)?;
        let t5 = match (&self.t5, &tokens.t5) {
            (Some(enc), Some(t)) => enc.encode(t, clip.dtype())?,
            _ => Tensor::zeros(
                (1, t5::MAX_TOKENS, self.joint_dim),
                clip.dtype(),
                clip.device(),
            )?,
        };
        Ok(Encoded {
            context: Tensor::cat(&[&clip, &t5], 1)?,
            pooled: Some(pooled),
        })
    }
}
