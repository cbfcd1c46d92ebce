//! What AUTOMATIC1111 users send and expect: the sampler names A1111 (and the
//! worker's own PNGs) write are accepted as schedulers, and the PNG
//! `parameters` of image-to-image and inpainting results carry the denoising
//! strength where A1111 writes it.

mod common;

use common::{right_half_mask_png, Worker};
use sd_worker::model::generate::{write_model, WeightInit};
use sd_worker::model::shapes::ModelShape;
use sd_worker::pipeline::encode::read_png_parameters;
use sd_worker_sdk::{SchedulerName, SchedulerSpec};
use serde_json::{json, Value};

fn body(scheduler: &str) -> Value {
    json!({"operation": "image_generation", "prompt": "a red circle", "steps": 3,
           "seed": 7, "width": 64, "height": 64, "scheduler": scheduler})
}

fn spec(wire: &str) -> &'static SchedulerSpec {
    SchedulerName::ALL
        .into_iter()
        .find(|n| n.name() == wire)
        .unwrap_or_else(|| panic!("/v1/info lists `{wire}`, which the contract lacks"))
        .spec()
}

fn parameters(png: &[u8]) -> String {
    read_png_parameters(png).expect("a PNG with `parameters`")
}

/// The schedulers a worker's `/v1/info` lists.
async fn schedulers(w: &Worker) -> Vec<String> {
    let (_, info) = w.get_json("/v1/info").await;
    info["schedulers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// Runs `body(wire)` and then the same request under each other spelling: each
/// is accepted and gives the very same PNG (same pixels, same `Sampler:`).
async fn every_spelling_runs_its_scheduler(w: &Worker, wire: &str, also: &[&str]) {
    let spec = spec(wire);
    let (_, reference) = w.run_job(body(wire)).await;
    let text = parameters(&reference[0]);
    assert!(
        text.contains(&format!(", Sampler: {}, ", spec.a1111)),
        "{wire}: {text}"
    );
    let mut spellings = vec![
        spec.a1111.to_string(),
        spec.label.to_string(),
        spec.a1111.to_uppercase(),
        spec.a1111.to_lowercase(),
    ];
    spellings.extend(also.iter().map(|s| s.to_string()));
    spellings.dedup();
    for spelling in spellings {
        let (_, images) = w.run_job(body(&spelling)).await;
        assert!(
            images[0] == reference[0],
            "`{spelling}` did not run {wire}: {}",
            parameters(&images[0])
        );
    }
}

#[tokio::test]
async fn every_a1111_sampler_name_of_the_models_schedulers_is_accepted_and_runs_that_scheduler() {
    let w = Worker::start(&[]).await;
    let names = schedulers(&w).await;
    assert_eq!(names.len(), 8, "every diffusion scheduler: {names:?}");
    for wire in &names {
        every_spelling_runs_its_scheduler(&w, wire, &[]).await;
    }
    // The case: what the worker's own PNG says, resubmitted.
    let (_, png) = w.run_job(body("euler_a")).await;
    assert!(parameters(&png[0]).contains("Sampler: Euler a,"));
    let (status, _, _) = w.submit_raw(body("Euler a").to_string()).await;
    assert_eq!(status, 202);
    // Names of the other family, and names nobody has, are refused by field.
    for (name, says) in [
        ("Flow Euler", "does not apply to this model"),
        ("PLMS", "unknown scheduler"),
    ] {
        let (status, _, err) = w.submit_raw(body(name).to_string()).await;
        assert_eq!(status, 422, "{name}: {err}");
        assert_eq!(err["error"]["field"], "scheduler");
        assert!(
            err["error"]["message"].as_str().unwrap().contains(says),
            "{err}"
        );
    }
}

#[tokio::test]
async fn on_a_flow_matching_model_euler_is_flow_euler_as_a1111_writes_for_sd3() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("tiny-sd3");
    write_model(&dir, &ModelShape::tiny_sd3(), WeightInit::Seeded(3)).expect("generate model");
    let w = Worker::start_with_model(dir.to_str().unwrap(), &[]).await;
    assert_eq!(schedulers(&w).await, ["flow_euler"]);
    every_spelling_runs_its_scheduler(&w, "flow_euler", &["euler", "Flow Euler"]).await;
    let (_, png) = w.run_job(body("flow_euler")).await;
    assert!(parameters(&png[0]).contains(", Sampler: Euler, "));
    let (status, _, err) = w.submit_raw(body("Euler a").to_string()).await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["field"], "scheduler");
}

/// The `Key: value` pairs of the last line of `parameters`, in order.
fn keys(text: &str) -> Vec<(String, String)> {
    text.lines()
        .last()
        .unwrap()
        .split(", ")
        .map(|pair| {
            let (k, v) = pair.split_once(": ").expect("Key: value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[tokio::test]
async fn image_to_image_and_inpainting_pngs_carry_the_denoising_strength_where_a1111_writes_it() {
    use base64::Engine;
    let w = Worker::start(&[]).await;
    let b64 = |png: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(png);
    let (_, generated) = w.run_job(body("euler")).await;
    assert!(
        !parameters(&generated[0]).contains("Denoising strength"),
        "text to image has no strength"
    );
    let image = b64(generated[0].clone());
    let mask = b64(right_half_mask_png(64, 64));
    for (request, strength) in [
        (
            json!({"operation": "image_transform", "image": image, "strength": 0.6}),
            "0.6",
        ),
        (
            json!({"operation": "image_transform", "image": image, "strength": 0.75}),
            "0.75",
        ),
        // Inpainting's default strength, 1.
        (
            json!({"operation": "image_inpaint", "image": image, "mask": mask}),
            "1",
        ),
    ] {
        let mut request = request;
        request.as_object_mut().unwrap().extend([
            ("prompt".into(), json!("a blue square")),
            ("steps".into(), json!(4)),
        ]);
        let (_, images) = w.run_job(request).await;
        let text = parameters(&images[0]);
        let pairs = keys(&text);
        let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        // A1111's order (processing.create_infotext), less the keys the worker has no value for.
        assert_eq!(
            names,
            [
                "Steps",
                "Sampler",
                "CFG scale",
                "Seed",
                "Size",
                "Model",
                "Denoising strength"
            ],
            "{text}"
        );
        assert_eq!(pairs[6].1, strength, "{text}");
    }
}
