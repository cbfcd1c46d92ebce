//! The hires fix over HTTP on the tiny model: a first pass at the base size,
//! an upscale (latent or pixel), a second pass at the target size; progress
//! counts both passes and says which; the PNG says what A1111 writes; A1111's
//! `enable_hr` runs it; bad choices are refused by field before queueing.

mod common;

use common::Worker;
use sd_worker::pipeline::encode::read_png_parameters;
use serde_json::{json, Value};

fn job(hires: Value) -> Value {
    json!({"operation": "image_generation", "prompt": "a red circle", "steps": 4,
           "width": 64, "height": 48, "seed": 5, "hires": hires})
}

fn rgb(png: &[u8]) -> image::RgbImage {
    image::load_from_memory(png).unwrap().to_rgb8()
}

#[tokio::test]
async fn a_second_pass_at_the_target_size_counts_both_passes() {
    let w = Worker::start(&[]).await;
    let (msgs, images) = w
        .run_job(job(json!({"scale": 2, "denoising_strength": 0.5})))
        .await;
    let img = rgb(&images[0]);
    assert_eq!(img.dimensions(), (128, 96));
    // 4 steps, then floor(4 x 0.5) = 2 of the second pass's 4.
    let started = msgs.iter().find(|m| m.kind() == "started").unwrap();
    assert_eq!(started.json()["total"], 6);
    let progress: Vec<&Value> = msgs
        .iter()
        .filter(|m| m.kind() == "progress")
        .map(|m| m.json())
        .collect();
    let phases: Vec<&str> = progress
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["base", "base", "base", "base", "hires", "hires"]);
    let steps: Vec<u64> = progress
        .iter()
        .map(|p| p["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6]);
    assert!(progress.iter().all(|p| p["total"] == 6));

    let params = read_png_parameters(&images[0]).unwrap();
    for part in [
        "Size: 64x48",
        "Denoising strength: 0.5",
        "Hires upscale: 2",
        "Hires upscaler: Latent",
    ] {
        assert!(params.contains(part), "{part} missing: {params}");
    }
    assert!(!params.contains("Hires steps"), "{params}");

    // The same request, the same pixels; each upscaler its own picture.
    let (_, again) = w
        .run_job(job(json!({"scale": 2, "denoising_strength": 0.5})))
        .await;
    assert_eq!(rgb(&again[0]), img);
    let mut seen = vec![img];
    for upscaler in ["latent-nearest", "Latent (bicubic)", "lanczos", "nearest"] {
        let (msgs, out) = w
            .run_job(job(
                json!({"scale": 2, "denoising_strength": 0.5, "upscaler": upscaler, "steps": 3}),
            ))
            .await;
        let out = rgb(&out[0]);
        assert_eq!(out.dimensions(), (128, 96), "{upscaler}");
        assert!(
            !seen.contains(&out),
            "{upscaler} gave a picture seen before"
        );
        seen.push(out);
        // floor(3 x 0.5) = 1 second-pass step.
        assert_eq!(
            msgs.iter().filter(|m| m.kind() == "progress").count(),
            5,
            "{upscaler}"
        );
    }

    // A size instead of a scale; one side keeps the aspect ratio.
    let (_, out) = w
        .run_job(job(json!({"width": 96, "steps": 2, "upscaler": "lanczos"})))
        .await;
    assert_eq!(rgb(&out[0]).dimensions(), (96, 72));
    let params = read_png_parameters(&out[0]).unwrap();
    assert!(params.contains("Hires resize: 96x72"), "{params}");
    assert!(params.contains("Hires steps: 2"), "{params}");
    assert!(params.contains("Hires upscaler: Lanczos"), "{params}");
    assert!(params.contains("Denoising strength: 0.7"), "{params}");
}

#[tokio::test]
async fn previews_follow_both_passes() {
    let w = Worker::start(&[]).await;
    let mut body = job(json!({"scale": 2, "denoising_strength": 1.0}));
    body["preview_every"] = json!(2);
    let (msgs, _) = w.run_job(body).await;
    let previews: Vec<(u64, String)> = msgs
        .iter()
        .filter(|m| m.kind() == "preview")
        .map(|m| {
            (
                m.json()["step"].as_u64().unwrap(),
                m.json()["phase"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        previews,
        [
            (2, "base".into()),
            (4, "base".into()),
            (6, "hires".into()),
            (8, "hires".into())
        ]
    );
}

async fn refused(w: &Worker, body: Value, field: &str, says: &str) {
    let (status, _, e) = w.submit_raw(body.to_string()).await;
    let body = &body["hires"];
    assert_eq!(status, 422, "{body}: {e}");
    assert_eq!(e["error"]["field"], field, "{body}: {e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains(says), "{message}");
}

#[tokio::test]
async fn bad_hires_choices_are_refused_by_field() {
    let w = Worker::start(&["--max-pixels", "8192"]).await;
    let submitted = |m: &str| {
        m.lines()
            .filter(|l| l.starts_with("sd_worker_jobs_submitted_total"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum::<f64>()
    };
    let before = submitted(&w.metrics().await);
    refused(
        &w,
        job(json!({"scale": 1.5, "upscaler": "4x-Nothing"})),
        "hires.upscaler",
        "latent-nearest",
    )
    .await;
    refused(
        &w,
        job(json!({"scale": 5})),
        "hires.scale",
        "between 1 and 4",
    )
    .await;
    refused(
        &w,
        job(json!({"scale": 2, "width": 128})),
        "hires.scale",
        "not both",
    )
    .await;
    refused(&w, job(json!({"scale": 2})), "hires.scale", "--max-pixels").await;
    refused(
        &w,
        job(json!({"scale": 3})),
        "hires.scale",
        "between 32 and 128",
    )
    .await;
    refused(
        &w,
        job(json!({"width": 256})),
        "hires.width",
        "between 32 and 128",
    )
    .await;
    refused(
        &w,
        job(json!({"width": 90, "height": 64})),
        "hires.width",
        "multiple of 4",
    )
    .await;
    refused(
        &w,
        job(json!({"scale": 1.5, "denoising_strength": 0})),
        "hires.denoising_strength",
        "above 0",
    )
    .await;
    refused(
        &w,
        job(json!({"scale": 1.5, "denoising_strength": 0.1})),
        "hires.denoising_strength",
        "runs no step",
    )
    .await;
    refused(
        &w,
        job(json!({"hr_scale": 2})),
        "hires.hr_scale",
        "not a field",
    )
    .await;
    let mut transform = job(json!({"scale": 2}));
    transform["operation"] = json!("image_transform");
    transform["image"] = json!(common::b64_png(image::DynamicImage::ImageRgb8(
        common::gradient(64, 48)
    )));
    refused(&w, transform, "hires", "image_generation").await;
    assert_eq!(
        submitted(&w.metrics().await),
        before,
        "a refusal queued a job"
    );
}

#[tokio::test]
async fn a1111_enable_hr_runs_the_hires_fix() {
    let w = Worker::start(&[]).await;
    let (status, answer) = common::a1111::post(
        &w,
        "/sdapi/v1/txt2img",
        json!({"prompt": "a red circle", "steps": 3, "width": 64, "height": 48, "seed": 9,
               "enable_hr": true, "hr_scale": 1.5, "hr_upscaler": "Latent (nearest)",
               "hr_second_pass_steps": 2, "denoising_strength": 0.5}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let png = common::decode_b64(answer["images"][0].as_str().unwrap());
    assert_eq!(rgb(&png).dimensions(), (96, 72));
    let params = read_png_parameters(&png).unwrap();
    assert!(
        params.contains("Hires upscaler: Latent (nearest)"),
        "{params}"
    );
    assert!(params.contains("Hires upscale: 1.5"), "{params}");
    assert!(params.contains("Hires steps: 2"), "{params}");
}
