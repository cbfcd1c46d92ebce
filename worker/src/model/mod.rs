//! Loading a Stable Diffusion model: resolve its files ([`source`]), read its
//! configs ([`config`]), and build the tokenizers, text encoders, denoiser
//! (UNet or MMDiT) and VAE on a device ([`load`]). [`generate`] writes
//! random-weight models in the same layout for tests, the bundled default and
//! benchmarks.

pub mod attention;
pub mod bundled;
pub mod conditioner;
pub mod config;
pub mod controlnet;
pub mod conv;
pub mod denoiser;
pub mod embeddings;
#[cfg(test)]
mod embeddings_reference_tests;
pub mod generate;
pub mod linear;
mod load;
pub mod memory;
pub mod mmdit;
pub mod norm;
pub mod quant;
#[cfg(test)]
mod quant_tests;
#[cfg(test)]
pub(crate) mod reference;
pub mod resnet;
pub mod shapes;
pub mod single_file;
pub mod source;
pub mod t5;
pub mod taesd;
pub mod text_encoder;
pub mod tokenizer;
pub mod transformer;
pub mod unet;
pub mod unet_blocks;
#[cfg(test)]
mod unet_reference_tests;
pub mod vae;
pub mod vae_blocks;
pub mod vae_decoder;
pub mod vae_encoder;
pub mod vae_tiling;
#[cfg(test)]
mod vae_tiling_tests;
pub mod weights;

use candle_core::{DType, Device};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::scheduler::{SchedulerConfig, SchedulerKind};
use conditioner::TextConditioner;
use config::{TextEncoderConfig, UNetConfig};
use denoiser::Denoiser;
use vae::Vae;
use weights::{Network, WeightTable};

pub use load::LoadOptions;

#[cfg(test)]
pub(crate) mod test_util {
    use candle_core::{Device, Tensor};

    /// `scale * f(freq * i)` for i in 0..n (flat, row-major): the inputs the
    /// reference scripts in `tests/reference/` build.
    pub fn wave(shape: &[usize], scale: f64, freq: f64, f: fn(f64) -> f64) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| (scale * f(freq * i as f64)) as f32)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Largest `|got - want|` against reference values.
    pub fn worst_diff(got: &Tensor, want: &[f64]) -> f64 {
        let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(got.len(), want.len());
        got.iter()
            .zip(want)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max)
    }

    /// Largest absolute difference between two tensors of one shape.
    pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }
}

/// Architecture family, detected from the configs (never from a name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// CLIP ViT-L text encoder (768-wide cross-attention) and its relatives.
    StableDiffusion1,
    /// OpenCLIP ViT-H text encoder (1024-wide cross-attention).
    StableDiffusion2,
    /// Two text encoders and the UNet's pooled-text + time-ids conditioning.
    StableDiffusionXl,
    /// An MMDiT over 16-channel latents, two CLIP encoders and optionally
    /// T5, trained by flow matching (SD 3 and 3.5).
    StableDiffusion3,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::StableDiffusion1 => "stable-diffusion-1",
            Family::StableDiffusion2 => "stable-diffusion-2",
            Family::StableDiffusionXl => "stable-diffusion-xl",
            Family::StableDiffusion3 => "stable-diffusion-3",
        }
    }

    /// SDXL: the UNet takes `text_time` conditioning. SD 2.x: OpenCLIP's
    /// 1024-wide text encoder, or linear projections in the UNet's
    /// transformers (SD 1.x's configs never set them).
    fn detect_unet(unet: &UNetConfig, text: &TextEncoderConfig) -> Self {
        if unet.addition_embed_type.as_deref() == Some("text_time") {
            Family::StableDiffusionXl
        } else if text.hidden_size == 1024 || unet.use_linear_projection {
            Family::StableDiffusion2
        } else {
            Family::StableDiffusion1
        }
    }
}

/// Which model to load, as given on the command line.
#[derive(Debug, Clone)]
pub enum ModelSpec {
    /// The small model compiled into the binary.
    Bundled,
    Local(PathBuf),
    /// A single-file (LDM-layout) checkpoint; its tokenizer from a folder, or
    /// else from the hub.
    SingleFile {
        file: PathBuf,
        tokenizer: Option<PathBuf>,
    },
    Hub {
        repo: String,
        revision: Option<String>,
    },
}

/// Facts about the loaded model that requests are validated against.
#[derive(Debug, Clone)]
pub struct ModelMeta {
    pub id: String,
    pub source: String,
    pub family: Family,
    pub native_width: u32,
    pub native_height: u32,
    /// Width and height must be multiples of this (the VAE's scale, times the
    /// MMDiT's patch size).
    pub size_multiple: u32,
    /// Largest width or height (an MMDiT's position table bounds it).
    pub max_side: u32,
    pub vae_scale_factor: u32,
    pub latent_channels: usize,
    pub vae_scaling_factor: f64,
    pub vae_shift_factor: Option<f64>,
    pub prediction_type: String,
    pub inpainting: bool,
    pub default_scheduler: SchedulerKind,
    /// Trained by flow matching (SD 3: the scheduler config names a
    /// `FlowMatch*` class): only flow schedulers apply, and only to it.
    pub flow_matching: bool,
    pub max_prompt_tokens: usize,
    /// Most steps the `lcm` scheduler takes on this model (its config's
    /// `original_inference_steps`).
    pub lcm_max_steps: u32,
    /// SDXL pipelines: an empty negative prompt conditions on zeros rather
    /// than on the encoded empty string (`force_zeros_for_empty_prompt`).
    pub zeros_for_empty_negative: bool,
    /// Weights and working memory at the native size (`memory.rs`).
    pub memory: sd_worker_sdk::MemoryEstimate,
    pub load_ms: u64,
    /// Prompts the model draws well (its folder's `sd-worker.json`).
    pub example_prompts: Vec<String>,
}

/// Every network of a pipeline, ready on its device. The stages reach the
/// networks through their seams: the family's [`TextConditioner`], the
/// [`Denoiser`] and the [`Vae`].
pub struct LoadedModel {
    meta: ModelMeta,
    conditioner: Box<dyn TextConditioner>,
    denoiser: Box<dyn Denoiser>,
    vae: Vae,
    /// The UNet's config (None for an MMDiT): what its ControlNets must match.
    unet_config: Option<UNetConfig>,
    scheduler_config: SchedulerConfig,
    device: Device,
    dtype: DType,
    /// The recorded weights of the networks LoRAs merge into.
    weights: Vec<(Network, Arc<WeightTable>)>,
    /// The LoRA set merged now and the base values of the weights it touched.
    loras: Mutex<crate::lora::Applied>,
}

impl LoadedModel {
    /// Adds TAESD (`--taesd`) for previews and `vae: tiny`.
    ///
    /// Errors: its latent channels are not the model's (a TAESD of another
    /// family: `taesd` for SD 1.x/2.x, `taesdxl` for SDXL, `taesd3` for SD 3).
    pub fn set_taesd(&mut self, tiny: taesd::Taesd) -> anyhow::Result<()> {
        if tiny.latent_channels() != self.meta.latent_channels {
            anyhow::bail!(
                "this TAESD decodes {}-channel latents but the model's have {} (SD 1.x/2.x: taesd, SDXL: taesdxl, SD 3: taesd3)",
                tiny.latent_channels(),
                self.meta.latent_channels
            );
        }
        if tiny.scale_factor() != self.meta.vae_scale_factor as usize {
            anyhow::bail!(
                "this TAESD makes {} pixels per latent but the model's VAE makes {} (`sd-worker generate-taesd --scale-factor {}` writes a matching test one)",
                tiny.scale_factor(),
                self.meta.vae_scale_factor,
                self.meta.vae_scale_factor
            );
        }
        self.vae.set_tiny(tiny);
        Ok(())
    }

    /// Facts requests are validated against.
    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    /// Prompt text to the denoiser's conditioning, as this family does it.
    pub fn conditioner(&self) -> &dyn TextConditioner {
        &*self.conditioner
    }

    /// The UNet or MMDiT.
    pub fn denoiser(&self) -> &dyn Denoiser {
        &*self.denoiser
    }

    pub fn vae(&self) -> &Vae {
        &self.vae
    }

    /// The UNet's `config.json` (None for SD 3's transformer).
    pub fn unet_config(&self) -> Option<&UNetConfig> {
        self.unet_config.as_ref()
    }

    /// The model's `scheduler_config.json`, which every scheduler starts from.
    pub fn scheduler_config(&self) -> &SchedulerConfig {
        &self.scheduler_config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The denoiser's and text encoders' dtype (the VAE's may be wider: [`Vae::dtype`]).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The recorded weights of `network` (None when the model has no such
    /// network): the tensors its layers hold, by diffusers / transformers name.
    pub fn weights(&self, network: Network) -> Option<&Arc<WeightTable>> {
        self.weights
            .iter()
            .find(|(n, _)| *n == network)
            .map(|(_, t)| t)
    }

    /// Every network whose weights are recorded, with its table.
    pub fn weight_tables(&self) -> &[(Network, Arc<WeightTable>)] {
        &self.weights
    }

    pub(crate) fn lora_state(&self) -> &Mutex<crate::lora::Applied> {
        &self.loras
    }
}
