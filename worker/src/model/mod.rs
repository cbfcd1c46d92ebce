//! Loading a Stable Diffusion model: resolve its files ([`source`]), read its
//! configs ([`config`]), and build the tokenizer, text encoder, UNet and VAE on
//! a device. [`generate`] writes random-weight models in the same layout for
//! tests, the bundled default and benchmarks.

pub mod bundled;
pub mod config;
pub mod generate;
pub mod memory;
pub mod shapes;
pub mod source;
pub mod text_encoder;
pub mod tokenizer;
pub mod vae_encoder;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use candle_transformers::models::stable_diffusion::unet_2d::UNet2DConditionModel;
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKL;
use std::path::PathBuf;
use std::time::Instant;

use crate::scheduler::{SchedulerConfig, SchedulerKind};
use config::{read_json, ModelIndex, TextEncoderConfig, UNetConfig, VaeConfig};
use source::ModelFiles;
use text_encoder::ClipTextEncoder;
use tokenizer::ClipTokenizer;
use vae_encoder::VaeEncoder;

/// Architecture family, detected from the configs (never from a name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// CLIP ViT-L text encoder (768-wide cross-attention) and its relatives.
    StableDiffusion1,
    /// OpenCLIP ViT-H text encoder (1024-wide cross-attention).
    StableDiffusion2,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::StableDiffusion1 => "stable-diffusion-1",
            Family::StableDiffusion2 => "stable-diffusion-2",
        }
    }

    /// SD 2.x: OpenCLIP's 1024-wide text encoder, or linear projections in the
    /// UNet's transformers (SD 1.x's configs never set them).
    fn detect(unet: &UNetConfig, text: &TextEncoderConfig) -> Self {
        if text.hidden_size == 1024 || unet.use_linear_projection {
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
    /// Weights and working memory at the native size (`memory.rs`).
    pub memory: sd_worker_sdk::MemoryEstimate,
    pub load_ms: u64,
}

/// Every network of a pipeline, ready on its device.
pub struct LoadedModel {
    pub meta: ModelMeta,
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextEncoder,
    pub unet: UNet2DConditionModel,
    pub vae: AutoEncoderKL,
    pub vae_encoder: VaeEncoder,
    pub scheduler_config: SchedulerConfig,
    pub device: Device,
    pub dtype: DType,
}

impl LoadedModel {
    pub fn load(spec: &ModelSpec, device: &Device, dtype: DType) -> Result<Self> {
        let want_half = dtype != DType::F32;
        let files = match spec {
            ModelSpec::Bundled => source::local(&bundled::materialize()?, want_half)?,
            ModelSpec::Local(dir) => source::local(dir, want_half)?,
            ModelSpec::Hub { repo, revision } => source::hub(repo, revision.as_deref(), want_half)?,
        };
        Self::from_files(files, device, dtype)
    }

    pub fn from_files(files: ModelFiles, device: &Device, dtype: DType) -> Result<Self> {
        let started = Instant::now();
        if let Some(index) = &files.model_index {
            let index: ModelIndex = read_json(index)?;
            if index.class_name.contains("XL") || index.class_name.contains('3') {
                bail!(
                    "`{}` is a {} model, which this worker does not support yet",
                    files.id,
                    index.class_name
                );
            }
        }
        let unet_cfg: UNetConfig = read_json(&files.unet_config)?;
        let vae_cfg: VaeConfig = read_json(&files.vae_config)?;
        let text_cfg: TextEncoderConfig = read_json(&files.text_encoder_config)?;
        let scheduler_config = SchedulerConfig::from_file(&files.scheduler_config)?;
        let unet_candle = unet_cfg.to_candle()?;
        let vae_candle = vae_cfg.to_candle()?;
        let (unet_memory_cfg, vae_memory_cfg) = (unet_candle.clone(), vae_candle.clone());
        // An inpainting UNet also takes the mask and the masked image's latents.
        let latent = vae_cfg.latent_channels;
        let inpainting = unet_cfg.in_channels == 2 * latent + 1;
        if !(unet_cfg.in_channels == latent || inpainting) || unet_cfg.out_channels != latent {
            bail!(
                "unet in/out channels ({}/{}) do not fit the vae's {latent} latent channels",
                unet_cfg.in_channels,
                unet_cfg.out_channels
            );
        }
        if unet_candle.cross_attention_dim != text_cfg.hidden_size {
            bail!(
                "unet cross_attention_dim {} does not match the text encoder's hidden_size {}",
                unet_candle.cross_attention_dim,
                text_cfg.hidden_size
            );
        }

        let tokenizer = ClipTokenizer::from_dir(&files.tokenizer_dir)?;
        if tokenizer.vocab_size() > text_cfg.vocab_size {
            bail!(
                "tokenizer has {} tokens but the text encoder only {}",
                tokenizer.vocab_size(),
                text_cfg.vocab_size
            );
        }
        let vb = |paths: &[PathBuf], what: &str| -> Result<VarBuilder<'static>> {
            // Safety: the files are memory-mapped read-only; they must not be
            // modified while the worker runs, which is how every loader of
            // safetensors treats model files.
            unsafe { VarBuilder::from_mmaped_safetensors(paths, dtype, device) }
                .with_context(|| format!("opening the {what} weights"))
        };
        let text_encoder =
            ClipTextEncoder::new(vb(&files.text_encoder_weights, "text encoder")?, &text_cfg)
                .context("building the text encoder from its weights")?;
        let unet = UNet2DConditionModel::new(
            vb(&files.unet_weights, "unet")?,
            unet_cfg.in_channels,
            unet_cfg.out_channels,
            cfg!(feature = "flash-attn") && device.is_cuda(),
            unet_candle,
        )
        .context("building the unet from its weights")?;
        let vae_vb = vb(&files.vae_weights, "vae")?;
        let vae = AutoEncoderKL::new(
            vae_vb.clone(),
            vae_cfg.in_channels,
            vae_cfg.out_channels,
            vae_candle,
        )
        .context("building the vae from its weights")?;
        let vae_encoder = VaeEncoder::new(vae_vb, &vae_cfg)
            .context("building the vae encoder from its weights")?;

        let vae_scale_factor = vae_cfg.scale_factor() as u32;
        let latent_side = unet_cfg.sample_size.unwrap_or(64) as u32;
        let parameters = [
            &files.unet_weights,
            &files.vae_weights,
            &files.text_encoder_weights,
        ]
        .into_iter()
        .map(|paths| memory::parameters(paths))
        .sum::<Result<u64>>()?;
        let memory = memory::estimate(
            parameters,
            dtype,
            &unet_memory_cfg,
            &vae_memory_cfg,
            vae_scale_factor as usize,
            memory::Workload {
                latent_height: latent_side as usize,
                latent_width: latent_side as usize,
                batch: 2,
                dtype_bytes: dtype.size_in_bytes(),
            },
        );
        let default_scheduler = SchedulerKind::default_for(&scheduler_config);
        let meta = ModelMeta {
            id: files.id.clone(),
            source: files.source.clone(),
            family: Family::detect(&unet_cfg, &text_cfg),
            native_width: latent_side * vae_scale_factor,
            native_height: latent_side * vae_scale_factor,
            vae_scale_factor,
            latent_channels: vae_cfg.latent_channels,
            vae_scaling_factor: vae_cfg.scaling_factor,
            vae_shift_factor: vae_cfg.shift_factor,
            prediction_type: scheduler_config.prediction_type.clone(),
            inpainting,
            default_scheduler,
            flow_matching: scheduler_config.is_flow_matching(),
            max_prompt_tokens: tokenizer.max_length().min(text_encoder.max_positions()),
            lcm_max_steps: scheduler_config.original_inference_steps as u32,
            memory,
            load_ms: started.elapsed().as_millis() as u64,
        };
        Ok(Self {
            meta,
            tokenizer,
            text_encoder,
            unet,
            vae,
            vae_encoder,
            scheduler_config,
            device: device.clone(),
            dtype,
        })
    }
}
