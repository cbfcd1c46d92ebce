//! The 8-bit weight path (`--dtype q8`) on the tiny models: one UNet call
//! against diffusers' UNet with the same quantisation written out in PyTorch
//! (`tests/reference/q8_unet_reference.py`, which says how to recompute
//! `q8_unet_reference.json`), which layers are int8, the memory the loaded
//! model reports, and LoRA merging into int8 weights.

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use std::sync::Arc;

use super::config::{read_json, UNetConfig};
use super::generate::{write_model, WeightInit};
use super::quant::{quantizing, WeightQuant};
use super::shapes::ModelShape;
use super::test_util::worst_diff;
use super::unet::Unet;
use super::unet_reference_tests::reference_call;
use super::weights::{recording_var_builder, Network, WeightTable};
use super::{LoadOptions, LoadedModel, ModelSpec};

/// Largest difference allowed from the PyTorch evaluation. The f32 parts
/// between the int8 layers (GroupNorm, attention, GELU) differ from
/// PyTorch's by ~1e-5 (`unet_reference_tests`), which can move an activation
/// across a rounding boundary of the next layer's quantisation: one step of
/// one value (none do here: the largest difference is 3.6e-7). Quantising
/// moves these outputs by 0.1 or more (`f32_gap`).
const TOLERANCE: f64 = 1e-5;

#[derive(Deserialize)]
struct Case {
    name: String,
    shape: Vec<usize>,
    values: Vec<f64>,
    f32_gap: f64,
}

#[derive(Deserialize)]
struct ModelCases {
    quantized_layers: usize,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Reference {
    timestep: f64,
    models: std::collections::HashMap<String, ModelCases>,
}

/// The int8 UNet of a written model and its weight table.
fn q8_unet(dir: &std::path::Path) -> (Unet, UNetConfig, Arc<WeightTable>) {
    let cfg: UNetConfig = read_json(&dir.join("unet/config.json")).unwrap();
    let weights = dir.join("unet/diffusion_pytorch_model.safetensors");
    // SAFETY: the file is ours and not modified while mapped.
    let (vb, table) =
        unsafe { recording_var_builder(&[weights], DType::F32, &Device::Cpu) }.unwrap();
    let unet = quantizing(&table, || {
        Unet::new(vb, 4, 4, false, &cfg.to_candle().unwrap(), None)
    })
    .unwrap();
    (unet, cfg, table)
}

#[test]
fn one_int8_unet_call_matches_the_same_quantisation_in_pytorch() {
    let reference: Reference =
        serde_json::from_str(include_str!("../../tests/reference/q8_unet_reference.json")).unwrap();
    for shape in [ModelShape::tiny(), ModelShape::tiny_sd2()] {
        let expected = &reference.models[shape.name];
        let dir = tempfile::tempdir().unwrap();
        write_model(dir.path(), &shape, WeightInit::Seeded(11)).unwrap();
        let (unet, cfg, table) = q8_unet(dir.path());
        // The same layers as the script: every linear layer and convolution
        // but the time embedding's.
        let int8: Vec<String> = table
            .names()
            .into_iter()
            .filter(|n| table.is_quantized(n))
            .collect();
        assert_eq!(int8.len(), expected.quantized_layers, "{}", shape.name);
        for name in table.names() {
            let rank = table.info(&name).unwrap().0.len();
            let embedding =
                name.starts_with("time_embedding.") || name.starts_with("add_embedding.");
            let layer = name.ends_with(".weight") && matches!(rank, 2 | 4);
            assert_eq!(table.is_quantized(&name), layer && !embedding, "{name}");
        }
        for case in &expected.cases {
            let out = reference_call(&unet, &cfg, &case.shape, reference.timestep);
            let worst = worst_diff(&out, &case.values);
            let what = format!("{} {}", shape.name, case.name);
            eprintln!(
                "{what}: max |ours - PyTorch q8| {worst:.3e}, q8 vs f32 {:.3e}",
                case.f32_gap
            );
            assert!(
                case.f32_gap > 20.0 * TOLERANCE,
                "{what}: quantising moves the output by only {:.2e}",
                case.f32_gap
            );
            assert!(worst <= TOLERANCE, "{what}: {worst:.3e} from PyTorch");
        }
    }
}

fn load(dir: &std::path::Path, quant: WeightQuant) -> LoadedModel {
    LoadedModel::load(
        &ModelSpec::Local(dir.to_path_buf()),
        &Device::Cpu,
        LoadOptions {
            dtype: DType::F32,
            skip_t5: true,
            quant,
        },
    )
    .unwrap()
}

/// Every weight of the UNet's table as f32 bits (int8 weights dequantised).
fn unet_bits(model: &LoadedModel) -> Vec<(String, Vec<u32>)> {
    let table = model.weights(Network::Unet).unwrap();
    table
        .names()
        .into_iter()
        .map(|n| {
            let v: Vec<f32> = table
                .get(&n)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            (n, v.iter().map(|x| x.to_bits()).collect())
        })
        .collect()
}

#[test]
fn an_int8_model_reports_its_memory_and_takes_loras() {
    use crate::lora::generate::{write_lora, LoraGenOptions};
    use crate::lora::{LoraFile, LoraFormat, LoraUse};

    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), &ModelShape::tiny(), WeightInit::Seeded(11)).unwrap();
    let dense = load(dir.path(), WeightQuant::Dense);
    let q8 = load(dir.path(), WeightQuant::Q8);

    // The UNet's weights as held: int8 layers are about a quarter of f32.
    let bytes = |m: &LoadedModel| m.weights(Network::Unet).unwrap().bytes();
    let ratio = bytes(&q8) as f64 / bytes(&dense) as f64;
    assert!(
        (0.2..0.4).contains(&ratio),
        "int8 UNet / f32 UNet = {ratio}"
    );
    let (dm, qm) = (dense.meta().memory, q8.meta().memory);
    assert_eq!(
        dm.weights_bytes - qm.weights_bytes,
        bytes(&dense) - bytes(&q8)
    );
    assert_eq!(qm.total_bytes, qm.weights_bytes + qm.activations_bytes);
    assert!(q8.lora_merge_bytes() < dense.lora_merge_bytes());

    // A LoRA (LoCon: the 3x3 convolutions too) merges into the int8 weights:
    // each merged weight is the quantised sum, within half a step of the
    // dense model's merged weight, and removing it restores every bit.
    let path = dir.path().join("locon.safetensors");
    let options = LoraGenOptions {
        convs: true,
        alpha: Some(2.0),
        ..Default::default()
    };
    let layers = q8.unet_config().map(|c| c.layers_per_block);
    write_lora(
        &path,
        LoraFormat::Kohya,
        q8.weight_tables(),
        layers,
        4,
        1,
        &options,
    )
    .unwrap();
    let file = Arc::new(LoraFile::read(&path).unwrap());
    let set = [LoraUse {
        file,
        unet_weight: 0.8,
        text_encoder_weight: 0.8,
    }];
    let base = unet_bits(&q8);
    // At weight 0 for the UNet its int8 weights are left as they are.
    let text_only = [LoraUse {
        unet_weight: 0.0,
        ..set[0].clone()
    }];
    q8.apply_loras(&text_only).unwrap();
    assert!(
        unet_bits(&q8) == base,
        "a UNet weight of 0 moved the int8 weights"
    );
    let (qt, dt) = (
        q8.weights(Network::Unet).unwrap(),
        dense.weights(Network::Unet).unwrap(),
    );
    let int8: Vec<String> = qt
        .names()
        .into_iter()
        .filter(|n| qt.is_quantized(n))
        .collect();
    // Half a step of each row's int8 grid, per row: `max |w_row| / 254`.
    let half_step = |t: &Tensor| {
        let rows = t.dim(0).unwrap();
        (t.reshape((rows, ()))
            .unwrap()
            .abs()
            .unwrap()
            .max_keepdim(1)
            .unwrap()
            / 254.0)
            .unwrap()
    };
    let base_steps: Vec<Tensor> = int8
        .iter()
        .map(|n| half_step(&dt.get(n).unwrap()))
        .collect();
    let q8_report = q8.apply_loras(&set).unwrap();
    let dense_report = dense.apply_loras(&set).unwrap();
    assert_eq!(q8_report.touched_weights, dense_report.touched_weights);
    assert!(q8_report.backup_bytes < dense_report.backup_bytes / 2);
    let mut checked = 0;
    for (name, base_step) in int8.iter().zip(&base_steps) {
        let (a, b) = (qt.get(name).unwrap(), dt.get(name).unwrap());
        let rows = a.dim(0).unwrap();
        let bound = (half_step(&a) + base_step).unwrap();
        let (a, b) = (
            a.reshape((rows, ())).unwrap(),
            b.reshape((rows, ())).unwrap(),
        );
        // The base weight's quantisation error plus the merged sum's.
        let err = (a - b).unwrap().abs().unwrap().max_keepdim(1).unwrap();
        let excess = (err - bound)
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            excess <= 1e-6,
            "{name}: merged weight off by {excess} more than the bound"
        );
        checked += 1;
    }
    assert!(checked >= q8_report.touched_weights, "{checked}");
    assert!(unet_bits(&q8) != base, "the LoRA changed nothing");
    q8.remove_loras().unwrap();
    assert!(
        unet_bits(&q8) == base,
        "removing did not restore the int8 weights"
    );
}
