use candle_core::{DType, Device, Tensor};

use super::generate::write_taesd;
use super::*;
use crate::model::generate::WeightInit;
use crate::model::test_util::max_diff;

fn cfg_from(json: &str) -> TaesdConfig {
    serde_json::from_str(json).unwrap()
}

fn err(cfg: &TaesdConfig) -> String {
    format!("{:#}", cfg.validate().unwrap_err())
}

#[test]
fn an_empty_config_is_the_published_shape_and_null_shift_reads_as_zero() {
    let cfg = cfg_from("{}");
    assert_eq!(cfg, TaesdConfig::default());
    cfg.validate().unwrap();
    assert_eq!(cfg.scale_factor(), 8);
    let cfg = cfg_from(
        r#"{"_class_name": "AutoencoderTiny", "latent_channels": 16, "shift_factor": null, "block_out_channels": [64, 64, 64, 64]}"#,
    );
    assert_eq!(cfg.shift_factor, 0.0);
    assert_eq!(cfg, TaesdConfig::published(16));
}

#[test]
fn configs_diffusers_cannot_run_are_refused_by_field() {
    let base = TaesdConfig::tiny(4);
    base.validate().unwrap();
    let with = |f: &dyn Fn(&mut TaesdConfig)| {
        let mut c = base.clone();
        f(&mut c);
        err(&c)
    };
    assert!(with(&|c| c.class_name = Some("AutoencoderKL".into())).contains("AutoencoderKL"));
    assert!(with(&|c| c.decoder_block_out_channels = vec![8, 8, 16, 8]).contains("all be equal"));
    assert!(with(&|c| c.num_encoder_blocks = vec![1, 3, 3]).contains("num_encoder_blocks"));
    assert!(with(&|c| c.upsample_fn = "bilinear".into()).contains("upsample_fn"));
    assert!(with(&|c| c.act_fn = "mish".into()).contains("act_fn `mish`"));
    assert!(with(&|c| c.scaling_factor = 0.0).contains("scaling_factor"));
    assert!(with(&|c| c.upsampling_scaling_factor = 4).contains("upsamples 64x"));
    assert!(with(&|c| c.latent_channels = 0).contains("latent_channels"));
}

#[test]
fn the_fp16_variant_is_preferred_only_in_half_precision() {
    let dir = tempfile::tempdir().unwrap();
    let err = format!("{:#}", weights_file(dir.path(), false).unwrap_err());
    assert!(
        err.contains("no diffusion_pytorch_model.safetensors"),
        "{err}"
    );
    std::fs::write(dir.path().join(FP16_WEIGHTS_FILE), b"").unwrap();
    assert!(weights_file(dir.path(), false)
        .unwrap()
        .ends_with(FP16_WEIGHTS_FILE));
    std::fs::write(dir.path().join(WEIGHTS_FILE), b"").unwrap();
    assert!(weights_file(dir.path(), false)
        .unwrap()
        .ends_with(WEIGHTS_FILE));
    assert!(weights_file(dir.path(), true)
        .unwrap()
        .ends_with(FP16_WEIGHTS_FILE));
}

#[test]
fn the_generator_is_deterministic_per_seed() {
    let read = |seed| {
        let dir = tempfile::tempdir().unwrap();
        generate_tiny(dir.path(), 4, seed).unwrap();
        std::fs::read(dir.path().join(WEIGHTS_FILE)).unwrap()
    };
    assert_eq!(read(3), read(3));
    assert_ne!(read(3), read(4));
}

#[test]
fn tiny_taesd_round_trips_shapes_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    generate_tiny(dir.path(), 16, 1).unwrap();
    let taesd = Taesd::load(dir.path(), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(taesd.latent_channels(), 16);
    assert_eq!(taesd.scale_factor(), 8);
    let cfg = TaesdConfig::tiny(16);
    assert_eq!(taesd.parameter_count(), parameter_count(&cfg));
    assert_eq!(taesd.weight_bytes(), 4 * parameter_count(&cfg));
    let latents = Tensor::zeros((2, 16, 3, 5), DType::F32, &Device::Cpu).unwrap();
    let image = taesd.decode(&latents).unwrap();
    assert_eq!(image.dims(), [2, 3, 24, 40]);
    assert_eq!(taesd.encode(&image).unwrap().dims(), [2, 16, 3, 5]);

    let bad = Tensor::zeros((1, 4, 3, 5), DType::F32, &Device::Cpu).unwrap();
    let e = format!("{:#}", taesd.decode(&bad).unwrap_err());
    assert!(e.contains("4 channels") && e.contains("16"), "{e}");
    let rank3 = Tensor::zeros((16, 3, 5), DType::F32, &Device::Cpu).unwrap();
    assert!(taesd.decode(&rank3).is_err());
    let gray = Tensor::zeros((1, 1, 8, 8), DType::F32, &Device::Cpu).unwrap();
    let e = format!("{:#}", taesd.encode(&gray).unwrap_err());
    assert!(e.contains("1 channels"), "{e}");
    let empty = Tensor::zeros((1, 3, 0, 8), DType::F32, &Device::Cpu).unwrap();
    assert!(taesd.encode(&empty).is_err());
}

#[test]
fn half_precision_decodes_like_f32() {
    let dir = tempfile::tempdir().unwrap();
    generate_tiny(dir.path(), 4, 2).unwrap();
    let latents = Tensor::randn(0f32, 1.0, (1, 4, 6, 6), &Device::Cpu).unwrap();
    let full = Taesd::load(dir.path(), &Device::Cpu, DType::F32).unwrap();
    let half = Taesd::load(dir.path(), &Device::Cpu, DType::F16).unwrap();
    assert_eq!(half.dtype(), DType::F16);
    assert_eq!(half.weight_bytes(), full.weight_bytes() / 2);
    let a = full.decode(&latents).unwrap();
    let b = half.decode(&latents).unwrap();
    assert_eq!(b.dtype(), DType::F16);
    let d = max_diff(&a, &b.to_dtype(DType::F32).unwrap());
    assert!(d < 2e-2, "f16 decode {d} from f32");
}

/// The published shape with random weights: a 64x64 image decodes from 8x8
/// latents and encodes back (the weights file in diffusers' layout, loaded
/// as a downloaded TAESD is).
#[test]
fn the_published_shape_loads_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TaesdConfig::published(4);
    write_taesd(dir.path(), &cfg, WeightInit::Fast).unwrap();
    let taesd = Taesd::load(dir.path(), &Device::Cpu, DType::F32).unwrap();
    // 2.45 M parameters (diffusers' count: the reference test).
    assert_eq!(taesd.parameter_count(), parameter_count(&cfg));
    let latents = Tensor::randn(0f32, 1.0, (1, 4, 8, 8), &Device::Cpu).unwrap();
    let image = taesd.decode(&latents).unwrap();
    assert_eq!(image.dims(), [1, 3, 64, 64]);
    assert_eq!(taesd.encode(&image).unwrap().dims(), [1, 4, 8, 8]);
}

#[test]
fn decode_memory_is_thirteen_full_resolution_maps_of_the_last_stage() {
    let full = 13 * 64 * 512 * 512 * 2;
    assert_eq!(activation_bytes(512, 512, DType::F16), full);
    assert_eq!(activation_bytes(1024, 1024, DType::F32), 8 * full);
    let tiny = TaesdConfig::tiny(4);
    assert_eq!(
        decode_activation_bytes(&tiny, 64, 48, DType::F32),
        13 * 8 * 64 * 48 * 4
    );
}
