//! Loading a Stable Diffusion model: resolve its files ([`source`]), read its
//! configs ([`config`]), and build the tokenizer, text encoder, UNet and VAE on
//! a device. [`generate`] writes random-weight models in the same layout for
//! tests, the bundled default and benchmarks.

pub mod bundled;
pub mod config;
pub mod generate;
pub mod memory;
pub mod shapes;
pub mod single_file;
pub mod source;
pub mod text_encoder;
pub mod tokenizer;
pub mod unet;
pub mod vae_encoder;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKL;
use std::path::PathBuf;
use std::time::Instant;

use crate::scheduler::{SchedulerConfig, SchedulerKind};
use config::{read_json, ModelIndex, TextEncoderConfig, UNetConfig, VaeConfig};
use source::ModelFiles;
use text_encoder::ClipTextEncoder;
use tokenizer::ClipTokenizer;
use unet::Unet;
use vae_encoder::VaeEncoder;

/// Architecture family, detected from the configs (never from a name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// CLIP ViT-L text encoder (768-wide cross-attention) and its relatives.
    StableDiffusion1,
    /// OpenCLIP ViT-H text encoder (1024-wide cross-attention).
    StableDiffusion2,
    /// Two text encoders and the UNet's pooled-text + time-ids conditioning.
    StableDiffusionXl,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::StableDiffusion1 => "stable-diffusion-1",
            Family::StableDiffusion2 => "stable-diffusion-2",
            Family::StableDiffusionXl => "stable-diffusion-xl",
        }
    }

    /// SDXL: the UNet takes `text_time` conditioning. SD 2.x: OpenCLIP's
    /// 1024-wide text encoder, or linear projections in the UNet's
    /// transformers (SD 1.x's configs never set them).
    fn detect(unet: &UNetConfig, text: &TextEncoderConfig) -> Self {
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
}

/// Every network of a pipeline, ready on its device.
pub struct LoadedModel {
    pub meta: ModelMeta,
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextEncoder,
    /// SDXL's second encoder (OpenCLIP bigG, with `text_projection`).
    pub text_encoder_2: Option<(ClipTokenizer, ClipTextEncoder)>,
    pub unet: Unet,
    pub vae: AutoEncoderKL,
    pub vae_encoder: VaeEncoder,
    pub scheduler_config: SchedulerConfig,
    pub device: Device,
    pub dtype: DType,
    /// f32 when the VAE asks to be upcast from f16 (`force_upcast`): the
    /// SDXL VAE overflows f16 and decodes to black otherwise.
    pub vae_dtype: DType,
}

impl LoadedModel {
    pub fn load(spec: &ModelSpec, device: &Device, dtype: DType) -> Result<Self> {
        let want_half = dtype != DType::F32;
        let files = match spec {
            ModelSpec::Bundled => source::local(&bundled::materialize()?, want_half)?,
            ModelSpec::Local(dir) => source::local(dir, want_half)?,
            ModelSpec::SingleFile { file, tokenizer } => {
                let tokenizer = match tokenizer {
                    Some(dir) => dir.clone(),
                    None => source::hub_tokenizer(single_file::SD1_TOKENIZER_REPO)?,
                };
                let dir = single_file::converted_folder(file, &tokenizer, &bundled::cache_root())?;
                let mut files = source::local(&dir, want_half)?;
                files.source = format!("{} (converted to {})", file.display(), dir.display());
                files
            }
            ModelSpec::Hub { repo, revision } => source::hub(repo, revision.as_deref(), want_half)?,
        };
        Self::from_files(files, device, dtype)
    }

    pub fn from_files(files: ModelFiles, device: &Device, dtype: DType) -> Result<Self> {
        let started = Instant::now();
        let index: Option<ModelIndex> = files.model_index.as_deref().map(read_json).transpose()?;
        if let Some(index) = &index {
            if index.class_name.contains('3') || index.class_name.contains("Refiner") {
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
        let text_2_cfg: Option<TextEncoderConfig> = files
            .text_encoder_2
            .as_ref()
            .map(|f| read_json(&f.config))
            .transpose()?;
        // SDXL conditions on both encoders' hidden states side by side.
        let context_dim = text_cfg.hidden_size + text_2_cfg.as_ref().map_or(0, |c| c.hidden_size);
        if unet_candle.cross_attention_dim != context_dim {
            bail!(
                "unet cross_attention_dim {} does not match the text encoders' hidden size {context_dim}",
                unet_candle.cross_attention_dim,
            );
        }
        let text_time = unet_cfg.text_time()?;
        match (&text_time, &text_2_cfg) {
            (Some(tt), Some(c2)) => {
                let pooled = c2.projection_dim.unwrap_or(c2.hidden_size);
                if tt.input_dim != pooled + 6 * tt.time_embed_dim {
                    bail!(
                        "unet projection_class_embeddings_input_dim {} is not the pooled text ({pooled}) + 6 time ids x {} (refiner-style aesthetic scores are not supported)",
                        tt.input_dim,
                        tt.time_embed_dim
                    );
                }
            }
            (Some(_), None) => {
                bail!("the unet takes SDXL conditioning but the model has no text_encoder_2")
            }
            (None, _) => {}
        }

        let tokenizer = tokenizer_for(&files.tokenizer_dir, &text_cfg)?;
        let tokenizer_2 = match (&files.text_encoder_2, &text_2_cfg) {
            (Some(f), Some(c)) => Some(tokenizer_for(&f.tokenizer_dir, c)?),
            _ => None,
        };
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
        let text_encoder_2 = match (&files.text_encoder_2, &text_2_cfg, tokenizer_2) {
            (Some(f), Some(c), Some(tok)) => {
                let enc = ClipTextEncoder::new(vb(&f.weights, "second text encoder")?, c)
                    .context("building the second text encoder from its weights")?;
                Some((tok, enc))
            }
            _ => None,
        };
        let unet = Unet::new(
            vb(&files.unet_weights, "unet")?,
            unet_cfg.in_channels,
            unet_cfg.out_channels,
            cfg!(feature = "flash-attn") && device.is_cuda(),
            &unet_candle,
            text_time,
        )
        .context("building the unet from its weights")?;
        // diffusers' AutoencoderKL defaults force_upcast to true; only f16
        // overflows (bf16 has f32's range).
        let vae_dtype = if dtype == DType::F16 && vae_cfg.force_upcast.unwrap_or(true) {
            DType::F32
        } else {
            dtype
        };
        let vae_vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&files.vae_weights, vae_dtype, device) }
                .context("opening the vae weights")?;
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
        .chain(files.text_encoder_2.as_ref().map(|f| &f.weights))
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
        let family = Family::detect(&unet_cfg, &text_cfg);
        let max_prompt_tokens = std::iter::once((&tokenizer, &text_encoder))
            .chain(text_encoder_2.as_ref().map(|(t, e)| (t, e)))
            .map(|(t, e)| t.max_length().min(e.max_positions()))
            .min()
            .unwrap_or(77);
        let zeros_for_empty_negative = family == Family::StableDiffusionXl
            && index
                .as_ref()
                .and_then(|i| i.components.get("force_zeros_for_empty_prompt"))
                .and_then(|v| v.as_bool())
                .unwrap_or(true);
        let meta = ModelMeta {
            id: files.id.clone(),
            source: files.source.clone(),
            family,
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
            max_prompt_tokens,
            lcm_max_steps: scheduler_config.original_inference_steps as u32,
            zeros_for_empty_negative,
            memory,
            load_ms: started.elapsed().as_millis() as u64,
        };
        Ok(Self {
            meta,
            tokenizer,
            text_encoder,
            text_encoder_2,
            unet,
            vae,
            vae_encoder,
            scheduler_config,
            device: device.clone(),
            dtype,
            vae_dtype,
        })
    }
}

fn tokenizer_for(dir: &std::path::Path, cfg: &TextEncoderConfig) -> Result<ClipTokenizer> {
    let tokenizer = ClipTokenizer::from_dir(dir)?;
    if tokenizer.vocab_size() > cfg.vocab_size {
        bail!(
            "tokenizer in {} has {} tokens but its text encoder only {}",
            dir.display(),
            tokenizer.vocab_size(),
            cfg.vocab_size
        );
    }
    Ok(tokenizer)
}
