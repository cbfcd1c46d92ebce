//! `image_upscale` and `GET /v1/upscalers` on the real worker, with tiny
//! model upscalers written by the project's generator in the layouts users
//! have (Real-ESRGAN x2 with pixel-unshuffle, old-ESRGAN x4, compact x4),
//! and a model upscaler as the hires fix's. The networks' numbers are
//! checked against spandrel in `src/upscale/reference_tests.rs`.

mod common;

use common::Worker;
use sd_worker::pipeline::encode::{read_png_parameters, read_png_text};
use serde_json::{json, Value};
use std::path::PathBuf;

/// `esrgan-x2`, `ultra-x4` (old ESRGAN layout), `compact-x4`, and a LoRA-like
/// file that is not an upscaler.
fn folder() -> &'static PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sd-worker-upscalers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (kind, name) in [
            ("esrgan-x2", "esrgan-x2"),
            ("esrgan-old-x4", "ultra-x4"),
            ("compact-x4", "compact-x4"),
        ] {
            sd_worker::upscale::generate(kind, 3, &dir.join(format!("{name}.safetensors")))
                .unwrap();
        }
        let t =
            candle_core::Tensor::ones((4, 8), candle_core::DType::F32, &candle_core::Device::Cpu)
                .unwrap();
        candle_core::safetensors::save(
            &std::collections::HashMap::from([("lora_unet_x.lora_down.weight".to_string(), t)]),
            dir.join("not-an-upscaler.safetensors"),
        )
        .unwrap();
        dir
    })
}

async fn worker(extra: &[&str]) -> Worker {
    let dir = folder();
    let mut args = vec!["--upscaler-dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    Worker::start(&args).await
}

fn input() -> String {
    common::b64_png(image::DynamicImage::ImageRgb8(common::gradient(40, 30)))
}

fn job(extra: Value) -> Value {
    let mut body = json!({"operation": "image_upscale", "image": input()});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

fn rgb(png: &[u8]) -> image::RgbImage {
    image::load_from_memory(png).unwrap().to_rgb8()
}

#[tokio::test]
async fn upscalers_are_listed_and_upscale_in_tiles() {
    let w = worker(&[]).await;
    let (status, list) = w.get_json("/v1/upscalers").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["lanczos", "nearest", "compact-x4", "esrgan-x2", "ultra-x4"]
    );
    let by = |n: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(by("esrgan-x2")["architecture"], "ESRGAN");
    assert_eq!(by("esrgan-x2")["scale"], 2);
    assert_eq!(by("ultra-x4")["scale"], 4);
    assert_eq!(by("compact-x4")["architecture"], "RealESRGAN-compact");
    assert_eq!(by("lanczos")["kind"], "builtin");
    // Built-ins carry the contract's label; models none (their name says it).
    assert_eq!(by("lanczos")["label"], "Lanczos (resampling)");
    assert_eq!(by("nearest")["label"], "Nearest neighbour (resampling)");
    assert!(by("esrgan-x2").get("label").is_none());

    // A model in 32-pixel tiles: 2 tiles over 40x30, one progress event each.
    let (msgs, images) = w
        .run_job(job(
            json!({"upscaler": "esrgan-x2", "tile_size": 32, "tile_overlap": 8}),
        ))
        .await;
    let tiled = rgb(&images[0]);
    assert_eq!(tiled.dimensions(), (80, 60));
    let started = msgs.iter().find(|m| m.kind() == "started").unwrap();
    assert_eq!(started.json()["total"], 2);
    let progress: Vec<&Value> = msgs
        .iter()
        .filter(|m| m.kind() == "progress")
        .map(|m| m.json())
        .collect();
    assert_eq!(progress.len(), 2);
    assert!(progress.iter().all(|p| p["phase"] == "upscale"));
    // As A1111's Extras: a `postprocessing` chunk; the input had no
    // `parameters`, so neither has the output.
    assert_eq!(
        read_png_text(&images[0], "postprocessing").unwrap(),
        "Postprocess upscale by: 2, Postprocess upscaler: esrgan-x2"
    );
    assert_eq!(read_png_parameters(&images[0]), None);
    // Untiled: the same picture within 1/255 at this overlap.
    let (_, whole) = w
        .run_job(job(json!({"upscaler": "esrgan-x2", "tile_size": 0})))
        .await;
    let whole = rgb(&whole[0]);
    let worst = tiled
        .as_raw()
        .iter()
        .zip(whole.as_raw())
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(worst <= 1, "tiled vs untiled: {worst} levels");

    // Any factor: the model's, then Lanczos; the defaults (the model's factor).
    let (_, out) = w
        .run_job(job(json!({"upscaler": "esrgan-x2", "scale": 3})))
        .await;
    assert_eq!(rgb(&out[0]).dimensions(), (120, 90));
    for (name, size) in [("ultra-x4", (160, 120)), ("compact-x4", (160, 120))] {
        let (_, out) = w.run_job(job(json!({"upscaler": name}))).await;
        assert_eq!(rgb(&out[0]).dimensions(), size, "{name}");
    }
    // Built-ins: one step; JPEG out.
    let (msgs, out) = w
        .run_job(job(json!({"scale": 1.5, "output_format": "jpeg"})))
        .await;
    assert_eq!(rgb(&out[0]).dimensions(), (60, 45));
    assert_eq!(msgs.iter().filter(|m| m.kind() == "progress").count(), 1);
}

/// Upscaling a generated PNG keeps how it was made (its `parameters`), as
/// A1111's Extras does, and adds the upscale in `postprocessing`.
#[tokio::test]
async fn an_upscaled_png_keeps_its_parameters() {
    let w = worker(&[]).await;
    let (_, generated) = w
        .run_job(
            json!({"operation": "image_generation", "prompt": "a red circle", "steps": 2,
                        "width": 32, "height": 32, "seed": 4}),
        )
        .await;
    let made = read_png_parameters(&generated[0]).unwrap();
    assert!(made.contains("Seed: 4"), "{made}");
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&generated[0])
    };
    let (_, out) = w
        .run_job(json!({"operation": "image_upscale", "image": b64, "upscaler": "NEAREST"}))
        .await;
    assert_eq!(read_png_parameters(&out[0]).as_deref(), Some(made.as_str()));
    assert_eq!(
        read_png_text(&out[0], "postprocessing").unwrap(),
        "Postprocess upscale by: 2, Postprocess upscaler: Nearest"
    );
}

#[tokio::test]
async fn a_model_upscaler_serves_the_hires_fix() {
    let w = worker(&[]).await;
    let (_, images) = w
        .run_job(
            json!({"operation": "image_generation", "prompt": "a red circle", "steps": 2,
                        "width": 32, "height": 32, "seed": 1,
                        "hires": {"upscaler": "esrgan-x2", "denoising_strength": 0.5}}),
        )
        .await;
    assert_eq!(rgb(&images[0]).dimensions(), (64, 64));
    let params = read_png_parameters(&images[0]).unwrap();
    assert!(params.contains("Hires upscaler: esrgan-x2"), "{params}");
}

#[tokio::test]
async fn bad_upscales_are_refused_by_field() {
    let w = worker(&["--max-input-pixels", "10000"]).await;
    for (body, status, field, says) in [
        (
            job(json!({"upscaler": "nope"})),
            422,
            "upscaler",
            "esrgan-x2",
        ),
        (
            job(json!({"upscaler": "not-an-upscaler"})),
            422,
            "upscaler",
            "cannot be used",
        ),
        (job(json!({"scale": 9})), 422, "scale", "at most 8"),
        (job(json!({"scale": 0})), 422, "scale", "above 0"),
        (job(json!({"scale": 4})), 422, "scale", "--max-input-pixels"),
        (
            job(json!({"tile_size": 16})),
            422,
            "tile_size",
            "32 to 2048",
        ),
        (
            job(json!({"tile_size": 64, "tile_overlap": 32})),
            422,
            "tile_overlap",
            "below half",
        ),
        (job(json!({"prompt": "x"})), 422, "prompt", "not a field"),
        (
            json!({"operation": "image_upscale"}),
            422,
            "image",
            "required",
        ),
        (
            json!({"operation": "image_upscale", "image": "bm90IGFuIGltYWdl"}),
            400,
            "image",
            "",
        ),
    ] {
        let (got, _, e) = w.submit_raw(body.to_string()).await;
        assert_eq!(got, status, "{e}");
        assert_eq!(e["error"]["field"], field, "{e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(says),
            "{e}"
        );
    }
}
