//! SDXL: CLIP-L and OpenCLIP-G side by side (penultimate hidden states), G's
//! pooled projection, and the size time ids (diffusers'
//! `StableDiffusionXLPipeline.encode_prompt` and `_get_add_time_ids`).

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};

use super::clip::{dual_clip, truncation_warning, ClipEncoder};
use super::{Encoded, EncoderRole, Encoders, PromptTokens, TextConditioner};
use crate::model::embeddings::TextualInversions;

pub struct Sdxl {
    clip_l: ClipEncoder,
    clip_g: ClipEncoder,
    /// An absent negative prompt conditions on zeros
    /// (`force_zeros_for_empty_prompt`, true unless the pipeline says otherwise).
    zeros_for_empty_negative: bool,
}

impl Sdxl {
    pub fn new(enc: Encoders, zeros_for_empty_negative: bool) -> Result<Self> {
        Ok(Self {
            clip_l: enc.first,
            clip_g: enc.second.context("SDXL needs its second text encoder")?,
            zeros_for_empty_negative,
        })
    }
}

impl TextConditioner for Sdxl {
    fn roles(&self) -> Vec<EncoderRole> {
        vec![self.clip_l.role, self.clip_g.role]
    }

    fn window(&self) -> usize {
        self.clip_l.window().min(self.clip_g.window())
    }

    fn tokenize_with(
        &self,
        text: &str,
        what: &str,
        embeddings: &TextualInversions,
    ) -> Result<PromptTokens> {
        let l = self.clip_l.tokenize(text, embeddings, true)?;
        let g = self.clip_g.tokenize(text, embeddings, true)?;
        let warning = truncation_warning(&l, self.window(), what);
        Ok(PromptTokens::from_clip(vec![l, g], warning))
    }

    fn encode(&self, tokens: &PromptTokens, windows: usize) -> Result<Encoded> {
        let (context, pooled) = dual_clip(
            &self.clip_l,
            &self.clip_g,
            tokens,
            windows,
            self.window(),
            false,
        )?;
        Ok(Encoded {
            context,
            pooled: Some(pooled),
        })
    }

    /// diffusers' SDXL `encode_prompt` zeroes the unconditional embeddings
    /// when `force_zeros_for_empty_prompt` is set and `negative_prompt` is
    /// None; an explicit negative prompt, even "", is encoded.
    fn encode_negative(
        &self,
        negative: Option<&str>,
        tokens: &PromptTokens,
        cond: &Encoded,
        windows: usize,
    ) -> Result<Encoded> {
        if !(self.zeros_for_empty_negative && negative.is_none()) {
            return self.encode(tokens, windows);
        }
        Ok(Encoded {
            context: cond.context.zeros_like()?,
            pooled: cond.pooled.as_ref().map(Tensor::zeros_like).transpose()?,
        })
    }

    /// Original size = target size = the output size, no crop (diffusers'
    /// defaults): `[h, w, 0, 0, h, w]`.
    fn time_ids(&self, width: u32, height: u32, device: &Device) -> Result<Option<Tensor>> {
        let (h, w) = (height as f32, width as f32);
        Ok(Some(
            Tensor::new(&[h, w, 0.0, 0.0, h, w], device)?.unsqueeze(0)?,
        ))
    }
}
