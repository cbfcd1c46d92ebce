//! Writes a model of a given [`ModelShape`] with random weights in the exact
//! diffusers on-disk layout (config.json files, safetensors, tokenizer files),
//! so tests, the bundled default and benchmarks load it through the same code
//! path as a downloaded model.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKL;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::collections::HashMap;
use std::path::Path;

use super::mmdit::Mmdit;
use super::shapes::ModelShape;
use super::t5::write_tiny_tokenizer;
use super::text_encoder::ClipTextEncoder;
use super::tokenizer::{write_tiny_vocab, TINY_TRAINING_WORDS};
use super::unet::Unet;
use candle_transformers::models::t5::{self, T5EncoderModel};

/// How weights are filled.
#[derive(Debug, Clone, Copy)]
pub enum WeightInit {
    /// Byte-identical files for a given seed (tests, the bundled model).
    Seeded(u64),
    /// Candle's own random initialisation: fast for billion-parameter shapes,
    /// not reproducible (benchmarks only).
    Fast,
}

/// Writes `shape` into `dir` (created if needed).
pub fn write_model(dir: &Path, shape: &ModelShape, init: WeightInit) -> Result<()> {
    let denoiser = if shape.transformer.is_some() {
        "transformer"
    } else {
        "unet"
    };
    let mut subs = vec![denoiser, "vae", "text_encoder", "tokenizer", "scheduler"];
    if shape.text_encoder_2.is_some() {
        subs.extend(["text_encoder_2", "tokenizer_2"]);
    }
    if shape.text_encoder_3.is_some() {
        subs.extend(["text_encoder_3", "tokenizer_3"]);
    }
    for sub in subs {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    write_json(&dir.join("model_index.json"), &model_index(shape))?;
    write_json(&dir.join("vae/config.json"), &shape.vae)?;
    write_json(&dir.join("text_encoder/config.json"), &shape.text_encoder)?;
    write_json(
        &dir.join("scheduler/scheduler_config.json"),
        &shape.scheduler_config,
    )?;
    let vocab = write_tiny_vocab(&dir.join("tokenizer"), shape.pad_token)?;
    anyhow::ensure!(
        vocab <= shape.text_encoder.vocab_size,
        "tokenizer larger than the text encoder's vocabulary"
    );

    let text = build(init, 1, |vb| {
        ClipTextEncoder::new(vb, &shape.text_encoder).map(drop)
    })?;
    save(text, &dir.join("text_encoder/model.safetensors"))?;
    if let Some(cfg) = &shape.text_encoder_2 {
        write_json(&dir.join("text_encoder_2/config.json"), cfg)?;
        // OpenCLIP's tokenizer: the same vocabulary, padded with "!".
        let vocab = write_tiny_vocab(&dir.join("tokenizer_2"), "!")?;
        anyhow::ensure!(
            vocab <= cfg.vocab_size,
            "tokenizer_2 larger than the second text encoder's vocabulary"
        );
        let text = build(init, 4, |vb| ClipTextEncoder::new(vb, cfg).map(drop))?;
        save(text, &dir.join("text_encoder_2/model.safetensors"))?;
    }

    if let Some(cfg) = &shape.text_encoder_3 {
        write_json(&dir.join("text_encoder_3/config.json"), cfg)?;
        let t5_cfg: t5::Config = serde_json::from_value(cfg.clone())?;
        let vocab = write_tiny_tokenizer(&dir.join("tokenizer_3"), TINY_TRAINING_WORDS)?;
        anyhow::ensure!(
            vocab <= t5_cfg.vocab_size,
            "tokenizer_3 larger than T5's vocabulary"
        );
        let mut text = build(init, 5, |vb| {
            T5EncoderModel::load(vb, &t5_cfg)
                .map(drop)
                .map_err(Into::into)
        })?;
        // Candle asks an empty store for the encoder's own embedding name;
        // transformers saves T5's (tied) embedding as `shared`.
        if let Some(emb) = text.remove("encoder.embed_tokens.weight") {
            text.insert("shared.weight".into(), emb);
        }
        save(text, &dir.join("text_encoder_3/model.safetensors"))?;
    }

    if let Some(cfg) = &shape.transformer {
        write_json(&dir.join("transformer/config.json"), cfg)?;
        let net = build(init, 2, |vb| Mmdit::new(vb, cfg).map(drop))?;
        save(
            net,
            &dir.join("transformer/diffusion_pytorch_model.safetensors"),
        )?;
    } else {
        write_json(&dir.join("unet/config.json"), &shape.unet)?;
        let unet_cfg = shape.unet.to_candle()?;
        let text_time = shape.unet.text_time()?;
        let unet = build(init, 2, |vb| {
            Unet::new(
                vb,
                shape.unet.in_channels,
                shape.unet.out_channels,
                false,
                &unet_cfg,
                text_time,
            )
            .map(drop)
        })?;
        save(unet, &dir.join("unet/diffusion_pytorch_model.safetensors"))?;
    }

    let vae_cfg = shape.vae.to_candle()?;
    let vae = build(init, 3, |vb| {
        AutoEncoderKL::new(
            vb,
            shape.vae.in_channels,
            shape.vae.out_channels,
            vae_cfg.clone(),
        )
        .map(drop)
        .map_err(Into::into)
    })?;
    save(
        modern_vae_attention_names(vae),
        &dir.join("vae/diffusion_pytorch_model.safetensors"),
    )?;
    Ok(())
}

/// Builds a network against an empty VarMap (which records every weight it
/// asks for, under diffusers' names), then fills the weights.
pub(crate) fn build(
    init: WeightInit,
    stream: u64,
    make: impl Fn(VarBuilder) -> Result<()>,
) -> Result<HashMap<String, Tensor>> {
    let varmap = VarMap::new();
    make(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    let vars = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let mut out = HashMap::with_capacity(names.len());
    for name in names {
        let var = &vars[name];
        let tensor = match init {
            WeightInit::Fast => var.as_tensor().clone(),
            WeightInit::Seeded(seed) => {
                seeded_tensor(name, var.dims(), seed.wrapping_mul(31).wrapping_add(stream))?
            }
        };
        out.insert(name.clone(), tensor);
    }
    Ok(out)
}

/// Norm scales 1 and shifts 0 (as trained networks start); other weights drawn
/// with variance 1/fan_in so activations stay in range through deep stacks.
fn seeded_tensor(name: &str, dims: &[usize], seed: u64) -> Result<Tensor> {
    let numel: usize = dims.iter().product();
    let is_norm = name.contains("norm") && dims.len() == 1;
    // MMDiT q/k norms: scales near 1 but distinct, so that a norm applied to
    // the wrong stream shows in the output.
    let qk_norm =
        name.contains(".norm_q.") || name.contains(".norm_k.") || name.contains(".norm_added_");
    // A sinusoidal position table holds values of order 1.
    let unit_std = name.ends_with("pos_embed.pos_embed");
    let values: Vec<f32> = if qk_norm || unit_std {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ fnv1a(name));
        (0..numel)
            .map(|_| {
                let v: f64 = StandardNormal.sample(&mut rng);
                if qk_norm {
                    (1.0 + 0.2 * v) as f32
                } else {
                    v as f32
                }
            })
            .collect()
    } else if is_norm {
        vec![if name.ends_with("weight") { 1.0 } else { 0.0 }; numel]
    } else {
        let fan_in = if dims.len() > 1 { numel / dims[0] } else { 1 };
        let std = if dims.len() == 1 {
            0.02
        } else {
            (1.0 / fan_in as f64).sqrt()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ fnv1a(name));
        (0..numel)
            .map(|_| {
                let v: f64 = StandardNormal.sample(&mut rng);
                (v * std) as f32
            })
            .collect()
    };
    Ok(Tensor::from_vec(values, dims, &Device::Cpu)?)
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Candle records the VAE's attention under the legacy names; current diffusers
/// checkpoints use `to_q/to_k/to_v/to_out.0`, so write those (Candle reads both).
fn modern_vae_attention_names(tensors: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    tensors
        .into_iter()
        .map(|(name, t)| {
            let renamed = [
                ("query.", "to_q."),
                ("key.", "to_k."),
                ("value.", "to_v."),
                ("proj_attn.", "to_out.0."),
            ]
            .iter()
            .find_map(|(old, new)| {
                name.contains(&format!("attentions.0.{old}")).then(|| {
                    name.replace(
                        &format!("attentions.0.{old}"),
                        &format!("attentions.0.{new}"),
                    )
                })
            })
            .unwrap_or(name);
            (renamed, t)
        })
        .collect()
}

pub(crate) fn save(tensors: HashMap<String, Tensor>, path: &Path) -> Result<()> {
    candle_core::safetensors::save(&tensors, path)
        .with_context(|| format!("writing {}", path.display()))
}

pub(crate) fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn model_index(shape: &ModelShape) -> serde_json::Value {
    let scheduler = shape.scheduler_config["_class_name"].clone();
    if shape.transformer.is_some() {
        let t5 = match shape.text_encoder_3 {
            Some(_) => serde_json::json!(["transformers", "T5EncoderModel"]),
            None => serde_json::json!([null, null]),
        };
        let t5_tokenizer = match shape.text_encoder_3 {
            Some(_) => serde_json::json!(["transformers", "T5TokenizerFast"]),
            None => serde_json::json!([null, null]),
        };
        return serde_json::json!({
            "_class_name": "StableDiffusion3Pipeline",
            "_diffusers_version": "0.30.0",
            "_name_or_path": format!("sd-worker/{}", shape.name),
            "scheduler": ["diffusers", scheduler],
            "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
            "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
            "text_encoder_3": t5,
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "tokenizer_2": ["transformers", "CLIPTokenizer"],
            "tokenizer_3": t5_tokenizer,
            "transformer": ["diffusers", "SD3Transformer2DModel"],
            "vae": ["diffusers", "AutoencoderKL"]
        });
    }
    if shape.text_encoder_2.is_some() {
        return serde_json::json!({
            "_class_name": "StableDiffusionXLPipeline",
            "_diffusers_version": "0.30.0",
            "_name_or_path": format!("sd-worker/{}", shape.name),
            "force_zeros_for_empty_prompt": true,
            "scheduler": ["diffusers", scheduler],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "tokenizer_2": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"]
        });
    }
    serde_json::json!({
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.30.0",
        "_name_or_path": format!("sd-worker/{}", shape.name),
        "feature_extractor": [null, null],
        "requires_safety_checker": false,
        "safety_checker": [null, null],
        "scheduler": ["diffusers", scheduler],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]
    })
}
