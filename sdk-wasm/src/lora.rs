//! LoRAs and textual-inversion embeddings: the `loras` field of a request and
//! what `GET /v1/loras` and `GET /v1/embeddings` list.
//!
//! A LoRA is chosen per job, by the structured `loras` list or by
//! AUTOMATIC1111's `<lora:name:weight>` tags in the prompt; an embedding by
//! writing its name in the prompt or the negative prompt, as in A1111.

use serde::{Deserialize, Serialize};

/// Weight of a LoRA when none is given (A1111's default multiplier).
pub const DEFAULT_LORA_WEIGHT: f64 = 1.0;
/// Largest absolute weight accepted (`weight`, `unet_weight`, `text_encoder_weight`).
pub const MAX_LORA_WEIGHT: f64 = 4.0;
/// Most LoRAs in one job (the structured list and the prompt's tags together).
pub const MAX_LORAS: usize = 16;
/// Most trigger words listed for one LoRA.
pub const MAX_TRIGGER_WORDS: usize = 20;

/// One LoRA applied to a job: its weights are merged into the model as
/// `W + weight * (up * down) * alpha / rank`, with `unet_weight` on the
/// denoiser's layers and `text_encoder_weight` on the text encoders'.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
// A misspelt field is refused, not ignored.
#[serde(deny_unknown_fields)]
pub struct LoraRef {
    /// A name from `GET /v1/loras` (the file name without `.safetensors`).
    pub name: String,
    /// Weight of both parts, -4..=4 (1.0 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = -4.0, maximum = 4.0))]
    pub weight: Option<f64>,
    /// Weight on the denoiser (UNet or MMDiT) alone, -4..=4 (`weight` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = -4.0, maximum = 4.0))]
    pub unet_weight: Option<f64>,
    /// Weight on the text encoders alone, -4..=4 (`weight` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = -4.0, maximum = 4.0))]
    pub text_encoder_weight: Option<f64>,
}

impl LoraRef {
    /// The weight on the denoiser: `unet_weight`, else `weight`, else 1.0.
    pub fn unet_scale(&self) -> f64 {
        self.unet_weight
            .or(self.weight)
            .unwrap_or(DEFAULT_LORA_WEIGHT)
    }

    /// The weight on the text encoders: `text_encoder_weight`, else `weight`, else 1.0.
    pub fn text_encoder_scale(&self) -> f64 {
        self.text_encoder_weight
            .or(self.weight)
            .unwrap_or(DEFAULT_LORA_WEIGHT)
    }
}

/// A LoRA file this worker can apply, as `GET /v1/loras` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct LoraInfo {
    /// What `loras[].name` and `<lora:name>` say: the file name without
    /// `.safetensors` (its path under the folder when two files share it).
    pub name: String,
    /// Size of the file in bytes.
    pub size_bytes: u64,
    /// The model family it was trained for, detected from its tensors' names
    /// and shapes (`stable-diffusion-1`, `-2`, `-xl`, `-3`), or `unknown`.
    pub family: String,
    /// The layout of its tensors: `kohya`, `diffusers`, `peft`,
    /// `lycoris-loha`, `lycoris-lokr` or `unknown`.
    pub format: String,
    /// AUTOMATIC1111's short hash, as its infotexts write it in `Lora hashes:`:
    /// the first 12 hex digits of the SHA-256 of the file after its
    /// safetensors header (kohya's `sshs_model_hash`, which is used when the
    /// file's metadata carries it).
    pub hash: String,
    /// Tags of its training captions (`ss_tag_frequency`), the most frequent
    /// first, and `modelspec.trigger_phrase` (at most 20).
    pub trigger_words: Vec<String>,
    /// Training facts from the file's metadata, when present.
    pub metadata: LoraMetadata,
}

/// A few fields of a LoRA's safetensors metadata (kohya's `ss_*`, the
/// model-spec `modelspec.*`), each as written in the file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct LoraMetadata {
    /// `modelspec.title`, else `ss_output_name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// `modelspec.architecture` (`stable-diffusion-xl-v1-base/lora`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// The model it was trained on: `ss_sd_model_name`, else `ss_base_model_version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model: Option<String>,
    /// Training resolution: `modelspec.resolution`, else `ss_resolution`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    /// `ss_network_module` (`networks.lora`, `lycoris.kohya`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_module: Option<String>,
    /// `ss_network_dim`: the rank.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_dim: Option<String>,
    /// `ss_network_alpha`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_alpha: Option<String>,
    /// `modelspec.author`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// `modelspec.description` (its first 500 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A textual-inversion embedding this worker has, as `GET /v1/embeddings`
/// lists it. Writing `name` in a prompt uses it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct EmbeddingInfo {
    /// The word that uses it: the file name without `.safetensors`.
    pub name: String,
    /// Size of the file in bytes.
    pub size_bytes: u64,
    /// `stable-diffusion-1` (768-wide vectors), `stable-diffusion-2`
    /// (1024-wide), `stable-diffusion-xl` (a `clip_l` and `clip_g` pair), or `unknown`.
    pub family: String,
    /// How many token vectors it stands for.
    pub vectors: u32,
    /// AUTOMATIC1111's short hash, as its infotexts write it in `TI hashes:`:
    /// the first 12 hex digits of the SHA-256 of the whole file.
    pub hash: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_default_to_one_and_the_parts_override_the_whole() {
        let r: LoraRef = serde_json::from_str(r#"{"name":"a"}"#).unwrap();
        assert_eq!((r.unet_scale(), r.text_encoder_scale()), (1.0, 1.0));
        let r: LoraRef =
            serde_json::from_str(r#"{"name":"a","weight":0.5,"text_encoder_weight":0}"#).unwrap();
        assert_eq!((r.unet_scale(), r.text_encoder_scale()), (0.5, 0.0));
        let r: LoraRef = serde_json::from_str(r#"{"name":"a","unet_weight":-2}"#).unwrap();
        assert_eq!((r.unet_scale(), r.text_encoder_scale()), (-2.0, 1.0));
        let v = serde_json::to_value(&r).unwrap();
        assert!(v.get("weight").is_none());
    }
}

/// How a job's LoRA matched the model, in its `complete` event: every job
/// says how much of each LoRA took effect (unmatched keys also come as a
/// `warning` event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct LoraApplied {
    pub name: String,
    /// A1111's short hash of the file.
    pub hash: String,
    /// Tensors in the file.
    pub tensors: u32,
    /// Tensors merged into a layer of the model.
    pub matched_tensors: u32,
    pub unet_weight: f64,
    pub text_encoder_weight: f64,
}
