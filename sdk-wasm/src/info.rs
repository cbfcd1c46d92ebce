//! `GET /v1/info`: what this worker serves and which requests it accepts.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct WorkerInfo {
    pub implementation: String,
    pub version: String,
    pub worker_id: String,
    pub model: ModelInfo,
    /// `cpu`, `cuda:0`, `metal:0`.
    pub device: String,
    /// `f32`, `f16`, `bf16`, or `q8` (the denoiser with int8 weights and
    /// activations, f32 around them; `--dtype q8`).
    pub dtype: String,
    /// Scheduler names accepted in a request's `scheduler` field.
    pub schedulers: Vec<String>,
    /// Operations accepted in a request's `operation` field.
    pub operations: Vec<String>,
    /// ControlNets a unit's `model` may name (those for the loaded model's family).
    pub controlnets: Vec<crate::ControlNetInfo>,
    /// Preprocessors a unit's or `POST /v1/preprocess`'s `preprocessor` may name.
    pub preprocessors: Vec<crate::PreprocessorName>,
    /// Whether TAESD is loaded (`--taesd`): `preview_method: taesd` (then
    /// the default) and `vae: tiny` need it.
    #[serde(default)]
    pub taesd: bool,
    pub limits: Limits,
    pub defaults: Defaults,
    pub queue_capacity: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct ModelInfo {
    /// What a request's `model` field must say: the hub repository id or the folder name.
    pub id: String,
    /// `stable-diffusion-1`, `stable-diffusion-2`, `stable-diffusion-xl`, `stable-diffusion-3`
    pub family: String,
    /// Where it was loaded from: a folder path or `hf://repo@revision`.
    pub source: String,
    pub native_width: u32,
    pub native_height: u32,
    /// `epsilon`, `v_prediction` or `sample`.
    pub prediction_type: String,
    /// True when the UNet takes the 9-channel inpainting input.
    pub inpainting: bool,
    /// Tokens per prompt window of the text encoder (77 for CLIP).
    pub max_prompt_tokens: u32,
    /// Memory the model takes on its device at the worker's dtype (`q8`:
    /// the denoiser's weights as held, int8 for its linear layers and
    /// convolutions).
    pub memory: MemoryEstimate,
    /// The most extra memory merging LoRAs takes: one copy (at the worker's
    /// dtype) of every weight a LoRA can adapt (the denoiser's and text
    /// encoders' linear and convolution weights), kept to restore them. A
    /// LoRA on the attention and feed-forward layers alone takes about half.
    #[serde(default)]
    pub lora_merge_bytes: u64,
    /// Prompts the model draws well, to suggest to a person (a studio shows the
    /// first as the prompt's placeholder): the `example_prompts` of an
    /// `sd-worker.json` file at the top of the model folder, when it has one
    /// (`{ "example_prompts": ["a red circle on a blue background"] }`). Absent
    /// when the model declares none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub example_prompts: Vec<String>,
}

/// Memory a loaded model takes, so a hive can place it: the weights, counted,
/// and the working memory of one image at the native size with guidance,
/// estimated from the configs (full attention; flash attention needs less).
/// Working memory grows with the square of the pixel count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct MemoryEstimate {
    /// Resident weights of every network the worker loaded.
    pub weights_bytes: u64,
    /// Peak working memory of one generation at the native size.
    pub activations_bytes: u64,
    /// `weights_bytes + activations_bytes`: what to plan for.
    pub total_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct Limits {
    /// Width and height must be multiples of this.
    pub size_multiple: u32,
    pub min_size: u32,
    pub max_size: u32,
    /// Upper bound of width * height.
    pub max_pixels: u64,
    pub max_steps: u32,
    pub min_guidance_scale: f64,
    pub max_guidance_scale: f64,
    pub max_images: u32,
    pub max_seed: u64,
    pub max_prompt_chars: u32,
    /// Largest input image (image to image, inpainting), in pixels; larger ones get 413.
    pub max_input_pixels: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct Defaults {
    pub steps: u32,
    pub guidance_scale: f64,
    pub width: u32,
    pub height: u32,
    pub scheduler: String,
    pub num_images: u32,
}
