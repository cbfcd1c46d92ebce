//! Prompt text to the UNet's conditioning. A prompt longer than the text
//! encoder's window is split into windows, each encoded on its own, and the
//! embeddings concatenated along the token axis: cross-attention takes any
//! number of tokens. The prompt and the negative prompt are padded to the
//! same number of windows (with windows of the empty prompt) because they are
//! batched together for classifier-free guidance.

use anyhow::Result;
use candle_core::Tensor;

use crate::model::tokenizer::ClipTokenizer;
use crate::model::LoadedModel;

/// Most windows per prompt: 8 x 75 = 600 tokens, far beyond what a prompt
/// needs, and a bound on the conditioning's size.
pub const MAX_WINDOWS: usize = 8;

/// A prompt's token windows, before encoding: one list per text encoder
/// (SDXL's two tokenizers differ in padding only).
pub struct PromptTokens {
    windows: Vec<Vec<u32>>,
    windows_2: Option<Vec<Vec<u32>>>,
    pub warning: Option<String>,
}

impl PromptTokens {
    /// Number of windows (at least one, even for an empty prompt).
    pub fn windows(&self) -> usize {
        self.windows
            .len()
            .max(self.windows_2.as_ref().map_or(0, Vec::len))
    }
}

/// A prompt's conditioning: [1, windows x window, context dim], and for SDXL
/// the pooled embedding of the second encoder, [1, pooled dim].
pub struct Encoded {
    pub context: Tensor,
    pub pooled: Option<Tensor>,
}

pub fn tokenize(model: &LoadedModel, text: &str, what: &str) -> Result<PromptTokens> {
    let window = model.meta.max_prompt_tokens;
    let tokens = model.tokenizer.windows(text, MAX_WINDOWS)?;
    let warning = tokens.truncated.then(|| {
        format!(
            "the {what} has {} tokens; only the first {} were used ({MAX_WINDOWS} windows of {} tokens)",
            tokens.token_count,
            MAX_WINDOWS * window.saturating_sub(2),
            window.saturating_sub(2)
        )
    });
    let windows_2 = model
        .text_encoder_2
        .as_ref()
        .map(|(tok, _)| tok.windows(text, MAX_WINDOWS).map(|w| w.windows))
        .transpose()?;
    Ok(PromptTokens {
        windows: tokens.windows,
        windows_2,
        warning,
    })
}

/// Encodes `tokens` padded with empty windows to `windows` windows.
///
/// SD 1.x/2.x condition on the final hidden states. SDXL (as diffusers)
/// concatenates both encoders' penultimate hidden states, and pools the
/// second encoder's end-of-text token through its projection; with several
/// windows the pooled embedding is the first window's (as A1111 does).
pub fn encode(model: &LoadedModel, tokens: &PromptTokens, windows: usize) -> Result<Encoded> {
    let window_ids = |tok: &ClipTokenizer, list: &[Vec<u32>], i: usize| -> Result<Tensor> {
        let empty = tok.window(&[]);
        let ids = list.get(i).unwrap_or(&empty);
        let ids = &ids[..model.meta.max_prompt_tokens.min(ids.len())];
        Ok(Tensor::new(ids, &model.device)?.unsqueeze(0)?)
    };
    let mut parts = Vec::with_capacity(windows);
    let mut pooled = None;
    for i in 0..windows.max(tokens.windows()) {
        let ids = window_ids(&model.tokenizer, &tokens.windows, i)?;
        let first = model.text_encoder.encode(&ids)?;
        let Some((tok_2, enc_2)) = &model.text_encoder_2 else {
            parts.push(first.last_hidden_state);
            continue;
        };
        let list_2 = tokens.windows_2.as_deref().unwrap_or_default();
        let ids_2 = window_ids(tok_2, list_2, i)?;
        let second = enc_2.encode(&ids_2)?;
        if i == 0 {
            let eos = ids_2
                .squeeze(0)?
                .to_vec1::<u32>()?
                .iter()
                .position(|&id| id == tok_2.eos_id())
                .unwrap_or(0);
            pooled = Some(enc_2.pooled(&second, &[eos])?);
        }
        parts.push(Tensor::cat(
            &[
                &first.penultimate_hidden_state,
                &second.penultimate_hidden_state,
            ],
            2,
        )?);
    }
    Ok(Encoded {
        context: Tensor::cat(&parts, 1)?,
        pooled,
    })
}
