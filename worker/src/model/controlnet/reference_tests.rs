//! One ControlNet call and the UNet call it steers, against diffusers, on the
//! tiny SD 1.x- and SDXL-shaped models. `tests/reference/controlnet_reference.json`
//! was computed by diffusers' `ControlNetModel` and `UNet2DConditionModel`
//! on the models our generator writes (model seed 11, ControlNet seed 12;
//! how to recompute it: `controlnet_reference.py` beside it). Sampled every
//! `stride` values, with the mean and mean magnitude of the whole tensor.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;
use std::collections::HashMap;

use super::{generate::write_controlnet, load, ControlNetConfig};
use crate::model::config::{read_json, UNetConfig};
use crate::model::generate::{write_model, WeightInit};
use crate::model::reference::{check, flat, Sampled};
use crate::model::shapes::ModelShape;
use crate::model::unet::{TextTime, Unet};

#[derive(Deserialize)]
struct Scaled {
    conditioning_scale: f64,
    down: Vec<Sampled>,
    mid: Sampled,
    unet_output: Sampled,
}

#[derive(Deserialize)]
struct Case {
    /// batch, latent height, latent width.
    shape: [usize; 3],
    unet_output_without: Sampled,
    scales: Vec<Scaled>,
}

#[derive(Deserialize)]
struct Reference {
    timestep: f64,
    time_ids: Vec<f32>,
    models: HashMap<String, HashMap<String, Case>>,
}

/// `offset + scale * f(freq * i)` for i in 0..n, as the script builds its inputs.
fn wave(shape: &[usize], offset: f64, scale: f64, freq: f64, f: fn(f64) -> f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| (offset + scale * f(freq * i as f64)) as f32)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

#[test]
fn controlnet_residuals_and_the_steered_unet_match_diffusers() {
    let reference: Reference = serde_json::from_str(include_str!(
        "../../../tests/reference/controlnet_reference.json"
    ))
    .unwrap();
    for shape in [ModelShape::tiny(), ModelShape::tiny_sdxl()] {
        let cases = &reference.models[shape.name];
        assert_eq!(cases.len(), 2, "{}", shape.name);
        let model_dir = tempfile::tempdir().unwrap();
        let cn_dir = tempfile::tempdir().unwrap();
        write_model(model_dir.path(), &shape, WeightInit::Seeded(11)).unwrap();
        let cn_cfg = ControlNetConfig::for_shape(&shape).unwrap();
        write_controlnet(cn_dir.path(), &cn_cfg, WeightInit::Seeded(12)).unwrap();

        let unet_cfg: UNetConfig = read_json(&model_dir.path().join("unet/config.json")).unwrap();
        let weights = model_dir
            .path()
            .join("unet/diffusion_pytorch_model.safetensors");
        // SAFETY: the file is ours and not modified while mapped.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &Device::Cpu).unwrap()
        };
        let tt_cfg = unet_cfg.text_time().unwrap();
        let unet = Unet::new(vb, 4, 4, false, &unet_cfg.to_candle().unwrap(), tt_cfg).unwrap();
        let (cfg, net) = load(cn_dir.path(), DType::F32, &Device::Cpu, false).unwrap();
        cfg.check_compatible(&unet_cfg).unwrap();
        let p = cfg.pixels_per_latent();

        for (label, case) in cases {
            let [batch, h, w] = case.shape;
            let what = format!("{} {label}", shape.name);
            let sample = wave(&[batch, 4, h, w], 0.0, 1.0, 0.1, f64::sin);
            let context = wave(
                &[batch, 77, cfg.cross_attention_dim],
                0.0,
                2.0,
                0.37,
                f64::cos,
            );
            let control = wave(&[batch, 3, p * h, p * w], 0.5, 0.5, 0.05, f64::sin);
            let tt = tt_cfg.map(|t| TextTime {
                text_embeds: wave(
                    &[batch, t.input_dim - 6 * t.time_embed_dim],
                    0.0,
                    1.0,
                    0.21,
                    f64::cos,
                ),
                time_ids: Tensor::new(reference.time_ids.as_slice(), &Device::Cpu)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap()
                    .repeat((batch, 1))
                    .unwrap(),
            });
            let t = reference.timestep;
            let without = unet
                .forward(&sample, t, &context, tt.as_ref(), None)
                .unwrap();
            check(
                &format!("{what} unet without"),
                &without,
                &case.unet_output_without,
            );
            assert_eq!(case.scales.len(), 2);
            for scaled in &case.scales {
                let s = scaled.conditioning_scale;
                let r = net
                    .forward(&sample, t, &context, tt.as_ref(), &control, s)
                    .unwrap();
                assert_eq!(r.down.len(), scaled.down.len(), "{what}: residual count");
                let mut worst = 0f64;
                for (i, (ours, theirs)) in r.down.iter().zip(&scaled.down).enumerate() {
                    assert!(
                        theirs.abs_mean > 1e-2,
                        "{what}: a trivial down residual {i}"
                    );
                    worst = worst.max(check(&format!("{what} x{s} down {i}"), ours, theirs));
                }
                assert!(scaled.mid.abs_mean > 1e-2, "{what}: a trivial mid residual");
                worst = worst.max(check(&format!("{what} x{s} mid"), &r.mid, &scaled.mid));
                let steered = unet
                    .forward(&sample, t, &context, tt.as_ref(), Some(&r))
                    .unwrap();
                let out = check(&format!("{what} x{s} unet"), &steered, &scaled.unet_output);
                // The residuals move the UNet's output far beyond the tolerance.
                let moved = flat(&steered)
                    .iter()
                    .zip(flat(&without))
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f64, f64::max);
                eprintln!(
                    "{what} x{s}: residuals max |ours - diffusers| {worst:.2e}, unet output {out:.2e}; residuals move the output by {moved:.3}"
                );
                assert!(
                    moved > 100.0 * 2e-4,
                    "{what} x{s}: residuals move the output by only {moved}"
                );
            }
        }
    }
}
