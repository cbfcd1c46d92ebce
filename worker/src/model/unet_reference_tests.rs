//! One UNet call of the tiny SD 1.x- and 2.x-shaped models against diffusers,
//! value for value. `tests/reference/sd15_unet_reference.json` was computed by
//! diffusers on the models our generator writes with seed 11 (how to recompute
//! it: `sd15_unet_reference.py` beside it, which also records how far the
//! tanh GELU moves each output: `tanh_gap`).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use super::config::{read_json, UNetConfig};
use super::generate::{write_model, WeightInit};
use super::shapes::ModelShape;
use super::test_util::{wave, worst_diff};
use super::unet::Unet;

/// Largest difference allowed from diffusers' f32 output. The tanh GELU
/// moves these outputs by more than 5x this (checked below), so a UNet with
/// the tanh GELU fails the test.
const TOLERANCE: f64 = 2e-5;

#[derive(Deserialize)]
struct Case {
    name: String,
    shape: Vec<usize>,
    values: Vec<f64>,
    tanh_gap: f64,
}

#[derive(Deserialize)]
struct Reference {
    timestep: f64,
    models: std::collections::HashMap<String, Vec<Case>>,
}

/// One call of `unet` on the reference scripts' inputs for an output of
/// `shape` (`[batch, 4, h, w]`): latents `sin(0.1 i)`, context
/// `2 cos(0.37 i)` at the config's cross-attention width.
pub(super) fn reference_call(
    unet: &Unet,
    cfg: &UNetConfig,
    shape: &[usize],
    timestep: f64,
) -> Tensor {
    let dim = match cfg.cross_attention_dim {
        super::config::PerBlock::All(d) => d,
        super::config::PerBlock::Each(ref v) => v[0],
    };
    let (batch, h, w) = (shape[0], shape[2], shape[3]);
    let latents = wave(&[batch, 4, h, w], 1.0, 0.1, f64::sin);
    let context = wave(&[batch, 77, dim], 2.0, 0.37, f64::cos);
    let out = unet
        .forward(&latents, timestep, &context, None, None)
        .unwrap();
    assert_eq!(out.dims(), shape);
    out
}

#[test]
fn one_unet_call_matches_diffusers_closer_than_the_tanh_gelu_would() {
    let reference: Reference = serde_json::from_str(include_str!(
        "../../tests/reference/sd15_unet_reference.json"
    ))
    .unwrap();
    for shape in [ModelShape::tiny(), ModelShape::tiny_sd2()] {
        let cases = &reference.models[shape.name];
        let dir = tempfile::tempdir().unwrap();
        write_model(dir.path(), &shape, WeightInit::Seeded(11)).unwrap();
        let cfg: UNetConfig = read_json(&dir.path().join("unet/config.json")).unwrap();
        let weights = dir.path().join("unet/diffusion_pytorch_model.safetensors");
        // SAFETY: the file is ours and not modified while mapped.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &Device::Cpu).unwrap()
        };
        let unet = Unet::new(vb, 4, 4, false, &cfg.to_candle().unwrap(), None).unwrap();
        assert_eq!(cases.len(), 2, "{}", shape.name);
        for case in cases {
            let out = reference_call(&unet, &cfg, &case.shape, reference.timestep);
            let worst = worst_diff(&out, &case.values);
            let what = format!("{} {}", shape.name, case.name);
            eprintln!(
                "{what}: max |ours - diffusers| {worst:.3e}, tanh gap {:.3e}",
                case.tanh_gap
            );
            assert!(
                case.tanh_gap > 5.0 * TOLERANCE,
                "{what}: the tanh GELU moves the output by only {:.2e}",
                case.tanh_gap
            );
            assert!(worst <= TOLERANCE, "{what}: {worst:.3e} from diffusers");
        }
    }
}
