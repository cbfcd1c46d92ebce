//! Stable Diffusion 3 through the normal loading path and the HTTP API: a tiny
//! SD 3.5-shaped model (MMDiT with dual attention and q/k norms, two CLIP
//! encoders and T5, a 16-channel VAE with a shift, flow matching) is generated
//! in the diffusers layout, detected from its configs and served. Its numbers
//! are checked against diffusers in `src/pipeline/reference_tests.rs`; here,
//! that every operation runs, that requests outside what an MMDiT takes are
//! refused by field, and that each text encoder reaches the image.

mod common;

use common::Worker;
use sd_worker::model::generate::{write_model, WeightInit};
use sd_worker::model::shapes::ModelShape;
use serde_json::json;
use std::path::{Path, PathBuf};

fn tiny_sd3(root: &Path) -> PathBuf {
    let dir = root.join("tiny-sd3");
    write_model(&dir, &ModelShape::tiny_sd3(), WeightInit::Seeded(3)).expect("generate model");
    dir
}

fn body(extra: serde_json::Value) -> serde_json::Value {
    let mut body = json!({"operation": "image_generation", "prompt": "a red circle",
                          "steps": 3, "seed": 11, "guidance_scale": 4.0});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

fn rgb(png: &[u8]) -> image::RgbImage {
    image::load_from_memory(png).expect("a PNG").to_rgb8()
}

fn png_b64(png: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(png)
}

/// Parameters of every safetensors file under `component/`, as f32 bytes.
fn weight_bytes(dir: &Path, component: &str) -> u64 {
    std::fs::read_dir(dir.join(component))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .map(|p| {
            let bytes = std::fs::read(p).unwrap();
            let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
            meta.tensors()
                .values()
                .map(|t| t.shape.iter().product::<usize>() as u64 * 4)
                .sum::<u64>()
        })
        .sum()
}

#[tokio::test]
async fn an_sd3_shaped_model_is_detected_and_serves_every_operation() {
    let root = tempfile::tempdir().unwrap();
    let dir = tiny_sd3(root.path());
    let w = Worker::start_with_model(dir.to_str().unwrap(), &[]).await;
    let (_, info) = w.get_json("/v1/info").await;
    assert_eq!(info["model"]["family"], "stable-diffusion-3");
    assert_eq!(info["defaults"]["scheduler"], "flow_euler");
    assert_eq!(info["schedulers"], json!(["flow_euler"]));
    // 4 pixels per latent x 2 latents per patch; the position table (16
    // patches a side) bounds the size at 128.
    assert_eq!(info["limits"]["size_multiple"], 8);
    assert_eq!(info["limits"]["max_size"], 128);
    let components = [
        "transformer",
        "vae",
        "text_encoder",
        "text_encoder_2",
        "text_encoder_3",
    ];
    let on_disk: u64 = components.iter().map(|c| weight_bytes(&dir, c)).sum();
    assert_eq!(info["model"]["memory"]["weights_bytes"], on_disk);

    // Text to image, non-square, two images.
    let (msgs, images) = w
        .run_job(body(json!({"width": 96, "height": 64, "num_images": 2})))
        .await;
    assert_eq!(msgs.iter().filter(|m| m.kind() == "progress").count(), 3);
    assert_eq!(images.len(), 2);
    assert!(images.iter().all(|i| rgb(i).dimensions() == (96, 64)));
    assert_ne!(rgb(&images[0]), rgb(&images[1]));

    // Image to image: half the steps, from the input's latents.
    let init = png_b64(&images[0]);
    let (msgs, out) = w
        .run_job(body(
            json!({"operation": "image_transform", "image": init, "strength": 0.5, "steps": 4}),
        ))
        .await;
    assert_eq!(msgs.iter().filter(|m| m.kind() == "progress").count(), 2);
    assert_eq!(rgb(&out[0]).dimensions(), (96, 64));
    assert_ne!(rgb(&out[0]), rgb(&images[0]));

    // Inpainting (a 16-channel transformer: latent blending); the kept half
    // comes back unchanged, the masked half is repainted.
    let mask_png = common::right_half_mask_png(96, 64);
    let (_, out) = w
        .run_job(body(
            json!({"operation": "image_inpaint", "image": init, "mask": png_b64(&mask_png)}),
        ))
        .await;
    let (a, b) = (rgb(&images[0]), rgb(&out[0]));
    let mut repainted = 0;
    for (x, y, p) in a.enumerate_pixels() {
        if x < 48 {
            assert_eq!(p, b.get_pixel(x, y), "kept pixel ({x}, {y}) changed");
        } else if p != b.get_pixel(x, y) {
            repainted += 1;
        }
    }
    assert!(repainted > 100, "only {repainted} masked pixels changed");
}

#[tokio::test]
async fn sd3_refuses_what_an_mmdit_cannot_take_by_field() {
    let root = tempfile::tempdir().unwrap();
    let dir = tiny_sd3(root.path());
    let w = Worker::start_with_model(dir.to_str().unwrap(), &[]).await;
    for (extra, field) in [
        // A multiple of the VAE's 4 but not of 4 x the patch size 2.
        (json!({"width": 60}), "width"),
        (json!({"height": 256}), "height"),
        // Diffusion-only ("euler" is accepted: A1111's Euler on a flow model is flow Euler).
        (json!({"scheduler": "ddim"}), "scheduler"),
        (json!({"scheduler": "dpmpp_2m_karras"}), "scheduler"),
    ] {
        let (status, _, err) = w.submit_raw(body(extra.clone()).to_string()).await;
        assert_eq!(status, 422, "{extra}: {err}");
        assert_eq!(err["error"]["field"], field, "{extra}: {err}");
    }
}

#[tokio::test]
async fn every_text_encoder_conditions_the_image_and_t5_can_be_left_out() {
    let root = tempfile::tempdir().unwrap();
    let dir = tiny_sd3(root.path());
    let w = Worker::start_with_model(dir.to_str().unwrap(), &[]).await;
    let image = |prompt: &str| body(json!({"prompt": prompt, "steps": 2}));
    let (_, red) = w.run_job(image("a red circle")).await;
    let (_, again) = w.run_job(image("a red circle")).await;
    assert_eq!(rgb(&red[0]), rgb(&again[0]), "a seed reproduces its image");
    let (_, green) = w.run_job(image("a green square")).await;
    assert_ne!(
        rgb(&red[0]),
        rgb(&green[0]),
        "the prompt conditions the image"
    );

    // Past T5's 256 tokens the rest is cut for T5, with a warning (CLIP
    // reads it in windows).
    let long = "red circle blue square ".repeat(70);
    let job = w
        .submit(json!({"operation": "image_generation", "prompt": long, "steps": 1}))
        .await;
    let msgs = w.stream_all(job["job_id"].as_str().unwrap(), None).await;
    let warning = msgs
        .iter()
        .find(|m| m.kind() == "warning")
        .expect("a warning event");
    assert_eq!(warning.json()["code"], "prompt_truncated");
    let message = warning.json()["message"].as_str().unwrap();
    assert!(message.contains("T5 read the first 256"), "{message}");
    assert!(msgs.iter().any(|m| m.kind() == "complete"));

    // The same folder without T5: its weights are neither loaded nor
    // counted, and the image changes (T5's tokens become zeros).
    let without = Worker::start_with_model(dir.to_str().unwrap(), &["--no-t5"]).await;
    let (_, info) = without.get_json("/v1/info").await;
    let t5 = weight_bytes(&dir, "text_encoder_3");
    let (_, with_info) = w.get_json("/v1/info").await;
    assert_eq!(
        with_info["model"]["memory"]["weights_bytes"]
            .as_u64()
            .unwrap(),
        info["model"]["memory"]["weights_bytes"].as_u64().unwrap() + t5
    );
    let (_, no_t5) = without.run_job(image("a red circle")).await;
    assert_ne!(rgb(&red[0]), rgb(&no_t5[0]), "T5 conditions the image");
}

/// A PEFT-format LoRA on the MMDiT (both streams) and both CLIP encoders,
/// as the project's generator writes it, is listed as SD 3's, matches every
/// tensor, changes the picture and comes off exactly. Its numbers are
/// checked against diffusers in `src/lora/reference_tests.rs`.
#[tokio::test]
async fn an_sd3_lora_is_listed_applied_and_removed_exactly() {
    use sd_worker::lora::generate::{write_lora, LoraGenOptions};
    use sd_worker::lora::LoraFormat;
    use sd_worker::model::{LoadOptions, LoadedModel, ModelSpec};

    let root = tempfile::tempdir().unwrap();
    let dir = tiny_sd3(root.path());
    let loras = root.path().join("loras");
    std::fs::create_dir_all(&loras).unwrap();
    let model = LoadedModel::load(
        &ModelSpec::Local(dir.clone()),
        &candle_core::Device::Cpu,
        LoadOptions {
            dtype: candle_core::DType::F32,
            skip_t5: true,
            quant: Default::default(),
        },
    )
    .unwrap();
    let modules = write_lora(
        &loras.join("mmdit-style.safetensors"),
        LoraFormat::Peft,
        model.weight_tables(),
        None,
        4,
        9,
        &LoraGenOptions::default(),
    )
    .unwrap();
    drop(model);
    assert!(modules > 0);
    let w = Worker::start_with_model(
        dir.to_str().unwrap(),
        &["--lora-dir", loras.to_str().unwrap()],
    )
    .await;
    let (_, list) = w.get_json("/v1/loras").await;
    assert_eq!(list[0]["name"], "mmdit-style", "{list}");
    assert_eq!(list[0]["family"], "stable-diffusion-3", "{list}");

    let job = |loras: serde_json::Value| body(json!({"width": 64, "height": 64, "loras": loras}));
    let run = |b: serde_json::Value| {
        let w = &w;
        async move {
            let (msgs, images) = w.run_job(b).await;
            let complete = msgs.iter().find(|m| m.kind() == "complete").unwrap();
            let warnings = msgs.iter().filter(|m| m.kind() == "warning").count();
            (rgb(&images[0]), complete.json().clone(), warnings)
        }
    };
    let (base, _, _) = run(job(json!([]))).await;
    let (styled, complete, warnings) =
        run(job(json!([{"name": "mmdit-style", "weight": 1.0}]))).await;
    assert_eq!(warnings, 0);
    let applied = &complete["loras"][0];
    assert_eq!(applied["matched_tensors"], applied["tensors"], "{applied}");
    assert_eq!(applied["tensors"].as_u64(), Some(2 * modules as u64));
    assert_ne!(base, styled, "the LoRA changed nothing");
    let (after, _, _) = run(job(json!([]))).await;
    assert_eq!(base, after, "the base weights must come back exactly");
}
