//! Textual-inversion embeddings against diffusers' `load_textual_inversion`.
//! `tests/reference/textual_inversion_reference.json` was computed by
//! diffusers on the tiny SD 1.x and SDXL models our generator writes (seed 7)
//! with embeddings our generator writes (how to recompute it: the `.py`
//! beside it). Sampled every `stride` values, with the mean and mean
//! magnitude of the whole tensor.

use std::path::Path;

use candle_core::{DType, Device};
use serde::Deserialize;

use crate::model::embeddings::{
    write_embedding, EmbeddingFormat, TextualInversion, TextualInversions,
};
use crate::model::generate::{write_model, WeightInit};
use crate::model::reference::{check, Sampled};
use crate::model::shapes::ModelShape;
use crate::model::{LoadOptions, LoadedModel, ModelSpec};

#[derive(Deserialize)]
struct Family {
    prompt: String,
    prompt_embeds: Sampled,
    prompt_embeds_without: Sampled,
    pooled_prompt_embeds: Option<Sampled>,
    pooled_prompt_embeds_without: Option<Sampled>,
}

#[derive(Deserialize)]
struct Reference {
    sd: Family,
    sdxl: Family,
}

/// Largest difference between the reference with and without the embedding.
fn moved(with: &Sampled, without: &Sampled) -> f64 {
    with.values
        .iter()
        .zip(&without.values)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}

fn load(dir: &Path, shape: ModelShape) -> LoadedModel {
    write_model(dir, &shape, WeightInit::Seeded(7)).unwrap();
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

/// The embedding the reference script loaded, written by our generator.
fn embedding(
    dir: &Path,
    name: &str,
    format: EmbeddingFormat,
    dims: &[usize],
    n: usize,
    seed: u64,
) -> TextualInversions {
    let path = dir.join(format!("{name}.safetensors"));
    write_embedding(&path, format, dims, n, seed).unwrap();
    let mut set = TextualInversions::new();
    set.insert(TextualInversion::load(&path).unwrap());
    set
}

fn reference() -> Reference {
    serde_json::from_str(include_str!(
        "../../tests/reference/textual_inversion_reference.json"
    ))
    .unwrap()
}

#[test]
fn sd1_embedding_matches_diffusers_load_textual_inversion() {
    let r = reference().sd;
    let dir = tempfile::tempdir().unwrap();
    let model = load(&dir.path().join("tiny"), ModelShape::tiny());
    let set = embedding(dir.path(), "tistyle", EmbeddingFormat::A1111, &[32], 3, 11);
    let c = model.conditioner();
    let tokens = c.tokenize_with(&r.prompt, "prompt", &set).unwrap();
    assert_eq!(tokens.embeddings, ["tistyle"]);
    let ours = c.encode(&tokens, 1).unwrap();
    let diff = check("prompt_embeds", &ours.context, &r.prompt_embeds);
    // Without the embedding the name is text, as diffusers before loading it.
    let plain = c
        .encode(&c.tokenize(&r.prompt, "prompt").unwrap(), 1)
        .unwrap();
    check(
        "prompt_embeds_without",
        &plain.context,
        &r.prompt_embeds_without,
    );
    let shift = moved(&r.prompt_embeds, &r.prompt_embeds_without);
    eprintln!("SD 1.x: max |ours - diffusers| {diff:.2e}; the embedding moves it by {shift:.3}");
    assert!(
        shift > 1000.0 * diff.max(1e-6) && shift > 0.1,
        "{shift} vs {diff}"
    );
}

#[test]
fn sdxl_embedding_pair_matches_diffusers_load_textual_inversion() {
    let r = reference().sdxl;
    let dir = tempfile::tempdir().unwrap();
    let model = load(&dir.path().join("tiny-sdxl"), ModelShape::tiny_sdxl());
    let set = embedding(dir.path(), "tixl", EmbeddingFormat::Sdxl, &[32, 48], 2, 12);
    let c = model.conditioner();
    let tokens = c.tokenize_with(&r.prompt, "prompt", &set).unwrap();
    assert_eq!(tokens.embeddings, ["tixl"]);
    let ours = c.encode(&tokens, 1).unwrap();
    let diff = check("prompt_embeds", &ours.context, &r.prompt_embeds);
    let pooled = r.pooled_prompt_embeds.as_ref().unwrap();
    let diff_pooled = check(
        "pooled_prompt_embeds",
        ours.pooled.as_ref().unwrap(),
        pooled,
    );
    let plain = c
        .encode(&c.tokenize(&r.prompt, "prompt").unwrap(), 1)
        .unwrap();
    check(
        "prompt_embeds_without",
        &plain.context,
        &r.prompt_embeds_without,
    );
    let pooled_without = r.pooled_prompt_embeds_without.as_ref().unwrap();
    check(
        "pooled_prompt_embeds_without",
        plain.pooled.as_ref().unwrap(),
        pooled_without,
    );
    let shift = moved(&r.prompt_embeds, &r.prompt_embeds_without);
    let shift_pooled = moved(pooled, pooled_without);
    eprintln!(
        "SDXL: max |ours - diffusers| {diff:.2e} (pooled {diff_pooled:.2e}); the embedding \
         moves them by {shift:.3} (pooled {shift_pooled:.3})"
    );
    assert!(
        shift > 1000.0 * diff.max(1e-6) && shift > 0.1,
        "{shift} vs {diff}"
    );
    assert!(shift_pooled > 1000.0 * diff_pooled.max(1e-6) && shift_pooled > 0.1);
}
