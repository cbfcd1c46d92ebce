//! Prompt text to the UNet's conditioning.

use anyhow::Result;
use candle_core::Tensor;

use crate::model::LoadedModel;

/// Conditioning for one prompt: [1, tokens, hidden], and a warning when the
/// prompt did not fit in the encoder's window.
pub struct EncodedPrompt {
    pub embedding: Tensor,
    pub warning: Option<String>,
}

pub fn encode(model: &LoadedModel, text: &str, what: &str) -> Result<EncodedPrompt> {
    let tokens = model.tokenizer.encode(text)?;
    let window = model.meta.max_prompt_tokens;
    let ids = &tokens.ids[..window.min(tokens.ids.len())];
    let ids = Tensor::new(ids, &model.device)?.unsqueeze(0)?;
    let embedding = model.text_encoder.encode(&ids)?.last_hidden_state;
    let warning = tokens.truncated.then(|| {
        format!(
            "the {what} has {} tokens; only the first {} were used (the text encoder's window is {window} tokens)",
            tokens.token_count,
            window.saturating_sub(2)
        )
    });
    Ok(EncodedPrompt { embedding, warning })
}
