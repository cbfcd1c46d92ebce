//! The upscalers against spandrel 0.4.2.
//!
//! `tests/reference/upscaler_reference.json` was computed by
//! `tests/reference/upscaler_reference.py` on the tiny models [`generate`]
//! writes with seed 11 (one per kind), and on `upscaler_reference.pth`, a
//! small SRVGGNetCompact that `torch.save` itself wrote (f16, nested under
//! `params_ema`), read here through Candle's pickle reader. For each model
//! the detection (architecture, scale, shapes) and, on the same input, the
//! network alone and spandrel's descriptor call (pad, clamp, crop) are
//! compared.

use super::generate::{generate, KINDS};
use super::{Upscaler, UpscalerArch};
use candle_core::{Device, Tensor};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

const SEED: u64 = 11;

#[derive(Deserialize)]
struct Summary {
    shape: Vec<usize>,
    max_abs: f64,
    stride: usize,
    values: Vec<f64>,
}

#[derive(Deserialize)]
struct Case {
    arch: String,
    scale: usize,
    input_channels: usize,
    output_channels: usize,
    hyperparameters: HashMap<String, serde_json::Value>,
    raw: Summary,
    call: Summary,
}

#[derive(Deserialize)]
struct Reference {
    input: [usize; 4],
    models: HashMap<String, Case>,
    pth: Case,
}

fn reference() -> Reference {
    serde_json::from_str(include_str!(
        "../../tests/reference/upscaler_reference.json"
    ))
    .unwrap()
}

/// x[i] = 0.5 + 0.5 sin(0.1 i) over the flat index, as the script.
fn wave(dims: [usize; 4]) -> Tensor {
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| (0.5 + 0.5 * (0.1 * i as f64).sin()) as f32)
        .collect();
    Tensor::from_vec(v, dims.to_vec(), &Device::Cpu).unwrap()
}

/// Largest |ours - reference| over the sampled values, and |max_abs| difference.
fn compare(ours: &Tensor, r: &Summary) -> (f64, f64) {
    assert_eq!(ours.dims(), r.shape.as_slice());
    let flat: Vec<f32> = ours.flatten_all().unwrap().to_vec1().unwrap();
    let d = r
        .values
        .iter()
        .enumerate()
        .map(|(i, v)| (flat[i * r.stride] as f64 - v).abs())
        .fold(0f64, f64::max);
    let max_abs = flat.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
    (d, (max_abs - r.max_abs).abs())
}

/// Checks detection and both outputs; returns the worst difference.
fn check(name: &str, up: &Upscaler, case: &Case, x: &Tensor) -> f64 {
    let expected_arch = match case.arch.as_str() {
        "ESRGAN" => "ESRGAN",
        "Compact" => "RealESRGAN-compact",
        other => panic!("{name}: reference detected {other}"),
    };
    assert_eq!(up.arch_name(), expected_arch, "{name}");
    assert_eq!(up.scale(), case.scale, "{name}: scale");
    assert_eq!(up.arch().input_channels(), case.input_channels, "{name}");
    assert_eq!(up.arch().output_channels(), case.output_channels, "{name}");
    let hp = |k: &str| {
        case.hyperparameters
            .get(k)
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
    };
    match up.arch() {
        UpscalerArch::Esrgan(c) => {
            assert_eq!(Some(c.nf), hp("num_filters"), "{name}: nf");
            assert_eq!(Some(c.nb), hp("num_blocks"), "{name}: nb");
            assert_eq!(Some(1 << c.upsamples), hp("scale"), "{name}: body scale");
            let shuffle = hp("shuffle_factor").unwrap_or(1);
            assert_eq!(c.shuffle, shuffle, "{name}: shuffle");
            let plus = case.hyperparameters.get("plus").and_then(|v| v.as_bool());
            assert_eq!(Some(c.plus), plus, "{name}: plus");
        }
        UpscalerArch::Compact(c) => {
            assert_eq!(Some(c.nf), hp("num_feat"), "{name}: nf");
            assert_eq!(Some(c.num_conv), hp("num_conv"), "{name}: num_conv");
            assert_eq!(Some(c.upscale), hp("upscale"), "{name}: upscale");
        }
    }
    let (d_raw, m_raw) = compare(&up.forward_raw(x).unwrap(), &case.raw);
    let (d_call, m_call) = compare(&up.forward(x).unwrap(), &case.call);
    // The clamp must not saturate everything, or the comparison says little.
    let called: Vec<f32> = up
        .forward(x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let inside = called.iter().filter(|v| **v > 0.0 && **v < 1.0).count();
    eprintln!(
        "{name}: network {d_raw:.2e} (max |.| {m_raw:.1e}), call {d_call:.2e} (max |.| {m_call:.1e}), {:.0}% unclamped",
        100.0 * inside as f64 / called.len() as f64
    );
    assert!(inside * 2 > called.len(), "{name}: mostly clamped");
    for (what, d) in [
        ("network", d_raw),
        ("network max", m_raw),
        ("call", d_call),
        ("call max", m_call),
    ] {
        assert!(d < 1e-4, "{name}: {what} differs by {d:e}");
    }
    d_raw.max(d_call)
}

#[test]
fn every_generated_layout_matches_spandrel() {
    let r = reference();
    let dir = tempfile::tempdir().unwrap();
    let x = wave(r.input);
    let mut worst = 0f64;
    for kind in KINDS {
        let path = dir.path().join(format!("{kind}.safetensors"));
        generate(kind, SEED, &path).unwrap();
        let up = Upscaler::load(&path, &Device::Cpu).unwrap();
        let case = r
            .models
            .get(kind)
            .unwrap_or_else(|| panic!("{kind} not in the reference"));
        worst = worst.max(check(kind, &up, case, &x));
    }
    eprintln!("worst over the layouts: {worst:.2e}");
}

#[test]
fn a_torch_saved_pth_reads_through_the_pickle_reader() {
    let r = reference();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/upscaler_reference.pth");
    let up = Upscaler::load(&path, &Device::Cpu).unwrap();
    check("pth (params_ema, f16)", &up, &r.pth, &wave(r.input));
    assert_eq!(
        up.parameter_count(),
        4 * 27 + 4 + 4 + 4 * 36 + 4 + 4 + 12 * 36 + 12
    );
    assert_eq!(up.weight_bytes(), 4 * up.parameter_count() as u64);
}

/// Writes every kind into `$SD_WORKER_UPSCALER_OUT` for the reference script.
#[test]
#[ignore]
fn write_tiny_upscalers_for_the_reference() {
    let dir = std::env::var("SD_WORKER_UPSCALER_OUT").expect("SD_WORKER_UPSCALER_OUT");
    for kind in KINDS {
        generate(
            kind,
            SEED,
            &Path::new(&dir).join(format!("{kind}.safetensors")),
        )
        .unwrap();
    }
}
