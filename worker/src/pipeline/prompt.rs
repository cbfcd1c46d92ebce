//! Prompt text to the UNet's conditioning. A prompt longer than the text
//! encoder's window is split into windows, each encoded on its own, and the
//! embeddings concatenated along the token axis: cross-attention takes any
//! number of tokens. The prompt and the negative prompt are padded to the
//! same number of windows (with windows of the empty prompt) because they are
//! batched together for classifier-free guidance. SD 3 appends T5's tokens
//! (one sequence of up to 256) after the CLIP windows.

use anyhow::Result;
use candle_core::Tensor;

use crate::model::t5::{self, T5Tokens};
use crate::model::tokenizer::ClipTokenizer;
use crate::model::{Denoiser, Family, LoadedModel};

/// Most windows per prompt: 8 x 75 = 600 tokens, far beyond what a prompt
/// needs, and a bound on the conditioning's size.
pub const MAX_WINDOWS: usize = 8;

/// A prompt's token windows, before encoding: one list per text encoder
/// (SDXL's two tokenizers differ in padding only).
pub struct PromptTokens {
    windows: Vec<Vec<u32>>,
    windows_2: Option<Vec<Vec<u32>>>,
    /// SD 3 with its T5 loaded.
    t5: Option<T5Tokens>,
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

/// A prompt's conditioning: [1, windows x window (+ T5 tokens), context dim],
/// and the pooled embedding [1, pooled dim]: for SDXL the second encoder's,
/// for SD 3 both encoders' side by side.
pub struct Encoded {
    pub context: Tensor,
    pub pooled: Option<Tensor>,
}

pub fn tokenize(model: &LoadedModel, text: &str, what: &str) -> Result<PromptTokens> {
    let window = model.meta.max_prompt_tokens;
    let tokens = model.tokenizer.windows(text, MAX_WINDOWS)?;
    let mut warnings = Vec::new();
    if tokens.truncated {
        warnings.push(format!(
            "the {what} has {} tokens; only the first {} were used ({MAX_WINDOWS} windows of {} tokens)",
            tokens.token_count,
            MAX_WINDOWS * window.saturating_sub(2),
            window.saturating_sub(2)
        ));
    }
    let windows_2 = model
        .text_encoder_2
        .as_ref()
        .map(|(tok, _)| tok.windows(text, MAX_WINDOWS).map(|w| w.windows))
        .transpose()?;
    let t5 = model
        .text_encoder_3
        .as_ref()
        .map(|enc| enc.tokenize(text))
        .transpose()?;
    if let Some(t) = t5.as_ref().filter(|t| t.truncated()) {
        warnings.push(format!(
            "the {what} has {} T5 tokens; T5 read the first {}",
            t.count,
            t5::MAX_TOKENS
        ));
    }
    Ok(PromptTokens {
        windows: tokens.windows,
        windows_2,
        t5,
        warning: (!warnings.is_empty()).then(|| warnings.join("; ")),
    })
}

/// The unconditional conditioning of classifier-free guidance: the negative
/// prompt's `tokens` encoded (as [`encode`]), or zeros shaped like `cond`
/// where the pipeline asks for them. diffusers' SDXL `encode_prompt` zeroes
/// them when `force_zeros_for_empty_prompt` is set and `negative_prompt` is
/// None; an explicit negative prompt, even "", is encoded.
pub fn encode_negative(
    model: &LoadedModel,
    negative_prompt: Option<&str>,
    tokens: &PromptTokens,
    cond: &Encoded,
    windows: usize,
) -> Result<Encoded> {
    if !(model.meta.zeros_for_empty_negative && negative_prompt.is_none()) {
        return encode(model, tokens, windows);
    }
    Ok(Encoded {
        context: cond.context.zeros_like()?,
        pooled: cond.pooled.as_ref().map(Tensor::zeros_like).transpose()?,
    })
}

/// Encodes `tokens` padded with empty windows to `windows` windows.
///
/// SD 1.x/2.x condition on the final hidden states. SDXL (as diffusers)
/// concatenates both encoders' penultimate hidden states, and pools the
/// second encoder's end-of-text token through its projection; with several
/// windows the pooled embedding is the first window's (as A1111 does).
/// SD 3 does the same with both encoders' pooled embeddings, zero-pads the
/// CLIP states to the transformer's joint width and appends T5's states
/// (zeros in their place without T5, as diffusers).
pub fn encode(model: &LoadedModel, tokens: &PromptTokens, windows: usize) -> Result<Encoded> {
    let window_ids = |tok: &ClipTokenizer, list: &[Vec<u32>], i: usize| -> Result<Tensor> {
        let empty = tok.window(&[]);
        let ids = list.get(i).unwrap_or(&empty);
        let ids = &ids[..model.meta.max_prompt_tokens.min(ids.len())];
        Ok(Tensor::new(ids, &model.device)?.unsqueeze(0)?)
    };
    let eos = |tok: &ClipTokenizer, ids: &Tensor| -> Result<usize> {
        Ok(ids
            .squeeze(0)?
            .to_vec1::<u32>()?
            .iter()
            .position(|&id| id == tok.eos_id())
            .unwrap_or(0))
    };
    let sd3 = model.meta.family == Family::StableDiffusion3;
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
            let pooled_2 = enc_2.pooled(&second, &[eos(tok_2, &ids_2)?])?;
            pooled = Some(if sd3 {
                let pooled_1 = model
                    .text_encoder
                    .pooled(&first, &[eos(&model.tokenizer, &ids)?])?;
                Tensor::cat(&[&pooled_1, &pooled_2], 1)?
            } else {
                pooled_2
            });
        }
        parts.push(Tensor::cat(
            &[
                &first.penultimate_hidden_state,
                &second.penultimate_hidden_state,
            ],
            2,
        )?);
    }
    let mut context = Tensor::cat(&parts, 1)?;
    if let Denoiser::Mmdit(mmdit) = &model.denoiser {
        let joint = mmdit.config().joint_attention_dim;
        let (_, _, clip) = context.dims3()?;
        context = context.pad_with_zeros(2, 0, joint - clip)?;
        let t5 = match (&model.text_encoder_3, &tokens.t5) {
            (Some(enc), Some(t)) => enc.encode(t, context.dtype())?,
            _ => Tensor::zeros(
                (1, t5::MAX_TOKENS, joint),
                context.dtype(),
                context.device(),
            )?,
        };
        context = Tensor::cat(&[&context, &t5], 1)?;
    }
    Ok(Encoded { context, pooled })
}
