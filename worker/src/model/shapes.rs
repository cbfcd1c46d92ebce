//! Named model shapes: the configs of a whole pipeline without weights.
//! `tiny` is the generated test model and `tiny-sd2` its Stable Diffusion
//! 2.x-shaped sibling, `tiny-sdxl` the SDXL-shaped one (two text encoders,
//! `add_embedding`), `tiny-sd3` the SD 3.5-shaped one (MMDiT, three text
//! encoders); `sd15`, `sdxl` and `sd3-medium` mirror the published configs for
//! benchmarks with random weights.

use super::config::{PerBlock, TextEncoderConfig, UNetConfig, VaeConfig};
use super::mmdit::TransformerConfig;

#[derive(Debug, Clone)]
pub struct ModelShape {
    pub name: &'static str,
    /// The denoiser, unless `transformer` is set (SD 3), which replaces it.
    pub unet: UNetConfig,
    pub transformer: Option<TransformerConfig>,
    pub vae: VaeConfig,
    pub text_encoder: TextEncoderConfig,
    /// SDXL's second text encoder (`CLIPTextModelWithProjection`), with
    /// `tokenizer_2` padding with "!".
    pub text_encoder_2: Option<TextEncoderConfig>,
    /// SD 3's T5 `config.json` (transformers' T5Config), verbatim.
    pub text_encoder_3: Option<serde_json::Value>,
    /// `scheduler/scheduler_config.json`, verbatim.
    pub scheduler_config: serde_json::Value,
    /// Pad token written into the tokenizer config.
    pub pad_token: &'static str,
}

pub const SHAPE_NAMES: &[&str] = &[
    "tiny",
    "tiny-inpaint",
    "tiny-sd2",
    "tiny-sdxl",
    "tiny-sd3",
    "sd15",
    "sd15-inpaint",
    "sdxl",
    "sd3-medium",
];

impl ModelShape {
    pub fn by_name(name: &str) -> Option<Self> {
        match name {
            "tiny" => Some(Self::tiny()),
            "tiny-inpaint" => Some(Self::tiny().inpainting()),
            "tiny-sd2" => Some(Self::tiny_sd2()),
            "tiny-sdxl" => Some(Self::tiny_sdxl()),
            "tiny-sd3" => Some(Self::tiny_sd3()),
            "sd3-medium" => Some(Self::sd3_medium()),
            "sd15" | "sd1.5" => Some(Self::sd15()),
            "sd15-inpaint" => Some(Self::sd15().inpainting()),
            "sdxl" => Some(Self::sdxl()),
            _ => None,
        }
    }

    /// About 2 MB, every component of SD 1.5's architecture at toy size: a
    /// 3-block VAE (64x64 images, 16x16 latents) and a 2-block UNet with
    /// attention at half resolution, so a step takes milliseconds on a CPU.
    pub fn tiny() -> Self {
        Self {
            name: "tiny",
            unet: unet(
                &[32, 32],
                &["DownBlock2D", "CrossAttnDownBlock2D"],
                1,
                PerBlock::All(2),
                32,
                32,
                16,
            ),
            vae: vae(&[16, 32, 32], 1, 8, 0.18215),
            text_encoder: text_encoder(1024, 32, 64, 2, 4, "quick_gelu"),
            text_encoder_2: None,
            transformer: None,
            text_encoder_3: None,
            scheduler_config: sd_scheduler("EulerDiscreteScheduler"),
            pad_token: "<|endoftext|>",
        }
    }

    /// `tiny` with SDXL's structure: a CLIP-L-style and an OpenCLIP-style
    /// encoder whose penultimate states are concatenated (32 + 48 = 80-wide
    /// cross-attention), `add_embedding` over the pooled 40-wide projection and
    /// six 8-wide time-id embeddings, linear projections, two transformer
    /// layers in the attention block, SDXL's VAE scale and scheduler config.
    pub fn tiny_sdxl() -> Self {
        let mut shape = Self::tiny();
        shape.name = "tiny-sdxl";
        let mut second = text_encoder(1024, 48, 96, 3, 4, "gelu");
        second.architectures = vec!["CLIPTextModelWithProjection".into()];
        second.projection_dim = Some(40);
        shape.unet.cross_attention_dim = PerBlock::All(32 + 48);
        shape.unet.use_linear_projection = true;
        shape.unet.transformer_layers_per_block = PerBlock::Each(vec![1, 2]);
        shape.unet.addition_embed_type = Some("text_time".into());
        shape.unet.addition_time_embed_dim = Some(8);
        shape.unet.projection_class_embeddings_input_dim = Some(40 + 6 * 8);
        shape.vae.scaling_factor = 0.13025;
        shape.vae.force_upcast = Some(true);
        shape.text_encoder_2 = Some(second);
        shape.scheduler_config = sdxl_scheduler();
        shape
    }

    /// Stable Diffusion XL base 1.0's published sizes (2.6B-parameter UNet,
    /// CLIP ViT-L and OpenCLIP ViT-bigG encoders, 1024x1024 native).
    pub fn sdxl() -> Self {
        let mut unet = unet(
            &[320, 640, 1280],
            &[
                "DownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
            ],
            2,
            PerBlock::Each(vec![5, 10, 20]),
            2048,
            32,
            128,
        );
        unet.use_linear_projection = true;
        unet.transformer_layers_per_block = PerBlock::Each(vec![1, 2, 10]);
        unet.addition_embed_type = Some("text_time".into());
        unet.addition_time_embed_dim = Some(256);
        unet.projection_class_embeddings_input_dim = Some(2816);
        let mut first = text_encoder(49408, 768, 3072, 12, 12, "quick_gelu");
        first.projection_dim = Some(768);
        let mut second = text_encoder(49408, 1280, 5120, 32, 20, "gelu");
        second.architectures = vec!["CLIPTextModelWithProjection".into()];
        second.projection_dim = Some(1280);
        let mut vae = vae(&[128, 256, 512, 512], 2, 32, 0.13025);
        vae.force_upcast = Some(true);
        Self {
            name: "sdxl",
            unet,
            vae,
            text_encoder: first,
            text_encoder_2: Some(second),
            transformer: None,
            text_encoder_3: None,
            scheduler_config: sdxl_scheduler(),
            pad_token: "<|endoftext|>",
        }
    }

    /// SD 3.5 Medium's structure at toy size: an MMDiT of 3 joint blocks
    /// (32 wide, 4 heads) with q/k RMS norms and a second attention in block
    /// 0, over 16-channel latents from a VAE with a shift and no quant convs;
    /// CLIP-L-style (32 + projection 32) and OpenCLIP-style (48 + projection
    /// 40) encoders whose states, side by side, are zero-padded to T5's 96.
    pub fn tiny_sd3() -> Self {
        let mut shape = Self::tiny();
        shape.name = "tiny-sd3";
        shape.text_encoder.architectures = vec!["CLIPTextModelWithProjection".into()];
        let mut second = text_encoder(1024, 48, 96, 3, 4, "gelu");
        second.architectures = vec!["CLIPTextModelWithProjection".into()];
        second.projection_dim = Some(40);
        shape.text_encoder_2 = Some(second);
        shape.text_encoder_3 = Some(t5(160, 96, 16, 128, 2, 6));
        shape.transformer = Some(TransformerConfig {
            class_name: "SD3Transformer2DModel".into(),
            sample_size: 16,
            patch_size: 2,
            in_channels: 16,
            num_layers: 3,
            attention_head_dim: 8,
            num_attention_heads: 4,
            joint_attention_dim: 96,
            caption_projection_dim: 32,
            pooled_projection_dim: 32 + 40,
            out_channels: 16,
            pos_embed_max_size: 16,
            dual_attention_layers: vec![0],
            qk_norm: Some("rms_norm".into()),
        });
        shape.vae = sd3_vae(vae(&[16, 32, 32], 1, 8, 1.5305));
        shape.scheduler_config = flow_scheduler();
        shape
    }

    /// Stable Diffusion 3 Medium's published sizes (2B-parameter MMDiT,
    /// CLIP ViT-L, OpenCLIP bigG, T5 v1.1 XXL, 1024x1024 native).
    pub fn sd3_medium() -> Self {
        let mut first = text_encoder(49408, 768, 3072, 12, 12, "quick_gelu");
        first.architectures = vec!["CLIPTextModelWithProjection".into()];
        let mut second = text_encoder(49408, 1280, 5120, 32, 20, "gelu");
        second.architectures = vec!["CLIPTextModelWithProjection".into()];
        Self {
            name: "sd3-medium",
            unet: Self::tiny().unet,
            transformer: Some(TransformerConfig {
                class_name: "SD3Transformer2DModel".into(),
                sample_size: 128,
                patch_size: 2,
                in_channels: 16,
                num_layers: 24,
                attention_head_dim: 64,
                num_attention_heads: 24,
                joint_attention_dim: 4096,
                caption_projection_dim: 1536,
                pooled_projection_dim: 2048,
                out_channels: 16,
                pos_embed_max_size: 192,
                dual_attention_layers: vec![],
                qk_norm: None,
            }),
            vae: sd3_vae(vae(&[128, 256, 512, 512], 2, 32, 1.5305)),
            text_encoder: first,
            text_encoder_2: Some(second),
            text_encoder_3: Some(t5(32128, 4096, 64, 10240, 24, 64)),
            scheduler_config: flow_scheduler(),
            pad_token: "<|endoftext|>",
        }
    }

    /// `tiny` with what sets Stable Diffusion 2.x apart in its configs: linear
    /// projections in the UNet's transformers, an OpenCLIP-style text encoder
    /// (exact GELU, "!" padding) and v-prediction under DDIM, as SD 2.1 ships.
    pub fn tiny_sd2() -> Self {
        let mut shape = Self::tiny();
        shape.name = "tiny-sd2";
        shape.unet.use_linear_projection = true;
        shape.text_encoder.hidden_act = "gelu".into();
        shape.pad_token = "!";
        shape.scheduler_config = sd_scheduler("DDIMScheduler");
        shape.scheduler_config["prediction_type"] = "v_prediction".into();
        shape
    }

    /// The same shape with an inpainting UNet: it also takes the mask and the
    /// masked image's latents (4 + 1 + 4 input channels).
    pub fn inpainting(mut self) -> Self {
        self.unet.in_channels = 2 * self.vae.latent_channels + 1;
        self.name = match self.name {
            "tiny" => "tiny-inpaint",
            "sd15" => "sd15-inpaint",
            other => other,
        };
        self
    }

    /// Stable Diffusion 1.5's published sizes (860M-parameter UNet).
    pub fn sd15() -> Self {
        Self {
            name: "sd15",
            unet: unet(
                &[320, 640, 1280, 1280],
                &[
                    "CrossAttnDownBlock2D",
                    "CrossAttnDownBlock2D",
                    "CrossAttnDownBlock2D",
                    "DownBlock2D",
                ],
                2,
                PerBlock::All(8),
                768,
                32,
                64,
            ),
            vae: vae(&[128, 256, 512, 512], 2, 32, 0.18215),
            text_encoder: text_encoder(49408, 768, 3072, 12, 12, "quick_gelu"),
            text_encoder_2: None,
            transformer: None,
            text_encoder_3: None,
            scheduler_config: sd_scheduler("PNDMScheduler"),
            pad_token: "<|endoftext|>",
        }
    }
}

fn mirror_up(down: &[&str]) -> Vec<String> {
    down.iter().rev().map(|d| d.replace("Down", "Up")).collect()
}

fn unet(
    channels: &[usize],
    down: &[&str],
    layers_per_block: usize,
    heads: PerBlock<usize>,
    cross_attention_dim: usize,
    groups: usize,
    sample_size: usize,
) -> UNetConfig {
    UNetConfig {
        class_name: "UNet2DConditionModel".into(),
        in_channels: 4,
        out_channels: 4,
        sample_size: Some(sample_size),
        block_out_channels: channels.to_vec(),
        down_block_types: down.iter().map(|s| s.to_string()).collect(),
        up_block_types: mirror_up(down),
        mid_block_type: Some("UNetMidBlock2DCrossAttn".into()),
        layers_per_block,
        attention_head_dim: heads,
        num_attention_heads: None,
        cross_attention_dim: PerBlock::All(cross_attention_dim),
        transformer_layers_per_block: PerBlock::All(1),
        use_linear_projection: false,
        center_input_sample: false,
        flip_sin_to_cos: true,
        freq_shift: 0.0,
        downsample_padding: 1,
        mid_block_scale_factor: 1.0,
        norm_num_groups: groups,
        norm_eps: 1e-5,
        act_fn: "silu".into(),
        addition_embed_type: None,
        addition_time_embed_dim: None,
        projection_class_embeddings_input_dim: None,
        class_embed_type: None,
        time_cond_proj_dim: None,
        encoder_hid_dim_type: None,
    }
}

fn vae(
    channels: &[usize],
    layers_per_block: usize,
    groups: usize,
    scaling_factor: f64,
) -> VaeConfig {
    VaeConfig {
        class_name: "AutoencoderKL".into(),
        in_channels: 3,
        out_channels: 3,
        block_out_channels: channels.to_vec(),
        down_block_types: vec!["DownEncoderBlock2D".into(); channels.len()],
        up_block_types: vec!["UpDecoderBlock2D".into(); channels.len()],
        layers_per_block,
        latent_channels: 4,
        norm_num_groups: groups,
        act_fn: "silu".into(),
        scaling_factor,
        shift_factor: None,
        use_quant_conv: true,
        use_post_quant_conv: true,
        sample_size: None,
        force_upcast: None,
    }
}

fn text_encoder(
    vocab: usize,
    hidden: usize,
    inter: usize,
    layers: usize,
    heads: usize,
    act: &str,
) -> TextEncoderConfig {
    TextEncoderConfig {
        architectures: vec!["CLIPTextModel".into()],
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: inter,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        max_position_embeddings: 77,
        hidden_act: act.into(),
        layer_norm_eps: 1e-5,
        projection_dim: Some(hidden),
        model_type: Some("clip_text_model".into()),
        bos_token_id: Some(0),
        eos_token_id: Some(2),
        pad_token_id: Some(1),
    }
}

/// SD 3's VAE: 16 latent channels, a shift, no quant convs.
fn sd3_vae(mut vae: VaeConfig) -> VaeConfig {
    vae.latent_channels = 16;
    vae.shift_factor = Some(0.0609);
    vae.use_quant_conv = false;
    vae.use_post_quant_conv = false;
    vae
}

/// A T5 v1.1 encoder config as transformers writes it (gated GELU, no tied
/// embeddings).
fn t5(
    vocab: usize,
    d_model: usize,
    d_kv: usize,
    d_ff: usize,
    layers: usize,
    heads: usize,
) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["T5EncoderModel"],
        "model_type": "t5",
        "vocab_size": vocab,
        "d_model": d_model,
        "d_kv": d_kv,
        "d_ff": d_ff,
        "num_layers": layers,
        "num_heads": heads,
        "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128,
        "dropout_rate": 0.1,
        "layer_norm_epsilon": 1e-6,
        "initializer_factor": 1.0,
        "feed_forward_proj": "gated-gelu",
        "dense_act_fn": "gelu_new",
        "is_gated_act": true,
        "is_encoder_decoder": true,
        "tie_word_embeddings": false,
        "use_cache": true,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0
    })
}

/// SD 3's `scheduler_config.json` (flow matching, shift 3).
fn flow_scheduler() -> serde_json::Value {
    serde_json::json!({
        "_class_name": "FlowMatchEulerDiscreteScheduler",
        "num_train_timesteps": 1000,
        "shift": 3.0
    })
}

/// SDXL base 1.0's `scheduler_config.json` (Euler, leading spacing).
pub(crate) fn sdxl_scheduler() -> serde_json::Value {
    let mut cfg = sd_scheduler("EulerDiscreteScheduler");
    cfg["timestep_spacing"] = "leading".into();
    cfg["interpolation_type"] = "linear".into();
    cfg["use_karras_sigmas"] = false.into();
    cfg
}

/// Stable Diffusion 1.x's training schedule, under the given scheduler class.
pub(crate) fn sd_scheduler(class: &str) -> serde_json::Value {
    serde_json::json!({
        "_class_name": class,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
        "set_alpha_to_one": false,
        "skip_prk_steps": true,
        "steps_offset": 1,
        "clip_sample": false,
        "trained_betas": null
    })
}
