//! What this worker accepts: limits and defaults derived once from the loaded
//! model. `/v1/info` publishes it and validation enforces it, so the two can
//! never disagree.

use sd_worker_sdk::{Defaults, Limits, ModelInfo, Operation, WorkerInfo, MAX_SEED};

use crate::model::ModelMeta;
use crate::scheduler::SchedulerKind;

pub const MAX_STEPS: u32 = 150;
pub const MAX_GUIDANCE: f64 = 30.0;
pub const MAX_IMAGES: u32 = 8;
pub const MAX_PROMPT_CHARS: u32 = 10_000;
pub const DEFAULT_STEPS: u32 = 20;
pub const DEFAULT_GUIDANCE: f64 = 7.5;

/// Everything validation needs, plus the facts `/v1/info` reports.
#[derive(Debug, Clone)]
pub struct Profile {
    pub info: WorkerInfo,
    pub default_scheduler: SchedulerKind,
    /// `lcm` samples from a fixed grid of the model's original steps.
    pub lcm_max_steps: u32,
    /// The ControlNets requests may name.
    pub controlnets: std::sync::Arc<crate::controlnet::ControlNetRegistry>,
    /// The control-map preprocessors requests may name.
    pub preprocessors: std::sync::Arc<crate::preprocess::Preprocessors>,
    /// The `--lora-dir` and `--embeddings-dir` files requests may name.
    pub catalogs: crate::catalog::Catalogs,
    /// The names LoRA keys may give the model's weights: a LoRA that adapts
    /// none of them is refused before it is queued.
    pub lora_targets: std::sync::Arc<crate::lora::keys::Targets>,
    /// The upscalers `image_upscale` and `hires.upscaler` may name.
    pub upscalers: std::sync::Arc<crate::upscale::registry::UpscalerRegistry>,
}

pub struct Runtime<'a> {
    pub worker_id: &'a str,
    pub device: &'a str,
    pub dtype: &'a str,
    pub queue_capacity: u32,
    pub max_input_pixels: u64,
    /// Operator caps (`--max-pixels`, `--max-images`) over the defaults.
    pub max_pixels: Option<u64>,
    pub max_images: Option<u32>,
}

impl Profile {
    pub fn new(meta: &ModelMeta, rt: &Runtime) -> Self {
        let multiple = meta.size_multiple;
        let max_size = meta.max_side;
        let limits = Limits {
            size_multiple: multiple,
            min_size: multiple * 8,
            max_size,
            // Native area x4 by default (1024x1024 for SD 1.5). Attention memory grows with the
            // square of the pixel count, times images x 2 with guidance: operators cap it to their device.
            max_pixels: rt
                .max_pixels
                .unwrap_or(u64::from(meta.native_width) * u64::from(meta.native_height) * 4),
            max_steps: MAX_STEPS,
            min_guidance_scale: 0.0,
            max_guidance_scale: MAX_GUIDANCE,
            max_images: rt.max_images.unwrap_or(MAX_IMAGES).min(MAX_IMAGES),
            max_seed: MAX_SEED,
            max_prompt_chars: MAX_PROMPT_CHARS,
            max_input_pixels: rt.max_input_pixels,
        };
        let defaults = Defaults {
            steps: DEFAULT_STEPS,
            guidance_scale: DEFAULT_GUIDANCE,
            width: meta.native_width,
            height: meta.native_height,
            scheduler: meta.default_scheduler.name().into(),
            num_images: 1,
        };
        let info = WorkerInfo {
            implementation: "sd-worker".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            worker_id: rt.worker_id.into(),
            model: ModelInfo {
                id: meta.id.clone(),
                family: meta.family.name().into(),
                source: meta.source.clone(),
                native_width: meta.native_width,
                native_height: meta.native_height,
                prediction_type: meta.prediction_type.clone(),
                inpainting: meta.inpainting,
                max_prompt_tokens: meta.max_prompt_tokens as u32,
                memory: meta.memory,
                // Filled in by `with_lora_merge_bytes`.
                lora_merge_bytes: 0,
                example_prompts: meta.example_prompts.clone(),
            },
            device: rt.device.into(),
            dtype: rt.dtype.into(),
            // Only those valid for the model: flow-matching models and diffusion
            // models take disjoint sets (validation rejects the rest).
            schedulers: SchedulerKind::available(meta.flow_matching)
                .iter()
                .map(|k| k.name().to_string())
                .collect(),
            operations: Operation::ALL
                .iter()
                .map(|o| o.as_str().to_string())
                .collect(),
            // Filled in by `with_controlnets`.
            controlnets: Vec::new(),
            // Filled in by `with_preprocessors`.
            preprocessors: Vec::new(),
            // Filled in by `with_taesd`.
            taesd: false,
            limits,
            defaults,
            queue_capacity: rt.queue_capacity,
        };
        Self {
            info,
            default_scheduler: meta.default_scheduler,
            lcm_max_steps: meta.lcm_max_steps,
            controlnets: Default::default(),
            preprocessors: Default::default(),
            catalogs: Default::default(),
            lora_targets: Default::default(),
            upscalers: std::sync::Arc::new(crate::upscale::registry::UpscalerRegistry::new(
                None,
                &candle_core::Device::Cpu,
                candle_core::DType::F32,
            )),
        }
    }

    /// With the model's LoRA targets ([`crate::lora::keys::Targets`]).
    pub fn with_lora_targets(mut self, targets: crate::lora::keys::Targets) -> Self {
        self.lora_targets = std::sync::Arc::new(targets);
        self
    }

    /// With `registry`'s upscalers on offer.
    pub fn with_upscalers(mut self, registry: crate::upscale::registry::UpscalerRegistry) -> Self {
        self.upscalers = std::sync::Arc::new(registry);
        self
    }

    /// With TAESD loaded (previews and `vae: tiny` on offer).
    pub fn with_taesd(mut self, loaded: bool) -> Self {
        self.info.taesd = loaded;
        self
    }

    /// With the model's LoRA merge memory ([`crate::model::LoadedModel::lora_merge_bytes`]).
    pub fn with_lora_merge_bytes(mut self, bytes: u64) -> Self {
        self.info.model.lora_merge_bytes = bytes;
        self
    }

    /// With `preprocessors` on offer (and listed in `info`).
    pub fn with_preprocessors(mut self, preprocessors: crate::preprocess::Preprocessors) -> Self {
        self.info.preprocessors = preprocessors.names();
        self.preprocessors = std::sync::Arc::new(preprocessors);
        self
    }

    /// With the LoRA and embedding folders of `catalogs` on offer.
    pub fn with_catalogs(mut self, catalogs: crate::catalog::Catalogs) -> Self {
        self.catalogs = catalogs;
        self
    }

    /// With `registry`'s ControlNets on offer (and listed in `info`).
    pub fn with_controlnets(mut self, registry: crate::controlnet::ControlNetRegistry) -> Self {
        self.info.controlnets = registry.infos();
        self.controlnets = std::sync::Arc::new(registry);
        self
    }
}
