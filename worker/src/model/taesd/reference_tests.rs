//! TAESD against diffusers' `AutoencoderTiny`, on the tiny 4- and
//! 16-channel TAESDs our generator writes (seed 21), and the published shape's
//! weight names. `tests/reference/taesd_reference.json` was computed by
//! diffusers (how to recompute it: `taesd_reference.py` beside it): decode
//! and encode in the pipelines' latent convention, the 16-channel TAESD also
//! with SD 3's latent scale and shift in its config. Sampled every `stride`
//! values, with the mean and mean magnitude of the whole tensor.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

use super::{generate_tiny, parameter_count, Taesd, TaesdConfig};
use crate::model::reference::{check, Sampled};

/// Largest difference allowed from diffusers' f32 values.
const TOLERANCE: f64 = 1e-4;

#[derive(Deserialize)]
struct Model {
    latent_channels: usize,
    scaling_factor: f64,
    shift_factor: f64,
    decode: Vec<Sampled>,
    encode: Vec<Sampled>,
}

#[derive(Deserialize)]
struct Published {
    keys: BTreeMap<String, Vec<usize>>,
    parameters: u64,
}

#[derive(Deserialize)]
struct Reference {
    seed: u64,
    models: HashMap<String, Model>,
    published: HashMap<String, Published>,
}

fn reference() -> Reference {
    serde_json::from_str(include_str!(
        "../../../tests/reference/taesd_reference.json"
    ))
    .unwrap()
}

/// `scale * sin(freq * i)` for i in 0..n, as the script builds its inputs.
fn wave(shape: &[usize], scale: f64, freq: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| (scale * (freq * i as f64).sin()) as f32)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

#[test]
fn taesd_decode_and_encode_match_diffusers() {
    let reference = reference();
    assert_eq!(reference.models.len(), 3);
    for (name, model) in &reference.models {
        let dir = tempfile::tempdir().unwrap();
        generate_tiny(dir.path(), model.latent_channels, reference.seed).unwrap();
        if name.ends_with("-scaled") {
            // The script's config overrides, written into the folder.
            let mut cfg: TaesdConfig =
                crate::model::config::read_json(&dir.path().join("config.json")).unwrap();
            cfg.scaling_factor = model.scaling_factor;
            cfg.shift_factor = model.shift_factor;
            let json = serde_json::to_string(&cfg).unwrap();
            std::fs::write(dir.path().join("config.json"), json).unwrap();
        }
        let taesd = Taesd::load(dir.path(), &Device::Cpu, DType::F32).unwrap();
        assert_eq!(taesd.latent_channels(), model.latent_channels);
        assert_eq!(taesd.config().scaling_factor, model.scaling_factor);
        assert_eq!(taesd.config().shift_factor, model.shift_factor);
        let mut worst = 0f64;
        for want in &model.decode {
            let (b, h, w) = (want.shape[0], want.shape[2] / 8, want.shape[3] / 8);
            let latents = wave(&[b, model.latent_channels, h, w], 3.0, 0.1);
            let image = taesd.decode(&latents).unwrap();
            assert!(want.abs_mean > 0.05, "{name}: a trivial decoded image");
            let what = format!("{name} decode {b}x{h}x{w}");
            let d = check(&what, &image, want);
            eprintln!("{what}: max |ours - diffusers| {d:.2e}");
            worst = worst.max(d);
        }
        for (want, (b, h, w)) in model.encode.iter().zip([(1, 64, 64), (2, 36, 52)]) {
            let image = wave(&[b, 3, h, w], 0.9, 0.05);
            let latents = taesd.encode(&image).unwrap();
            assert!(want.abs_mean > 0.05, "{name}: trivial latents");
            let what = format!("{name} encode {b}x{h}x{w}");
            let d = check(&what, &latents, want);
            eprintln!("{what}: max |ours - diffusers| {d:.2e}");
            worst = worst.max(d);
        }
        assert!(worst <= TOLERANCE, "{name}: {worst:.3e} from diffusers");
    }
}

/// The published TAESD shapes (diffusers' `AutoencoderTiny()` defaults, 4 and
/// 16 latent channels): the loader asks for exactly the names and shapes
/// diffusers' state dict holds, so the published weights load.
#[test]
fn published_shapes_ask_for_diffusers_weight_names() {
    let reference = reference();
    for (channels, published) in &reference.published {
        let cfg = TaesdConfig::published(channels.parse().unwrap());
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        Taesd::new(vb, &cfg).unwrap();
        let ours: BTreeMap<String, Vec<usize>> = varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.dims().to_vec()))
            .collect();
        assert_eq!(ours, published.keys, "{channels} channels");
        assert_eq!(parameter_count(&cfg), published.parameters);
    }
}
