//! Prompt text to the UNet's conditioning. A prompt longer than the text
//! encoder's window is split into windows, each encoded on its own, and the
//! embeddings concatenated along the token axis: cross-attention takes any
//! number of tokens. The prompt and the negative prompt are padded to the
//! same number of windows (with windows of the empty prompt) because they are
//! batched together for classifier-free guidance.

use anyhow::Result;
use candle_core::Tensor;

use crate::model::LoadedModel;

/// Most windows per prompt: 8 x 75 = 600 tokens, far beyond what a prompt
/// needs, and a bound on the conditioning's size.
pub const MAX_WINDOWS: usize = 8;

/// A prompt's token windows, before encoding.
pub struct PromptTokens {
    windows: Vec<Vec<u32>>,
    pub warning: Option<String>,
}

impl PromptTokens {
    /// Number of windows (at least one, even for an empty prompt).
    pub fn windows(&self) -> usize {
        self.windows.len()
    }
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
    Ok(PromptTokens {
        windows: tokens.windows,
        warning,
    })
}

/// Encodes `tokens` padded with empty windows to `windows` windows:
/// [1, windows x window, hidden].
pub fn encode(model: &LoadedModel, tokens: &PromptTokens, windows: usize) -> Result<Tensor> {
    let empty = model.tokenizer.window(&[]);
    let mut parts = Vec::with_capacity(windows);
    for i in 0..windows.max(tokens.windows()) {
        let ids = tokens.windows.get(i).unwrap_or(&empty);
        let ids = &ids[..model.meta.max_prompt_tokens.min(ids.len())];
        let ids = Tensor::new(ids, &model.device)?.unsqueeze(0)?;
        parts.push(model.text_encoder.encode(&ids)?.last_hidden_state);
    }
    Ok(Tensor::cat(&parts, 1)?)
}
