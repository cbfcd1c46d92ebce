//! SD 1.x and 2.x: one CLIP encoder (CLIP-L, or OpenCLIP-H for SD 2.x); the
//! denoiser attends to each window's last hidden states (diffusers'
//! `StableDiffusionPipeline.encode_prompt` with `clip_skip` None).

use anyhow::Result;
use candle_core::Tensor;

use super::clip::{truncation_warning, ClipEncoder};
use super::{Encoded, EncoderRole, PromptTokens, TextConditioner};
use crate::model::embeddings::TextualInversions;

pub struct SingleClip {
    clip: ClipEncoder,
}

impl SingleClip {
    pub fn new(clip: ClipEncoder) -> Self {
        Self { clip }
    }
}

impl TextConditioner for SingleClip {
    fn roles(&self) -> Vec<EncoderRole> {
        vec![self.clip.role]
    }

    fn window(&self) -> usize {
        self.clip.window()
    }

    fn tokenize_with(
        &self,
        text: &str,
        what: &str,
        embeddings: &TextualInversions,
    ) -> Result<PromptTokens> {
        let w = self.clip.tokenize(text, embeddings, false)?;
        let warning = truncation_warning(&w, self.window(), what);
        Ok(PromptTokens::from_clip(vec![w], warning))
    }

    fn encode(&self, tokens: &PromptTokens, windows: usize) -> Result<Encoded> {
        let parts = (0..windows.max(tokens.windows()))
            .map(|i| {
                let w =
                    self.clip
                        .encode_window(&tokens.clip[0], tokens.extra(0), i, self.window())?;
                Ok(w.states.last_hidden_state)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Encoded {
            context: Tensor::cat(&parts, 1)?,
            pooled: None,
        })
    }
}
