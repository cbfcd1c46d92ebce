//! Helpers for the tests of AUTOMATIC1111's API (`/sdapi/v1/*`): requests as
//! A1111's clients send them, and checks of A1111's answer and error shapes.

use super::{decode_b64, Worker};
use serde_json::{json, Value};

pub async fn post(w: &Worker, path: &str, body: Value) -> (u16, Value) {
    let r = w.client.post(w.url(path)).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The `info` string of an answer, parsed.
pub fn info(answer: &Value) -> Value {
    serde_json::from_str(answer["info"].as_str().expect("info is a string")).expect("info is JSON")
}

/// The error, checked to have A1111's keys; returns its `field`.
pub fn a1111_error(body: &Value) -> String {
    for k in ["error", "detail", "body", "errors"] {
        assert!(body.get(k).is_some(), "`{k}` missing: {body}");
    }
    body["field"].as_str().unwrap_or_default().to_string()
}

pub fn txt(seed: i64) -> Value {
    json!({"prompt": "a red circle", "negative_prompt": "blurry", "steps": 3, "cfg_scale": 6.5,
           "width": 64, "height": 64, "seed": seed, "sampler_name": "Euler a"})
}

/// The first image of an A1111 answer, as PNG bytes.
pub async fn png_of(w: &Worker, body: Value) -> Vec<u8> {
    let (status, answer) = post(w, "/sdapi/v1/txt2img", body.clone()).await;
    assert_eq!(status, 200, "{body}: {answer}");
    decode_b64(answer["images"][0].as_str().unwrap())
}

/// `body` with `changes` written over it.
pub fn with(mut body: Value, changes: Value) -> Value {
    body.as_object_mut()
        .unwrap()
        .extend(changes.as_object().unwrap().clone());
    body
}
