//! Pipeline behaviour seen through the API: prompt truncation warnings,
//! classifier-free guidance skipped at guidance <= 1, output formats, and every
//! scheduler completing.

mod common;

use common::{Msg, Worker};
use serde_json::{json, Value};

async fn run(w: &Worker, body: Value) -> (Vec<Msg>, Vec<u8>) {
    let (msgs, mut images) = w.run_job(body).await;
    (msgs, images.swap_remove(0))
}

#[tokio::test]
async fn long_prompts_are_encoded_window_by_window() {
    let w = Worker::start(&[]).await;
    let pixels = |png: Vec<u8>| image::load_from_memory(&png).unwrap().to_rgb8().into_raw();
    // The tiny model's tokenizer gives 4 tokens per repeat: 80 tokens fill the
    // first 75-token window, so the last words land in the second one (a
    // truncating pipeline would draw both prompts alike).
    let base = "red circle blue square ".repeat(20);
    let body = |tail: &str, negative: &str| {
        json!({"operation": "image_generation", "prompt": format!("{base}{tail}"), "negative_prompt": negative,
               "steps": 2, "seed": 5, "guidance_scale": 7.5})
    };
    let (msgs, red) = run(&w, body("yellow star", "")).await;
    assert!(
        msgs.iter().all(|m| m.kind() != "warning"),
        "no cut, no warning"
    );
    let (_, green) = run(&w, body("green triangle", "")).await;
    assert_ne!(
        pixels(red.clone()),
        pixels(green),
        "the second window conditions the image"
    );
    // A negative prompt longer than the prompt: both are padded to the same
    // number of windows, batched together, and the negative one counts.
    let (_, negative) = run(&w, body("yellow star", &"blurry dark ".repeat(60))).await;
    assert_ne!(pixels(red), pixels(negative));

    // Past 8 windows (600 tokens) the rest is cut, with a warning.
    let long = "red circle blue square ".repeat(200);
    let job = w
        .submit(json!({"operation": "image_generation", "prompt": long, "steps": 1, "guidance_scale": 1.0}))
        .await;
    let id = job["job_id"].as_str().unwrap();
    let msgs = w.stream_all(id, None).await;
    let warning = msgs
        .iter()
        .find(|m| m.kind() == "warning")
        .expect("a warning event");
    assert_eq!(warning.json()["code"], "prompt_truncated");
    let message = warning.json()["message"].as_str().unwrap();
    assert!(
        message.contains("800 tokens") && message.contains("600"),
        "{message}"
    );
    let (_, snap) = w.get_json(&format!("/v1/jobs/{id}")).await;
    assert_eq!(snap["warnings"].as_array().unwrap().len(), 1);
    assert_eq!(snap["status"], "completed");
}

#[tokio::test]
async fn guidance_at_or_below_one_skips_the_unconditional_pass() {
    let w = Worker::start(&[]).await;
    let body = |g: f64, negative: &str| {
        json!({"operation": "image_generation", "prompt": "a green square", "negative_prompt": negative,
               "steps": 3, "seed": 21, "guidance_scale": g, "scheduler": "ddim"})
    };
    // Compare pixels: each PNG's metadata records its own scale and negative prompt.
    let pixels = |png: Vec<u8>| image::load_from_memory(&png).unwrap().to_rgb8().into_raw();
    let g1 = pixels(run(&w, body(1.0, "")).await.1);
    let g0 = pixels(run(&w, body(0.0, "blurry")).await.1);
    let g1_neg = pixels(run(&w, body(1.0, "something else entirely")).await.1);
    let g5 = pixels(run(&w, body(5.0, "")).await.1);
    let g5_neg = pixels(run(&w, body(5.0, "blurry")).await.1);
    // Without guidance only the prompt matters: scale and negative prompt have no effect.
    assert_eq!(g1, g0);
    assert_eq!(g1, g1_neg);
    // With guidance both do.
    assert_ne!(g1, g5);
    assert_ne!(g5, g5_neg);
}

#[tokio::test]
async fn every_scheduler_completes_and_they_differ() {
    let w = Worker::start(&[]).await;
    let (_, info) = w.get_json("/v1/info").await;
    let listed: Vec<&str> = info["schedulers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let all = [
        ("ddim", "DDIM"),
        ("ddpm", "DDPM"),
        ("euler", "Euler"),
        ("euler_a", "Euler a"),
        ("dpmpp_2m", "DPM++ 2M"),
        ("dpmpp_2m_karras", "DPM++ 2M Karras"),
        ("unipc", "UniPC"),
        ("lcm", "LCM"),
    ];
    assert_eq!(
        listed,
        all.map(|(name, _)| name),
        "the bundled model is not flow matching"
    );
    let mut outputs = Vec::new();
    for (scheduler, sampler) in all {
        let (msgs, png) = run(
            &w,
            json!({"operation": "image_generation", "prompt": "a purple star", "steps": 4, "seed": 8, "scheduler": scheduler}),
        )
        .await;
        let progress = msgs.iter().filter(|m| m.kind() == "progress").count();
        assert_eq!(progress, 4, "{scheduler}");
        let params = sd_worker::pipeline::encode::read_png_parameters(&png).unwrap();
        assert!(params.contains(&format!("Sampler: {sampler},")), "{params}");
        outputs.push((scheduler, png));
    }
    for (i, (a, png_a)) in outputs.iter().enumerate() {
        for (b, png_b) in &outputs[i + 1..] {
            assert_ne!(png_a, png_b, "{a} and {b} gave the same image");
        }
    }
}

#[tokio::test]
async fn jpeg_output_and_non_square_sizes() {
    let w = Worker::start(&[]).await;
    let (msgs, bytes) = run(
        &w,
        json!({"operation": "image_generation", "prompt": "a wide field", "steps": 2, "width": 128, "height": 32,
               "output_format": "jpeg"}),
    )
    .await;
    let complete = msgs.iter().find(|m| m.kind() == "complete").unwrap();
    assert_eq!(complete.json()["images"][0]["format"], "jpeg");
    assert_eq!(&bytes[..3], &[0xFF, 0xD8, 0xFF], "JPEG magic");
    let img = image::load_from_memory(&bytes).unwrap();
    assert_eq!((img.width(), img.height()), (128, 32));
}
