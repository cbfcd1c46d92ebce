//! One CLIP text encoder with its tokenizer, and the window encoding every
//! CLIP-based conditioner shares.

use anyhow::Result;
use candle_core::{Device, Tensor};

use super::{EncoderRole, MAX_WINDOWS};
use crate::model::embeddings::{self, EncoderSlot, TextualInversions};
use crate::model::text_encoder::{ClipTextEncoder, TextEncoding};
use crate::model::tokenizer::ClipTokenizer;

/// A CLIP (or OpenCLIP) encoder, its tokenizer and its role.
pub struct ClipEncoder {
    pub role: EncoderRole,
    tokenizer: ClipTokenizer,
    encoder: ClipTextEncoder,
    device: Device,
}

/// A tokenized prompt for one encoder.
pub(super) struct ClipWindows {
    pub windows: Vec<Vec<u32>>,
    pub truncated: bool,
    pub token_count: usize,
    /// Textual-inversion vectors for the placeholder ids, on the encoder's
    /// device in its dtype [rows, hidden]; None without embeddings.
    pub extra: Option<Tensor>,
    /// The embeddings applied.
    pub used: Vec<String>,
}

/// One window encoded: the hidden states and the position of the
/// end-of-text token (where the pooled embedding is read).
pub(super) struct EncodedWindow {
    pub states: TextEncoding,
    pub eos: usize,
}

impl ClipEncoder {
    /// `device`: where the encoder's weights are (token ids are made there).
    pub fn new(
        role: EncoderRole,
        tokenizer: ClipTokenizer,
        encoder: ClipTextEncoder,
        device: &Device,
    ) -> Self {
        Self {
            role,
            tokenizer,
            encoder,
            device: device.clone(),
        }
    }

    /// Tokens per window: the tokenizer's length, at most the encoder's positions.
    pub fn window(&self) -> usize {
        self.tokenizer
            .max_length()
            .min(self.encoder.max_positions())
    }

    pub fn hidden_size(&self) -> usize {
        self.encoder.hidden_size()
    }

    /// `text` in windows, the names of `embeddings` replaced by their
    /// vectors' placeholder ids (see [`embeddings`]); `paired`: the model
    /// has CLIP-L and OpenCLIP-G side by side (SDXL).
    pub(super) fn tokenize(
        &self,
        text: &str,
        embeddings: &TextualInversions,
        paired: bool,
    ) -> Result<ClipWindows> {
        if embeddings.is_empty() {
            let w = self.tokenizer.windows(text, MAX_WINDOWS)?;
            return Ok(ClipWindows {
                windows: w.windows,
                truncated: w.truncated,
                token_count: w.token_count,
                extra: None,
                used: Vec::new(),
            });
        }
        let slot = EncoderSlot {
            role: self.role,
            hidden: self.encoder.hidden_size(),
            paired,
        };
        let base = u32::try_from(self.encoder.vocab_size())?;
        let w = embeddings::tokenize(&self.tokenizer, text, MAX_WINDOWS, embeddings, slot, base)?;
        let extra = w
            .extra
            .map(|t| t.to_dtype(self.encoder.dtype())?.to_device(&self.device))
            .transpose()?;
        Ok(ClipWindows {
            windows: w.windows,
            truncated: w.truncated,
            token_count: w.token_count,
            extra,
            used: w.used,
        })
    }

    /// Window `i` of `list` (the empty prompt's window past its end), at most
    /// `window` tokens, encoded: [1, window, hidden]; `extra`: the
    /// textual-inversion vectors of the list's placeholder ids.
    pub(super) fn encode_window(
        &self,
        list: &[Vec<u32>],
        extra: Option<&Tensor>,
        i: usize,
        window: usize,
    ) -> Result<EncodedWindow> {
        let empty = self.tokenizer.window(&[]);
        let ids = list.get(i).unwrap_or(&empty);
        let ids = &ids[..window.min(ids.len())];
        let eos = ids
            .iter()
            .position(|&id| id == self.tokenizer.eos_id())
            .unwrap_or(0);
        let ids = Tensor::new(ids, &self.device)?.unsqueeze(0)?;
        Ok(EncodedWindow {
            states: self.encoder.encode_with(&ids, extra)?,
            eos,
        })
    }

    /// The pooled (and, with `text_projection`, projected) embedding of an
    /// encoded window: [1, pooled dim].
    pub(super) fn pooled(&self, w: &EncodedWindow) -> Result<Tensor> {
        Ok(self.encoder.pooled(&w.states, &[w.eos])?)
    }
}

/// The truncation warning for the first encoder's tokens, if any.
pub(super) fn truncation_warning(w: &ClipWindows, window: usize, what: &str) -> Option<String> {
    w.truncated.then(|| {
        format!(
            "the {what} has {} tokens; only the first {} were used ({MAX_WINDOWS} windows of {} tokens)",
            w.token_count,
            MAX_WINDOWS * window.saturating_sub(2),
            window.saturating_sub(2)
        )
    })
}

/// CLIP-L and OpenCLIP-G side by side, as SDXL and SD 3 encode: each
/// window's penultimate hidden states concatenated on the feature axis
/// ([1, windows x window, L + G]); the pooled embeddings of the first window
/// (as A1111 does with several windows): G's alone, or with `pool_both`
/// L's and G's side by side.
pub(super) fn dual_clip(
    l: &ClipEncoder,
    g: &ClipEncoder,
    tokens: &super::PromptTokens,
    windows: usize,
    window: usize,
    pool_both: bool,
) -> Result<(Tensor, Tensor)> {
    let mut parts = Vec::with_capacity(windows);
    let mut pooled = None;
    for i in 0..windows.max(tokens.windows()) {
        let first = l.encode_window(&tokens.clip[0], tokens.extra(0), i, window)?;
        let second = g.encode_window(&tokens.clip[1], tokens.extra(1), i, window)?;
        if i == 0 {
            let pooled_g = g.pooled(&second)?;
            pooled = Some(if pool_both {
                Tensor::cat(&[&l.pooled(&first)?, &pooled_g], 1)?
            } else {
                pooled_g
            });
        }
        parts.push(Tensor::cat(
            &[
                &first.states.penultimate_hidden_state,
                &second.states.penultimate_hidden_state,
            ],
            2,
        )?);
    }
    let pooled = pooled.expect("at least one window");
    Ok((Tensor::cat(&parts, 1)?, pooled))
}
