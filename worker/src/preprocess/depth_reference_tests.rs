//! The depth preprocessor against the reference, and its contract.
//!
//! `tests/reference/depth_anything_reference.json` was computed by
//! `tests/reference/depth_anything_reference.py` (transformers'
//! `DepthAnythingForDepthEstimation` with the original repository's
//! preprocessing, OpenCV's bicubic resize) on the tiny model
//! [`write_tiny_depth_model`] writes with seed 7. The chain is compared stage
//! by stage, so a difference is located: the network input after the bicubic
//! resize and normalisation, the network's depth on that input, the depth
//! resized back to the image, and the 8-bit map; and the network alone on a
//! formula-built tensor (identical input on both sides, so only the network
//! is measured there).

use super::depth::{network_size, DepthEstimator};
use super::depth_tiny::write_tiny_depth_model;
use super::depth_weights::{hf_to_original, DepthSource};
use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use serde::Deserialize;

#[derive(Deserialize)]
struct Sampled {
    stride: usize,
    values: Vec<f64>,
}

#[derive(Deserialize)]
struct NetOnly {
    shape: [usize; 2],
    stride: usize,
    values: Vec<f64>,
}

#[derive(Deserialize)]
struct Reference {
    image: [u32; 2],
    network_size: [usize; 2],
    input: Sampled,
    network_depth: Sampled,
    depth: Sampled,
    map: Vec<u8>,
    net_only: NetOnly,
    hf_keys: Vec<(String, String, Option<usize>)>,
}

fn reference() -> Reference {
    serde_json::from_str(include_str!(
        "../../tests/reference/depth_anything_reference.json"
    ))
    .unwrap()
}

/// The reference image: pixel(x, y, c) = (37x + 23y + 91c + 3((xy) mod 29)) mod 256.
fn formula_image(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let v = |c: u32| ((37 * x + 23 * y + 91 * c + 3 * ((x * y) % 29)) % 256) as u8;
        image::Rgb([v(0), v(1), v(2)])
    })
}

fn tiny() -> (tempfile::TempDir, DepthEstimator) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_depth_model(dir.path(), 7).unwrap();
    let source = DepthSource::Local(dir.path().to_path_buf());
    let est = DepthEstimator::load(&source, &Device::Cpu, DType::F32).unwrap();
    (dir, est)
}

/// Largest |ours - reference| / (max |reference|), over the sampled indices.
fn rel_diff(ours: &[f32], r: &Sampled) -> f64 {
    let scale = r.values.iter().fold(0f64, |m, v| m.max(v.abs()));
    assert!(scale > 0.0);
    r.values
        .iter()
        .enumerate()
        .map(|(i, v)| (ours[i * r.stride] as f64 - v).abs())
        .fold(0f64, f64::max)
        / scale
}

#[test]
fn depth_chain_matches_the_reference_stage_by_stage() {
    let r = reference();
    let (_dir, est) = tiny();
    let img = formula_image(r.image[0], r.image[1]);
    let (nw, nh) = (r.network_size[0], r.network_size[1]);
    assert_eq!(
        network_size(img.width() as usize, img.height() as usize),
        (nw, nh)
    );
    let input = super::depth::network_input(&img, nw, nh);
    let d_input = rel_diff(&input, &r.input);
    let pred = est.predict(&img).unwrap();
    let d_net = rel_diff(&pred.network_depth, &r.network_depth);
    let d_depth = rel_diff(&pred.depth, &r.depth);
    let d_map = pred
        .map
        .as_raw()
        .iter()
        .zip(&r.map)
        .map(|(a, b)| (*a as i32 - *b as i32).abs())
        .max()
        .unwrap();
    eprintln!(
        "input {d_input:e}, network depth {d_net:e}, resized depth {d_depth:e}, map {d_map} levels"
    );
    assert!(
        d_input < 1e-5,
        "bicubic resize + normalisation: {d_input:e}"
    );
    assert!(d_net < 1e-4, "network depth: {d_net:e}");
    assert!(d_depth < 1e-4, "resized depth: {d_depth:e}");
    assert!(d_map <= 1, "8-bit map: {d_map} levels");
    // Non-trivial: the map spans 0..255 with many levels.
    let mut levels = r.map.clone();
    levels.sort();
    levels.dedup();
    assert!(levels.len() > 50 && levels[0] == 0 && *levels.last().unwrap() == 255);
}

#[test]
fn depth_network_alone_matches_the_reference() {
    let r = reference();
    let (_dir, est) = tiny();
    let [h, w] = r.net_only.shape;
    let n = 3 * h * w;
    let x: Vec<f32> = (0..n).map(|i| (0.1 * i as f64).sin() as f32).collect();
    let x = Tensor::from_vec(x, (1, 3, h, w), &Device::Cpu).unwrap();
    let ours = est
        .net_forward(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let sampled = Sampled {
        stride: r.net_only.stride,
        values: r.net_only.values.clone(),
    };
    let d = rel_diff(&ours, &sampled);
    eprintln!("network alone (28x42): {d:e}");
    assert!(d < 1e-4, "{d:e}");
    assert!(sampled.values.iter().filter(|v| **v > 0.0).count() > sampled.values.len() / 2);
}

#[test]
fn transformers_names_map_to_the_original_ones_as_the_reference_does() {
    let r = reference();
    assert!(r.hf_keys.len() > 50);
    for (hf, orig, part) in &r.hf_keys {
        if hf.ends_with("mask_token") {
            continue; // unused by the network
        }
        assert_eq!(hf_to_original(hf), Some((orig.clone(), *part)), "{hf}");
    }
}

/// The tiny model rewritten in transformers' layout loads to the same network.
#[test]
fn transformers_layout_loads_to_the_same_depth() {
    let r = reference();
    let (dir, est) = tiny();
    let orig =
        candle_core::safetensors::load(dir.path().join("model.safetensors"), &Device::Cpu).unwrap();
    let hf_dir = tempfile::tempdir().unwrap();
    let d = super::depth_tiny::tiny_config().embed_dim;
    let mut hf = std::collections::HashMap::new();
    for (k, o, part) in &r.hf_keys {
        let t = &orig[o];
        let t = match part {
            Some(p) => t.narrow(0, p * d, d).unwrap().contiguous().unwrap(),
            None => t.clone(),
        };
        hf.insert(k.clone(), t);
    }
    candle_core::safetensors::save(&hf, hf_dir.path().join("model.safetensors")).unwrap();
    std::fs::copy(
        dir.path().join("config.json"),
        hf_dir.path().join("config.json"),
    )
    .unwrap();
    let est_hf = DepthEstimator::load(
        &DepthSource::Local(hf_dir.path().to_path_buf()),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    let img = formula_image(37, 23);
    assert_eq!(
        est.predict(&img).unwrap().network_depth,
        est_hf.predict(&img).unwrap().network_depth
    );
}

#[test]
fn the_map_has_the_input_size_for_odd_sizes() {
    let (_dir, est) = tiny();
    for (w, h) in [(37, 23), (600, 90), (1, 1), (15, 400)] {
        let map = est.estimate(&formula_image(w, h)).unwrap();
        assert_eq!(map.dimensions(), (w, h));
    }
}

#[test]
fn network_size_follows_the_lower_bound_rule_and_is_bounded() {
    assert_eq!(network_size(518, 518), (518, 518));
    assert_eq!(network_size(1024, 1024), (518, 518));
    assert_eq!(network_size(45, 31), (756, 518));
    assert_eq!(network_size(1000, 500), (1036, 518));
    // 600x90 would be 3458x518: bounded to 1554 on the long side.
    assert_eq!(network_size(600, 90), (1554, 238));
    for (w, h) in [(1, 4000), (4096, 4096), (7, 3), (2048, 77)] {
        let (nw, nh) = network_size(w, h);
        assert!(nw % 14 == 0 && nh % 14 == 0 && nw >= 14 && nh >= 14);
        assert!(nw.max(nh) <= super::depth::MAX_NETWORK_LONG_SIDE);
    }
}

#[test]
fn missing_or_malformed_weights_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.safetensors");
    let err = DepthEstimator::load(
        &DepthSource::Local(missing.clone()),
        &Device::Cpu,
        DType::F32,
    )
    .err()
    .unwrap();
    assert!(
        format!("{err:#}").contains(&missing.display().to_string()),
        "{err:#}"
    );
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"not safetensors").unwrap();
    let err = DepthEstimator::load(&DepthSource::Local(bad.clone()), &Device::Cpu, DType::F32)
        .err()
        .unwrap();
    assert!(
        format!("{err:#}").contains(&bad.display().to_string()),
        "{err:#}"
    );
    // A safetensors file of something else.
    let other = dir.path().join("other.safetensors");
    let t = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(&std::collections::HashMap::from([("w", t)]), &other).unwrap();
    let err = DepthEstimator::load(&DepthSource::Local(other.clone()), &Device::Cpu, DType::F32)
        .err()
        .unwrap();
    assert!(
        format!("{err:#}").contains("not a Depth Anything V2"),
        "{err:#}"
    );
    // A truncated checkpoint: a key missing.
    let tiny = tempfile::tempdir().unwrap();
    write_tiny_depth_model(tiny.path(), 1).unwrap();
    let path = tiny.path().join("model.safetensors");
    let mut w = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    w.remove("depth_head.scratch.output_conv1.weight");
    candle_core::safetensors::save(&w, &path).unwrap();
    let err = DepthEstimator::load(&DepthSource::Local(path.clone()), &Device::Cpu, DType::F32)
        .err()
        .unwrap();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("output_conv1"),
        "{msg}"
    );
}

#[test]
fn sources_parse() {
    assert_eq!(
        DepthSource::parse("depth-anything/Depth-Anything-V2-Small-hf"),
        DepthSource::Hub {
            repo: "depth-anything/Depth-Anything-V2-Small-hf".into(),
            revision: None
        }
    );
    assert_eq!(
        DepthSource::parse("hf://a/b@v2"),
        DepthSource::Hub {
            repo: "a/b".into(),
            revision: Some("v2".into())
        }
    );
    assert!(matches!(
        DepthSource::parse("/models/depth.safetensors"),
        DepthSource::Local(_)
    ));
    assert!(matches!(DepthSource::parse("./x/y"), DepthSource::Local(_)));
}

/// Writes the tiny model for the reference script (see its docstring).
#[test]
#[ignore]
fn write_tiny_depth_model_for_the_reference() {
    let out = std::env::var("SD_WORKER_TINY_DEPTH_OUT").expect("SD_WORKER_TINY_DEPTH_OUT");
    write_tiny_depth_model(std::path::Path::new(&out), 7).unwrap();
}

/// Time and peak memory per call, tiny and ViT-S shapes (random weights):
/// `cargo test -p sd-worker --lib depth_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn depth_cost() {
    let peak_mib = || -> f64 {
        let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    for (name, cfg) in [
        ("tiny", super::depth_tiny::tiny_config()),
        ("vit-s", super::depth_net::DepthNetConfig::vit_small()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        super::depth_tiny::write_random_depth_model(dir.path(), &cfg, 3).unwrap();
        let src = DepthSource::Local(dir.path().to_path_buf());
        let est = DepthEstimator::load(&src, &Device::Cpu, DType::F32).unwrap();
        for (w, h) in [(512, 512), (1024, 512), (1536, 512)] {
            let img = formula_image(w, h);
            let _ = std::fs::write("/proc/self/clear_refs", "5");
            let before = peak_mib();
            let t = std::time::Instant::now();
            let pred = est.predict(&img).unwrap();
            eprintln!(
                "{name} {w}x{h} (network {:?}): {:.2} s, peak RSS {:.0} MiB (before {:.0})",
                pred.network_size,
                t.elapsed().as_secs_f64(),
                peak_mib(),
                before
            );
        }
    }
}

#[test]
fn lazy_estimator_loads_once_and_retries_after_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let lazy = super::depth::LazyDepthEstimator::new(
        DepthSource::Local(dir.path().join("later")),
        Device::Cpu,
        DType::F32,
    );
    let err = lazy.get().err().unwrap();
    assert!(format!("{err:#}").contains("later"), "{err:#}");
    write_tiny_depth_model(&dir.path().join("later"), 2).unwrap();
    let a = lazy.get().unwrap();
    let b = lazy.get().unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &b));
}
