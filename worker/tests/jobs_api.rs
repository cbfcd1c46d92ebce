//! The job API end to end against the real binary: submit, stream, snapshot,
//! image download, determinism, cancel, queue limits, several readers, resume.

mod common;

use common::{decode_b64, long_job, Msg, Worker};
use serde_json::json;

fn progress_steps(msgs: &[Msg]) -> Vec<u64> {
    msgs.iter()
        .filter(|m| m.kind() == "progress")
        .map(|m| m.json()["step"].as_u64().unwrap())
        .collect()
}

fn complete_images(msgs: &[Msg]) -> Vec<serde_json::Value> {
    let complete = msgs
        .iter()
        .find(|m| m.kind() == "complete")
        .expect("a complete event");
    complete.json()["images"].as_array().unwrap().clone()
}

#[tokio::test]
async fn text_to_image_streams_every_step_then_a_png() {
    let w = Worker::start(&[]).await;
    let accepted = w
        .submit(json!({
            "operation": "image_generation", "prompt": "a red circle on a blue background",
            "steps": 6, "seed": 11, "width": 64, "height": 48, "preview_every": 2
        }))
        .await;
    let id = accepted["job_id"].as_str().unwrap();
    assert!(id.starts_with("job-"));
    assert_eq!(accepted["sse_url"], format!("/v1/jobs/{id}/stream"));
    assert_eq!(accepted["status_url"], format!("/v1/jobs/{id}"));
    assert_eq!(accepted["seed"], 11);
    assert!(accepted["queue_position"].as_u64().unwrap() >= 1);

    let msgs = w.stream_all(id, None).await;
    let kinds: Vec<&str> = msgs.iter().map(Msg::kind).collect();
    assert_eq!(kinds.first(), Some(&"queued"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"[DONE]"));
    assert_eq!(kinds[kinds.len() - 2], "complete");
    // Ids are 1, 2, 3, ... with no gap.
    let ids: Vec<u64> = msgs.iter().filter_map(Msg::id).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
    let started = msgs.iter().find(|m| m.kind() == "started").unwrap();
    assert_eq!(started.json()["total"], 6);
    assert_eq!(progress_steps(&msgs), vec![1, 2, 3, 4, 5, 6]);
    for m in msgs.iter().filter(|m| m.kind() == "progress") {
        assert_eq!(m.json()["total"], 6);
        let pct = m.json()["percent"].as_f64().unwrap();
        let step = m.json()["step"].as_f64().unwrap();
        assert!((pct - step / 6.0 * 100.0).abs() < 0.1);
        assert!(m.json()["eta_ms"].is_u64());
    }
    let previews: Vec<&Msg> = msgs.iter().filter(|m| m.kind() == "preview").collect();
    assert_eq!(
        previews
            .iter()
            .map(|m| m.json()["step"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![2, 4, 6]
    );
    let preview =
        image::load_from_memory(&decode_b64(previews[0].json()["image"].as_str().unwrap()))
            .unwrap();
    assert_eq!(
        (preview.width(), preview.height()),
        (32, 24),
        "previews decode the 16x12 latents averaged by 2 (VAE factor 4)"
    );

    let images = complete_images(&msgs);
    assert_eq!(images.len(), 1);
    assert_eq!(images[0]["seed"], 11);
    assert_eq!(images[0]["format"], "png");
    assert_eq!(
        (images[0]["width"].as_u64(), images[0]["height"].as_u64()),
        (Some(64), Some(48))
    );
    let png = decode_b64(images[0]["image"].as_str().unwrap());
    let img = image::load_from_memory(&png).unwrap();
    assert_eq!((img.width(), img.height()), (64, 48));
    let params = sd_worker::pipeline::encode::read_png_parameters(&png).expect("parameters chunk");
    assert!(params.starts_with("a red circle on a blue background\nSteps: 6, Sampler: Euler, CFG scale: 7.5, Seed: 11, Size: 64x48"), "{params}");

    let (status, snap) = w.get_json(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(snap["status"], "completed");
    assert_eq!(snap["step"], 6);
    assert_eq!(snap["total_steps"], 6);
    assert_eq!(snap["result"]["images"][0]["image"], images[0]["image"]);
    assert!(snap["timings"]["generation_ms"].is_u64());

    let r = w
        .client
        .get(w.url(&format!("/v1/jobs/{id}/images/0")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.bytes().await.unwrap().to_vec(), png);
    let (status, body) = w.get_json(&format!("/v1/jobs/{id}/images/1")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}

#[tokio::test]
async fn same_seed_gives_identical_bytes_and_another_seed_differs() {
    let w = Worker::start(&[]).await;
    let mut pngs = Vec::new();
    for (seed, scheduler) in [(5, "euler_a"), (5, "euler_a"), (6, "euler_a")] {
        let job = w
            .submit(
                json!({"operation": "image_generation", "prompt": "a green square", "steps": 4,
                           "seed": seed, "scheduler": scheduler, "num_images": 2}),
            )
            .await;
        let msgs = w.stream_all(job["job_id"].as_str().unwrap(), None).await;
        let images = complete_images(&msgs);
        assert_eq!(
            images
                .iter()
                .map(|i| i["seed"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            vec![seed, seed + 1]
        );
        pngs.push(
            images
                .iter()
                .map(|i| decode_b64(i["image"].as_str().unwrap()))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(
        pngs[0], pngs[1],
        "same request and seed must give byte-identical PNGs"
    );
    assert_ne!(
        pngs[0][0], pngs[2][0],
        "another seed must give another image"
    );
    assert_ne!(pngs[0][0], pngs[0][1], "the images of one job differ");
}

#[tokio::test]
async fn a_worker_restart_reproduces_the_same_bytes() {
    let body = json!({"operation": "image_generation", "prompt": "a blue triangle", "steps": 3, "seed": 99, "scheduler": "ddim"});
    let mut runs = Vec::new();
    for _ in 0..2 {
        let w = Worker::start(&[]).await;
        let job = w.submit(body.clone()).await;
        let msgs = w.stream_all(job["job_id"].as_str().unwrap(), None).await;
        runs.push(
            complete_images(&msgs)[0]["image"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(runs[0], runs[1]);
}

#[tokio::test]
async fn cancelling_a_running_job_ends_its_stream_with_cancelled() {
    let w = Worker::start(&[]).await;
    let job = w.submit(long_job()).await;
    let id = job["job_id"].as_str().unwrap();
    let mut first = Vec::new();
    w.stream_until(id, None, |m| m.kind() == "progress", &mut first)
        .await;
    let (status, snap) = w.delete(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 200, "{snap}");
    let msgs = w.stream_all(id, first.last().and_then(Msg::id)).await;
    let kinds: Vec<&str> = msgs.iter().map(Msg::kind).collect();
    assert_eq!(
        &kinds[kinds.len() - 2..],
        &["cancelled", "[DONE]"],
        "{kinds:?}"
    );
    assert!(progress_steps(&msgs).len() < 150, "stopped before the end");
    let (_, snap) = w.get_json(&format!("/v1/jobs/{id}")).await;
    assert_eq!(snap["status"], "cancelled");
    let (status, body) = w.delete(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 409);
    assert_eq!(body["error"]["code"], "conflict");
}

#[tokio::test]
async fn a_full_queue_answers_429_and_queued_jobs_can_be_cancelled() {
    let w = Worker::start(&["--queue-size", "1"]).await;
    let running = w.submit(long_job()).await;
    let running_id = running["job_id"].as_str().unwrap().to_string();
    let mut seen = Vec::new();
    w.stream_until(&running_id, None, |m| m.kind() == "started", &mut seen)
        .await;

    let queued = w.submit(long_job()).await;
    let queued_id = queued["job_id"].as_str().unwrap().to_string();
    assert_eq!(queued["queue_position"], 1);
    let (status, retry_after, body) = w.submit_raw(long_job().to_string()).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "queue_full");
    assert!(retry_after.unwrap().parse::<u64>().unwrap() >= 1);

    let (_, snap) = w.get_json(&format!("/v1/jobs/{queued_id}")).await;
    assert_eq!(snap["status"], "queued");
    assert_eq!(snap["queue_position"], 1);
    let (status, snap) = w.delete(&format!("/v1/jobs/{queued_id}")).await;
    assert_eq!((status, snap["status"].as_str()), (200, Some("cancelled")));
    let kinds: Vec<String> = w
        .stream_all(&queued_id, None)
        .await
        .iter()
        .map(|m| m.kind().to_string())
        .collect();
    assert_eq!(kinds, ["queued", "cancelled", "[DONE]"]);

    // The freed slot takes a new job again.
    let again = w.submit(long_job()).await;
    for id in [running_id.as_str(), again["job_id"].as_str().unwrap()] {
        w.delete(&format!("/v1/jobs/{id}")).await;
    }
}

#[tokio::test]
async fn two_readers_see_the_same_events_and_a_late_reader_the_whole_history() {
    let w = Worker::start(&[]).await;
    let job = w
        .submit(json!({"operation": "image_generation", "prompt": "two readers", "steps": 8, "preview_every": 3}))
        .await;
    let id = job["job_id"].as_str().unwrap();
    let (a, b) = tokio::join!(w.stream_all(id, None), w.stream_all(id, None));
    assert_eq!(a, b);
    assert_eq!(progress_steps(&a).len(), 8);
    let late = w.stream_all(id, None).await;
    assert_eq!(late, a);
}

#[tokio::test]
async fn reconnecting_with_last_event_id_misses_nothing_and_repeats_nothing() {
    let w = Worker::start(&[]).await;
    let job = w
        .submit(json!({"operation": "image_generation", "prompt": "resume me", "steps": 40, "width": 128, "height": 128}))
        .await;
    let id = job["job_id"].as_str().unwrap();
    let mut first = Vec::new();
    let ended = w
        .stream_until(
            id,
            None,
            |m| m.kind() == "progress" && m.json()["step"] == 3,
            &mut first,
        )
        .await;
    assert!(!ended, "dropped mid-job");
    let last_id = first.last().and_then(Msg::id).unwrap();
    let rest = w.stream_all(id, Some(last_id)).await;
    assert_eq!(
        rest.first().and_then(Msg::id),
        Some(last_id + 1),
        "resumes right after Last-Event-ID"
    );
    let mut joined = first.clone();
    joined.extend(rest);
    let full = w.stream_all(id, None).await;
    assert_eq!(
        joined, full,
        "first part + resumed part == the whole stream, exactly once each"
    );
    // Resuming after the terminal event yields only the sentinel.
    let terminal = full.iter().rev().find_map(Msg::id).unwrap();
    assert_eq!(w.stream_all(id, Some(terminal)).await, vec![Msg::Done]);
    // The job was never cancelled by the dropped connection.
    assert_eq!(
        w.get_json(&format!("/v1/jobs/{id}")).await.1["status"],
        "completed"
    );
}

#[tokio::test]
async fn jobs_queue_behind_each_other_and_positions_move_up() {
    let w = Worker::start(&[]).await;
    let a = w.submit(json!({"operation": "image_generation", "prompt": "first", "steps": 30, "width": 128, "height": 128})).await;
    let b = w
        .submit(json!({"operation": "image_generation", "prompt": "second", "steps": 2}))
        .await;
    let c = w
        .submit(json!({"operation": "image_generation", "prompt": "third", "steps": 2}))
        .await;
    assert!(c["queue_position"].as_u64() > b["queue_position"].as_u64());
    let msgs = w.stream_all(c["job_id"].as_str().unwrap(), None).await;
    let positions: Vec<u64> = msgs
        .iter()
        .filter(|m| m.kind() == "queued")
        .map(|m| m.json()["position"].as_u64().unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|p| p[1] < p[0]),
        "positions only move up: {positions:?}"
    );
    assert_eq!(msgs[msgs.len() - 2].kind(), "complete");
    for j in [&a, &b] {
        let s = w.stream_all(j["job_id"].as_str().unwrap(), None).await;
        assert_eq!(s[s.len() - 2].kind(), "complete");
    }
}

#[tokio::test]
async fn info_health_ready_and_unknown_jobs() {
    let w = Worker::start(&["--worker-id", "w-test"]).await;
    assert_eq!(w.get_json("/health").await, (200, json!({"status": "ok"})));
    let (status, ready) = w.get_json("/ready").await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));
    let (status, info) = w.get_json("/v1/info").await;
    assert_eq!(status, 200);
    assert_eq!(info["implementation"], "sd-worker");
    assert_eq!(info["worker_id"], "w-test");
    assert_eq!(info["device"], "cpu");
    assert_eq!(info["dtype"], "f32");
    assert_eq!(info["model"]["family"], "stable-diffusion-1");
    assert_eq!(info["model"]["native_width"], 64);
    assert_eq!(info["model"]["prediction_type"], "epsilon");
    // Weights: every floating-point parameter of the three networks' files, at f32.
    let parameters: u64 = [
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
    ]
    .iter()
    .map(|file| {
        let bytes = std::fs::read(common::tiny_model().join(file)).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.tensors()
            .iter()
            .filter(|(_, v)| v.dtype() == safetensors::Dtype::F32)
            .map(|(_, v)| v.shape().iter().product::<usize>() as u64)
            .sum::<u64>()
    })
    .sum();
    let memory = &info["model"]["memory"];
    assert_eq!(memory["weights_bytes"].as_u64(), Some(parameters * 4));
    let activations = memory["activations_bytes"].as_u64().unwrap();
    assert!(activations > 0);
    assert_eq!(
        memory["total_bytes"].as_u64(),
        Some(parameters * 4 + activations)
    );
    assert_eq!(info["limits"]["size_multiple"], 4);
    assert_eq!(info["defaults"]["scheduler"], "euler");
    // Every scheduler but flow_euler, which only flow-matching models (SD 3) list.
    assert_eq!(
        info["schedulers"],
        json!([
            "ddim",
            "ddpm",
            "euler",
            "euler_a",
            "dpmpp_2m",
            "dpmpp_2m_karras",
            "unipc",
            "lcm"
        ])
    );
    assert_eq!(
        info["operations"],
        json!([
            "image_generation",
            "image_transform",
            "image_inpaint",
            "image_upscale"
        ])
    );
    assert_eq!(info["limits"]["max_input_pixels"], 4096 * 4096);
    assert_eq!(info["model"]["inpainting"], false);
    assert_eq!(info["queue_capacity"], 16);

    let (status, body) = w.get_json("/v1/jobs/job-does-not-exist").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let r = w
        .client
        .get(w.url("/v1/jobs/job-nope/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let (status, _) = w.delete("/v1/jobs/job-nope").await;
    assert_eq!(status, 404);
    // Unknown API paths are JSON 404s (paths outside /v1 belong to the studio).
    let (status, body) = w.get_json("/v1/no/such/route").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let r = w.client.get(w.url("/health")).send().await.unwrap();
    assert!(
        r.headers().contains_key("x-request-id"),
        "every response carries a request id"
    );
}

#[tokio::test]
async fn finished_jobs_expire_after_the_ttl_with_410() {
    let w = Worker::start(&["--job-ttl", "1s"]).await;
    let job = w
        .submit(json!({"operation": "image_generation", "prompt": "short-lived", "steps": 1}))
        .await;
    let id = job["job_id"].as_str().unwrap();
    w.stream_all(id, None).await;
    // The sweeper runs every 10 s; wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, body) = w.get_json(&format!("/v1/jobs/{id}")).await;
        if status == 410 {
            assert_eq!(body["error"]["code"], "expired");
            break;
        }
        assert_eq!(status, 200);
        assert!(std::time::Instant::now() < deadline, "job did not expire");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn the_bundled_model_serves_with_no_model_flag() {
    let cache = tempfile::tempdir().unwrap();
    let w = Worker::spawn(&[], &[("SD_WORKER_CACHE", cache.path().to_str().unwrap())]);
    w.wait_ready().await;
    let (_, info) = w.get_json("/v1/info").await;
    assert_eq!(info["model"]["id"], "sd-demo-shapes");
    let job = w.submit(json!({"operation": "image_generation", "prompt": "a yellow star", "steps": 2, "model": "sd-demo-shapes"})).await;
    let msgs = w.stream_all(job["job_id"].as_str().unwrap(), None).await;
    let png = decode_b64(complete_images(&msgs)[0]["image"].as_str().unwrap());
    assert_eq!(image::load_from_memory(&png).unwrap().width(), 64);
}
