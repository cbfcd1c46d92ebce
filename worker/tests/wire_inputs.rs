//! What clients actually send, over HTTP against the real worker: every value
//! the worker cannot read is a JSON error naming what is at fault, whichever
//! part of the request carries it (body field, path parameter, query
//! parameter, header, studio path); JSON's one number type is read as JSON
//! means it; `null` is absent; AUTOMATIC1111's `"seed": -1` is a random seed.

mod common;

use base64::Engine as _;
use common::Worker;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const MAX_SEED: u64 = (1 << 53) - 1;

fn gen(extra: Value) -> Value {
    let mut body = json!({"operation": "image_generation", "prompt": "a red circle", "steps": 2});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn png_b64(w: u32, h: u32) -> String {
    let img = image::RgbImage::from_fn(w, h, |x, _| image::Rgb([(x * 4) as u8, 90, 200]));
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    base64::engine::general_purpose::STANDARD.encode(png)
}

fn inpaint(extra: Value) -> Value {
    let mask =
        base64::engine::general_purpose::STANDARD.encode(common::right_half_mask_png(64, 64));
    let mut body = json!({"operation": "image_inpaint", "prompt": "a boat", "steps": 2,
        "image": png_b64(64, 64), "mask": mask});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// Asserts a JSON error of `status` with `code` and `field`, and a message.
#[track_caller]
fn assert_error(what: &str, status: u16, json: &Value, want: (u16, &str, Option<&str>)) {
    let err = &json["error"];
    assert_eq!(status, want.0, "status for {what}: {json}");
    assert_eq!(err["code"], want.1, "code for {what}: {json}");
    assert_eq!(err["field"].as_str(), want.2, "field for {what}: {json}");
    assert!(
        !err["message"].as_str().unwrap_or("").is_empty(),
        "message for {what}: {json}"
    );
}

/// A GET with optional extra headers: status, content type, body as JSON (or Null).
async fn get(w: &Worker, path: &str, headers: &[(&str, &str)]) -> (u16, String, Value) {
    let mut req = w.client.get(w.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, r.json().await.unwrap_or(Value::Null))
}

/// One request with the request target sent byte for byte (no client-side
/// normalisation of `..`, `%2E` or anything else): status, content type, body.
fn raw(w: &Worker, method: &str, target: &str, headers: &str) -> (u16, String, String) {
    let addr = w.base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let ct = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, ct, body.to_string())
}

// ---------------------------------------------------------------------------
// Item 7: seeds and out-of-range or wrong values
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_negative_seed_means_a_random_seed_as_in_automatic1111() {
    let w = Worker::start(&[]).await;
    let mut seeds = Vec::new();
    for seed in [
        json!(-1),
        json!(-1),
        json!(-42),
        json!(-1.0),
        json!(i64::MIN),
    ] {
        let (status, _, json) = w.submit_raw(gen(json!({"seed": seed})).to_string()).await;
        assert_eq!(status, 202, "seed {seed}: {json}");
        let used = json["seed"].as_u64().expect("the seed used is returned");
        assert!(used <= MAX_SEED, "{used}");
        seeds.push(used);
    }
    seeds.dedup();
    assert!(seeds.len() > 1, "random seeds differ: {seeds:?}");
    // With several images, `seed + i` stays within range too.
    let (status, _, json) = w
        .submit_raw(gen(json!({"seed": -1, "num_images": 8})).to_string())
        .await;
    assert_eq!(status, 202, "{json}");
    assert!(json["seed"].as_u64().unwrap() + 7 <= MAX_SEED);
}

#[tokio::test]
async fn every_wrong_or_out_of_range_value_is_a_422_invalid_value_naming_the_field() {
    let w = Worker::start(&[]).await;
    let cases = [
        (gen(json!({"steps": 4.5})), "steps"),
        (gen(json!({"steps": -3})), "steps"),
        (gen(json!({"steps": "ten"})), "steps"),
        (gen(json!({"steps": 1e10})), "steps"),
        (gen(json!({"width": 64.5})), "width"),
        (gen(json!({"width": 4294967296u64})), "width"),
        (gen(json!({"height": 4294967296.0})), "height"),
        (gen(json!({"num_images": "2"})), "num_images"),
        (gen(json!({"num_images": true})), "num_images"),
        (gen(json!({"preview_every": -1})), "preview_every"),
        (gen(json!({"preview_every": 0.5})), "preview_every"),
        (gen(json!({"seed": 1.5})), "seed"),
        (gen(json!({"seed": -0.5})), "seed"),
        (gen(json!({"seed": "42"})), "seed"),
        (gen(json!({"seed": 1e20})), "seed"),
        (gen(json!({"guidance_scale": "7"})), "guidance_scale"),
        (gen(json!({"output_format": "gif"})), "output_format"),
        (gen(json!({"negative_prompt": ["a"]})), "negative_prompt"),
        (gen(json!({"scheduler": 5})), "scheduler"),
        (gen(json!({"prompt": 42})), "prompt"),
        (gen(json!({"operation": 7})), "operation"),
        (gen(json!({"operation": {"a": 1}})), "operation"),
        (inpaint(json!({"mask_blur": 1.5})), "mask_blur"),
        (inpaint(json!({"mask_blur": -1})), "mask_blur"),
        (inpaint(json!({"strength": "x"})), "strength"),
        (inpaint(json!({"resize_mode": "squash"})), "resize_mode"),
        (inpaint(json!({"image": 17})), "image"),
    ];
    for (body, field) in cases {
        let (status, _, json) = w.submit_raw(body.to_string()).await;
        let what = format!("{field} in {:.120}", body.to_string());
        assert_error(&what, status, &json, (422, "invalid_value", Some(field)));
    }
    // What stays a 400: a body that is not a JSON object, a field given twice.
    let (status, _, json) = w.submit_raw("[1]").await;
    assert_error("an array", status, &json, (400, "invalid_json", None));
    let dup = inpaint(json!({"init_image": png_b64(64, 64)}));
    let (status, _, json) = w.submit_raw(dup.to_string()).await;
    assert_error(
        "image twice",
        status,
        &json,
        (400, "invalid_request", Some("image")),
    );
}

// ---------------------------------------------------------------------------
// Item 8: JSON has one number type
// ---------------------------------------------------------------------------

#[tokio::test]
async fn integer_fields_accept_integral_floats() {
    let w = Worker::start(&[]).await;
    let body = gen(json!({
        "steps": 2.0, "seed": 42.0, "width": 64.0, "height": 6.4e1,
        "num_images": 1e0, "preview_every": 1.0
    }));
    let (msgs, images) = w.run_job(body).await;
    assert_eq!(images.len(), 1);
    let started = msgs.iter().find(|m| m.kind() == "started").unwrap();
    assert_eq!(started.json()["total"], 2);
    assert!(
        msgs.iter().any(|m| m.kind() == "preview"),
        "previews every step"
    );
    let complete = msgs.iter().find(|m| m.kind() == "complete").unwrap();
    let img = &complete.json()["images"][0];
    assert_eq!(
        (img["seed"].as_u64(), img["width"].as_u64()),
        (Some(42), Some(64))
    );
    // The same on the image fields, and the job is the one an integer asks for.
    let (_, a) = w.run_job(inpaint(json!({"seed": 7, "mask_blur": 2}))).await;
    let (_, b) = w
        .run_job(inpaint(json!({"seed": 7.0, "mask_blur": 2.0})))
        .await;
    assert_eq!(a, b, "4.0 is 4");
}

// ---------------------------------------------------------------------------
// Item 9: null is absent
// ---------------------------------------------------------------------------

#[tokio::test]
async fn null_is_the_same_as_an_absent_field() {
    let w = Worker::start(&[]).await;
    // Required fields: missing.
    for (body, field) in [
        (gen(json!({"operation": null})), "operation"),
        (gen(json!({"prompt": null})), "prompt"),
        (inpaint(json!({"image": null})), "image"),
        (inpaint(json!({"mask": null})), "mask"),
    ] {
        let (status, _, json) = w.submit_raw(body.to_string()).await;
        assert_error(
            &format!("{field}: null"),
            status,
            &json,
            (422, "missing_field", Some(field)),
        );
    }
    // Optional fields: their defaults; image fields set to null are not
    // "misplaced" on image_generation, and a null name is not a second name.
    let nulls = gen(json!({
        "negative_prompt": null, "steps": null, "guidance_scale": null, "seed": null,
        "width": null, "height": null, "scheduler": null, "num_images": null,
        "preview_every": null, "output_format": null, "model": null, "hive_id": null,
        "image": null, "mask": null, "strength": null, "mask_blur": null, "resize_mode": null
    }));
    let (status, _, json) = w.submit_raw(nulls.to_string()).await;
    assert_eq!(status, 202, "{json}");
    let mut renamed = inpaint(json!({"image": null, "init_image": png_b64(64, 64)}));
    renamed["mask_image"] = renamed["mask"].take();
    let (status, _, json) = w.submit_raw(renamed.to_string()).await;
    assert_eq!(status, 202, "{json}");
}

// ---------------------------------------------------------------------------
// Item 6: path, query and header values
// ---------------------------------------------------------------------------

#[tokio::test]
async fn an_event_id_that_does_not_parse_is_a_400_naming_it_in_the_header_or_the_query() {
    let w = Worker::start(&[]).await;
    let job = w.submit(gen(json!({"seed": 1}))).await;
    let id = job["job_id"].as_str().unwrap();
    let all = w.stream_all(id, None).await;
    assert_eq!(all.last().unwrap().kind(), "[DONE]");
    let stream = format!("/v1/jobs/{id}/stream");
    for bad in [
        "abc",
        "-1",
        "",
        "1.5",
        "+3",
        " 3x",
        "99999999999999999999999999",
    ] {
        let q = format!(
            "{stream}?last_event_id={}",
            bad.replace(' ', "%20").replace('+', "%2B")
        );
        let (status, ct, json) = get(&w, &q, &[]).await;
        assert!(ct.starts_with("application/json"), "{q}: {ct}");
        assert_error(
            &q,
            status,
            &json,
            (400, "invalid_request", Some("last_event_id")),
        );

        let (status, ct, json) = get(&w, &stream, &[("Last-Event-ID", bad)]).await;
        assert!(ct.starts_with("application/json"), "header {bad:?}: {ct}");
        assert_error(
            &format!("header {bad:?}"),
            status,
            &json,
            (400, "invalid_request", Some("Last-Event-ID")),
        );
    }
    // A bad header is refused even beside a good query parameter, and the reverse.
    let (status, _, json) = get(
        &w,
        &format!("{stream}?last_event_id=2"),
        &[("Last-Event-ID", "x")],
    )
    .await;
    assert_error(
        "bad header",
        status,
        &json,
        (400, "invalid_request", Some("Last-Event-ID")),
    );
    let (status, _, json) = get(
        &w,
        &format!("{stream}?last_event_id=x"),
        &[("Last-Event-ID", "2")],
    )
    .await;
    assert_error(
        "bad query",
        status,
        &json,
        (400, "invalid_request", Some("last_event_id")),
    );
    // The unknown job is not looked up before the id is read.
    let (status, _, json) = get(&w, "/v1/jobs/job-none/stream", &[("Last-Event-ID", "x")]).await;
    assert_error(
        "unknown job",
        status,
        &json,
        (400, "invalid_request", Some("Last-Event-ID")),
    );

    // Good ids resume the same way in both forms.
    let after_two: Vec<_> = all
        .iter()
        .filter(|m| m.id().is_none_or(|i| i > 2))
        .cloned()
        .collect();
    assert_eq!(w.stream_all(id, Some(2)).await, after_two);
    let mut via_query = Vec::new();
    let r = w
        .client
        .get(w.url(&format!("{stream}?last_event_id=2")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        via_query.push(
            block
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .map(str::to_string),
        );
    }
    let ids: Vec<_> = after_two
        .iter()
        .map(|m| m.id().map(|i| i.to_string()))
        .collect();
    assert_eq!(via_query, ids);
}

#[tokio::test]
async fn path_parameters_that_do_not_parse_are_a_400_naming_them() {
    let w = Worker::start(&[]).await;
    let (_, images) = w.run_job(gen(json!({"seed": 5}))).await;
    assert_eq!(images.len(), 1);
    let job = w.submit(gen(json!({"seed": 6}))).await;
    let id = job["job_id"].as_str().unwrap();
    for index in ["abc", "-1", "1.5", "99999999999999999999999", "%20"] {
        let path = format!("/v1/jobs/{id}/images/{index}");
        let (status, ct, json) = get(&w, &path, &[]).await;
        assert!(ct.starts_with("application/json"), "{path}: {ct}");
        assert_error(
            &path,
            status,
            &json,
            (400, "invalid_request", Some("index")),
        );
    }
    // A job id that is not UTF-8 once decoded, on every route that takes one.
    for (method, path) in [
        ("GET", "/v1/jobs/%FF"),
        ("DELETE", "/v1/jobs/%FF%FE"),
        ("GET", "/v1/jobs/%C3/stream"),
        ("GET", "/v1/jobs/%FF/images/0"),
    ] {
        let (status, ct, body) = raw(&w, method, path, "");
        assert!(ct.starts_with("application/json"), "{method} {path}: {ct}");
        let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_error(path, status, &json, (400, "invalid_request", Some("id")));
    }
}

// ---------------------------------------------------------------------------
// Item 5: the studio's files
// ---------------------------------------------------------------------------

fn studio_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sd-worker-wire-studio-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(
        dir.join("index.html"),
        "<!doctype html><title>studio</title>",
    )
    .unwrap();
    std::fs::write(dir.join("assets/app-1.js"), "console.log(1);").unwrap();
    dir
}

#[tokio::test]
async fn studio_paths_that_name_no_readable_file_get_a_json_404_on_head_and_get() {
    let dir = studio_dir();
    let w = Worker::start(&["--studio-dir", dir.to_str().unwrap()]).await;
    let long = "a".repeat(300);
    let paths = [
        "/%00".to_string(),
        "/index.html%00".to_string(),
        "/assets/%00.js".to_string(),
        "/a%00b".to_string(),
        "/%0A".to_string(),
        "/%FF".to_string(),
        "/gallery/%C3".to_string(),
        "/..%2F..%2Fetc%2Fpasswd".to_string(),
        "/assets/%2E%2E/index.html".to_string(),
        "/assets/..%5Capp-1.js".to_string(),
        format!("/{long}"),
        format!("/assets/{long}.js"),
        format!("/{}", "b/".repeat(600)),
    ];
    for path in &paths {
        for method in ["HEAD", "GET"] {
            let (status, ct, body) = raw(&w, method, path, "");
            assert_eq!(status, 404, "{method} {path:.80}");
            assert!(
                ct.starts_with("application/json"),
                "{method} {path:.80}: {ct:?}"
            );
            if method == "GET" {
                let json: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(json["error"]["code"], "not_found", "{path:.80}");
            } else {
                assert!(body.is_empty(), "HEAD has no body");
            }
        }
    }
    // A range past the end of a file keeps its 416, with the API's error body.
    let (status, ct, body) = raw(&w, "GET", "/assets/app-1.js", "Range: bytes=9999-\r\n");
    assert_eq!(status, 416);
    assert!(ct.starts_with("application/json"), "{ct:?}");
    let json: Value = serde_json::from_str(&body).unwrap();
    assert!(json["error"]["code"].is_string(), "{json}");
    // The studio is served as before.
    for method in ["HEAD", "GET"] {
        assert_eq!(raw(&w, method, "/", "").0, 200);
        assert_eq!(raw(&w, method, "/assets/app-1.js", "").0, 200);
        assert_eq!(raw(&w, method, "/gallery/item-3", "").0, 200);
        assert_eq!(raw(&w, method, "/caf%C3%A9", "").0, 200);
    }
    let _ = std::fs::remove_dir_all(dir);
}
