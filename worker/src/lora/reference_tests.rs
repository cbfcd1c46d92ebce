//! LoRAs of each format merged into the tiny SD 1.x and SDXL models against
//! diffusers' `load_lora_weights` + `fuse_lora(lora_scale=0.8)`. The models
//! and LoRAs are written by our generators (`write_reference_inputs`, run
//! with `--ignored`), `tests/reference/lora_reference.py` records diffusers'
//! text-encoder and UNet outputs in `lora_reference.json` (how to recompute
//! it: the script's docstring), and this test compares ours.

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::generate::{write_lora, LoraGenOptions};
use super::{LoraFile, LoraFormat, LoraUse};
use crate::model::denoiser::Conditioning;
use crate::model::generate::{write_model, WeightInit};
use crate::model::reference::{flat, Sampled};
use crate::model::shapes::ModelShape;
use crate::model::{LoadOptions, LoadedModel, ModelSpec};

/// The strength every case is fused at.
const SCALE: f32 = 0.8;

/// (model folder, shape, model seed).
fn models() -> [(&'static str, ModelShape, u64); 3] {
    [
        ("sd15", ModelShape::tiny(), 11),
        ("sdxl", ModelShape::tiny_sdxl(), 7),
        ("sd3", ModelShape::tiny_sd3(), 5),
    ]
}

/// Whether a model gets a case: SD 3 LoRAs come in diffusers' and PEFT's
/// layouts (diffusers' SD 3 loader reads no kohya file).
fn model_has_case(model: &str, case: &str) -> bool {
    model != "sd3" || matches!(case, "diffusers" | "peft" | "peft_alpha")
}

/// (case name, format, options, LoRA seed).
fn cases() -> Vec<(&'static str, LoraFormat, LoraGenOptions, u64)> {
    let kohya = LoraGenOptions {
        alpha: Some(2.0),
        ..Default::default()
    };
    let locon = LoraGenOptions {
        convs: true,
        alpha: Some(2.0),
        text_encoders: false,
        ..Default::default()
    };
    vec![
        ("kohya", LoraFormat::Kohya, kohya, 21),
        ("locon", LoraFormat::Kohya, locon, 22),
        (
            "diffusers",
            LoraFormat::Diffusers,
            LoraGenOptions::default(),
            23,
        ),
        ("peft", LoraFormat::Peft, LoraGenOptions::default(), 24),
        (
            "peft_alpha",
            LoraFormat::Peft,
            LoraGenOptions {
                adapter_metadata: Some(ADAPTER_METADATA.to_string()),
                ..Default::default()
            },
            25,
        ),
    ]
}

/// `lora_adapter_metadata` as diffusers' `save_lora_weights` writes it: per
/// component PEFT's `LoraConfig` (r, lora_alpha, target_modules, patterns,
/// rsLoRA), so each component's scale differs from alpha = rank.
const ADAPTER_METADATA: &str = r#"{
 "unet.r": 4, "unet.lora_alpha": 8, "unet.alpha_pattern": {"attn2.to_k": 2},
 "unet.target_modules": ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"],
 "transformer.r": 4, "transformer.lora_alpha": 6, "transformer.use_rslora": true,
 "transformer.target_modules": ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj",
   "add_v_proj", "to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2"],
 "text_encoder.r": 4, "text_encoder.lora_alpha": 2,
 "text_encoder.target_modules": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
 "text_encoder_2.r": 4, "text_encoder_2.lora_alpha": 16, "text_encoder_2.alpha_pattern": {"fc2": 1},
 "text_encoder_2.target_modules": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
}"#;

fn load(dir: &Path) -> LoadedModel {
    LoadedModel::load(
        &ModelSpec::Local(dir.to_path_buf()),
        &Device::Cpu,
        LoadOptions {
            dtype: DType::F32,
            skip_t5: true,
            quant: Default::default(),
        },
    )
    .unwrap()
}

/// Writes the models and LoRAs into `root/<model>/` and `root/<model>/loras/<case>.safetensors`.
fn write_inputs(root: &Path) -> Vec<(String, LoadedModel, BTreeMap<String, Arc<LoraFile>>)> {
    let mut out = vec![];
    for (name, shape, seed) in models() {
        let dir = root.join(name);
        write_model(&dir, &shape, WeightInit::Seeded(seed)).unwrap();
        let model = load(&dir);
        std::fs::create_dir_all(dir.join("loras")).unwrap();
        let layers = model.unet_config().map(|c| c.layers_per_block);
        let mut files = BTreeMap::new();
        for (case, format, options, lseed) in cases() {
            if !model_has_case(name, case) {
                continue;
            }
            let path = dir.join("loras").join(format!("{case}.safetensors"));
            write_lora(
                &path,
                format,
                model.weight_tables(),
                layers,
                4,
                lseed,
                &options,
            )
            .unwrap();
            files.insert(case.to_string(), Arc::new(LoraFile::read(&path).unwrap()));
        }
        out.push((name.to_string(), model, files));
    }
    out
}

/// Writes the inputs of `lora_reference.py` to `$SD_WORKER_LORA_REF_DIR`.
#[test]
#[ignore]
fn write_reference_inputs() {
    let root = std::env::var("SD_WORKER_LORA_REF_DIR").expect("SD_WORKER_LORA_REF_DIR");
    write_inputs(Path::new(&root));
}

#[derive(Deserialize)]
struct Outputs {
    prompt_embeds: Sampled,
    pooled_prompt_embeds: Option<Sampled>,
    unet_output: Sampled,
}

#[derive(Deserialize)]
struct Reference {
    prompt: String,
    timestep: f64,
    lora_scale: f32,
    time_ids: Vec<f32>,
    /// model -> case -> outputs ("none": no LoRA).
    models: BTreeMap<String, BTreeMap<String, Outputs>>,
}

/// Largest |ours - reference| over the sampled values, mean and mean
/// magnitude, in units of the reference tests' tolerance (`2e-4 + 1e-3 |x|`).
fn gap(ours: &Tensor, r: &Sampled) -> f64 {
    assert_eq!(ours.dims(), r.shape.as_slice());
    let v = flat(ours);
    let rel = |a: f64, b: f64| (a - b).abs() / (2e-4 + 1e-3 * b.abs());
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let abs_mean = v.iter().map(|x| x.abs()).sum::<f64>() / n;
    r.values
        .iter()
        .enumerate()
        .map(|(k, want)| rel(v[k * r.stride], *want))
        .chain([rel(mean, r.mean), rel(abs_mean, r.abs_mean)])
        .fold(0.0, f64::max)
}

/// Our prompt embeddings, pooled embedding and one UNet call.
fn outputs(model: &LoadedModel, reference: &Reference) -> (Tensor, Option<Tensor>, Tensor) {
    let c = model.conditioner();
    let tokens = c.tokenize(&reference.prompt, "prompt").unwrap();
    let cond = c.encode(&tokens, 1).unwrap();
    let channels = model.meta().latent_channels;
    let latents: Vec<f32> = (0..channels * 6 * 8)
        .map(|i| (i as f64 * 0.1).sin() as f32)
        .collect();
    let latents = Tensor::from_vec(latents, (1, channels, 6, 8), &Device::Cpu).unwrap();
    // SDXL's UNet takes time ids beside the pooled embedding; SD 3's MMDiT
    // takes the pooled embedding alone.
    let xl = model.unet_config().is_some();
    let time_ids = cond.pooled.as_ref().filter(|_| xl).map(|_| {
        Tensor::new(reference.time_ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap()
    });
    let unet_cond = Conditioning {
        context: cond.context.clone(),
        pooled: cond.pooled.clone(),
        time_ids,
    };
    let out = model
        .denoiser()
        .predict(&latents, reference.timestep, &unet_cond, None)
        .unwrap();
    (cond.context, cond.pooled, out)
}

#[test]
fn merged_loras_match_diffusers_fuse_lora() {
    let reference: Reference =
        serde_json::from_str(include_str!("../../tests/reference/lora_reference.json")).unwrap();
    assert_eq!(reference.lora_scale, SCALE);
    let root = tempfile::tempdir().unwrap();
    for (name, model, files) in write_inputs(root.path()) {
        let want = &reference.models[&name];
        let (base_embeds, _, base_unet) = outputs(&model, &reference);
        assert!(
            gap(&base_unet, &want["none"].unet_output) <= 1.0,
            "{name}: base unet"
        );
        for (case, file) in &files {
            let r = &want[case];
            let set = [LoraUse {
                file: file.clone(),
                unet_weight: SCALE,
                text_encoder_weight: SCALE,
            }];
            let report = model.apply_loras(&set).unwrap();
            assert!(report.loras[0].unmatched.is_empty(), "{name} {case}");
            let (embeds, pooled, unet) = outputs(&model, &reference);
            let g_text = gap(&embeds, &r.prompt_embeds);
            let g_unet = gap(&unet, &r.unet_output);
            // How far the LoRA moves diffusers' outputs, in tolerances.
            let moved_unet = gap(&base_unet, &r.unet_output);
            let moved_text = gap(&base_embeds, &r.prompt_embeds);
            eprintln!(
                "{name} {case}: max |ours - diffusers| unet {:.2e}, text {:.2e} \
                 (gap/tolerance {g_unet:.3}, {g_text:.3}); the LoRA moves them by {moved_unet:.0}x, {moved_text:.0}x the tolerance",
                reference_abs(&unet, &r.unet_output),
                reference_abs(&embeds, &r.prompt_embeds),
            );
            assert!(
                g_unet <= 1.0,
                "{name} {case}: unet off by {g_unet}x the tolerance"
            );
            assert!(
                g_text <= 1.0,
                "{name} {case}: text off by {g_text}x the tolerance"
            );
            assert!(
                moved_unet > 20.0,
                "{name} {case}: the LoRA barely moves the unet"
            );
            if case != "locon" {
                assert!(
                    moved_text > 20.0,
                    "{name} {case}: the LoRA barely moves the text"
                );
            }
            if let (Some(p), Some(rp)) = (&pooled, &r.pooled_prompt_embeds) {
                assert!(gap(p, rp) <= 1.0, "{name} {case}: pooled");
            }
        }
        model.remove_loras().unwrap();
    }
}

/// Largest absolute difference over the sampled values.
fn reference_abs(ours: &Tensor, r: &Sampled) -> f64 {
    let v = flat(ours);
    r.values
        .iter()
        .enumerate()
        .map(|(k, want)| (v[k * r.stride] - want).abs())
        .fold(0.0, f64::max)
}
