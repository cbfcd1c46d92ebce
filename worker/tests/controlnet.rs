//! ControlNet over HTTP: the real worker on the tiny model with tiny
//! ControlNets written by the project's generator, in the layouts users have
//! (a diffusers folder given with `--controlnet`, a single LDM-layout file and
//! an SDXL ControlNet in a `--controlnet-dir`).

mod common;

use common::{b64_png, gradient, right_half_mask_png, Worker};
use image::RgbImage;
use sd_worker::model::controlnet::{generate::write_controlnet, ControlNetConfig};
use sd_worker::model::generate::WeightInit;
use sd_worker::model::shapes::ModelShape;
use sd_worker::model::single_file::controlnet::write_ldm_controlnet;
use sd_worker::pipeline::encode::read_png_parameters;
use serde_json::{json, Value};
use std::path::PathBuf;

/// The ControlNets of these tests, written once per test binary:
/// `tiny-canny` (a diffusers folder, for `--controlnet`) and, in the folder
/// for `--controlnet-dir`, `single-canny.safetensors` (the same weights in
/// the LDM layout) and `xl-net` (an SDXL ControlNet, which the SD 1.x tiny
/// model cannot take).
struct Nets {
    root: PathBuf,
}

impl Nets {
    fn get() -> &'static Nets {
        static NETS: std::sync::OnceLock<Nets> = std::sync::OnceLock::new();
        NETS.get_or_init(|| {
            let root =
                std::env::temp_dir().join(format!("sd-worker-controlnets-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            let canny = root.join("tiny-canny");
            let cfg = ControlNetConfig::for_shape(&ModelShape::tiny()).unwrap();
            write_controlnet(&canny, &cfg, WeightInit::Seeded(5)).unwrap();
            let dir = root.join("dir");
            std::fs::create_dir_all(&dir).unwrap();
            write_ldm_controlnet(&canny, &dir.join("single-canny.safetensors")).unwrap();
            write_controlnet(&dir.join("second-canny"), &cfg, WeightInit::Seeded(7)).unwrap();
            // SD 2.x's differs from SD 1.x's tiny shape only in its projections.
            let sd2 = ControlNetConfig::for_shape(&ModelShape::tiny_sd2()).unwrap();
            write_controlnet(&dir.join("sd2-net"), &sd2, WeightInit::Seeded(8)).unwrap();
            let xl = ControlNetConfig::for_shape(&ModelShape::tiny_sdxl()).unwrap();
            write_controlnet(&dir.join("xl-net"), &xl, WeightInit::Seeded(6)).unwrap();
            sd_worker::preprocess::depth_tiny::write_tiny_depth_model(&root.join("depth"), 9)
                .unwrap();
            Nets { root }
        })
    }

    fn path(&self, rel: &str) -> String {
        self.root.join(rel).to_str().unwrap().to_string()
    }
}

async fn worker() -> Worker {
    let nets = Nets::get();
    Worker::start(&[
        "--controlnet",
        &nets.path("tiny-canny"),
        "--controlnet-dir",
        &nets.path("dir"),
        "--depth-model",
        &nets.path("depth"),
    ])
    .await
}

/// A control image with strong edges: a bright square on a dark ground.
fn control_image(w: u32, h: u32) -> String {
    let img = RgbImage::from_fn(w, h, |x, y| {
        let inside = (w / 4..3 * w / 4).contains(&x) && (h / 4..3 * h / 4).contains(&y);
        image::Rgb(if inside { [230, 220, 40] } else { [20, 30, 60] })
    });
    b64_png(image::DynamicImage::ImageRgb8(img))
}

fn text_job(units: Value) -> Value {
    let mut body = json!({
        "operation": "image_generation", "prompt": "a red square", "steps": 4,
        "width": 64, "height": 64, "seed": 11, "guidance_scale": 5.0,
    });
    if !units.is_null() {
        body["controlnets"] = units;
    }
    body
}

fn unit(model: &str, extra: Value) -> Value {
    let mut u = json!({ "model": model, "image": control_image(64, 64), "preprocessor": "canny" });
    for (k, v) in extra.as_object().unwrap() {
        u[k] = v.clone();
    }
    u
}

fn pixels(png: &[u8]) -> RgbImage {
    image::load_from_memory(png).unwrap().to_rgb8()
}

/// Largest difference of one channel of one pixel.
fn max_diff(a: &RgbImage, b: &RgbImage) -> u8 {
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap()
}

async fn one_image(w: &Worker, body: Value) -> (RgbImage, Vec<u8>) {
    let (_, images) = w.run_job(body).await;
    (pixels(&images[0]), images[0].clone())
}

#[tokio::test]
async fn info_lists_the_controlnets_of_the_models_family_and_the_preprocessors() {
    let w = worker().await;
    let (status, info) = w.get_json("/v1/info").await;
    assert_eq!(status, 200);
    let nets = info["controlnets"].as_array().unwrap();
    let names: Vec<&str> = nets.iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["second-canny", "single-canny", "tiny-canny"],
        "{info}"
    );
    for n in nets {
        assert_eq!(n["family"], "stable-diffusion-1");
        let m = &n["memory"];
        assert!(m["weights_bytes"].as_u64().unwrap() > 0, "{n}");
        assert!(m["activations_bytes"].as_u64().unwrap() > 0, "{n}");
    }
    // --controlnet ones are loaded at start, --controlnet-dir ones on first use.
    let loaded = |info: &Value, name: &str| {
        info["controlnets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .unwrap()["loaded"]
            .as_bool()
            .unwrap()
    };
    assert!(loaded(&info, "tiny-canny"));
    assert!(!loaded(&info, "single-canny"));
    let pre: Vec<&str> = info["preprocessors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for name in ["none", "canny", "invert", "scribble"] {
        assert!(pre.contains(&name), "{pre:?}");
    }
    w.run_job(text_job(json!([unit("single-canny", json!({}))])))
        .await;
    let (_, info) = w.get_json("/v1/info").await;
    assert!(loaded(&info, "single-canny"));
}

/// Scale 0, or a unit active at no step, leaves the picture exactly as
/// without it; scale 1 changes it; half a unit twice is about one unit
/// (the residuals are summed); the single file gives the very pixels of the
/// folder it was written from.
#[tokio::test]
async fn units_steer_text_to_image_and_switch_off_exactly() {
    let w = worker().await;
    let (plain, _) = one_image(&w, text_job(Value::Null)).await;
    let (steered, png) = one_image(&w, text_job(json!([unit("tiny-canny", json!({}))]))).await;
    let d = max_diff(&plain, &steered);
    assert!(
        d > 8,
        "a ControlNet at scale 1 moved no pixel by more than {d}"
    );

    let (zero, _) = one_image(
        &w,
        text_job(json!([unit(
            "tiny-canny",
            json!({"conditioning_scale": 0.0})
        )])),
    )
    .await;
    assert_eq!(max_diff(&plain, &zero), 0, "scale 0 must change nothing");

    // 4 steps: start 0.9 keeps no step (i / 4 < 0.9 for every i).
    let (never, _) = one_image(
        &w,
        text_job(json!([unit("tiny-canny", json!({"guidance_start": 0.9}))])),
    )
    .await;
    assert_eq!(max_diff(&plain, &never), 0, "a unit active at no step");
    // Start 0.5: only the last two steps; neither plain nor fully steered.
    let (late, _) = one_image(
        &w,
        text_job(json!([unit("tiny-canny", json!({"guidance_start": 0.5}))])),
    )
    .await;
    assert!(max_diff(&plain, &late) > 0 && max_diff(&steered, &late) > 0);

    let half = json!({"conditioning_scale": 0.5});
    let (twice, _) = one_image(
        &w,
        text_job(json!([
            unit("tiny-canny", half.clone()),
            unit("tiny-canny", half)
        ])),
    )
    .await;
    let d = max_diff(&steered, &twice);
    assert!(d <= 2, "two half units differ from one by {d}");

    let (single, _) = one_image(&w, text_job(json!([unit("single-canny", json!({}))]))).await;
    assert_eq!(
        max_diff(&steered, &single),
        0,
        "the single file must give the folder's pixels"
    );

    let params = read_png_parameters(&png).unwrap();
    assert!(
        params.contains(
            r#"ControlNet 0: "Module: canny, Model: tiny-canny, Weight: 1.0, Threshold A: 100, Threshold B: 200, Guidance Start: 0.0, Guidance End: 1.0""#
        ),
        "{params}"
    );
}

/// Image to image and inpainting take units too (and text to image a
/// `resize_mode` for them).
#[tokio::test]
async fn units_steer_image_to_image_and_inpainting() {
    let w = worker().await;
    let input = b64_png(image::DynamicImage::ImageRgb8(gradient(64, 64)));
    let mask = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(right_half_mask_png(64, 64))
    };
    for (op, extra) in [
        ("image_transform", json!({"strength": 0.75})),
        ("image_inpaint", json!({"mask": mask})),
    ] {
        let mut body = json!({
            "operation": op, "prompt": "a red square", "steps": 4, "seed": 3, "image": input,
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (plain, _) = one_image(&w, body.clone()).await;
        body["controlnets"] = json!([unit("tiny-canny", json!({}))]);
        let (steered, _) = one_image(&w, body).await;
        assert!(
            max_diff(&plain, &steered) > 0,
            "{op}: the unit changed nothing"
        );
    }
    // A depth unit beside a canny one.
    w.run_job(text_job(json!([
        unit("tiny-canny", json!({})),
        unit("single-canny", json!({"preprocessor": "depth"}))
    ])))
    .await;
    let mut fit = text_job(json!([unit("tiny-canny", json!({}))]));
    fit["resize_mode"] = json!("fit");
    fit["controlnets"][0]["image"] = json!(control_image(96, 48));
    w.run_job(fit).await;
}

fn loaded(info: &Value) -> Vec<&str> {
    info["controlnets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["loaded"] == true)
        .map(|n| n["name"].as_str().unwrap())
        .collect()
}

/// With no room in the cache, a `--controlnet-dir` ControlNet stays loaded
/// only while it is the last one used; `--controlnet` ones always stay.
#[tokio::test]
async fn the_cache_keeps_the_most_recently_used_dir_controlnets_within_its_budget() {
    let nets = Nets::get();
    let w = Worker::start(&[
        "--controlnet",
        &nets.path("tiny-canny"),
        "--controlnet-dir",
        &nets.path("dir"),
        "--controlnet-cache-mb",
        "0",
    ])
    .await;
    let (_, info) = w.get_json("/v1/info").await;
    assert_eq!(loaded(&info), ["tiny-canny"]);
    for (net, want) in [
        ("single-canny", ["single-canny", "tiny-canny"]),
        ("second-canny", ["second-canny", "tiny-canny"]),
        ("tiny-canny", ["second-canny", "tiny-canny"]),
        ("single-canny", ["single-canny", "tiny-canny"]),
    ] {
        w.run_job(text_job(json!([unit(net, json!({}))]))).await;
        let (_, info) = w.get_json("/v1/info").await;
        assert_eq!(loaded(&info), want, "after a job with {net}");
    }
}

async fn refused(w: &Worker, units: Value) -> (u16, Value) {
    let (status, _, body) = w.submit_raw(text_job(units).to_string()).await;
    (status, body)
}

#[tokio::test]
async fn bad_units_are_refused_naming_the_field_and_nothing_is_queued() {
    let w = worker().await;
    let submitted = |m: &str| {
        m.lines()
            .filter(|l| l.starts_with("sd_worker_jobs_submitted_total"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum::<f64>()
    };
    let before = submitted(&w.metrics().await);
    let cases = [
        (
            unit("nope", json!({})),
            422,
            "controlnets[0].model",
            "unknown ControlNet",
        ),
        (
            unit("xl-net", json!({})),
            422,
            "controlnets[0].model",
            "stable-diffusion-xl",
        ),
        (
            json!({"model": "tiny-canny", "image": "bm90IGFuIGltYWdl"}),
            400,
            "controlnets[0].image",
            "",
        ),
        (
            unit("tiny-canny", json!({"conditioning_scale": 2.5})),
            422,
            "controlnets[0].conditioning_scale",
            "between 0 and 2",
        ),
        (
            unit(
                "tiny-canny",
                json!({"guidance_start": 0.6, "guidance_end": 0.4}),
            ),
            422,
            "controlnets[0].guidance_end",
            "above `guidance_start`",
        ),
        (
            unit("tiny-canny", json!({"threshold": 50})),
            422,
            "controlnets[0].threshold",
            "scribble",
        ),
        (
            unit("tiny-canny", json!({"preprocessor": "sobel"})),
            422,
            "controlnets[0].preprocessor",
            "",
        ),
        (
            json!({"image": control_image(8, 8)}),
            422,
            "controlnets[0].model",
            "",
        ),
    ];
    for (u, status, field, words) in cases {
        let (got, body) = refused(&w, json!([u])).await;
        assert_eq!(got, status, "{body}");
        assert_eq!(body["error"]["field"], field, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{message}");
    }
    let five: Vec<Value> = (0..5).map(|_| unit("tiny-canny", json!({}))).collect();
    let (got, body) = refused(&w, json!(five)).await;
    assert_eq!(
        (got, body["error"]["field"].as_str()),
        (422, Some("controlnets"))
    );
    assert_eq!(
        submitted(&w.metrics().await),
        before,
        "a refused job was queued"
    );
}

/// A `--controlnet` of another family stops the worker at start with the
/// reason (it was asked for explicitly).
#[tokio::test]
async fn a_controlnet_of_another_family_stops_the_worker_at_start() {
    let xl = Nets::get().path("dir/xl-net");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sd-worker"))
        .args(["--port", "0", "--model-path"])
        .arg(common::tiny_model())
        .args(["--controlnet", &xl])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--controlnet") && stderr.contains("stable-diffusion-xl"),
        "{stderr}"
    );
}

async fn preprocess(w: &Worker, body: Value) -> reqwest::Response {
    w.client
        .post(w.url("/v1/preprocess"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// `POST /v1/preprocess` answers the map the worker's preprocessor computes,
/// as a PNG of the input's size; bad requests name the field.
#[tokio::test]
async fn preprocess_answers_the_control_map_as_a_png() {
    let w = worker().await;
    let image = control_image(40, 24);
    let r = preprocess(
        &w,
        json!({"image": image, "preprocessor": "canny", "low_threshold": 50}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    let map = pixels(&r.bytes().await.unwrap());
    assert_eq!(map.dimensions(), (40, 24));
    let input = image::load_from_memory(&common::decode_b64(&image)).unwrap();
    let want = sd_worker::preprocess::canny_edges(&input.to_rgb8(), 50, 200);
    let edges: Vec<u8> = map.pixels().map(|p| p[0]).collect();
    assert_eq!(edges, want.into_raw());
    assert!(edges.contains(&255) && edges.contains(&0));

    let r = preprocess(&w, json!({"image": image, "preprocessor": "invert"})).await;
    let inverted = pixels(&r.bytes().await.unwrap());
    let first = input.to_rgb8().get_pixel(0, 0).0;
    assert_eq!(inverted.get_pixel(0, 0).0, first.map(|v| 255 - v));

    for (body, status, field) in [
        (
            json!({"image": image, "preprocessor": "sobel"}),
            422,
            "preprocessor",
        ),
        (
            json!({"image": "bm90IGFuIGltYWdl", "preprocessor": "canny"}),
            400,
            "image",
        ),
        (json!({"preprocessor": "canny"}), 422, "image"),
        (
            json!({"image": image, "preprocessor": "invert", "low_threshold": 3}),
            422,
            "low_threshold",
        ),
        (
            json!({"image": image, "preprocessor": "canny", "high_threshold": 300}),
            422,
            "high_threshold",
        ),
    ] {
        let r = preprocess(&w, body).await;
        assert_eq!(r.status().as_u16(), status);
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["field"], field, "{e}");
    }
}
