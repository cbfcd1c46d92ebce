//! TAESD served by the real worker: a tiny `AutoencoderTiny` written by the
//! project's generator in diffusers' layout, loaded with `--taesd`; previews
//! at full size by default, `vae: tiny` final decodes, refusals without it,
//! and a TAESD of another family refused at start. Its numbers are checked
//! against diffusers in `src/model/taesd/reference_tests.rs`.

mod common;

use common::Worker;
use serde_json::{json, Value};
use std::path::PathBuf;

fn taesd(channels: usize) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("sd-worker-taesd-{channels}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // The tiny test model's VAE makes 4 pixels per latent (published ones, 8).
    sd_worker::model::taesd::generate_tiny_scaled(&dir, channels, 4, 4).unwrap();
    dir
}

fn job(extra: Value) -> Value {
    let mut body = json!({"operation": "image_generation", "prompt": "a red circle", "steps": 4,
                          "width": 64, "height": 48, "seed": 3, "preview_every": 2});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

fn rgb(bytes: &[u8]) -> image::RgbImage {
    image::load_from_memory(bytes).unwrap().to_rgb8()
}

/// The sizes of a job's previews.
fn preview_sizes(msgs: &[common::Msg]) -> Vec<(u32, u32)> {
    msgs.iter()
        .filter(|m| m.kind() == "preview")
        .map(|m| rgb(&common::decode_b64(m.json()["image"].as_str().unwrap())).dimensions())
        .collect()
}

#[tokio::test]
async fn taesd_previews_at_full_size_and_decodes_drafts() {
    let dir = taesd(4);
    let w = Worker::start(&["--taesd", dir.to_str().unwrap()]).await;
    let (_, info) = w.get_json("/v1/info").await;
    assert_eq!(info["taesd"], true);

    // Default: TAESD previews, the full image's size.
    let (msgs, full) = w.run_job(job(json!({}))).await;
    assert_eq!(preview_sizes(&msgs), [(64, 48), (64, 48)]);
    // The VAE's previews are reduced (2x per side here).
    let (msgs, same) = w.run_job(job(json!({"preview_method": "vae"}))).await;
    assert_eq!(preview_sizes(&msgs), [(32, 24), (32, 24)]);
    assert_eq!(
        rgb(&full[0]),
        rgb(&same[0]),
        "previews must not change the image"
    );

    // `vae: tiny`: the same latents through TAESD, another picture of the same size.
    let (_, tiny) = w.run_job(job(json!({"vae": "tiny"}))).await;
    let (a, b) = (rgb(&full[0]), rgb(&tiny[0]));
    assert_eq!(b.dimensions(), (64, 48));
    assert_ne!(a, b);
    // The PNG says which decoder made it.
    let params = sd_worker::pipeline::encode::read_png_parameters(&tiny[0]).unwrap();
    assert!(params.contains("VAE: TAESD"), "{params}");
    let full_params = sd_worker::pipeline::encode::read_png_parameters(&full[0]).unwrap();
    assert!(!full_params.contains("VAE:"), "{full_params}");
    // TAESD's last preview is its decode of the final latents.
    let (msgs, _) = w.run_job(job(json!({"vae": "tiny"}))).await;
    let last = msgs.iter().rfind(|m| m.kind() == "preview").unwrap();
    let preview = rgb(&common::decode_b64(last.json()["image"].as_str().unwrap()));
    let mean_diff = |x: &image::RgbImage, y: &image::RgbImage| {
        x.as_raw()
            .iter()
            .zip(y.as_raw())
            .map(|(p, q)| p.abs_diff(*q) as f64)
            .sum::<f64>()
            / x.as_raw().len() as f64
    };
    // JPEG-close to TAESD's final image, and much closer than to the VAE's.
    let (to_tiny, to_full) = (mean_diff(&preview, &b), mean_diff(&preview, &a));
    assert!(
        to_tiny < 16.0 && to_tiny * 5.0 < to_full,
        "preview vs TAESD image {to_tiny:.1}, vs VAE image {to_full:.1} levels"
    );
}

#[tokio::test]
async fn without_taesd_asking_for_it_is_refused_by_field() {
    let w = Worker::start(&[]).await;
    let (_, info) = w.get_json("/v1/info").await;
    assert_eq!(info["taesd"], false);
    for (extra, field) in [
        (json!({"vae": "tiny"}), "vae"),
        (json!({"preview_method": "taesd"}), "preview_method"),
    ] {
        let (status, _, e) = w.submit_raw(job(extra).to_string()).await;
        assert_eq!(status, 422, "{e}");
        assert_eq!(e["error"]["field"], field, "{e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains("--taesd"),
            "{e}"
        );
    }
    let (status, _, e) = w.submit_raw(job(json!({"vae": "huge"})).to_string()).await;
    assert_eq!(status, 422, "{e}");
    assert_eq!(e["error"]["field"], "vae", "{e}");
}

#[test]
fn a_taesd_for_other_latents_stops_the_start() {
    let dir = taesd(16);
    let model = common::tiny_model().to_str().unwrap().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sd-worker"))
        .args([
            "--port",
            "0",
            "--model-path",
            &model,
            "--taesd",
            dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("16-channel") && stderr.contains("taesdxl"),
        "{stderr}"
    );
}
