//! Text conditioners: a prompt to what the denoiser is conditioned on, one
//! implementation per family ([`TextConditioner`]). The encoders are named by
//! role ([`EncoderRole`]: CLIP-L, OpenCLIP-H, OpenCLIP-G, T5-XXL), not by
//! diffusers' folder names (`text_encoder_2`, `text_encoder_3`).
//!
//! A prompt longer than the text encoder's window is split into windows, each
//! encoded on its own, and the embeddings concatenated along the token axis:
//! cross-attention takes any number of tokens. The prompt and the negative
//! prompt are padded to the same number of windows (with windows of the empty
//! prompt) because they are batched together for classifier-free guidance.
//!
//! A new family's conditioner is one more module here, implementing the
//! trait, and one line in [`build`]'s registration.

mod clip;
mod sd3;
mod sdxl;
mod single;

use anyhow::Result;
use candle_core::{Device, Tensor};

use super::embeddings::TextualInversions;
use super::t5::T5Tokens;
pub use clip::ClipEncoder;

/// Most windows per prompt: 8 x 75 = 600 tokens, far beyond what a prompt
/// needs, and a bound on the conditioning's size.
pub const MAX_WINDOWS: usize = 8;

/// What a text encoder is, by the role it plays in a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EncoderRole {
    /// OpenAI CLIP ViT-L/14 (SD 1.x; SDXL's and SD 3's first encoder).
    ClipL,
    /// OpenCLIP ViT-H/14 (SD 2.x).
    OpenClipH,
    /// OpenCLIP ViT-bigG/14 with its projection (SDXL's and SD 3's second encoder).
    OpenClipG,
    /// T5 v1.1 XXL's encoder (SD 3's third).
    T5Xxl,
}

impl EncoderRole {
    pub fn name(self) -> &'static str {
        match self {
            EncoderRole::ClipL => "CLIP-L",
            EncoderRole::OpenClipH => "OpenCLIP-H",
            EncoderRole::OpenClipG => "OpenCLIP-G",
            EncoderRole::T5Xxl => "T5-XXL",
        }
    }
}

/// A prompt's tokens, before encoding: one list of windows per CLIP encoder
/// (in the conditioner's order; SDXL's two tokenizers differ in padding
/// only), and T5's one sequence when the conditioner has T5.
pub struct PromptTokens {
    clip: Vec<Vec<Vec<u32>>>,
    /// Per CLIP encoder, the textual-inversion vectors its placeholder ids
    /// stand for (none when no embedding name matched).
    extra: Vec<Option<Tensor>>,
    t5: Option<T5Tokens>,
    /// A truncation notice for the caller to pass on.
    pub warning: Option<String>,
    /// The textual-inversion embeddings the text used, by name (for the
    /// job's report and A1111's `TI hashes`).
    pub embeddings: Vec<String>,
}

impl PromptTokens {
    /// The textual-inversion vectors of CLIP encoder `k`.
    fn extra(&self, k: usize) -> Option<&Tensor> {
        self.extra.get(k).and_then(Option::as_ref)
    }

    /// Tokens of one or two CLIP encoders (`windows` from each's
    /// tokenization), the embeddings used taken from the first.
    fn from_clip(windows: Vec<clip::ClipWindows>, warning: Option<String>) -> Self {
        let embeddings = windows.first().map(|w| w.used.clone()).unwrap_or_default();
        let (clip, extra) = windows.into_iter().map(|w| (w.windows, w.extra)).unzip();
        Self {
            clip,
            extra,
            t5: None,
            warning,
            embeddings,
        }
    }

    /// Number of windows (at least one, even for an empty prompt).
    pub fn windows(&self) -> usize {
        self.clip.iter().map(Vec::len).max().unwrap_or(1).max(1)
    }
}

/// One prompt's conditioning: `context` [1, tokens, dim] (windows x window
/// CLIP tokens, then T5's for SD 3) and the pooled embedding [1, pooled dim]
/// where the family has one.
pub struct Encoded {
    pub context: Tensor,
    pub pooled: Option<Tensor>,
}

/// A family's prompt encoding (diffusers' `encode_prompt` of its pipeline).
pub trait TextConditioner: Send + Sync {
    /// The encoders, by role, in the order they are applied.
    fn roles(&self) -> Vec<EncoderRole>;

    /// Tokens per window (CLIP's 77 with its start and end tokens).
    fn window(&self) -> usize;

    /// Splits `text` into windows for each encoder; `what` names it in the
    /// truncation warning ("prompt", "negative prompt").
    fn tokenize(&self, text: &str, what: &str) -> Result<PromptTokens> {
        self.tokenize_with(text, what, &TextualInversions::default())
    }

    /// [`Self::tokenize`] with textual-inversion `embeddings`: each one whose
    /// name the text writes is replaced by its vectors in every CLIP encoder
    /// (SDXL: `clip_l` to CLIP-L, `clip_g` to OpenCLIP-G); those used are
    /// listed in [`PromptTokens::embeddings`]. Pass the job's embeddings
    /// whose names appear in the text ([`crate::model::embeddings::names_in`]).
    ///
    /// Errors: a used embedding made for another family or width (the
    /// message names both), or longer than a window.
    fn tokenize_with(
        &self,
        text: &str,
        what: &str,
        embeddings: &TextualInversions,
    ) -> Result<PromptTokens>;

    /// Encodes `tokens` padded with empty windows to `windows` windows.
    fn encode(&self, tokens: &PromptTokens, windows: usize) -> Result<Encoded>;

    /// The unconditional half of classifier-free guidance: the negative
    /// prompt's `tokens` encoded, unless the family conditions an absent
    /// negative prompt on zeros shaped like `cond` (SDXL's
    /// `force_zeros_for_empty_prompt`).
    fn encode_negative(
        &self,
        _negative: Option<&str>,
        tokens: &PromptTokens,
        _cond: &Encoded,
        windows: usize,
    ) -> Result<Encoded> {
        self.encode(tokens, windows)
    }

    /// Per-image size conditioning for an output of `width` x `height`
    /// pixels: SDXL's time ids [1, 6] f32; None for families without it.
    fn time_ids(&self, _width: u32, _height: u32, _device: &Device) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

/// The encoders a model folder holds, in diffusers' order, for [`build`].
pub struct Encoders {
    pub first: ClipEncoder,
    pub second: Option<ClipEncoder>,
    pub t5: Option<super::t5::T5TextEncoder>,
}

/// How a family conditions its denoiser; the one place a family registers
/// its conditioner.
pub enum ConditionerKind {
    /// One CLIP's last hidden states (SD 1.x's CLIP-L, SD 2.x's OpenCLIP-H).
    Single,
    /// CLIP-L and OpenCLIP-G's penultimate states, G's pooled embedding,
    /// size time ids (SDXL); `zeros_for_empty_negative` from its
    /// `force_zeros_for_empty_prompt`.
    Sdxl { zeros_for_empty_negative: bool },
    /// CLIP-L and CLIP-G zero-padded to `joint_dim`, then T5's tokens; both
    /// pooled embeddings (SD 3).
    Sd3 { joint_dim: usize },
}

/// Builds the conditioner of `kind` from the loaded encoders.
///
/// Errors: an encoder the family needs is missing.
pub fn build(kind: ConditionerKind, enc: Encoders) -> Result<Box<dyn TextConditioner>> {
    Ok(match kind {
        ConditionerKind::Single => Box::new(single::SingleClip::new(enc.first)),
        ConditionerKind::Sdxl {
            zeros_for_empty_negative,
        } => Box::new(sdxl::Sdxl::new(enc, zeros_for_empty_negative)?),
        ConditionerKind::Sd3 { joint_dim } => Box::new(sd3::Sd3::new(enc, joint_dim)?),
    })
}
