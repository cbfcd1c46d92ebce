//! Helpers for the tests of OpenAI's Images API (`/v1/images/*`): requests
//! as OpenAI's clients send them, and checks of OpenAI's error shape.

use super::{b64_png, decode_b64, Worker};
use serde_json::Value;

pub async fn generate(w: &Worker, body: Value) -> (u16, Value) {
    let r = w
        .client
        .post(w.url("/v1/images/generations"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// One part of a multipart form: `(name, filename, bytes)`; a part without a filename is text.
pub type Part<'a> = (&'a str, Option<&'a str>, Vec<u8>);

/// A multipart form of `parts`.
pub fn form(parts: &[Part]) -> (String, Vec<u8>) {
    let boundary = "sd-worker-test-boundary";
    let mut body = Vec::new();
    for (name, file, bytes) in parts {
        body.extend(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").bytes(),
        );
        if let Some(file) = file {
            body.extend(format!("; filename=\"{file}\"\r\nContent-Type: image/png").bytes());
        }
        body.extend(b"\r\n\r\n");
        body.extend(bytes);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

pub async fn edit(w: &Worker, parts: &[Part<'_>]) -> (u16, Value) {
    let (ct, body) = form(parts);
    let r = w
        .client
        .post(w.url("/v1/images/edits"))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

pub fn png(img: image::DynamicImage) -> Vec<u8> {
    decode_b64(&b64_png(img))
}

/// The error object, checked to have exactly OpenAI's four keys.
pub fn openai_error(body: &Value) -> &Value {
    let err = &body["error"];
    let keys: Vec<&str> = err
        .as_object()
        .expect("an error object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 4, "{body}");
    for k in ["message", "type", "param", "code"] {
        assert!(keys.contains(&k), "`{k}` missing: {body}");
    }
    err
}

/// The message of an OpenAI error, checked to name `param` and to carry no
/// Rust or serde wording.
pub fn clean_message(body: &Value, param: &str) -> String {
    let err = openai_error(body);
    assert_eq!(err["param"], param, "{body}");
    let msg = err["message"].as_str().unwrap().to_string();
    for word in [
        "floating point",
        "invalid type",
        "invalid value",
        "expected",
        "u32",
        "u64",
        "line ",
    ] {
        assert!(!msg.contains(word), "`{word}` in {msg}");
    }
    msg
}

/// The `(event, data)` pairs of a Server-Sent Events body.
pub fn sse_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).ok();
                }
            }
            Some((name?, data?))
        })
        .collect()
}
