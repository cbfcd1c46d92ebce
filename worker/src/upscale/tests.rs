//! Detection errors, layouts, tiling and the memory estimate.

use super::generate::{generate, tiny_esrgan, write_esrgan};
use super::tile::activation_elements;
use super::{EsrganLayout, RrdbConfig, Upscaler, UpscalerArch};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn tiny(dir: &Path, kind: &str) -> (PathBuf, Upscaler) {
    let path = dir.join(format!("{kind}.safetensors"));
    generate(kind, 3, &path).unwrap();
    let up = Upscaler::load(&path, &Device::Cpu).unwrap();
    (path, up)
}

/// A smooth [1, 3, h, w] image in [0, 1].
fn image(h: usize, w: usize) -> Tensor {
    let v: Vec<f32> = (0..3 * h * w)
        .map(|i| {
            let (c, y, x) = (i / (h * w), (i / w) % h, i % w);
            (0.5 + 0.4 * ((0.3 * x as f64 + 0.2 * y as f64 + c as f64).sin())) as f32
        })
        .collect();
    Tensor::from_vec(v, (1, 3, h, w), &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn load_err(path: &Path) -> String {
    match Upscaler::load(path, &Device::Cpu) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => format!("{e:#}"),
    }
}

fn save(path: &Path, tensors: &[(&str, &[usize])]) {
    let map: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, s)| {
            (
                k.to_string(),
                Tensor::zeros(*s, DType::F32, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    candle_core::safetensors::save(&map, path).unwrap();
}

#[test]
fn detection_reads_every_shape_from_the_weights() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RrdbConfig {
        in_nc: 3,
        out_nc: 3,
        nf: 6,
        nb: 3,
        gc: 4,
        upsamples: 3,
        shuffle: 1,
        plus: false,
        layout: EsrganLayout::Old,
    };
    let path = dir.path().join("odd.safetensors");
    write_esrgan(&path, &cfg, 1).unwrap();
    let up = Upscaler::load(&path, &Device::Cpu).unwrap();
    assert_eq!(up.arch(), &UpscalerArch::Esrgan(cfg));
    assert_eq!(up.scale(), 8);
    let y = up.forward(&image(5, 3)).unwrap();
    assert_eq!(y.dims(), &[1, 3, 40, 24]);
    let (_, x2) = tiny(dir.path(), "esrgan-x2");
    match x2.arch() {
        UpscalerArch::Esrgan(c) => {
            assert_eq!((c.in_nc, c.shuffle, c.upsamples, c.gc), (12, 2, 2, 32))
        }
        a => panic!("{a:?}"),
    }
    assert_eq!(
        (x2.scale(), x2.arch_name(), x2.size_multiple()),
        (2, "ESRGAN", 4)
    );
    let (_, c) = tiny(dir.path(), "compact-x4");
    assert_eq!((c.scale(), c.arch_name()), (4, "RealESRGAN-compact"));
}

#[test]
fn the_bsrgan_layout_and_a_module_prefix_load_the_same_network() {
    let dir = tempfile::tempdir().unwrap();
    let new = dir.path().join("new.safetensors");
    let bsr = dir.path().join("bsrgan.safetensors");
    write_esrgan(&new, &tiny_esrgan(EsrganLayout::New, 2, 1, false), 9).unwrap();
    write_esrgan(&bsr, &tiny_esrgan(EsrganLayout::Bsrgan, 2, 1, false), 9).unwrap();
    let x = image(6, 5);
    let a = Upscaler::load(&new, &Device::Cpu).unwrap();
    let b = Upscaler::load(&bsr, &Device::Cpu).unwrap();
    assert!(matches!(b.arch(), UpscalerArch::Esrgan(c) if c.layout == EsrganLayout::Bsrgan));
    assert_eq!(
        max_diff(&a.forward_raw(&x).unwrap(), &b.forward_raw(&x).unwrap()),
        0.0
    );
    // DataParallel's `module.` prefix on every key is removed.
    let map = candle_core::safetensors::load(&new, &Device::Cpu).unwrap();
    let prefixed: HashMap<String, Tensor> = map
        .into_iter()
        .map(|(k, t)| (format!("module.{k}"), t))
        .collect();
    let p = dir.path().join("prefixed.safetensors");
    candle_core::safetensors::save(&prefixed, &p).unwrap();
    let c = Upscaler::load(&p, &Device::Cpu).unwrap();
    assert_eq!(
        max_diff(&a.forward_raw(&x).unwrap(), &c.forward_raw(&x).unwrap()),
        0.0
    );
}

#[test]
fn other_models_and_junk_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let unet = d.join("sd.safetensors");
    save(
        &unet,
        &[
            (
                "model.diffusion_model.input_blocks.0.0.weight",
                &[4, 4, 3, 3],
            ),
            ("model.diffusion_model.out.2.bias", &[4]),
        ],
    );
    assert!(load_err(&unet).contains("not an upscaler: keys look like a Stable Diffusion UNet"));
    let lora = d.join("lora.safetensors");
    save(
        &lora,
        &[("lora_unet_down_blocks_0.lora_up.weight", &[4, 2])],
    );
    assert!(load_err(&lora).contains("keys look like a LoRA"));
    let swin = d.join("swinir.safetensors");
    save(
        &swin,
        &[("layers.0.residual_group.blocks.0.norm1.weight", &[8])],
    );
    let e = load_err(&swin);
    assert!(
        e.contains("unsupported upscaler architecture") && e.contains("SwinIR"),
        "{e}"
    );
    assert!(e.contains("supported: ESRGAN"), "{e}");
    let empty = d.join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    assert!(load_err(&empty).contains("reading"));
    let none = d.join("none.safetensors");
    candle_core::safetensors::save(&HashMap::<String, Tensor>::new(), &none).unwrap();
    assert!(load_err(&none).contains("no tensors"));
    let ckpt = d.join("model.ckpt");
    std::fs::write(&ckpt, b"PK\x03\x04 not really a checkpoint").unwrap();
    assert!(load_err(&ckpt).contains("unsupported upscaler file type `.ckpt`"));
    let pth = d.join("junk.pth");
    std::fs::write(&pth, b"\x80\x02}q\x00junk").unwrap();
    assert!(load_err(&pth).contains("PyTorch zip file"));
    // A generated model with one tensor too many is an unsupported variant.
    let (path, _) = tiny(d, "compact-x2");
    let mut map = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    map.insert(
        "body.3.bias".into(),
        Tensor::zeros(8, DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&map, &path).unwrap();
    assert!(load_err(&path).contains("unexpected tensor `body.3.bias`"));
}

#[test]
fn bad_inputs_are_errors_and_small_ones_are_padded() {
    let dir = tempfile::tempdir().unwrap();
    let (_, up) = tiny(dir.path(), "esrgan-x2");
    let four = Tensor::zeros((1, 4, 8, 8), DType::F32, &Device::Cpu).unwrap();
    assert!(up
        .forward(&four)
        .unwrap_err()
        .to_string()
        .contains("4 channels"));
    assert!(up.forward(&image(4, 4).squeeze(0).unwrap()).is_err());
    // 1x1 and odd sides: padded to the size multiple, cropped back.
    assert_eq!(up.forward(&image(1, 1)).unwrap().dims(), &[1, 3, 2, 2]);
    assert_eq!(up.forward(&image(5, 7)).unwrap().dims(), &[1, 3, 10, 14]);
    let (_, x4) = tiny(dir.path(), "esrgan-x4");
    assert_eq!(x4.forward(&image(1, 1)).unwrap().dims(), &[1, 3, 4, 4]);
}

#[test]
fn tiles_equal_the_whole_image_and_report_progress() {
    let dir = tempfile::tempdir().unwrap();
    let x = image(37, 29);
    // (kind, tile, overlap covering the receptive field, a small overlap)
    for (kind, tile, wide, narrow) in [
        ("compact-x4", 12, 8, 4),
        ("esrgan-x2", 14, 40, 8),
        ("esrgan-old-x4", 16, 40, 8),
    ] {
        let (_, up) = tiny(dir.path(), kind);
        let whole = up.forward(&x).unwrap();
        let mut calls = Vec::new();
        let tiled = up
            .upscale_tiled(&x, tile, wide, &mut |d, t| {
                calls.push((d, t));
                Ok(())
            })
            .unwrap();
        let exact = max_diff(&whole, &tiled);
        let total = calls[0].1;
        assert!(total > 1 && calls.len() == total && calls.last() == Some(&(total, total)));
        let loose = up
            .upscale_tiled(&x, tile, narrow, &mut |_, _| Ok(()))
            .unwrap();
        let near = max_diff(&whole, &loose);
        eprintln!(
            "{kind}: {total} tiles; overlap {wide}: {exact:.1e}, overlap {narrow}: {near:.1e}"
        );
        assert!(exact < 1e-5, "{kind}: tiled differs by {exact}");
        if kind.starts_with("esrgan") {
            // The 0.2 residual scaling damps the far field: 8 px is plenty.
            assert!(
                near < 1.0 / 255.0,
                "{kind}: overlap {narrow} differs by {near}"
            );
        }
    }
}

#[test]
fn half_precision_weights_run_close_to_f32() {
    let dir = tempfile::tempdir().unwrap();
    let (path, up) = tiny(dir.path(), "compact-x2");
    let half = Upscaler::load_with_dtype(&path, &Device::Cpu, DType::F16).unwrap();
    assert_eq!(half.weight_bytes() * 2, up.weight_bytes());
    let x = image(9, 7);
    let d = max_diff(&up.forward(&x).unwrap(), &half.forward(&x).unwrap());
    assert!(d < 1e-2, "f16 differs by {d}");
}

#[test]
fn the_callback_cancels_and_tile_zero_is_untiled() {
    let dir = tempfile::tempdir().unwrap();
    let (_, up) = tiny(dir.path(), "compact-x2");
    let x = image(20, 20);
    let mut seen = 0;
    let err = up
        .upscale_tiled(&x, 8, 4, &mut |d, _| {
            seen = d;
            anyhow::bail!("cancelled")
        })
        .unwrap_err();
    assert_eq!((err.to_string().as_str(), seen), ("cancelled", 1));
    let mut calls = 0;
    let y = up
        .upscale_tiled(&x, 0, 4, &mut |d, t| {
            calls += 1;
            assert_eq!((d, t), (1, 1));
            Ok(())
        })
        .unwrap();
    assert_eq!((y.dims(), calls), (&[1, 3, 40, 40][..], 1));
    assert_eq!(max_diff(&y, &up.forward(&x).unwrap()), 0.0);
}

#[test]
fn the_memory_estimate_follows_the_tile() {
    let dir = tempfile::tempdir().unwrap();
    let (_, up) = tiny(dir.path(), "esrgan-x4");
    let untiled = up.working_memory_bytes(512, 512, 0, 0);
    let tiled = up.working_memory_bytes(512, 512, 64, 16);
    assert!(tiled < untiled / 4, "{tiled} vs {untiled}");
    assert_eq!(up.working_memory_bytes(4096, 4096, 64, 16), tiled);
    assert!(up.weight_bytes() > 0 && up.parameter_count() * 4 == up.weight_bytes() as usize);
    // RealESRGAN_x4plus (nf 64, nb 23, gc 32): the HR conv dominates,
    // 12.25 nf (4 P) at the second upsampling stage = 12544 P elements.
    let x4plus = UpscalerArch::Esrgan(RrdbConfig {
        in_nc: 3,
        out_nc: 3,
        nf: 64,
        nb: 23,
        gc: 32,
        upsamples: 2,
        shuffle: 1,
        plus: false,
        layout: EsrganLayout::New,
    });
    let p: u64 = 288 * 288;
    assert_eq!(activation_elements(&x4plus, 288, 288), 12544 * p);
    eprintln!(
        "x4plus, 256 tile + 2 x 16 overlap, f32: {:.2} GiB",
        (12544 * p * 4) as f64 / (1u64 << 30) as f64
    );
}
