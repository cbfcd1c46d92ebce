//! Model families through the normal loading path and the HTTP API: a tiny
//! Stable Diffusion 2.x-shaped model (linear projections, OpenCLIP-style text
//! encoder, v-prediction under DDIM) is generated in the diffusers layout,
//! detected from its configs, and served; its prediction type reaches every
//! scheduler, and an SD-Turbo-style configuration (trailing spacing, one step,
//! no guidance) runs too.

mod common;

use common::Worker;
use sd_worker::model::generate::{write_model, WeightInit};
use sd_worker::model::shapes::ModelShape;
use serde_json::json;
use std::path::Path;

fn write(dir: &Path, shape: &ModelShape) {
    write_model(dir, shape, WeightInit::Seeded(3)).expect("generate model");
}

fn png_size(png: &[u8]) -> (u32, u32) {
    let img = image::load_from_memory(png).expect("a PNG");
    (img.width(), img.height())
}

#[tokio::test]
async fn an_sd2_shaped_model_is_detected_and_its_v_prediction_reaches_every_scheduler() {
    let root = tempfile::tempdir().unwrap();
    let v_dir = root.path().join("sd2-v");
    write(&v_dir, &ModelShape::tiny_sd2());
    // The same weights and configs, but trained (so the config says) for epsilon.
    let eps_dir = root.path().join("sd2-eps");
    let mut eps = ModelShape::tiny_sd2();
    eps.scheduler_config["prediction_type"] = "epsilon".into();
    write(&eps_dir, &eps);

    let w = Worker::start_with_model(v_dir.to_str().unwrap(), &[]).await;
    let (_, info) = w.get_json("/v1/info").await;
    assert_eq!(info["model"]["family"], "stable-diffusion-2");
    assert_eq!(info["model"]["prediction_type"], "v_prediction");
    assert_eq!(info["defaults"]["scheduler"], "ddim", "the config's class");
    let schedulers: Vec<String> = info["schedulers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert!(
        !schedulers.contains(&"flow_euler".to_string()),
        "{schedulers:?}"
    );

    let body = |scheduler: &str| {
        json!({"operation": "image_generation", "prompt": "a lighthouse at dusk",
               "steps": 4, "seed": 5, "scheduler": scheduler})
    };
    let mut v_images = Vec::new();
    for scheduler in &schedulers {
        if scheduler == "lcm" {
            // LCM is for distilled UNets; it still has to run.
            let (_, images) = w
                .run_job(json!({"operation": "image_generation", "prompt": "x",
                                "steps": 2, "guidance_scale": 1.0, "scheduler": "lcm", "seed": 5}))
                .await;
            assert_eq!(png_size(&images[0]), (64, 64));
            continue;
        }
        let (msgs, images) = w.run_job(body(scheduler)).await;
        let steps = msgs.iter().filter(|m| m.kind() == "progress").count();
        assert_eq!(steps, 4, "{scheduler}: one progress event per step");
        assert_eq!(png_size(&images[0]), (64, 64), "{scheduler}");
        v_images.push((scheduler.clone(), images.into_iter().next().unwrap()));
    }
    drop(w);

    // Served as epsilon, the same weights, prompt and seed give other pictures
    // under every scheduler: the prediction type is not lost on the way.
    let w = Worker::start_with_model(eps_dir.to_str().unwrap(), &[]).await;
    let (_, info) = w.get_json("/v1/info").await;
    assert_eq!(info["model"]["prediction_type"], "epsilon");
    for (scheduler, v_png) in &v_images {
        let (_, images) = w.run_job(body(scheduler)).await;
        assert_ne!(
            &images[0], v_png,
            "{scheduler}: v_prediction and epsilon gave the same image"
        );
    }
}

#[tokio::test]
async fn a_turbo_style_config_runs_one_step_without_guidance() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("sd2-turbo");
    // SD-Turbo ships Euler discrete with trailing spacing; one step, no guidance.
    let mut shape = ModelShape::tiny_sd2();
    shape.scheduler_config["_class_name"] = "EulerDiscreteScheduler".into();
    shape.scheduler_config["timestep_spacing"] = "trailing".into();
    write(&dir, &shape);

    let w = Worker::start_with_model(dir.to_str().unwrap(), &[]).await;
    let (_, info) = w.get_json("/v1/info").await;
    assert_eq!(info["defaults"]["scheduler"], "euler");
    let (msgs, images) = w
        .run_job(json!({"operation": "image_generation", "prompt": "a cat",
                        "steps": 1, "guidance_scale": 0.0, "seed": 1}))
        .await;
    assert_eq!(msgs.iter().filter(|m| m.kind() == "progress").count(), 1);
    assert_eq!(png_size(&images[0]), (64, 64));
}
