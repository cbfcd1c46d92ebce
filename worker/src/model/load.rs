//! From a [`ModelSpec`] to a [`LoadedModel`]: resolve the files, read and
//! cross-check the configs, build every network on the device.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use std::path::{Path, PathBuf};

use super::conditioner::{self, ClipEncoder, ConditionerKind, EncoderRole, Encoders};
use super::denoiser::Denoiser;
use super::vae::Vae;
use super::vae_decoder::VaeDecoder;
use std::time::Instant;

use super::config::{read_json, ModelIndex, TextEncoderConfig, UNetConfig, VaeConfig};
use super::mmdit::{Mmdit, TransformerConfig};
use super::quant::{self, WeightQuant};
use super::source::{self, DenoiserFolder, ModelFiles, Wanted};
use super::t5::{self, T5TextEncoder};
use super::text_encoder::ClipTextEncoder;
use super::tokenizer::ClipTokenizer;
use super::unet::Unet;
use super::vae_encoder::VaeEncoder;
use super::vae_tiling::{Tiling, VaeTiling};
use super::weights::{self, Network};
use super::{bundled, memory, single_file};
use super::{Family, LoadedModel, ModelMeta, ModelSpec};
use crate::scheduler::{SchedulerConfig, SchedulerKind};

/// How to load: the compute dtype, the denoiser's weight format, and whether
/// to leave SD 3's T5 out (it is most of SD 3's weights; without it T5's
/// tokens are zeros, as diffusers does with `text_encoder_3=None`).
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    pub dtype: DType,
    pub skip_t5: bool,
    /// The denoiser's weight format (`q8`: int8, quantised while it is built).
    pub quant: WeightQuant,
}

/// The denoiser with what the rest of the model needs to know about it.
struct DenoiserPart {
    denoiser: Box<dyn Denoiser>,
    /// The MMDiT's `joint_attention_dim` (SD 3's conditioner pads to it).
    joint_dim: Option<usize>,
    unet_config: Option<UNetConfig>,
    family: Family,
    inpainting: bool,
    /// Native latent size (square).
    latent_side: usize,
    size_multiple: usize,
    max_latent_side: usize,
    working_bytes: u64,
}

impl LoadedModel {
    pub fn load(spec: &ModelSpec, device: &Device, opts: LoadOptions) -> Result<Self> {
        let wanted = Wanted {
            half: opts.dtype != DType::F32,
            skip_t5: opts.skip_t5,
        };
        let files = match spec {
            ModelSpec::Bundled => source::local(&bundled::materialize()?, wanted)?,
            ModelSpec::Local(dir) => source::local(dir, wanted)?,
            ModelSpec::SingleFile { file, tokenizer } => {
                let dir = single_file::converted_folder(
                    file,
                    tokenizer.as_deref(),
                    &bundled::cache_root(),
                )?;
                let mut files = source::local(&dir, wanted)?;
                files.source = format!("{} (converted to {})", file.display(), dir.display());
                files
            }
            ModelSpec::Hub { repo, revision } => source::hub(repo, revision.as_deref(), wanted)?,
        };
        Self::from_files(files, device, opts)
    }

    /// Builds every network from resolved files.
    ///
    /// Errors: configs that disagree, missing tensors, `q8` off the CPU.
    pub fn from_files(files: ModelFiles, device: &Device, opts: LoadOptions) -> Result<Self> {
        let started = Instant::now();
        let dtype = opts.dtype;
        if opts.quant == WeightQuant::Q8 && !device.is_cpu() {
            bail!("q8 weights run on the CPU only");
        }
        let index: Option<ModelIndex> = files.model_index.as_deref().map(read_json).transpose()?;
        if let Some(index) = &index {
            if index.class_name.contains("Refiner") {
                bail!(
                    "`{}` is a {} model, which this worker does not support",
                    files.id,
                    index.class_name
                );
            }
        }
        let vae_cfg: VaeConfig = read_json(&files.vae_config)?;
        let text_cfg: TextEncoderConfig = read_json(&files.text_encoder_config)?;
        let text_2_cfg: Option<TextEncoderConfig> = files
            .text_encoder_2
            .as_ref()
            .map(|f| read_json(&f.config))
            .transpose()?;
        let scheduler_config = SchedulerConfig::from_file(&files.scheduler_config)?;
        let vae_candle = vae_cfg.to_candle()?;
        let vae_scale = vae_cfg.scale_factor();

        let vb = |paths: &[PathBuf], dtype: DType, what: &str| -> Result<VarBuilder<'static>> {
            // Safety: the files are memory-mapped read-only; they must not be
            // modified while the worker runs, which is how every loader of
            // safetensors treats model files.
            unsafe { VarBuilder::from_mmaped_safetensors(paths, dtype, device) }
                .with_context(|| format!("opening the {what} weights"))
        };
        // The networks LoRAs merge into: their weights recorded by name.
        let recorded = |paths: &[PathBuf], what: &str| {
            // Safety: as for `vb`.
            unsafe { weights::recording_var_builder(paths, dtype, device) }
                .with_context(|| format!("opening the {what} weights"))
        };
        let tokenizer = tokenizer_for(&files.tokenizer_dir, &text_cfg)?;
        let (te_vb, te_table) = recorded(&files.text_encoder_weights, "text encoder")?;
        let text_encoder = ClipTextEncoder::new(te_vb, &text_cfg)
            .context("building the text encoder from its weights")?;
        let mut te2_table = None;
        let text_encoder_2 = match (&files.text_encoder_2, &text_2_cfg) {
            (Some(f), Some(c)) => {
                let tok = tokenizer_for(&f.tokenizer_dir, c)?;
                let (te2_vb, table) = recorded(&f.weights, "second text encoder")?;
                te2_table = Some(table);
                let enc = ClipTextEncoder::new(te2_vb, c)
                    .context("building the second text encoder from its weights")?;
                Some((tok, enc))
            }
            _ => None,
        };
        let text_encoder_3 = files
            .text_encoder_3
            .as_ref()
            .filter(|_| files.denoiser == DenoiserFolder::Transformer)
            .map(|f| T5TextEncoder::load(&f.config, &f.weights, &f.tokenizer_dir, device, dtype))
            .transpose()?;

        // The same workload sizes every estimate: guidance's batch of 2 at
        // the native size.
        let workload = |side: usize| memory::Workload {
            latent_height: side,
            latent_width: side,
            batch: 2,
            dtype_bytes: dtype.size_in_bytes(),
        };
        let (part, denoiser_table) = match files.denoiser {
            DenoiserFolder::Unet => {
                let cfg: UNetConfig = read_json(&files.denoiser_config)?;
                let (weights, table) = recorded(&files.denoiser_weights, "unet")?;
                let build = || {
                    unet_part(
                        cfg,
                        weights,
                        device,
                        &vae_cfg,
                        &text_cfg,
                        text_2_cfg.as_ref(),
                        &workload,
                    )
                };
                let part = match opts.quant {
                    WeightQuant::Dense => build()?,
                    WeightQuant::Q8 => {
                        quant::log_kernel();
                        quant::quantizing(&table, build)?
                    }
                };
                (part, (Network::Unet, table))
            }
            DenoiserFolder::Transformer => {
                if opts.quant == WeightQuant::Q8 {
                    bail!("--dtype q8 covers UNet models (SD 1.x, 2.x, XL); SD 3's transformer has no int8 path (use --dtype f32)");
                }
                let cfg: TransformerConfig = read_json(&files.denoiser_config)?;
                let (weights, table) = recorded(&files.denoiser_weights, "transformer")?;
                let encoders = (&text_cfg, text_2_cfg.as_ref(), text_encoder_3.as_ref());
                let part = mmdit_part(cfg, weights, &vae_cfg, encoders, &workload)?;
                (part, (Network::Transformer, table))
            }
        };
        if part.family == Family::StableDiffusion3 && !scheduler_config.is_flow_matching() {
            bail!("an SD 3 transformer needs a flow-matching scheduler config (FlowMatchEulerDiscreteScheduler)");
        }

        // diffusers' AutoencoderKL defaults force_upcast to true; only f16
        // overflows (bf16 has f32's range).
        let vae_dtype = if dtype == DType::F16 && vae_cfg.force_upcast.unwrap_or(true) {
            DType::F32
        } else {
            dtype
        };
        let vae_vb = vb(&files.vae_weights, vae_dtype, "vae")?;
        let vae = VaeDecoder::new(vae_vb.clone(), vae_cfg.out_channels, &vae_candle)
            .context("building the vae decoder from its weights")?;
        let vae_encoder = VaeEncoder::new(vae_vb, &vae_cfg)
            .context("building the vae encoder from its weights")?;

        let denoiser_parameters = memory::parameters(&files.denoiser_weights)?;
        let parameters = [&files.vae_weights, &files.text_encoder_weights]
            .into_iter()
            .chain(files.text_encoder_2.as_ref().map(|f| &f.weights))
            .chain(
                files
                    .text_encoder_3
                    .as_ref()
                    .filter(|_| text_encoder_3.is_some())
                    .map(|f| &f.weights),
            )
            .map(|paths| memory::parameters(paths))
            .sum::<Result<u64>>()?
            + denoiser_parameters;
        let tiling = Tiling::for_config(&vae_cfg, part.latent_side * vae_scale)?;
        let vae_bytes = memory::vae_decode_bytes_with(
            &vae_candle,
            workload(part.latent_side),
            vae_scale,
            &tiling,
            VaeTiling::Auto,
        );
        let mut memory = memory::estimate(parameters, dtype, part.working_bytes.max(vae_bytes));
        if opts.quant == WeightQuant::Q8 {
            // The denoiser's weights as held (int8 layers, f32 norms and biases).
            let dense = denoiser_parameters * dtype.size_in_bytes() as u64;
            memory.weights_bytes =
                memory.weights_bytes.saturating_sub(dense) + denoiser_table.1.bytes();
            memory.total_bytes = memory.weights_bytes + memory.activations_bytes;
        }

        let default_scheduler = SchedulerKind::default_for(&scheduler_config);
        let max_prompt_tokens = std::iter::once((&tokenizer, &text_encoder))
            .chain(text_encoder_2.as_ref().map(|(t, e)| (t, e)))
            .map(|(t, e)| t.max_length().min(e.max_positions()))
            .min()
            .unwrap_or(77);
        let zeros_for_empty_negative = part.family == Family::StableDiffusionXl
            && index
                .as_ref()
                .and_then(|i| i.components.get("force_zeros_for_empty_prompt"))
                .and_then(|v| v.as_bool())
                .unwrap_or(true);
        let native = (part.latent_side * vae_scale) as u32;
        let meta = ModelMeta {
            id: files.id.clone(),
            source: files.source.clone(),
            family: part.family,
            native_width: native,
            native_height: native,
            size_multiple: (part.size_multiple * vae_scale) as u32,
            max_side: (part.max_latent_side * vae_scale) as u32,
            vae_scale_factor: vae_scale as u32,
            latent_channels: vae_cfg.latent_channels,
            vae_scaling_factor: vae_cfg.scaling_factor,
            vae_shift_factor: vae_cfg.shift_factor,
            prediction_type: scheduler_config.prediction_type.clone(),
            inpainting: part.inpainting,
            default_scheduler,
            flow_matching: scheduler_config.is_flow_matching(),
            max_prompt_tokens,
            lcm_max_steps: scheduler_config.original_inference_steps as u32,
            zeros_for_empty_negative,
            memory,
            load_ms: started.elapsed().as_millis() as u64,
            example_prompts: example_prompts(files.worker_json.as_deref())?,
        };
        let (kind, first_role) = match part.family {
            Family::StableDiffusion1 => (ConditionerKind::Single, EncoderRole::ClipL),
            Family::StableDiffusion2 => (ConditionerKind::Single, EncoderRole::OpenClipH),
            Family::StableDiffusionXl => (
                ConditionerKind::Sdxl {
                    zeros_for_empty_negative,
                },
                EncoderRole::ClipL,
            ),
            Family::StableDiffusion3 => (
                ConditionerKind::Sd3 {
                    joint_dim: part.joint_dim.context("SD 3 without a transformer")?,
                },
                EncoderRole::ClipL,
            ),
        };
        let weights = std::iter::once(denoiser_table)
            .chain([(Network::TextEncoder(first_role), te_table)])
            .chain(te2_table.map(|t| (Network::TextEncoder(EncoderRole::OpenClipG), t)))
            .collect();
        let encoders = Encoders {
            first: ClipEncoder::new(first_role, tokenizer, text_encoder, device),
            second: text_encoder_2
                .map(|(t, e)| ClipEncoder::new(EncoderRole::OpenClipG, t, e, device)),
            t5: text_encoder_3,
        };
        Ok(Self {
            meta,
            conditioner: conditioner::build(kind, encoders)?,
            denoiser: part.denoiser,
            vae: Vae::new(
                vae,
                vae_encoder,
                vae_dtype,
                vae_cfg.scaling_factor,
                vae_cfg.shift_factor,
                tiling,
            ),
            unet_config: part.unet_config,
            scheduler_config,
            device: device.clone(),
            dtype,
            weights,
            loras: Default::default(),
        })
    }
}

/// A UNet (SD 1.x, 2.x, XL), checked against the VAE and text encoders.
#[allow(clippy::too_many_arguments)]
fn unet_part(
    cfg: UNetConfig,
    weights: VarBuilder,
    device: &Device,
    vae_cfg: &VaeConfig,
    text_cfg: &TextEncoderConfig,
    text_2_cfg: Option<&TextEncoderConfig>,
    workload: &dyn Fn(usize) -> memory::Workload,
) -> Result<DenoiserPart> {
    let candle_cfg = cfg.to_candle()?;
    // An inpainting UNet also takes the mask and the masked image's latents.
    let latent = vae_cfg.latent_channels;
    let inpainting = cfg.in_channels == 2 * latent + 1;
    if !(cfg.in_channels == latent || inpainting) || cfg.out_channels != latent {
        bail!(
            "unet in/out channels ({}/{}) do not fit the vae's {latent} latent channels",
            cfg.in_channels,
            cfg.out_channels
        );
    }
    // SDXL conditions on both encoders' hidden states side by side.
    let context_dim = text_cfg.hidden_size + text_2_cfg.map_or(0, |c| c.hidden_size);
    if candle_cfg.cross_attention_dim != context_dim {
        bail!(
            "unet cross_attention_dim {} does not match the text encoders' hidden size {context_dim}",
            candle_cfg.cross_attention_dim,
        );
    }
    let text_time = cfg.text_time()?;
    match (&text_time, text_2_cfg) {
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
    let unet = Unet::new(
        weights,
        cfg.in_channels,
        cfg.out_channels,
        cfg!(feature = "flash-attn") && device.is_cuda(),
        &candle_cfg,
        text_time,
    )
    .context("building the unet from its weights")?;
    let latent_side = cfg.sample_size.unwrap_or(64);
    Ok(DenoiserPart {
        denoiser: Box::new(unet),
        joint_dim: None,
        unet_config: Some(cfg.clone()),
        family: Family::detect_unet(&cfg, text_cfg),
        inpainting,
        latent_side,
        size_multiple: 1,
        max_latent_side: 2 * latent_side,
        working_bytes: memory::unet_bytes(&candle_cfg, workload(latent_side)),
    })
}

/// SD 3's MMDiT, checked against the VAE and the three text encoders: the
/// CLIP states side by side (zero-padded to the joint width) and T5's tokens
/// after them form the context; both CLIPs' pooled embeddings, side by side,
/// the pooled projection.
fn mmdit_part(
    cfg: TransformerConfig,
    weights: VarBuilder,
    vae_cfg: &VaeConfig,
    (text_cfg, text_2_cfg, t5): (
        &TextEncoderConfig,
        Option<&TextEncoderConfig>,
        Option<&T5TextEncoder>,
    ),
    workload: &dyn Fn(usize) -> memory::Workload,
) -> Result<DenoiserPart> {
    cfg.validate()?;
    let latent = vae_cfg.latent_channels;
    if cfg.in_channels != latent || cfg.out_channels != latent {
        bail!(
            "transformer in/out channels ({}/{}) do not fit the vae's {latent} latent channels",
            cfg.in_channels,
            cfg.out_channels
        );
    }
    let Some(text_2_cfg) = text_2_cfg else {
        bail!("an SD 3 model needs text_encoder_2 (OpenCLIP bigG)");
    };
    let with_projection = |c: &TextEncoderConfig| {
        c.architectures
            .iter()
            .any(|a| a == "CLIPTextModelWithProjection")
    };
    if !with_projection(text_cfg) || !with_projection(text_2_cfg) {
        bail!("SD 3's text encoders must both be CLIPTextModelWithProjection (their pooled embeddings condition the transformer)");
    }
    let pooled = [text_cfg, text_2_cfg]
        .iter()
        .map(|c| c.projection_dim.unwrap_or(c.hidden_size))
        .sum::<usize>();
    if pooled != cfg.pooled_projection_dim {
        bail!(
            "transformer pooled_projection_dim {} is not the text encoders' pooled widths together ({pooled})",
            cfg.pooled_projection_dim
        );
    }
    let clip = text_cfg.hidden_size + text_2_cfg.hidden_size;
    if clip > cfg.joint_attention_dim {
        bail!(
            "transformer joint_attention_dim {} is narrower than the CLIP states side by side ({clip})",
            cfg.joint_attention_dim
        );
    }
    if let Some(t5) = t5 {
        if t5.hidden_size() != cfg.joint_attention_dim {
            bail!(
                "text_encoder_3's d_model {} is not the transformer's joint_attention_dim {}",
                t5.hidden_size(),
                cfg.joint_attention_dim
            );
        }
    }
    let mmdit = Mmdit::new(weights, &cfg).context("building the transformer from its weights")?;
    let latent_side = cfg.sample_size;
    // CLIP's 77 tokens, and T5's (zeros in their place without it).
    let context_tokens = 77 + t5::MAX_TOKENS;
    Ok(DenoiserPart {
        working_bytes: memory::mmdit_bytes(&cfg, context_tokens, workload(latent_side)),
        joint_dim: Some(cfg.joint_attention_dim),
        unet_config: None,
        denoiser: Box::new(mmdit),
        family: Family::StableDiffusion3,
        inpainting: false,
        latent_side,
        size_multiple: cfg.patch_size,
        max_latent_side: (2 * latent_side).min(cfg.pos_embed_max_size * cfg.patch_size),
    })
}

fn tokenizer_for(dir: &Path, cfg: &TextEncoderConfig) -> Result<ClipTokenizer> {
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

/// The `example_prompts` of a model folder's `sd-worker.json` (none without one).
fn example_prompts(path: Option<&std::path::Path>) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct WorkerJson {
        #[serde(default)]
        example_prompts: Vec<String>,
    }
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let file: WorkerJson = read_json(path)?;
    Ok(file
        .example_prompts
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect())
}
