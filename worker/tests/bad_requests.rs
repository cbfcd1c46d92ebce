//! Every invalid request gets a 4xx with `{"error": {"code", "message", "field"}}`
//! naming the field, and the worker keeps serving afterwards.

mod common;

use common::Worker;
use serde_json::{json, Value};

fn base() -> Value {
    json!({"operation": "image_generation", "prompt": "a cat", "steps": 2})
}

fn with(key: &str, value: Value) -> String {
    let mut b = base();
    b[key] = value;
    b.to_string()
}

fn without(key: &str) -> String {
    let mut b = base();
    b.as_object_mut().unwrap().remove(key);
    b.to_string()
}

#[tokio::test]
async fn bad_requests_get_their_status_code_and_field() {
    let w = Worker::start(&[]).await;
    // (body, status, code, field)
    let cases: Vec<(String, u16, &str, Option<&str>)> = vec![
        ("{not json".into(), 400, "invalid_json", None),
        ("".into(), 400, "invalid_json", None),
        ("[1, 2]".into(), 400, "invalid_json", None),
        (
            without("operation"),
            422,
            "missing_field",
            Some("operation"),
        ),
        (
            with("operation", json!("image_outpaint")),
            422,
            "invalid_value",
            Some("operation"),
        ),
        (
            with("operation", json!(7)),
            422,
            "invalid_value",
            Some("operation"),
        ),
        (without("prompt"), 422, "missing_field", Some("prompt")),
        (
            with("prompt", json!("   ")),
            422,
            "invalid_value",
            Some("prompt"),
        ),
        (
            with("prompt", json!(42)),
            422,
            "invalid_value",
            Some("prompt"),
        ),
        (
            with("prompt", json!("x".repeat(10_001))),
            422,
            "invalid_value",
            Some("prompt"),
        ),
        (with("steps", json!(0)), 422, "invalid_value", Some("steps")),
        (
            with("steps", json!(151)),
            422,
            "invalid_value",
            Some("steps"),
        ),
        (
            with("steps", json!(-3)),
            422,
            "invalid_value",
            Some("steps"),
        ),
        (
            with("steps", json!("ten")),
            422,
            "invalid_value",
            Some("steps"),
        ),
        (
            with("guidance_scale", json!(-0.5)),
            422,
            "invalid_value",
            Some("guidance_scale"),
        ),
        (
            with("guidance_scale", json!(30.5)),
            422,
            "invalid_value",
            Some("guidance_scale"),
        ),
        (
            with("width", json!(63)),
            422,
            "invalid_value",
            Some("width"),
        ),
        (
            with("height", json!(4096)),
            422,
            "invalid_value",
            Some("height"),
        ),
        (with("width", json!(2)), 422, "invalid_value", Some("width")),
        (
            with("num_images", json!(0)),
            422,
            "invalid_value",
            Some("num_images"),
        ),
        (
            with("num_images", json!(9)),
            422,
            "invalid_value",
            Some("num_images"),
        ),
        (
            with("seed", json!(9007199254740992u64)),
            422,
            "invalid_value",
            Some("seed"),
        ),
        (with("seed", json!(1.5)), 422, "invalid_value", Some("seed")),
        // Image i uses seed + i, which must stay within 2^53 - 1 too.
        (
            {
                let mut b = base();
                b["seed"] = json!(9007199254740990u64);
                b["num_images"] = json!(3);
                b.to_string()
            },
            422,
            "invalid_value",
            Some("seed"),
        ),
        (
            with("scheduler", json!("plms")),
            422,
            "invalid_value",
            Some("scheduler"),
        ),
        // Known, but only for flow-matching models (SD 3): not listed for this one.
        (
            with("scheduler", json!("flow_euler")),
            422,
            "invalid_value",
            Some("scheduler"),
        ),
        // LCM samples from the model's 50 original steps: more is refused up front.
        (
            {
                let mut b = base();
                b["scheduler"] = json!("lcm");
                b["steps"] = json!(51);
                b.to_string()
            },
            422,
            "invalid_value",
            Some("steps"),
        ),
        (
            with("model", json!("stabilityai/sdxl-turbo")),
            422,
            "model_mismatch",
            Some("model"),
        ),
        (
            with("output_format", json!("gif")),
            422,
            "invalid_value",
            Some("output_format"),
        ),
        (
            with("rng", json!("nv-gpu")),
            422,
            "invalid_value",
            Some("rng"),
        ),
        (
            with("negative_prompt", json!(["a"])),
            422,
            "invalid_value",
            Some("negative_prompt"),
        ),
    ];
    assert!(cases.len() >= 15);
    for (body, status, code, field) in &cases {
        let (got, _, json) = w.submit_raw(body.clone()).await;
        let err = &json["error"];
        assert_eq!(got, *status, "status for {body:.80}: {json}");
        assert_eq!(err["code"], *code, "code for {body:.80}: {json}");
        assert_eq!(
            err["field"].as_str(),
            *field,
            "field for {body:.80}: {json}"
        );
        assert!(
            !err["message"].as_str().unwrap_or("").is_empty(),
            "message for {body:.80}"
        );
    }
    // Unknown operations list the valid ones.
    let (_, _, json) = w.submit_raw(with("operation", json!("nope"))).await;
    assert!(json["error"]["message"]
        .as_str()
        .unwrap()
        .contains("image_generation"));
    // Nothing above hurt the worker: a good request still completes.
    let job = w.submit(base()).await;
    let msgs = w.stream_all(job["job_id"].as_str().unwrap(), None).await;
    assert_eq!(msgs[msgs.len() - 2].kind(), "complete");
}

/// A side below the minimum is told the range first: "between 32 and …",
/// not "a multiple of 4" (30 fixed to 32 would pass; 28 would not).
#[tokio::test]
async fn a_side_below_the_minimum_is_told_the_minimum() {
    let w = Worker::start(&[]).await;
    let (status, _, err) = w.submit_raw(with("width", json!(30))).await;
    assert_eq!(status, 422, "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("`width` must be between 32 and "),
        "{message}"
    );
    // Within the range, the multiple is what is wrong.
    let (status, _, err) = w.submit_raw(with("width", json!(66))).await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["message"], "`width` must be a multiple of 4");
}

#[tokio::test]
async fn a_body_not_sent_as_json_gets_415() {
    // Browsers send text/plain and form bodies cross-origin without a CORS
    // preflight: refusing them keeps foreign pages from submitting jobs.
    let w = Worker::start(&[]).await;
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut req = w.client.post(w.url("/v1/jobs")).body(base().to_string());
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 415, "{ct:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unsupported_media_type");
    }
    let r = w
        .client
        .post(w.url("/v1/jobs"))
        .header("content-type", "application/json; charset=utf-8")
        .body(base().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}

#[tokio::test]
async fn an_oversized_body_gets_413() {
    let w = Worker::start(&["--max-body-bytes", "2048"]).await;
    let (status, _, json) = w.submit_raw(with("prompt", json!("y".repeat(4000)))).await;
    assert_eq!(status, 413, "{json}");
    assert_eq!(json["error"]["code"], "payload_too_large");
}

#[tokio::test]
async fn hive_fields_are_accepted_and_the_model_may_be_named() {
    let w = Worker::start(&[]).await;
    let (_, info) = w.get_json("/v1/info").await;
    let model = info["model"]["id"].as_str().unwrap().to_string();
    let mut body = base();
    body["hive_id"] = json!("hive-1");
    body["worker_id"] = json!("worker-1");
    body["model"] = json!(model);
    let (status, _, json) = w.submit_raw(body.to_string()).await;
    assert_eq!(status, 202, "{json}");
}
