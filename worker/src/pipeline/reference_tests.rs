//! The SDXL and SD 3 paths against diffusers. The reference values in
//! `tests/reference/{sdxl,sd3}_reference.json` were computed by diffusers on
//! the tiny SDXL- and SD 3.5-shaped models our generator writes with seed 7
//! (how to recompute them: the `.py` files beside them). Sampled every
//! `stride` values, with the mean and mean magnitude of the whole tensor.

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use crate::model::conditioner::EncoderRole;
use crate::model::denoiser::Conditioning;
use crate::model::generate::{write_model, WeightInit};
use crate::model::reference::{self, Sampled};
use crate::model::shapes::ModelShape;
use crate::model::{LoadOptions, LoadedModel, ModelSpec};

#[derive(Deserialize)]
struct Reference {
    prompt: String,
    timestep: f64,
    time_ids: Vec<f32>,
    prompt_embeds: Sampled,
    negative_prompt_embeds: Sampled,
    pooled_prompt_embeds: Sampled,
    negative_pooled_prompt_embeds: Sampled,
    unet_output: Sampled,
    vae_decoded: Sampled,
}

fn check(what: &str, ours: &Tensor, reference: &Sampled) {
    reference::check(what, ours, reference);
    assert!(
        reference.abs_mean > 0.0 || what.starts_with("negative"),
        "{what}: a trivial reference"
    );
}

/// The generated model in `dir`, in f32 on the CPU (the references are f32).
fn load_f32(dir: &std::path::Path, skip_t5: bool) -> LoadedModel {
    LoadedModel::load(
        &ModelSpec::Local(dir.to_path_buf()),
        &Device::Cpu,
        LoadOptions {
            dtype: DType::F32,
            skip_t5,
            quant: Default::default(),
        },
    )
    .unwrap()
}

#[test]
fn sdxl_conditioning_unet_and_vae_match_diffusers() {
    let reference: Reference =
        serde_json::from_str(include_str!("../../tests/reference/sdxl_reference.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), &ModelShape::tiny_sdxl(), WeightInit::Seeded(7)).unwrap();
    let model = load_f32(dir.path(), false);
    assert!(model.meta().zeros_for_empty_negative);

    let conditioner = model.conditioner();
    assert_eq!(
        conditioner.roles(),
        [EncoderRole::ClipL, EncoderRole::OpenClipG]
    );
    let tokens = conditioner.tokenize(&reference.prompt, "prompt").unwrap();
    let cond = conditioner.encode(&tokens, 1).unwrap();
    check("prompt_embeds", &cond.context, &reference.prompt_embeds);
    let pooled = cond.pooled.clone().unwrap();
    check(
        "pooled_prompt_embeds",
        &pooled,
        &reference.pooled_prompt_embeds,
    );
    // diffusers zeroes the unconditional embeddings of an absent negative
    // prompt (force_zeros_for_empty_prompt).
    let empty = conditioner.tokenize("", "negative prompt").unwrap();
    let uncond = conditioner.encode_negative(None, &empty, &cond, 1).unwrap();
    check(
        "negative_prompt_embeds",
        &uncond.context,
        &reference.negative_prompt_embeds,
    );
    check(
        "negative_pooled_prompt_embeds",
        &uncond.pooled.unwrap(),
        &reference.negative_pooled_prompt_embeds,
    );

    let latents: Vec<f32> = (0..4 * 6 * 8)
        .map(|i| (i as f64 * 0.1).sin() as f32)
        .collect();
    let latents = Tensor::from_vec(latents, (1, 4, 6, 8), &Device::Cpu).unwrap();
    let time_ids = Tensor::new(reference.time_ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let unet_cond = Conditioning {
        context: cond.context.clone(),
        pooled: Some(pooled),
        time_ids: Some(time_ids),
    };
    let out = model
        .denoiser()
        .predict(&latents, reference.timestep, &unet_cond, None)
        .unwrap();
    check("unet_output", &out, &reference.unet_output);

    let decoded = model
        .vae()
        .decode(&(latents / model.meta().vae_scaling_factor).unwrap())
        .unwrap();
    check("vae_decoded", &decoded, &reference.vae_decoded);
}

#[derive(Deserialize)]
struct Sd3Reference {
    prompt: String,
    timestep: f64,
    prompt_embeds: Sampled,
    prompt_embeds_without_t5: Sampled,
    negative_prompt_embeds: Sampled,
    pooled_prompt_embeds: Sampled,
    negative_pooled_prompt_embeds: Sampled,
    transformer_output: Sampled,
    vae_decoded: Sampled,
}

#[test]
fn sd3_conditioning_transformer_and_vae_match_diffusers() {
    let reference: Sd3Reference =
        serde_json::from_str(include_str!("../../tests/reference/sd3_reference.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), &ModelShape::tiny_sd3(), WeightInit::Seeded(7)).unwrap();
    let model = load_f32(dir.path(), false);
    assert_eq!(
        model.conditioner().roles(),
        [
            EncoderRole::ClipL,
            EncoderRole::OpenClipG,
            EncoderRole::T5Xxl
        ]
    );

    let encode = |model: &LoadedModel, text: &str| {
        let tokens = model.conditioner().tokenize(text, "prompt").unwrap();
        model.conditioner().encode(&tokens, 1).unwrap()
    };
    let cond = encode(&model, &reference.prompt);
    check("prompt_embeds", &cond.context, &reference.prompt_embeds);
    let pooled = cond.pooled.unwrap();
    check(
        "pooled_prompt_embeds",
        &pooled,
        &reference.pooled_prompt_embeds,
    );
    // SD 3 encodes the empty negative prompt (no zeros).
    let uncond = encode(&model, "");
    check(
        "negative_prompt_embeds",
        &uncond.context,
        &reference.negative_prompt_embeds,
    );
    check(
        "negative_pooled_prompt_embeds",
        &uncond.pooled.unwrap(),
        &reference.negative_pooled_prompt_embeds,
    );

    let latents: Vec<f32> = (0..16 * 8 * 12)
        .map(|i| (i as f64 * 0.1).sin() as f32)
        .collect();
    let latents = Tensor::from_vec(latents, (1, 16, 8, 12), &Device::Cpu).unwrap();
    let mmdit_cond = Conditioning {
        context: cond.context.clone(),
        pooled: Some(pooled),
        time_ids: None,
    };
    let out = model
        .denoiser()
        .predict(&latents, reference.timestep, &mmdit_cond, None)
        .unwrap();
    check("transformer_output", &out, &reference.transformer_output);

    let shift = model
        .meta()
        .vae_shift_factor
        .expect("SD 3's VAE has a shift");
    let decoded = model
        .vae()
        .decode(&((latents / model.meta().vae_scaling_factor).unwrap() + shift).unwrap())
        .unwrap();
    check("vae_decoded", &decoded, &reference.vae_decoded);

    // Without T5 its tokens are zeros, as diffusers with text_encoder_3=None.
    let without = load_f32(dir.path(), true);
    assert!(!without.conditioner().roles().contains(&EncoderRole::T5Xxl));
    let cond = encode(&without, &reference.prompt);
    check(
        "prompt_embeds_without_t5",
        &cond.context,
        &reference.prompt_embeds_without_t5,
    );
}

#[derive(Deserialize)]
struct EmptyNegativeReference {
    prompt: String,
    negative_prompt: String,
    negative_prompt_embeds: Sampled,
    negative_pooled_prompt_embeds: Sampled,
}

/// diffusers' SDXL zeroes the unconditional embeddings only for an absent
/// negative prompt (`force_zeros_for_empty_prompt`); an explicit "" is
/// encoded (`tests/reference/sdxl_empty_negative_reference.py`).
#[test]
fn sdxl_encodes_an_explicit_empty_negative_prompt_as_diffusers_does() {
    let reference: EmptyNegativeReference = serde_json::from_str(include_str!(
        "../../tests/reference/sdxl_empty_negative_reference.json"
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), &ModelShape::tiny_sdxl(), WeightInit::Seeded(7)).unwrap();
    let model = load_f32(dir.path(), false);
    assert!(model.meta().zeros_for_empty_negative);

    let conditioner = model.conditioner();
    let tokens = conditioner.tokenize(&reference.prompt, "prompt").unwrap();
    let cond = conditioner.encode(&tokens, 1).unwrap();
    let negative = conditioner
        .tokenize(&reference.negative_prompt, "negative prompt")
        .unwrap();
    let explicit = conditioner
        .encode_negative(
            Some(reference.negative_prompt.as_str()),
            &negative,
            &cond,
            1,
        )
        .unwrap();
    check(
        "negative_prompt_embeds",
        &explicit.context,
        &reference.negative_prompt_embeds,
    );
    check(
        "negative_pooled_prompt_embeds",
        &explicit.pooled.unwrap(),
        &reference.negative_pooled_prompt_embeds,
    );
    // Absent: zeros, as sdxl_reference.json's negative embeddings.
    let absent = conditioner
        .encode_negative(None, &negative, &cond, 1)
        .unwrap();
    let magnitude = |t: &Tensor| {
        t.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert_eq!(magnitude(&absent.context), 0.0);
    assert_eq!(magnitude(&absent.pooled.unwrap()), 0.0);
}
