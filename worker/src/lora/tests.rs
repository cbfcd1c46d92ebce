//! LoRA merging on the tiny generated models: every format matches every
//! module it was written for; weight 0 is no LoRA; removing restores the
//! base weights bit for bit; two LoRAs compose additively; f16 models merge
//! in f32 and round once.

use candle_core::{DType, Device, Tensor};
use std::path::Path;
use std::sync::Arc;

use super::generate::{write_lora, LoraGenOptions};
use super::{LoraFile, LoraFormat, LoraUse};
use crate::model::generate::{write_model, WeightInit};
use crate::model::shapes::ModelShape;
use crate::model::weights::Network;
use crate::model::{LoadOptions, LoadedModel, ModelSpec};

pub(crate) fn load(dir: &Path, dtype: DType) -> LoadedModel {
    LoadedModel::load(
        &ModelSpec::Local(dir.to_path_buf()),
        &Device::Cpu,
        LoadOptions {
            dtype,
            skip_t5: true,
            quant: Default::default(),
        },
    )
    .unwrap()
}

pub(crate) fn lora(
    model: &LoadedModel,
    dir: &Path,
    format: LoraFormat,
    seed: u64,
    options: &LoraGenOptions,
) -> (Arc<LoraFile>, usize) {
    let path = dir.join(format!("{}-{seed}.safetensors", format.name()));
    let layers = model.unet_config().map(|c| c.layers_per_block);
    let n = write_lora(
        &path,
        format,
        model.weight_tables(),
        layers,
        4,
        seed,
        options,
    )
    .unwrap();
    (Arc::new(LoraFile::read(&path).unwrap()), n)
}

fn use_(file: &Arc<LoraFile>, w: f32) -> LoraUse {
    LoraUse {
        file: file.clone(),
        unet_weight: w,
        text_encoder_weight: w,
    }
}

/// Every recorded weight of the model, as raw bytes (f32 or f16 bits).
fn snapshot(model: &LoadedModel) -> Vec<(String, Vec<u32>)> {
    let mut out = vec![];
    for (net, table) in model.weight_tables() {
        for name in table.names() {
            let t = table.get(&name).unwrap();
            // f16 -> f32 is exact, so f32 bits tell f16 values apart too.
            let v: Vec<f32> = t
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let bits = v.iter().map(|v| v.to_bits()).collect();
            out.push((format!("{} {name}", net.name()), bits));
        }
    }
    out
}

fn model_dir(shape: ModelShape) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), &shape, WeightInit::Seeded(11)).unwrap();
    dir
}

#[test]
fn every_format_matches_every_module_it_was_written_for() {
    for shape in [ModelShape::tiny(), ModelShape::tiny_sdxl()] {
        let name = shape.name;
        let dir = model_dir(shape);
        let model = load(dir.path(), DType::F32);
        for (format, convs) in [
            (LoraFormat::Kohya, false),
            (LoraFormat::Kohya, true),
            (LoraFormat::Diffusers, false),
            (LoraFormat::Peft, false),
        ] {
            let options = LoraGenOptions {
                convs,
                tucker: convs,
                alpha: Some(2.0),
                ..Default::default()
            };
            let (file, modules) = lora(&model, dir.path(), format, 1, &options);
            assert_eq!(file.format, format);
            let report = model.apply_loras(&[use_(&file, 1.0)]).unwrap();
            let m = &report.loras[0];
            assert_eq!(m.unmatched, Vec::<String>::new(), "{name} {format:?}");
            assert_eq!(m.matched_modules, modules, "{name} {format:?}");
            assert_eq!(m.matched_tensors, file.tensor_count, "{name} {format:?}");
            assert_eq!(report.touched_weights, modules);
            // Both text encoders of SDXL are touched.
            let te = model
                .weight_tables()
                .iter()
                .filter(|(n, _)| matches!(n, Network::TextEncoder(_)))
                .count();
            assert_eq!(te, if name.contains("xl") { 2 } else { 1 });
        }
        model.remove_loras().unwrap();
    }
}

#[test]
fn weight_zero_restore_reuse_and_a_lora_matching_nothing() {
    let dir = model_dir(ModelShape::tiny());
    let model = load(dir.path(), DType::F32);
    let base = snapshot(&model);
    let opts = LoraGenOptions {
        convs: true,
        alpha: Some(3.0),
        ..Default::default()
    };
    let (a, _) = lora(&model, dir.path(), LoraFormat::Kohya, 1, &opts);
    model.apply_loras(&[use_(&a, 0.0)]).unwrap();
    assert!(snapshot(&model) == base, "weight 0 changed the weights");
    let first = model.apply_loras(&[use_(&a, 0.8)]).unwrap();
    assert!(!first.reused && first.backup_bytes > 0);
    assert!(snapshot(&model) != base);
    let again = model.apply_loras(&[use_(&a, 0.8)]).unwrap();
    assert!(again.reused);
    model.remove_loras().unwrap();
    assert!(
        snapshot(&model) == base,
        "removing did not restore the base"
    );

    // A LoRA for nothing of this model is refused, naming it.
    let mut t = std::collections::HashMap::new();
    let z = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
    t.insert("lora_unet_nowhere.lora_down.weight".to_string(), z.clone());
    t.insert("lora_unet_nowhere.lora_up.weight".to_string(), z);
    let none = Arc::new(LoraFile::from_tensors("nowhere", t).unwrap());
    let err = model.apply_loras(&[use_(&none, 1.0)]).unwrap_err();
    assert!(
        format!("{err}").contains("`nowhere` matches no layer"),
        "{err}"
    );
    assert!(snapshot(&model) == base);
}

#[test]
fn two_loras_compose_additively() {
    let dir = model_dir(ModelShape::tiny());
    let model = load(dir.path(), DType::F32);
    let opts = LoraGenOptions::default();
    let (a, _) = lora(&model, dir.path(), LoraFormat::Peft, 1, &opts);
    let (b, _) = lora(&model, dir.path(), LoraFormat::Kohya, 2, &opts);
    let unet = model.weights(Network::Unet).unwrap().clone();
    let name = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight";
    let base = unet.get(name).unwrap().copy().unwrap();
    let delta = |set: &[LoraUse]| {
        model.apply_loras(set).unwrap();
        (unet.get(name).unwrap() - &base).unwrap()
    };
    let da = delta(&[use_(&a, 0.7)]);
    let db = delta(&[use_(&b, -1.5)]);
    let both = delta(&[use_(&a, 0.7), use_(&b, -1.5)]);
    let gap = crate::model::test_util::max_diff(&both, &(da + &db).unwrap());
    let size = db
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(size > 1e-2, "the LoRA barely moves the weight: {size}");
    assert!(
        gap < 1e-6,
        "A + B differs from A and B merged together by {gap}"
    );
}

#[test]
fn an_f16_model_merges_in_f32_and_rounds_once() {
    let dir = model_dir(ModelShape::tiny());
    let model = load(dir.path(), DType::F16);
    let base = snapshot(&model);
    let (a, _) = lora(
        &model,
        dir.path(),
        LoraFormat::Diffusers,
        3,
        &LoraGenOptions::default(),
    );
    let unet = model.weights(Network::Unet).unwrap().clone();
    let name = "mid_block.attentions.0.transformer_blocks.0.ff.net.2.weight";
    let w0 = unet.get(name).unwrap().to_dtype(DType::F32).unwrap();
    model.apply_loras(&[use_(&a, 1.0)]).unwrap();
    let module = a
        .modules
        .iter()
        .find(|m| m.key == "unet.mid_block.attentions.0.transformer_blocks.0.ff.net.2")
        .unwrap();
    let delta = super::merge::lora_delta(module, w0.dims(), &Device::Cpu).unwrap();
    let want = (w0 + delta).unwrap().to_dtype(DType::F16).unwrap();
    let got = unet.get(name).unwrap();
    assert_eq!(got.dtype(), DType::F16);
    assert_eq!(
        crate::model::test_util::max_diff(
            &got.to_dtype(DType::F32).unwrap(),
            &want.to_dtype(DType::F32).unwrap()
        ),
        0.0
    );
    model.remove_loras().unwrap();
    assert!(snapshot(&model) == base);
}

/// A LoHa module is merged through `lycoris::delta` (base + weight x delta);
/// a DoRA module (`dora_scale`) is reported as unsupported, not merged.
#[test]
fn loha_modules_merge_and_dora_ones_are_reported_unsupported() {
    let dir = model_dir(ModelShape::tiny());
    let model = load(dir.path(), DType::F32);
    let unet = model.weights(Network::Unet).unwrap().clone();
    let name = "mid_block.attentions.0.proj_in.weight";
    // A copy: the table's tensor shares the storage the merge writes.
    let base = unet.get(name).unwrap().copy().unwrap();
    let dims = base.dims().to_vec();
    let (out, inner) = (dims[0], dims[1..].iter().product::<usize>());
    let wave = |shape: &[usize], seed: u32| {
        super::lycoris::wave_tensor(shape, seed, &Device::Cpu).unwrap()
    };
    let key = "lora_unet_mid_block_attentions_0_proj_in";
    let mut tensors = std::collections::HashMap::new();
    for (suffix, shape, seed) in [
        ("hada_w1_a", [out, 2], 1),
        ("hada_w1_b", [2, inner], 2),
        ("hada_w2_a", [out, 2], 3),
        ("hada_w2_b", [2, inner], 4),
    ] {
        tensors.insert(format!("{key}.{suffix}"), wave(&shape, seed));
    }
    let loha = Arc::new(LoraFile::from_tensors("loha", tensors.clone()).unwrap());
    let report = model.apply_loras(&[use_(&loha, 0.5)]).unwrap();
    assert_eq!(report.loras[0].matched_modules, 1, "{report:?}");
    assert!(report.loras[0].unsupported.is_empty());
    let mut module = super::lycoris::ModuleTensors::new();
    for (k, t) in &tensors {
        module.insert(k.rsplit('.').next().unwrap(), t.clone());
    }
    let delta = super::lycoris::delta(&module, &dims, 1.0).unwrap().unwrap();
    let want = (&base + (delta * 0.5).unwrap()).unwrap();
    let got = unet.get(name).unwrap();
    let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
    let diff = diff.to_scalar::<f32>().unwrap();
    let size = unet
        .get(name)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        diff <= 1e-6 * size.max(1.0),
        "merged weight off by {diff} (weights up to {size})"
    );
    model.remove_loras().unwrap();
    assert_eq!(
        crate::model::test_util::max_diff(&unet.get(name).unwrap(), &base),
        0.0
    );

    tensors.insert(format!("{key}.dora_scale"), wave(&[out, 1], 5));
    let dora = Arc::new(LoraFile::from_tensors("dora", tensors).unwrap());
    // Its one module is not merged, so the LoRA matches nothing: refused.
    let err = model.apply_loras(&[use_(&dora, 1.0)]).unwrap_err();
    assert!(format!("{err:#}").contains("1 unsupported"), "{err:#}");
    model.remove_loras().unwrap();
}

/// The SD 1.5 shape (random weights, f16): the bytes kept for a rank-32
/// LoRA on every attention / feed-forward linear of the UNet and every
/// attention / MLP linear of CLIP-L, and the time to apply and remove it.
/// Slow (writes a 2 GB model): `cargo test --lib sd15_lora_memory -- --ignored --nocapture`.
#[test]
#[ignore]
fn sd15_lora_memory_and_time() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), &ModelShape::sd15(), WeightInit::Fast).unwrap();
    let model = load(dir.path(), DType::F16);
    let path = dir.path().join("r32.safetensors");
    let layers = model.unet_config().map(|c| c.layers_per_block);
    let opts = LoraGenOptions::default();
    write_lora(
        &path,
        LoraFormat::Kohya,
        model.weight_tables(),
        layers,
        32,
        1,
        &opts,
    )
    .unwrap();
    let file = Arc::new(LoraFile::read(&path).unwrap());
    let report = model.apply_loras(&[use_(&file, 1.0)]).unwrap();
    eprintln!(
        "sd15 rank 32: {} weights touched, {} bytes kept",
        report.touched_weights, report.backup_bytes
    );
    let (apply, remove) = super::time_apply_remove(&model, &[use_(&file, 1.0)]).unwrap();
    eprintln!("apply {apply:?}, remove {remove:?}");
}
