//! `stream: true` on OpenAI's Images API against the real binary: previews as
//! `partial_image` events, each final image as a `completed` event, and a
//! client that closes the stream cancelling its job.

mod common;

use common::openai::{form, png, sse_events};
use common::{decode_b64, gradient, long_job, Worker};
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn stream_sends_partial_images_from_previews_then_each_completed_image() {
    let w = Worker::start(&[]).await;
    let (_, info) = w.get_json("/v1/info").await;
    assert!(info["defaults"]["steps"].as_u64().unwrap() >= 3, "{info}");
    let r = w
        .client
        .post(w.url("/v1/images/generations"))
        .json(&json!({"prompt": "a cat", "n": 2, "size": "64x48", "stream": true, "partial_images": 2, "seed": 9}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let job_id = r.headers()["x-job-id"].to_str().unwrap().to_string();
    let events = sse_events(&r.text().await.unwrap());
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "image_generation.partial_image",
            "image_generation.partial_image",
            "image_generation.completed",
            "image_generation.completed"
        ]
    );
    for (i, (kind, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], kind.as_str());
        if i < 2 {
            assert_eq!(data["partial_image_index"], i);
        }
        // `size` is the image's own: a preview is smaller than the final image.
        let img = image::load_from_memory(&decode_b64(data["b64_json"].as_str().unwrap())).unwrap();
        assert_eq!(data["size"], format!("{}x{}", img.width(), img.height()));
        assert_eq!(i < 2, img.width() < 64, "{i}: {}", data["size"]);
    }
    let (_, snap) = w.get_json(&format!("/v1/jobs/{job_id}")).await;
    let images = snap["result"]["images"].as_array().unwrap();
    assert_eq!(images[0]["image"], events[2].1["b64_json"]);
    assert_eq!(images[1]["image"], events[3].1["b64_json"]);

    // Without partial images, an edit streams its completed image alone.
    let (ct, body) = form(&[
        ("image", Some("in.png"), png(gradient(64, 48).into())),
        ("prompt", None, b"a cat".to_vec()),
        ("stream", None, b"true".to_vec()),
    ]);
    let r = w
        .client
        .post(w.url("/v1/images/edits"))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    let events = sse_events(&r.text().await.unwrap());
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["image_edit.completed"]);
}

#[tokio::test]
async fn closing_a_stream_before_its_end_cancels_the_job() {
    let w = Worker::start(&[]).await;
    let long = w.submit(long_job()).await;
    let r = w
        .client
        .post(w.url("/v1/images/generations"))
        .json(&json!({"prompt": "a cat", "size": "64x64", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let job_id = r.headers()["x-job-id"].to_str().unwrap().to_string();
    drop(r);
    let mut status = Value::Null;
    for _ in 0..100 {
        status = w.get_json(&format!("/v1/jobs/{job_id}")).await.1["status"].clone();
        if status == "cancelled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = w
        .delete(&format!("/v1/jobs/{}", long["job_id"].as_str().unwrap()))
        .await;
    assert_eq!(status, "cancelled");
}
