//! Model families through the normal loading path and the HTTP API: a tiny
//! Stable Diffusion 2.x-shaped model (linear projections, OpenCLIP-style text
//! encoder, v-prediction under DDIM) is generated in the diffusers layout,
//! detected from its configs, and served; its prediction type reaches every
//! scheduler, and an SD-Turbo-style configuration (trailing spacing, one step,
//! no guidance) runs too. A tiny SDXL-shaped model (two text encoders, the
//! UNet's `add_embedding`) serves every operation; its `force_zeros_for_empty_prompt`
//! is honoured, and its VAE is upcast in an f16 run where f16 would overflow.

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

fn sdxl_body(extra: serde_json::Value) -> serde_json::Value {
    let mut body = json!({"operation": "image_generation", "prompt": "a red circle",
                          "steps": 3, "seed": 11});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

fn pixels(png: &[u8]) -> Vec<u8> {
    image::load_from_memory(png).unwrap().to_rgb8().into_raw()
}

fn png_b64(png: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(png)
}

#[tokio::test]
async fn an_sdxl_shaped_model_is_detected_and_serves_every_operation() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("sdxl");
    write(&dir, &ModelShape::tiny_sdxl());
    let w = Worker::start_with_model(dir.to_str().unwrap(), &[]).await;
    let (_, info) = w.get_json("/v1/info").await;
    assert_eq!(info["model"]["family"], "stable-diffusion-xl");
    assert_eq!(info["defaults"]["scheduler"], "euler");
    // Both text encoders' weights are counted.
    let on_disk: u64 = ["unet", "vae", "text_encoder", "text_encoder_2"]
        .iter()
        .map(|c| {
            let name = if c.starts_with("text") {
                "model"
            } else {
                "diffusion_pytorch_model"
            };
            let bytes = std::fs::read(dir.join(c).join(format!("{name}.safetensors"))).unwrap();
            let (n, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
            let _ = n;
            meta.tensors()
                .values()
                .map(|t| t.shape.iter().product::<usize>() as u64 * 4)
                .sum::<u64>()
        })
        .sum();
    assert_eq!(info["model"]["memory"]["weights_bytes"], on_disk);

    // Text to image, non-square, two images.
    let (msgs, images) = w
        .run_job(sdxl_body(
            json!({"width": 64, "height": 48, "num_images": 2}),
        ))
        .await;
    assert_eq!(msgs.iter().filter(|m| m.kind() == "progress").count(), 3);
    assert_eq!(images.len(), 2);
    assert!(images.iter().all(|i| png_size(i) == (64, 48)));
    assert_ne!(images[0], images[1]);

    // Image to image and inpainting (4-channel UNet: latent blending).
    let init = png_b64(&images[0]);
    let (_, out) = w
        .run_job(sdxl_body(
            json!({"operation": "image_transform", "image": init, "strength": 0.5}),
        ))
        .await;
    assert_eq!(png_size(&out[0]), (64, 48));
    let mask_png = common::right_half_mask_png(64, 48);
    let (_, out) = w
        .run_job(sdxl_body(
            json!({"operation": "image_inpaint", "image": init,
                                  "mask": png_b64(&mask_png)}),
        ))
        .await;
    let (a, b) = (
        image::load_from_memory(&images[0]).unwrap().to_rgb8(),
        image::load_from_memory(&out[0]).unwrap().to_rgb8(),
    );
    for (x, y, p) in a.enumerate_pixels() {
        if x < 32 {
            assert_eq!(p, b.get_pixel(x, y), "kept pixel ({x}, {y}) changed");
        }
    }
}

/// diffusers' SDXL pipeline zeroes the unconditional embeddings when
/// `force_zeros_for_empty_prompt` is set and the negative prompt is absent
/// (None); an explicit "" is encoded like any negative prompt.
#[tokio::test]
async fn sdxl_conditions_an_absent_negative_prompt_on_zeros_when_the_pipeline_says_so() {
    let root = tempfile::tempdir().unwrap();
    let zeros = root.path().join("zeros");
    write(&zeros, &ModelShape::tiny_sdxl());
    // The same model, its pipeline config saying otherwise.
    let encoded = root.path().join("encoded");
    write(&encoded, &ModelShape::tiny_sdxl());
    let index_path = encoded.join("model_index.json");
    let mut index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
    index["force_zeros_for_empty_prompt"] = false.into();
    std::fs::write(&index_path, index.to_string()).unwrap();

    // Per model: (absent, explicit "", "blurry").
    let mut results = Vec::new();
    for dir in [&zeros, &encoded] {
        let w = Worker::start_with_model(dir.to_str().unwrap(), &[]).await;
        let mut run = Vec::new();
        for extra in [
            json!({}),
            json!({"negative_prompt": ""}),
            json!({"negative_prompt": "blurry"}),
        ] {
            let (_, images) = w.run_job(sdxl_body(extra)).await;
            run.push(pixels(&images[0]));
        }
        results.push(run);
    }
    // (Pixels, not PNG bytes: the PNGs name their model.)
    let (zeros, encoded) = (&results[0], &results[1]);
    assert!(
        zeros[0] != encoded[0],
        "an absent negative prompt: zeros vs the encoded empty prompt"
    );
    assert!(
        zeros[0] != zeros[1],
        "with force_zeros, an explicit \"\" is encoded, not zeros"
    );
    assert!(
        zeros[1] == encoded[1] && encoded[1] == encoded[0],
        "an explicit \"\" is the encoded empty prompt either way"
    );
    assert!(
        zeros[2] == encoded[2],
        "a negative prompt is encoded either way"
    );
}

/// Scales the VAE decoder's first convolution so its activations exceed f16's
/// range (as the real SDXL VAE's do); the group norms after it bring them back,
/// so in f32 the decoder still works.
fn make_vae_overflow_f16(dir: &Path, force_upcast: bool) {
    let path = dir.join("vae/diffusion_pytorch_model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
    for name in ["decoder.conv_in.weight", "decoder.conv_in.bias"] {
        let t = tensors.remove(name).unwrap();
        tensors.insert(name.to_string(), (t * 1e6).unwrap());
    }
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let cfg_path = dir.join("vae/config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["force_upcast"] = force_upcast.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
}

fn mean_and_spread(png: &[u8]) -> (f64, f64) {
    let img = image::load_from_memory(png).unwrap().to_rgb8();
    let v: Vec<f64> = img.as_raw().iter().map(|&b| b as f64).collect();
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
    (mean, var.sqrt())
}

#[tokio::test]
async fn an_f16_run_upcasts_a_vae_that_asks_for_it_instead_of_decoding_black() {
    let root = tempfile::tempdir().unwrap();
    let mut outcomes = Vec::new();
    for force_upcast in [true, false] {
        let dir = root.path().join(format!("upcast-{force_upcast}"));
        write(&dir, &ModelShape::tiny_sdxl());
        make_vae_overflow_f16(&dir, force_upcast);
        let w = Worker::start_with_model(dir.to_str().unwrap(), &["--dtype", "f16"]).await;
        let job = w.submit(sdxl_body(json!({}))).await;
        let msgs = w.stream_all(job["job_id"].as_str().unwrap(), None).await;
        let image = msgs
            .iter()
            .find(|m| m.kind() == "complete")
            .map(|m| common::decode_b64(m.json()["images"][0]["image"].as_str().unwrap()));
        outcomes.push(image.map(|png| mean_and_spread(&png)));
    }
    let (mean, spread) = outcomes[0].expect("the upcast run completes");
    assert!(
        mean > 5.0 && spread > 5.0,
        "upcast VAE decoded a flat image: {mean} {spread}"
    );
    // The same run without the upcast overflows: it fails or comes out black,
    // which is what the upcast prevents (and shows this test can fail).
    match outcomes[1] {
        None => {}
        Some((mean, spread)) => assert!(
            mean < 1.0 && spread < 1.0,
            "f16 did not overflow: {mean} {spread}"
        ),
    }
}
