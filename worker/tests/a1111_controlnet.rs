//! A1111's ControlNet extension over HTTP against the real binary: units in
//! `alwayson_scripts.ControlNet.args` give the very pixels of the same
//! `controlnets` sent to `/v1/jobs` (A1111's routes draw `nv` noise), disabled
//! units and `model: "None"` change nothing, refusals are A1111-shaped and
//! name the unit's field, and the extension's routes (`/controlnet/*`)
//! answer as the extension does. The worker runs with a tiny ControlNet
//! written by the project's generator and a tiny depth model.

mod common;

use common::a1111::{a1111_error, info, post, txt, with};
use common::{b64_png, decode_b64, gradient, Worker};
use image::RgbImage;
use sd_worker::model::controlnet::{generate::write_controlnet, ControlNetConfig};
use sd_worker::model::generate::WeightInit;
use sd_worker::model::shapes::ModelShape;
use sd_worker::pipeline::encode::read_png_parameters;
use serde_json::{json, Value};
use std::path::PathBuf;

/// `tiny-canny` (a diffusers folder for `--controlnet`) and `depth` (for
/// `--depth-model`), written once per test binary.
fn assets() -> &'static PathBuf {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("sd-worker-a1111-cn-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let cfg = ControlNetConfig::for_shape(&ModelShape::tiny()).unwrap();
        write_controlnet(&root.join("tiny-canny"), &cfg, WeightInit::Seeded(5)).unwrap();
        sd_worker::preprocess::depth_tiny::write_tiny_depth_model(&root.join("depth"), 9).unwrap();
        root
    })
}

async fn worker(extra: &[&str]) -> Worker {
    let root = assets();
    let net = root.join("tiny-canny");
    let depth = root.join("depth");
    let mut args = vec![
        "--controlnet",
        net.to_str().unwrap(),
        "--depth-model",
        depth.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Worker::start(&args).await
}

/// A control image with strong edges, wider than the output (so that the
/// resize mode matters): a bright square on a dark ground.
fn control_image(w: u32, h: u32) -> String {
    let img = RgbImage::from_fn(w, h, |x, y| {
        let inside = (w / 4..3 * w / 4).contains(&x) && (h / 4..3 * h / 4).contains(&y);
        image::Rgb(if inside { [230, 220, 40] } else { [20, 30, 60] })
    });
    b64_png(image::DynamicImage::ImageRgb8(img))
}

/// A unit as webuiapi 0.9.17's `ControlNetUnit.to_dict` writes it.
fn a1111_unit(image: &str, extra: Value) -> Value {
    with(
        json!({"image": image, "mask": null, "module": "canny", "model": "tiny-canny [0123abcd]",
            "weight": 0.8, "resize_mode": "Crop and Resize", "low_vram": false, "processor_res": 512,
            "threshold_a": 50, "threshold_b": 150, "guidance_start": 0.1, "guidance_end": 0.9,
            "control_mode": "Balanced", "pixel_perfect": true, "hr_option": "Both", "enabled": true}),
        extra,
    )
}

fn with_units(body: Value, units: Vec<Value>) -> Value {
    with(
        body,
        json!({"alwayson_scripts": {"ControlNet": {"args": units}}}),
    )
}

/// The `/v1/jobs` body equivalent to `txt(seed)` (A1111's defaults: `nv` noise).
fn our_job(seed: u64) -> Value {
    json!({"operation": "image_generation", "prompt": "a red circle", "negative_prompt": "blurry",
        "steps": 3, "guidance_scale": 6.5, "width": 64, "height": 64, "seed": seed,
        "scheduler": "euler_a", "rng": "nv"})
}

fn pixels(png: &[u8]) -> RgbImage {
    image::load_from_memory(png).unwrap().to_rgb8()
}

async fn a1111_pixels(w: &Worker, path: &str, body: Value) -> (RgbImage, Value) {
    let (status, answer) = post(w, path, body.clone()).await;
    assert_eq!(status, 200, "{answer}");
    let png = decode_b64(answer["images"][0].as_str().unwrap());
    (pixels(&png), answer)
}

#[tokio::test]
async fn a_unit_gives_the_very_pixels_of_the_same_controlnets_through_v1_jobs() {
    let w = worker(&[]).await;
    let control = control_image(96, 64);
    let body = with_units(txt(11), vec![a1111_unit(&control, json!({}))]);
    let (theirs, answer) = a1111_pixels(&w, "/sdapi/v1/txt2img", body).await;
    let job = with(
        our_job(11),
        json!({"resize_mode": "crop", "controlnets": [{"model": "tiny-canny", "image": control,
            "preprocessor": "canny", "low_threshold": 50, "high_threshold": 150,
            "conditioning_scale": 0.8, "guidance_start": 0.1, "guidance_end": 0.9}]}),
    );
    let (_, images) = w.run_job(job).await;
    assert_eq!(theirs, pixels(&images[0]), "the mapping is exact");
    // The unit matters: without it the picture differs.
    let (plain, _) = a1111_pixels(&w, "/sdapi/v1/txt2img", txt(11)).await;
    assert_ne!(plain, theirs);
    // Another resize mode gives another picture (the control image is wider).
    let fill = with_units(
        txt(11),
        vec![a1111_unit(
            &control,
            json!({"resize_mode": "Resize and Fill"}),
        )],
    );
    assert_ne!(a1111_pixels(&w, "/sdapi/v1/txt2img", fill).await.0, theirs);
    let info = info(&answer);
    assert_eq!(info["warnings"], json!([]), "{info}");
    let unit = "Module: canny, Model: tiny-canny, Weight: 0.8, Threshold A: 50, Threshold B: 150, \
                Guidance Start: 0.1, Guidance End: 0.9";
    assert_eq!(info["extra_generation_params"]["ControlNet 0"], json!(unit));
    let text = info["infotexts"][0].as_str().unwrap();
    assert!(
        text.contains(&format!("ControlNet 0: \"{unit}\"")),
        "{text}"
    );
    let png = decode_b64(answer["images"][0].as_str().unwrap());
    assert_eq!(read_png_parameters(&png).as_deref(), Some(text));
}

#[tokio::test]
async fn disabled_units_model_none_and_empty_args_change_nothing() {
    let w = worker(&[]).await;
    let control = control_image(64, 64);
    let (plain, _) = a1111_pixels(&w, "/sdapi/v1/txt2img", txt(5)).await;
    for units in [
        vec![],
        vec![a1111_unit(&control, json!({"enabled": false}))],
        vec![a1111_unit(&control, json!({"model": "None"}))],
        vec![
            a1111_unit("", json!({"model": "None", "module": "none"})),
            a1111_unit(&control, json!({"enabled": "false", "module": "lineart"})),
        ],
    ] {
        let body = with_units(txt(5), units.clone());
        let (px, answer) = a1111_pixels(&w, "/sdapi/v1/txt2img", body).await;
        assert_eq!(px, plain, "{units:?}");
        let info = info(&answer);
        assert_eq!(info["warnings"], json!([]), "{info}");
        assert_eq!(info["extra_generation_params"], json!({}));
    }
}

#[tokio::test]
async fn img2img_units_without_an_image_take_the_init_image_as_a1111_does() {
    let w = worker(&[]).await;
    let init = b64_png(image::DynamicImage::ImageRgb8(gradient(64, 64)));
    let body = json!({"prompt": "a red circle", "steps": 4, "cfg_scale": 6.5, "seed": 3,
        "sampler_name": "Euler a", "init_images": [init], "denoising_strength": 0.75,
        "alwayson_scripts": {"controlnet": {"args": [a1111_unit("", json!({"module": "invert",
            "resize_mode": "Just Resize", "weight": 1.2}))]}}});
    let (theirs, answer) = a1111_pixels(&w, "/sdapi/v1/img2img", body).await;
    let job = json!({"operation": "image_transform", "prompt": "a red circle", "steps": 4,
        "guidance_scale": 6.5, "seed": 3, "scheduler": "euler_a", "rng": "nv", "image": init,
        "strength": 0.75, "controlnets": [{"model": "tiny-canny", "image": init,
            "preprocessor": "invert", "conditioning_scale": 1.2, "guidance_start": 0.1,
            "guidance_end": 0.9}]});
    let (_, images) = w.run_job(job).await;
    assert_eq!(theirs, pixels(&images[0]));
    assert_eq!(info(&answer)["warnings"], json!([]));
}

#[tokio::test]
async fn refusals_are_a1111_shaped_and_name_the_units_field() {
    let w = worker(&[]).await;
    let control = control_image(64, 64);
    let off = a1111_unit(&control, json!({"enabled": false}));
    let at = "alwayson_scripts.ControlNet.args[1]";
    for (unit, status, field, says) in [
        (
            json!({"module": "depth_midas"}),
            422,
            "module",
            "one of: none, canny, invert, depth_anything_v2",
        ),
        (
            json!({"model": "nope [12345678]"}),
            422,
            "model",
            "tiny-canny",
        ),
        (json!({"weight": 3}), 422, "weight", "`weight`"),
        (
            json!({"guidance_start": 0.9, "guidance_end": 0.5}),
            422,
            "guidance_end",
            "",
        ),
        (json!({"image": ""}), 422, "image", "image"),
        (json!({"image": "not an image"}), 400, "image", ""),
        (
            json!({"resize_mode": "Stretch"}),
            422,
            "resize_mode",
            "Just Resize",
        ),
        (json!({"weight": "heavy"}), 422, "weight", "number"),
    ] {
        let body = with_units(
            txt(1),
            vec![off.clone(), a1111_unit(&control, unit.clone())],
        );
        let (s, answer) = post(&w, "/sdapi/v1/txt2img", body).await;
        assert_eq!(s, status, "{unit}: {answer}");
        assert_eq!(a1111_error(&answer), format!("{at}.{field}"), "{unit}");
        assert!(
            answer["detail"].as_str().unwrap().contains(says),
            "{unit}: {answer}"
        );
    }
    let five = vec![a1111_unit(&control, json!({})); 5];
    let (s, answer) = post(&w, "/sdapi/v1/txt2img", with_units(txt(1), five)).await;
    assert_eq!(s, 422, "{answer}");
    assert_eq!(a1111_error(&answer), "alwayson_scripts.ControlNet.args");
}

#[tokio::test]
async fn the_extensions_routes_answer_as_the_extension_does_behind_basic_auth() {
    let w = worker(&["--api-token", "sekrit"]).await;
    let get = |path: &str| {
        let r = w
            .client
            .get(w.url(path))
            .basic_auth("anyone", Some("sekrit"))
            .send();
        async move {
            let r = r.await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let detect = |body: Value| {
        let r = w
            .client
            .post(w.url("/controlnet/detect"))
            .basic_auth("anyone", Some("sekrit"))
            .json(&body)
            .send();
        async move {
            let r = r.await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(
        get("/controlnet/version").await,
        (200, json!({"version": 3}))
    );
    assert_eq!(
        get("/controlnet/model_list?update=true").await,
        (200, json!({"model_list": ["tiny-canny"]}))
    );
    let (s, modules) = get("/controlnet/module_list").await;
    assert_eq!(s, 200);
    assert_eq!(
        modules["module_list"],
        json!(["none", "canny", "invert", "depth_anything_v2"])
    );
    assert_eq!(
        modules["module_detail"]["canny"]["sliders"][1],
        json!({"name": "Low Threshold", "value": 100, "min": 1, "max": 255, "step": 1})
    );
    let (_, labels) = get("/controlnet/module_list?alias_names=true").await;
    assert_eq!(
        labels["module_list"][2],
        json!("invert (from white bg & black line)")
    );
    let (s, e) = get("/controlnet/module_list?alias_names=maybe").await;
    assert_eq!(s, 400);
    assert_eq!(a1111_error(&e), "alias_names");

    // detect: the map /v1/preprocess computes, for each image.
    let image = control_image(80, 48);
    let (s, r) = detect(json!({"controlnet_module": "canny", "controlnet_input_images": [image, image],
        "controlnet_processor_res": 512, "controlnet_threshold_a": 60, "controlnet_threshold_b": 160}))
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["info"], "Success");
    assert_eq!(r["images"].as_array().unwrap().len(), 2);
    let ours = w
        .client
        .post(w.url("/v1/preprocess"))
        .bearer_auth("sekrit")
        .json(&json!({"image": image, "preprocessor": "canny", "low_threshold": 60, "high_threshold": 160}))
        .send()
        .await
        .unwrap();
    assert_eq!(ours.status().as_u16(), 200);
    let ours = pixels(&ours.bytes().await.unwrap());
    let theirs = pixels(&decode_b64(r["images"][0].as_str().unwrap()));
    assert_eq!(theirs.dimensions(), (80, 48));
    assert_eq!(theirs, ours);
    // webuiapi 0.9.17's field name, and a data URL; depth by the extension's name.
    let data_url = format!("data:image/png;base64,{image}");
    for module in [
        "depth_anything_v2",
        "invert (from white bg & black line)",
        "none",
    ] {
        let (s, r) =
            detect(json!({"controlnet_module": module, "controlnet_images": [data_url]})).await;
        assert_eq!(s, 200, "{module}: {r}");
        assert_eq!(
            pixels(&decode_b64(r["images"][0].as_str().unwrap())).dimensions(),
            (80, 48)
        );
    }
    for (body, status, field) in [
        (
            json!({"controlnet_module": "openpose", "controlnet_input_images": [image]}),
            422,
            "controlnet_module",
        ),
        (
            json!({"controlnet_module": "canny"}),
            422,
            "controlnet_input_images",
        ),
        (
            json!({"controlnet_module": "canny", "controlnet_input_images": ["nope"]}),
            400,
            "controlnet_input_images[0]",
        ),
        (
            json!({"controlnet_module": "canny", "controlnet_input_images": [image], "controlnet_threshold_a": "x"}),
            422,
            "controlnet_threshold_a",
        ),
    ] {
        let (s, e) = detect(body.clone()).await;
        assert_eq!(s, status, "{body}: {e}");
        assert_eq!(a1111_error(&e), field, "{body}");
    }
    // Without credentials: A1111's 401, with the Basic challenge.
    let r = w
        .client
        .get(w.url("/controlnet/model_list"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    a1111_error(&r.json().await.unwrap());
}
