//! OpenAI's Images API against the real binary: how OpenAI's fields map onto
//! a job, and errors in OpenAI's shape (`{"error": {"message", "type",
//! "param", "code"}}`) on these routes only. The official Python client is
//! driven by `scripts/test-openai-client.sh`.

mod common;

use common::openai::{clean_message, edit, form, generate, openai_error, png, Part};
use common::{decode_b64, gradient, Worker};
use serde_json::{json, Value};
#[tokio::test]
async fn a_size_outside_the_limits_is_an_openai_400_naming_size() {
    let w = Worker::start(&[]).await;
    for size in ["4096x64", "banana", "64x"] {
        let (status, body) = generate(&w, json!({"prompt": "a cat", "size": size})).await;
        assert_eq!(status, 400, "{size}: {body}");
        let err = openai_error(&body);
        assert_eq!(err["param"], "size", "{body}");
        assert_eq!(err["type"], "invalid_request_error");
        assert_eq!(err["code"], "invalid_value");
    }
}

#[tokio::test]
async fn fields_are_named_as_openai_names_them() {
    let w = Worker::start(&[]).await;
    let cases = [
        (json!({"size": "64x64"}), "prompt", "missing_field"),
        (json!({"prompt": "a cat", "n": "two"}), "n", "invalid_value"),
        (json!({"prompt": "a cat", "n": 999}), "n", "invalid_value"),
        (
            json!({"prompt": "a cat", "response_format": "gif"}),
            "response_format",
            "invalid_value",
        ),
        (
            json!({"prompt": "a cat", "output_format": "webp"}),
            "output_format",
            "invalid_value",
        ),
        (
            json!({"prompt": "a cat", "quality": 5}),
            "quality",
            "invalid_value",
        ),
        (
            json!({"prompt": "a cat", "stream": true, "partial_images": 4}),
            "partial_images",
            "invalid_value",
        ),
        (
            json!({"prompt": "a cat", "stream": "yes"}),
            "stream",
            "invalid_value",
        ),
        (json!({"prompt": "   "}), "prompt", "invalid_value"),
    ];
    for (body, param, code) in cases {
        let (status, res) = generate(&w, body.clone()).await;
        assert_eq!(status, 400, "{body}: {res}");
        let err = openai_error(&res);
        assert_eq!(err["param"], param, "{body}: {res}");
        assert_eq!(err["code"], code, "{body}: {res}");
    }
}

#[tokio::test]
async fn the_token_is_required_and_its_401_is_openai_shaped_on_openai_routes_only() {
    let w = Worker::start(&["--api-token", "secret"]).await;
    let (status, body) = generate(&w, json!({"prompt": "a cat"})).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(openai_error(&body)["code"], "unauthorized");
    let (status, _, _) = w
        .submit_raw(json!({"operation": "image_generation", "prompt": "a cat"}).to_string())
        .await;
    assert_eq!(status, 401);
    let (_, ours) = w.get_json("/v1/jobs/job-x").await;
    assert_eq!(
        ours["error"]["code"], "unauthorized",
        "ours keeps our shape: {ours}"
    );
    assert!(ours["error"].get("type").is_none(), "{ours}");
    let r = w
        .client
        .post(w.url("/v1/images/generations"))
        .bearer_auth("secret")
        .json(&json!({"prompt": "a cat", "size": "64x64"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn n_size_seed_and_output_format_become_the_jobs_fields() {
    let w = Worker::start(&[]).await;
    let (status, res) = generate(
        &w,
        json!({"prompt": "a cat", "n": 2, "size": "64x48", "seed": 5, "output_format": "jpeg",
               "quality": "hd", "style": "vivid", "background": "auto", "moderation": "low", "model": "dall-e-3", "user": "u1"}),
    )
    .await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["seed"], 5);
    let data = res["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert!(data
        .iter()
        .all(|d| d["revised_prompt"].is_null() && d.get("url").is_none()));
    let img = image::load_from_memory(&decode_b64(data[0]["b64_json"].as_str().unwrap())).unwrap();
    assert_eq!((img.width(), img.height()), (64, 48));
    let (_, snap) = w
        .get_json(&format!("/v1/jobs/{}", res["job_id"].as_str().unwrap()))
        .await;
    assert_eq!(snap["status"], "completed");
    assert_eq!(snap["operation"], "image_generation");
    assert_eq!(snap["seed"], 5);
    let images = snap["result"]["images"].as_array().unwrap();
    assert!(images.iter().all(|i| i["format"] == "jpeg"), "{snap}");
    assert_eq!(images[1]["image"], data[1]["b64_json"]);
}

#[tokio::test]
async fn url_answers_point_at_the_jobs_images_on_the_requests_host() {
    let w = Worker::start(&[]).await;
    let (status, res) = generate(
        &w,
        json!({"prompt": "a cat", "size": "64x64", "response_format": "url"}),
    )
    .await;
    assert_eq!(status, 200, "{res}");
    let url = res["data"][0]["url"].as_str().unwrap();
    assert_eq!(
        url,
        w.url(&format!(
            "/v1/jobs/{}/images/0",
            res["job_id"].as_str().unwrap()
        ))
    );
    let r = w.client.get(url).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "image/png");
}

#[tokio::test]
async fn an_edit_without_a_mask_is_image_to_image_and_with_one_inpainting() {
    let w = Worker::start(&[]).await;
    let input = png(gradient(64, 48).into());
    let (status, res) = edit(
        &w,
        &[
            ("image", Some("in.png"), input.clone()),
            ("prompt", None, b"a cat".to_vec()),
        ],
    )
    .await;
    assert_eq!(status, 200, "{res}");
    let (_, snap) = w
        .get_json(&format!("/v1/jobs/{}", res["job_id"].as_str().unwrap()))
        .await;
    assert_eq!(snap["operation"], "image_transform");
    let out =
        image::load_from_memory(&decode_b64(res["data"][0]["b64_json"].as_str().unwrap())).unwrap();
    assert_eq!(
        (out.width(), out.height()),
        (64, 48),
        "`size` absent: the input's size"
    );

    // OpenAI's mask: transparent = repaint. Top half transparent, bottom opaque.
    let mask = image::RgbaImage::from_fn(64, 48, |_, y| {
        image::Rgba([9, 9, 9, if y < 24 { 0 } else { 255 }])
    });
    let (status, res) = edit(
        &w,
        &[
            ("image[]", Some("in.png"), input.clone()),
            ("mask", Some("mask.png"), png(mask.into())),
            ("prompt", None, b"a cat".to_vec()),
            ("n", None, b"1".to_vec()),
            ("size", None, b"64x48".to_vec()),
        ],
    )
    .await;
    assert_eq!(status, 200, "{res}");
    let (_, snap) = w
        .get_json(&format!("/v1/jobs/{}", res["job_id"].as_str().unwrap()))
        .await;
    assert_eq!(snap["operation"], "image_inpaint");
    let out = image::load_from_memory(&decode_b64(res["data"][0]["b64_json"].as_str().unwrap()))
        .unwrap()
        .to_rgb8();
    let src = gradient(64, 48);
    let kept = (24..48).all(|y| (0..64).all(|x| out.get_pixel(x, y) == src.get_pixel(x, y)));
    assert!(kept, "the opaque part of the mask must come back unchanged");
    let changed = (0..24)
        .flat_map(|y| (0..64).map(move |x| (x, y)))
        .filter(|&(x, y)| out.get_pixel(x, y) != src.get_pixel(x, y))
        .count();
    assert!(
        changed > 64 * 24 / 2,
        "only {changed} repainted pixels changed"
    );
}

#[tokio::test]
async fn edit_refusals_name_the_openai_field() {
    let w = Worker::start(&[]).await;
    let input = png(gradient(64, 48).into());
    let opaque_mask = png(image::DynamicImage::ImageRgb8(gradient(64, 48)));
    let cases: Vec<(Vec<Part>, &str)> = vec![
        (vec![("prompt", None, b"a cat".to_vec())], "image"),
        (vec![("image", Some("in.png"), input.clone())], "prompt"),
        (
            vec![
                ("image", Some("in.png"), b"not an image".to_vec()),
                ("prompt", None, b"a".to_vec()),
            ],
            "image",
        ),
        (
            vec![
                ("image", Some("in.png"), input.clone()),
                ("mask", Some("m.png"), opaque_mask),
                ("prompt", None, b"a".to_vec()),
            ],
            "mask",
        ),
        (
            vec![
                ("image", Some("in.png"), input.clone()),
                ("prompt", None, b"a".to_vec()),
                ("n", None, b"x".to_vec()),
            ],
            "n",
        ),
        (
            vec![
                ("image", Some("in.png"), input.clone()),
                ("prompt", None, b"a".to_vec()),
                ("size", None, b"1x1".to_vec()),
            ],
            "size",
        ),
        (
            vec![
                ("image", Some("in.png"), input.clone()),
                ("prompt", None, b"a".to_vec()),
                ("stream", None, b"true".to_vec()),
                ("partial_images", None, b"9".to_vec()),
            ],
            "partial_images",
        ),
    ];
    for (parts, param) in cases {
        let (status, res) = edit(&w, &parts).await;
        assert_eq!(status, 400, "{param}: {res}");
        assert_eq!(openai_error(&res)["param"], param, "{res}");
    }
    // Not a multipart form at all.
    let r = w
        .client
        .post(w.url("/v1/images/edits"))
        .json(&json!({"prompt": "a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    openai_error(&r.json().await.unwrap());
}

#[tokio::test]
async fn a_client_that_hangs_up_while_waiting_cancels_its_job() {
    let w = Worker::start(&[]).await;
    let body = json!({"prompt": "a cat", "size": "64x64"});
    common::assert_hanging_up_cancels(&w, "/v1/images/generations", body).await;
}

/// A multipart form needs no CORS preflight, so a page on another site could
/// post one to a worker without a token: a browser request whose `Origin` is
/// neither the worker's own nor allowed by `--cors-origin` is refused; the
/// worker's own pages, allowed origins and clients without `Origin` pass.
#[tokio::test]
async fn a_cross_site_browser_form_is_refused_and_the_workers_own_pages_are_not() {
    let w = Worker::start(&["--cors-origin", "https://app.example"]).await;
    let img = png(image::DynamicImage::ImageRgb8(gradient(64, 64)));
    let parts: Vec<Part> = vec![
        ("image", Some("in.png"), img),
        ("prompt", None, b"a red circle".to_vec()),
    ];
    let post = |origin: Option<String>| {
        let (ct, body) = form(&parts);
        let mut req = w
            .client
            .post(w.url("/v1/images/edits"))
            .header("content-type", ct)
            .body(body);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        async move {
            let r = req.send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, body) = post(Some("http://evil.example".into())).await;
    assert_eq!(status, 401, "{body}");
    assert!(openai_error(&body)["message"]
        .as_str()
        .unwrap()
        .contains("--cors-origin"));
    for origin in [
        None,
        Some(w.base.clone()),
        Some("https://app.example".into()),
    ] {
        let (status, body) = post(origin.clone()).await;
        assert_eq!(status, 200, "{origin:?}: {body}");
        assert_eq!(body["data"].as_array().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn whole_number_fields_take_integral_floats_and_refuse_fractions_naming_the_openai_param() {
    let w = Worker::start(&[]).await;
    let body = json!({"prompt": "a cat", "size": "64x64", "n": 1.0, "seed": 42.0,
                      "partial_images": 2.0, "output_compression": 50.0});
    let (status, res) = generate(&w, body).await;
    assert_eq!(
        (status, &res["seed"], res["data"].as_array().map(Vec::len)),
        (200, &json!(42), Some(1)),
        "{res}"
    );
    let (status, res) = edit(
        &w,
        &[
            ("image", Some("in.png"), png(gradient(64, 48).into())),
            ("prompt", None, b"a cat".to_vec()),
            ("n", None, b"1.0".to_vec()),
            ("seed", None, b"42.0".to_vec()),
        ],
    )
    .await;
    assert_eq!((status, &res["seed"]), (200, &json!(42)), "{res}");

    for (param, sent) in [
        ("n", json!(1.5)),
        ("seed", json!(42.5)),
        ("partial_images", json!(2.5)),
        ("output_compression", json!(0.5)),
        ("n", json!("two")),
    ] {
        let (status, res) = generate(&w, json!({"prompt": "a cat", param: sent})).await;
        assert_eq!(status, 400, "{param}: {res}");
        let msg = clean_message(&res, param);
        assert!(
            msg.starts_with(&format!("`{param}` must be a whole number")),
            "{msg}"
        );
    }
    for (param, sent) in [("n", "1.5"), ("seed", "4x"), ("partial_images", "2.5")] {
        let (status, res) = edit(
            &w,
            &[
                ("image", Some("in.png"), png(gradient(64, 48).into())),
                ("prompt", None, b"a cat".to_vec()),
                (param, None, sent.as_bytes().to_vec()),
            ],
        )
        .await;
        assert_eq!(status, 400, "{param}: {res}");
        assert!(
            clean_message(&res, param).contains(&format!("not `{sent}`")),
            "{res}"
        );
    }
}

#[tokio::test]
async fn rng_torch_cpu_through_generations_gives_the_bytes_of_v1_jobs_with_the_same_seed_and_rng() {
    let w = Worker::start(&[]).await;
    let (status, res) = generate(
        &w,
        json!({"prompt": "a cat", "size": "64x64", "seed": 5, "rng": "torch-cpu"}),
    )
    .await;
    assert_eq!(status, 200, "{res}");
    let ours = decode_b64(res["data"][0]["b64_json"].as_str().unwrap());
    let job = json!({"operation": "image_generation", "prompt": "a cat", "width": 64, "height": 64, "seed": 5});
    let (_, chacha) = w.run_job(job.clone()).await;
    let mut torch = job;
    torch["rng"] = json!("torch-cpu");
    let (_, torch) = w.run_job(torch).await;
    assert_eq!(ours, torch[0]);
    assert_ne!(ours, chacha[0], "rng must change the picture");
    let text = sd_worker::pipeline::encode::read_png_parameters(&ours).unwrap();
    assert!(text.ends_with(", RNG: CPU"), "{text}");

    // Edits take it as a form field; a source that does not exist is refused on both routes.
    let image = png(gradient(64, 48).into());
    let (status, res) = edit(
        &w,
        &[
            ("image", Some("in.png"), image.clone()),
            ("prompt", None, b"a cat".to_vec()),
            ("rng", None, b"torch-cpu".to_vec()),
        ],
    )
    .await;
    assert_eq!(status, 200, "{res}");
    let png_out = decode_b64(res["data"][0]["b64_json"].as_str().unwrap());
    let text = sd_worker::pipeline::encode::read_png_parameters(&png_out).unwrap();
    assert!(text.ends_with(", RNG: CPU"), "{text}");
    let (status, res) = generate(&w, json!({"prompt": "a cat", "rng": "mersenne"})).await;
    assert_eq!(status, 400, "{res}");
    assert!(clean_message(&res, "rng").contains("`torch-cpu`"), "{res}");
    let (status, res) = edit(
        &w,
        &[
            ("image", Some("in.png"), image),
            ("prompt", None, b"a cat".to_vec()),
            ("rng", None, b"mersenne".to_vec()),
        ],
    )
    .await;
    assert_eq!(status, 400, "{res}");
    clean_message(&res, "rng");
}

#[tokio::test]
async fn refusals_speak_of_size_and_n_and_json_edits_are_told_to_send_a_form() {
    let w = Worker::start(&[]).await;
    let (status, res) = generate(&w, json!({"prompt": "a cat", "size": "102x64"})).await;
    assert_eq!(status, 400, "{res}");
    let msg = clean_message(&res, "size");
    assert!(
        msg.starts_with("`size` 102x64: the width must be a multiple of"),
        "{msg}"
    );
    let (status, res) = edit(
        &w,
        &[
            ("image", Some("in.png"), png(gradient(64, 48).into())),
            ("prompt", None, b"a cat".to_vec()),
            ("size", None, b"64x102".to_vec()),
        ],
    )
    .await;
    assert_eq!(status, 400, "{res}");
    assert!(
        clean_message(&res, "size").starts_with("`size` 64x102: the height"),
        "{res}"
    );
    let (status, res) = generate(&w, json!({"prompt": "a cat", "n": 999})).await;
    assert_eq!(status, 400, "{res}");
    let msg = clean_message(&res, "n");
    assert!(
        msg.starts_with("`n` must be") && !msg.contains("num_images"),
        "{msg}"
    );

    let r = w
        .client
        .post(w.url("/v1/images/edits"))
        .json(&json!({"prompt": "a cat", "image": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let res: Value = r.json().await.unwrap();
    let err = openai_error(&res);
    assert_eq!(
        (&err["type"], &err["code"], &err["param"]),
        (
            &json!("invalid_request_error"),
            &json!("invalid_request"),
            &Value::Null
        )
    );
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.starts_with("send the edit as multipart/form-data (OpenAI's images.edit)"),
        "{msg}"
    );
}
