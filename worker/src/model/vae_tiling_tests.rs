//! The tiled VAE against diffusers' `AutoencoderKL` with `enable_tiling()`,
//! value for value. `tests/reference/vae_tiling_reference.json` was computed
//! by diffusers on the tiny model our generator writes with seed 11, with
//! 32-pixel (8-latent) tiles so small inputs cut into 4 x 3 tiles (how to
//! recompute it: `vae_tiling_reference.py` beside it).

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::generate::{write_model, WeightInit};
use super::reference::{self, Sampled};
use super::shapes::ModelShape;
use super::test_util::wave;
use super::vae_tiling::{Tiling, VaeTiling};
use super::{LoadOptions, LoadedModel, ModelSpec};

#[derive(Deserialize)]
struct Reference {
    tile_sample_min_size: usize,
    tile_latent_min_size: usize,
    tile_overlap_factor: f64,
    decoded: Sampled,
    mean: Sampled,
    logvar: Sampled,
    decoded_gap: f64,
}

fn tiny_model() -> (tempfile::TempDir, LoadedModel) {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), &ModelShape::tiny(), WeightInit::Seeded(11)).unwrap();
    let model = LoadedModel::load(
        &ModelSpec::Local(dir.path().to_path_buf()),
        &Device::Cpu,
        LoadOptions {
            dtype: DType::F32,
            skip_t5: true,
            quant: Default::default(),
        },
    )
    .unwrap();
    (dir, model)
}

fn reference() -> Reference {
    serde_json::from_str(include_str!(
        "../../tests/reference/vae_tiling_reference.json"
    ))
    .unwrap()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn mean_abs(a: &Tensor) -> f64 {
    a.abs()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// Decode [1, 4, 20, 14] and encode [1, 3, 80, 56] in 4 x 3 tiles, edge
/// tiles narrower than the blend: within the reference tests' tolerance
/// (`2e-4 + 1e-3 |reference|`) of diffusers.
#[test]
fn tiled_decode_and_encode_match_diffusers() {
    let r = reference();
    let (_dir, model) = tiny_model();
    let tiling = Tiling::new(r.tile_sample_min_size, 4, r.tile_overlap_factor).unwrap();
    assert_eq!(tiling.latent_size, r.tile_latent_min_size);
    assert_eq!(tiling.decode_grid(20, 14), (4, 3));

    let z = wave(&[1, 4, 20, 14], 1.0, 0.1, f64::sin);
    let decoded = model.vae().decode_tiled(&z, &tiling).unwrap();
    let worst = reference::check("decoded", &decoded, &r.decoded);
    eprintln!("tiled decode: max |ours - diffusers| = {worst:e}");

    let x = wave(&[1, 3, 80, 56], 0.8, 0.05, f64::cos);
    let (mean, logvar) = model.vae().posterior_tiled(&x, &tiling).unwrap();
    let worst_mean = reference::check("mean", &mean, &r.mean);
    let worst_logvar = reference::check("logvar", &logvar, &r.logvar);
    eprintln!(
        "tiled encode: max |ours - diffusers| = {worst_mean:e} (mean), {worst_logvar:e} (logvar)"
    );
}

/// Tiling is not exact: each tile's group norms and mid-block attention see
/// only that tile, and the blend only hides the seams. On the tiny model
/// with random weights and 8-latent tiles (a 20x14 latent in 12 tiles, the
/// worst case: every tile is mostly border) the tiled decode is at most
/// 2.07 from the untiled one (mean 0.28, against a mean magnitude of 0.51),
/// the same gap diffusers' own tiled decode has (`decoded_gap` in the
/// reference, 2.07). Bounds with margin: 2.5 and 0.35. An input that fits
/// one tile is decoded (and encoded) exactly as untiled.
#[test]
fn tiled_decode_differs_from_untiled_by_diffusers_gap() {
    let r = reference();
    let (_dir, model) = tiny_model();
    let vae = model.vae();
    let tiling = Tiling::new(r.tile_sample_min_size, 4, r.tile_overlap_factor).unwrap();

    let z = wave(&[1, 4, 20, 14], 1.0, 0.1, f64::sin);
    let tiled = vae.decode_tiled(&z, &tiling).unwrap();
    let plain = vae.decode(&z).unwrap();
    let (max, mean) = (
        max_abs(&tiled, &plain),
        mean_abs(&(&tiled - &plain).unwrap()),
    );
    eprintln!(
        "tiled vs untiled decode: max {max}, mean {mean} (diffusers' max {})",
        r.decoded_gap
    );
    assert!(max <= 2.5 && mean <= 0.35, "max {max}, mean {mean}");
    assert!(
        (max - r.decoded_gap).abs() < 1e-3,
        "{max} vs {}",
        r.decoded_gap
    );

    // One tile (no side past the tile stride, 6 latents / 24 pixels): the
    // tiled path is the untiled decode.
    let small = wave(&[1, 4, 6, 5], 1.0, 0.1, f64::sin);
    let one = vae.decode_tiled(&small, &tiling).unwrap();
    assert_eq!(max_abs(&one, &vae.decode(&small).unwrap()), 0.0);
    let pixels = wave(&[1, 3, 24, 20], 0.8, 0.05, f64::cos);
    let (m1, l1) = vae.posterior_tiled(&pixels, &tiling).unwrap();
    let (m0, l0) = vae.posterior(&pixels).unwrap();
    assert_eq!(max_abs(&m1, &m0) + max_abs(&l1, &l0), 0.0);
}

/// The tiny model's own tiling (no `sample_size` in its config: 512-pixel
/// tiles) leaves every test-sized image untiled under `Auto`, so the
/// pipeline's diffusers parity is untouched; `On` tiles, `Off` never.
#[test]
fn auto_tiles_only_above_the_tile_and_modes_pick_the_path() {
    let (_dir, model) = tiny_model();
    let vae = model.vae();
    // A job's tiling when its request has no `vae_tiling`.
    assert_eq!(VaeTiling::default(), VaeTiling::Auto);
    let t = *vae.tiling();
    assert_eq!((t.sample_size, t.latent_size, t.scale), (512, 128, 4));
    assert!(!t.tiles_latents(VaeTiling::Auto, 128, 128));
    assert!(t.tiles_latents(VaeTiling::Auto, 129, 16));
    assert!(t.tiles_latents(VaeTiling::On, 8, 8));
    assert!(!t.tiles_latents(VaeTiling::Off, 1000, 1000));
    assert!(!t.tiles_pixels(VaeTiling::Auto, 512, 512));
    assert!(t.tiles_pixels(VaeTiling::Auto, 16, 513));

    let z = wave(&[1, 4, 12, 10], 1.0, 0.1, f64::sin);
    let plain = vae.decode(&z).unwrap();
    for mode in [VaeTiling::Auto, VaeTiling::On, VaeTiling::Off] {
        assert_eq!(max_abs(&vae.decode_with(&z, mode).unwrap(), &plain), 0.0);
    }
    let x = wave(&[1, 3, 48, 40], 0.8, 0.05, f64::cos);
    let (m0, _) = vae.posterior(&x).unwrap();
    let (m1, _) = vae.posterior_with(&x, VaeTiling::Auto).unwrap();
    assert_eq!(max_abs(&m0, &m1), 0.0);
}

/// Sizes that do not line up, overlaps out of range and sides that are not
/// multiples of the scale are errors, not panics or wrong-sized outputs.
#[test]
fn bad_tilings_and_inputs_are_errors() {
    assert!(Tiling::new(512, 8, 0.25).is_ok());
    assert!(Tiling::new(768, 8, 0.25).is_ok());
    assert!(Tiling::new(1024, 8, 0.25).is_ok());
    let e = Tiling::new(520, 8, 0.25).unwrap_err().to_string();
    assert!(e.contains("do not line up"), "{e}");
    assert!(Tiling::new(512, 8, 1.0).is_err());
    assert!(Tiling::new(512, 8, -0.1).is_err());
    assert!(Tiling::new(0, 8, 0.25).is_err());
    // A config's odd sample_size is rounded down to a size that lines up.
    let mut cfg = ModelShape::sd15().vae;
    cfg.sample_size = Some(520);
    assert_eq!(Tiling::for_config(&cfg, 512).unwrap().sample_size, 512);
    cfg.sample_size = Some(7);
    assert_eq!(Tiling::for_config(&cfg, 512).unwrap().sample_size, 32);
    cfg.sample_size = None;
    assert_eq!(Tiling::for_config(&cfg, 1024).unwrap().sample_size, 1024);

    let tiling = Tiling::new(32, 4, 0.25).unwrap();
    let x = Tensor::zeros((1, 3, 30, 32), DType::F32, &Device::Cpu).unwrap();
    let e = tiling
        .encode(&x, |t| Ok(t.clone()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("multiples of 4"), "{e}");
    let z = Tensor::zeros((1, 4, 20, 14), DType::F32, &Device::Cpu).unwrap();
    // A "decoder" that does not scale by 4 gives a wrong-sized image: refused.
    let e = tiling
        .decode(&z, |t| Ok(t.clone()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("instead of"), "{e}");
}
