//! `rng: "torch-cpu"` end to end: the real worker, serving the bundled demo
//! model, must draw the picture diffusers draws for the same seed with
//! PyTorch's CPU generator (reference images from
//! tests/reference/demo_torch_rng_reference.py), within 2/255 per pixel; and
//! the PNG's parameters must say `RNG: CPU` as AUTOMATIC1111 writes it.

mod common;

use common::Worker;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Reference {
    torch: String,
    diffusers: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    scheduler: String,
    seed: u64,
    num_images: u32,
    prompt: String,
    strength: Option<f64>,
    steps: u32,
    guidance_scale: f64,
    size: u32,
    images: Vec<String>,
}

fn reference() -> Reference {
    serde_json::from_str(include_str!("reference/demo_torch_rng_reference.json")).unwrap()
}

fn body(case: &Case, rng: &str) -> serde_json::Value {
    let mut body = json!({
        "operation": "image_generation", "prompt": case.prompt, "seed": case.seed,
        "num_images": case.num_images, "steps": case.steps,
        "guidance_scale": case.guidance_scale, "width": case.size, "height": case.size,
        "scheduler": case.scheduler, "rng": rng,
    });
    if let Some(strength) = case.strength {
        body["operation"] = json!("image_transform");
        body["strength"] = json!(strength);
        body["image"] = json!(common::b64_png(image::DynamicImage::ImageRgb8(
            common::gradient(case.size, case.size)
        )));
    }
    body
}

/// Largest difference of any channel of any pixel, in 1/255.
fn max_abs_diff(ours: &[u8], theirs: &[u8]) -> u8 {
    let a = image::load_from_memory(ours).unwrap().to_rgb8();
    let b = image::load_from_memory(theirs).unwrap().to_rgb8();
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap()
}

async fn demo_worker() -> (Worker, tempfile::TempDir) {
    let cache = tempfile::tempdir().unwrap();
    let w = Worker::spawn(&[], &[("SD_WORKER_CACHE", cache.path().to_str().unwrap())]);
    w.wait_ready().await;
    let (_, info) = w.get_json("/v1/info").await;
    assert_eq!(info["model"]["id"], "sd-demo-shapes");
    (w, cache)
}

/// Text to image with Euler (two images: seeds s and s + 1), Euler a (its
/// noise at every step drawn from each image's generator) and image to image
/// (the VAE posterior sample drawn before the starting noise, as diffusers
/// does), each against diffusers' image. With the ChaCha source the same jobs
/// give other pictures, so the comparison is not met by chance.
#[tokio::test]
async fn torch_cpu_noise_gives_the_picture_diffusers_gives_for_the_same_seed() {
    let r = reference();
    let (w, _cache) = demo_worker().await;
    let mut failures = Vec::new();
    let mut report = Vec::new();
    for case in &r.cases {
        let theirs: Vec<Vec<u8>> = case.images.iter().map(|b| common::decode_b64(b)).collect();
        let (_, ours) = w.run_job(body(case, "torch-cpu")).await;
        assert_eq!(ours.len(), theirs.len(), "{}", case.name);
        for (i, (o, t)) in ours.iter().zip(&theirs).enumerate() {
            let d = max_abs_diff(o, t);
            report.push(format!("{} image {i}: max |diff| {d}/255", case.name));
            if d > 2 {
                failures.push(format!("{} image {i}: {d}/255", case.name));
            }
        }
        let (_, chacha) = w.run_job(body(case, "chacha")).await;
        let d = max_abs_diff(&chacha[0], &theirs[0]);
        assert!(
            d > 16,
            "{}: the ChaCha picture is within {d}/255 of diffusers'",
            case.name
        );
    }
    eprintln!("{}", report.join("\n"));
    assert!(
        failures.is_empty(),
        "differ from diffusers {} (torch {}) by more than 2/255: {failures:?}\n{}",
        r.diffusers,
        r.torch,
        report.join("\n")
    );
}

#[tokio::test]
async fn the_png_parameters_name_the_torch_cpu_source_as_automatic1111_does() {
    let r = reference();
    let (w, _cache) = demo_worker().await;
    let case = &r.cases[0];
    let mut quick = body(case, "torch-cpu");
    quick["steps"] = json!(2);
    quick["num_images"] = json!(1);
    let (_, png) = w.run_job(quick.clone()).await;
    let text = sd_worker::pipeline::encode::read_png_parameters(&png[0]).unwrap();
    assert!(text.ends_with(", RNG: CPU"), "{text}");
    quick["rng"] = json!("chacha");
    let (_, png) = w.run_job(quick).await;
    let text = sd_worker::pipeline::encode::read_png_parameters(&png[0]).unwrap();
    assert!(!text.contains("RNG"), "{text}");
}

/// The field is part of the contract: OpenAPI names both sources.
#[tokio::test]
async fn openapi_documents_the_rng_field_and_its_sources() {
    let w = Worker::start(&[]).await;
    let (status, doc) = w.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["Rng"]["enum"],
        json!(["chacha", "torch-cpu", "nv"]),
        "{}",
        schemas["Rng"]
    );
    let rng = serde_json::to_string(&schemas["GenerationParams"]["properties"]["rng"]).unwrap();
    assert!(rng.contains("#/components/schemas/Rng"), "{rng}");
}
