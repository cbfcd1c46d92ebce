//! Operating the worker: authentication, exposure rules, hive heartbeats,
//! faults inside generation, job timeouts, graceful shutdown, metrics and the
//! OpenAPI document, all against the real binary.

mod common;

use axum::routing::post;
use axum::{Json, Router};
use common::{tiny_model, Msg, Worker};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn small_job(prompt: &str) -> Value {
    json!({"operation": "image_generation", "prompt": prompt, "steps": 2})
}

#[tokio::test]
async fn every_route_but_health_and_ready_needs_the_token() {
    let w = Worker::start(&["--api-token", "s3cret-token"]).await;
    let c = &w.client;
    let routes: Vec<(reqwest::Method, &str, Option<Value>)> = vec![
        (reqwest::Method::GET, "/v1/info", None),
        (reqwest::Method::GET, "/v1/loras", None),
        (reqwest::Method::GET, "/v1/embeddings", None),
        (reqwest::Method::POST, "/v1/jobs", Some(small_job("auth"))),
        (reqwest::Method::GET, "/v1/jobs/job-x", None),
        (reqwest::Method::DELETE, "/v1/jobs/job-x", None),
        (reqwest::Method::GET, "/v1/jobs/job-x/stream", None),
        (reqwest::Method::GET, "/v1/jobs/job-x/images/0", None),
        (reqwest::Method::GET, "/metrics", None),
        (reqwest::Method::GET, "/openapi.json", None),
    ];
    for (method, path, body) in &routes {
        for token in [
            None,
            Some("wrong-token"),
            Some("s3cret-tokeN"),
            Some("s3cret-token"),
        ] {
            let mut req = c.request(method.clone(), w.url(path));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            if token == Some("s3cret-token") {
                assert_ne!(status, 401, "{method} {path} with the right token");
            } else {
                assert_eq!(status, 401, "{method} {path} with {token:?}");
                assert_eq!(r.headers()["www-authenticate"], "Bearer");
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["error"]["code"], "unauthorized");
            }
        }
    }
    for open in ["/health", "/ready"] {
        assert_eq!(
            c.get(w.url(open)).send().await.unwrap().status(),
            200,
            "{open} is open"
        );
    }
}

#[test]
fn an_empty_token_is_refused_at_start() {
    let model = tiny_model().to_str().unwrap().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sd-worker"))
        .args(["--port", "0", "--model-path", &model])
        .env("SD_WORKER_API_TOKEN", "")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("empty"), "{stderr}");
}

#[tokio::test]
async fn operators_cap_sizes_and_images_and_responses_name_the_worker() {
    let w = Worker::start(&[
        "--max-pixels",
        "4096",
        "--max-images",
        "2",
        "--worker-id",
        "gpu-7",
    ])
    .await;
    let r = w.client.get(w.url("/health")).send().await.unwrap();
    assert_eq!(r.headers()["x-worker-id"], "gpu-7");
    let (_, info) = w.get_json("/v1/info").await;
    assert_eq!(info["limits"]["max_pixels"], 4096);
    assert_eq!(info["limits"]["max_images"], 2);
    let (status, _, body) = w
        .submit_raw(
            json!({"operation": "image_generation", "prompt": "p", "width": 128, "height": 64})
                .to_string(),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("width"))
    );
    let (status, _, body) = w
        .submit_raw(
            json!({"operation": "image_generation", "prompt": "p", "num_images": 3}).to_string(),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("num_images"))
    );
}

#[test]
fn a_non_loopback_address_needs_a_token_or_an_explicit_opt_out() {
    let model = tiny_model().to_str().unwrap().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sd-worker"))
        .args(["--host", "0.0.0.0", "--port", "0", "--model-path", &model])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--api-token") && stderr.contains("--allow-unauthenticated"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_explicit_opt_out_starts_on_all_interfaces() {
    let model = tiny_model().to_str().unwrap().to_string();
    let mut w = Worker::spawn_at(
        "0.0.0.0",
        &["--model-path", &model, "--allow-unauthenticated"],
        &[],
    );
    assert!(w.base.starts_with("http://0.0.0.0:"), "{}", w.base);
    assert_eq!(
        w.wait_exit(Duration::from_millis(300)).await,
        None,
        "still running"
    );
}

/// A stand-in hive on loopback that records heartbeats.
async fn hive(port: u16) -> (Arc<Mutex<Vec<Value>>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = Router::new().route(
        "/v1/worker-heartbeat",
        post(move |Json(body): Json<Value>| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(body);
                Json(json!({"ok": true}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (seen, task)
}

fn statuses(seen: &Mutex<Vec<Value>>) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|h| h["worker"]["status"].as_str().unwrap().to_string())
        .collect()
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn heartbeats_follow_the_worker_and_survive_the_hive_going_away() {
    // A port with nothing listening yet: the hive starts "down".
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let hive_url = format!("http://127.0.0.1:{port}");
    let mut w = Worker::start(&[
        "--hive-url",
        &hive_url,
        "--heartbeat-interval",
        "200ms",
        "--worker-id",
        "w-hb",
    ])
    .await;
    // The worker serves while the hive is down.
    let job = w.submit(small_job("hive down")).await;
    let msgs = w.stream_all(job["job_id"].as_str().unwrap(), None).await;
    assert_eq!(msgs[msgs.len() - 2].kind(), "complete");

    // The hive comes up: heartbeats resume within the backoff cap.
    let (seen, _task) = hive(port).await;
    wait_for("a ready heartbeat", Duration::from_secs(10), || {
        statuses(&seen).contains(&"ready".to_string())
    })
    .await;
    let first = seen.lock().unwrap()[0].clone();
    assert_eq!(first["worker"]["id"], "w-hb");
    assert_eq!(first["worker"]["implementation"], "sd-worker");
    assert_eq!(
        first["worker"]["model_id"],
        "sd-worker-test-model-".to_string() + &std::process::id().to_string()
    );
    assert_eq!(first["worker"]["device"], "cpu");
    assert_eq!(first["worker"]["queue_mode"], "embedded");
    assert_eq!(
        first["worker"]["port"].as_u64(),
        w.base.rsplit(':').next().unwrap().parse::<u64>().ok()
    );
    assert!(first["timestamp"].as_str().unwrap().ends_with('Z'));

    // A running job shows as busy.
    let long = w
        .submit(json!({"operation": "image_generation", "prompt": "busy", "steps": 40, "width": 128, "height": 128}))
        .await;
    wait_for("a busy heartbeat", Duration::from_secs(20), || {
        statuses(&seen).contains(&"busy".to_string())
    })
    .await;
    w.stream_all(long["job_id"].as_str().unwrap(), None).await;

    // Stopping is the last word.
    w.terminate();
    assert_eq!(
        w.wait_exit(Duration::from_secs(30)).await.map(|s| s.code()),
        Some(Some(0))
    );
    let all = statuses(&seen);
    assert_eq!(all.last().map(String::as_str), Some("stopping"), "{all:?}");
    let ready_at = all.iter().position(|s| s == "ready").unwrap();
    assert!(
        !all[ready_at..].contains(&"starting".to_string()),
        "never back to starting: {all:?}"
    );
}

#[tokio::test]
async fn a_panic_inside_generation_fails_that_job_and_the_next_one_runs() {
    let model = tiny_model().to_str().unwrap().to_string();
    let w = Worker::spawn(
        &["--model-path", &model],
        &[("SD_WORKER_TEST_PANIC_ON_PROMPT", "EXPLODE")],
    );
    w.wait_ready().await;
    let bad = w.submit(small_job("please EXPLODE now")).await;
    let msgs = w.stream_all(bad["job_id"].as_str().unwrap(), None).await;
    let err = msgs
        .iter()
        .find(|m| m.kind() == "error")
        .expect("an error event");
    assert_eq!(err.json()["code"], "internal");
    assert!(err.json()["message"].as_str().unwrap().contains("panicked"));
    let (_, snap) = w
        .get_json(&format!("/v1/jobs/{}", bad["job_id"].as_str().unwrap()))
        .await;
    assert_eq!(snap["status"], "failed");
    let good = w.submit(small_job("a calm job")).await;
    let msgs = w.stream_all(good["job_id"].as_str().unwrap(), None).await;
    assert_eq!(msgs[msgs.len() - 2].kind(), "complete");
    let metrics = w.metrics().await;
    assert!(
        metrics
            .contains(r#"sd_worker_jobs_total{operation="image_generation",outcome="panicked"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_job_running_past_the_timeout_fails_with_timeout() {
    let w = Worker::start(&["--job-timeout", "300ms"]).await;
    let job = w
        .submit(json!({"operation": "image_generation", "prompt": "slow", "steps": 150, "width": 128, "height": 128, "num_images": 4}))
        .await;
    let msgs = w.stream_all(job["job_id"].as_str().unwrap(), None).await;
    let err = msgs
        .iter()
        .find(|m| m.kind() == "error")
        .expect("an error event");
    assert_eq!(err.json()["code"], "timeout");
    let quick = w.submit(small_job("quick")).await;
    let msgs = w.stream_all(quick["job_id"].as_str().unwrap(), None).await;
    assert_eq!(msgs[msgs.len() - 2].kind(), "complete");
}

#[tokio::test]
async fn sigterm_finishes_the_running_job_fails_the_queued_ones_and_exits_zero() {
    let mut w = Worker::start(&["--shutdown-grace", "60s"]).await;
    let running = w
        .submit(json!({"operation": "image_generation", "prompt": "finish me", "steps": 40, "width": 128, "height": 128}))
        .await;
    let queued_a = w.submit(small_job("queued a")).await;
    let queued_b = w.submit(small_job("queued b")).await;
    let mut first = Vec::new();
    w.stream_until(
        running["job_id"].as_str().unwrap(),
        None,
        |m| m.kind() == "progress",
        &mut first,
    )
    .await;
    // Readers attached before the signal keep their streams.
    let readers: Vec<_> = [&running, &queued_a, &queued_b]
        .iter()
        .map(|j| {
            let id = j["job_id"].as_str().unwrap().to_string();
            let client = w.client.clone();
            let url = w.url(&format!("/v1/jobs/{id}/stream"));
            tokio::spawn(async move { client.get(url).send().await.unwrap().text().await.unwrap() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    w.terminate();
    // While stopping: no new jobs, not ready.
    let (status, _, body) = w.submit_raw(small_job("too late").to_string()).await;
    if status != 0 {
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "shutting_down");
    }
    let texts: Vec<String> = futures::future::join_all(readers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(
        texts[0].contains(r#""type":"complete""#),
        "the running job completes: {}",
        &texts[0][texts[0].len().saturating_sub(300)..]
    );
    for t in &texts[1..] {
        assert!(
            t.contains(r#""code":"shutting_down""#),
            "queued jobs fail clearly: {t}"
        );
        assert!(t.trim_end().ends_with("data: [DONE]"));
    }
    let exit = w.wait_exit(Duration::from_secs(30)).await.expect("exits");
    assert_eq!(exit.code(), Some(0));
}

#[tokio::test]
async fn metrics_count_requests_jobs_and_the_queue() {
    let w = Worker::start(&[]).await;
    let job = w.submit(small_job("count me")).await;
    w.stream_all(job["job_id"].as_str().unwrap(), None).await;
    let (status, _, _) = w.submit_raw("{bad".to_string()).await;
    assert_eq!(status, 400);
    let r = w.client.get(w.url("/metrics")).send().await.unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = r.text().await.unwrap();
    for line in [
        r#"sd_worker_jobs_submitted_total{operation="image_generation"} 1"#,
        r#"sd_worker_jobs_total{operation="image_generation",outcome="completed"} 1"#,
        r#"sd_worker_jobs_rejected_total{reason="invalid_json"} 1"#,
        r#"sd_worker_http_requests_total{method="POST",route="/v1/jobs",status="202"} 1"#,
        r#"sd_worker_http_requests_total{method="POST",route="/v1/jobs",status="400"} 1"#,
        "sd_worker_queue_capacity 16",
        "sd_worker_queue_size 0",
        "sd_worker_denoise_steps_total 2",
        "sd_worker_queue_wait_duration_seconds_count 1",
        r#"sd_worker_generation_duration_seconds_count{operation="image_generation"} 1"#,
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    assert!(text.contains("sd_worker_model_load_duration_seconds "));
    assert!(text.contains("sd_worker_info{"));
    // Routes are labelled by template, never by raw path.
    w.get_json("/v1/jobs/job-abc").await;
    let text = w.metrics().await;
    assert!(text.contains(r#"route="/v1/jobs/{id}""#));
    assert!(!text.contains("job-abc"));
}

#[tokio::test]
async fn the_openapi_document_covers_every_route_and_the_docs_do_too() {
    let w = Worker::start(&[]).await;
    let (status, spec) = w.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let paths: Vec<String> = spec["paths"].as_object().unwrap().keys().cloned().collect();
    let expected = [
        "/health",
        "/ready",
        "/metrics",
        "/openapi.json",
        "/v1/info",
        "/v1/loras",
        "/v1/embeddings",
        "/v1/upscalers",
        "/v1/jobs",
        "/v1/preprocess",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/stream",
        "/v1/jobs/{id}/images/{index}",
        "/v1/images/generations",
        "/v1/images/edits",
        "/sdapi/v1/txt2img",
        "/sdapi/v1/img2img",
        "/sdapi/v1/samplers",
        "/sdapi/v1/schedulers",
        "/sdapi/v1/sd-models",
        "/sdapi/v1/loras",
        "/sdapi/v1/embeddings",
        "/sdapi/v1/options",
        "/sdapi/v1/progress",
        "/sdapi/v1/cmd-flags",
        "/sdapi/v1/memory",
        "/sdapi/v1/interrupt",
        "/sdapi/v1/skip",
        "/sdapi/v1/png-info",
        "/sdapi/v1/upscalers",
        "/sdapi/v1/latent-upscale-modes",
        "/sdapi/v1/extra-single-image",
        "/controlnet/version",
        "/controlnet/model_list",
        "/controlnet/module_list",
        "/controlnet/detect",
    ];
    for p in expected {
        assert!(paths.contains(&p.to_string()), "{p} missing from {paths:?}");
    }
    assert_eq!(paths.len(), expected.len(), "{paths:?}");
    let schemas = spec["components"]["schemas"].as_object().unwrap();
    for s in [
        "JobRequest",
        "StreamEvent",
        "ErrorBody",
        "ErrorCode",
        "WorkerInfo",
        "JobSnapshot",
        "Heartbeat",
    ] {
        assert!(schemas.contains_key(s), "schema {s}");
    }
    let events = serde_json::to_string(&schemas["StreamEvent"]).unwrap();
    for t in [
        "queued",
        "started",
        "warning",
        "progress",
        "preview",
        "complete",
        "error",
        "cancelled",
        "requeued",
    ] {
        assert!(events.contains(&format!("\"{t}\"")), "StreamEvent type {t}");
    }
    // Every route the token guards documents 401; every route with
    // parameters documents the 400 of a value that does not parse.
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let open = path == "/health" || path == "/ready";
            let responses = op["responses"].as_object().unwrap();
            assert_eq!(
                !open,
                responses.contains_key("401"),
                "{method} {path} and 401"
            );
            if op["parameters"].as_array().is_some_and(|p| !p.is_empty()) {
                assert!(responses.contains_key("400"), "{method} {path} and 400");
            }
        }
    }
    assert!(spec["paths"]["/v1/jobs"]["post"]["responses"]["415"].is_object());
    let sse = &spec["paths"]["/v1/jobs/{id}/stream"]["get"]["responses"]["200"]["content"];
    assert_eq!(
        sse["text/event-stream"]["schema"]["properties"]["data"]["oneOf"][0]["contentSchema"]
            ["$ref"],
        "#/components/schemas/StreamEvent"
    );
    // The request schema carries this worker's limits.
    let (_, info) = w.get_json("/v1/info").await;
    let props = &spec["components"]["schemas"]["GenerationParams"]["properties"];
    assert_eq!(props["steps"]["maximum"], info["limits"]["max_steps"]);
    assert_eq!(
        props["width"]["multipleOf"],
        info["limits"]["size_multiple"]
    );
    assert_eq!(props["height"]["maximum"], info["limits"]["max_size"]);
    assert_eq!(props["num_images"]["maximum"], info["limits"]["max_images"]);
    // Cargo sets the variable when it runs a test; read it then, not at build
    // time, so a test binary reused from another checkout reads this one.
    let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
    let api_md = std::fs::read_to_string(format!("{root}/../docs/API.md")).unwrap();
    for p in expected {
        assert!(
            api_md.contains(&format!("`GET {p}`"))
                || api_md.contains(&format!("`POST {p}`"))
                || api_md.contains(&format!("`DELETE {p}`")),
            "docs/API.md documents {p}"
        );
    }
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_nothing() {
    let w = Worker::start(&[]).await;
    let job = w.submit(json!({"operation": "image_generation", "prompt": "walk away", "steps": 20, "width": 128, "height": 128})).await;
    let id = job["job_id"].as_str().unwrap();
    let mut first = Vec::new();
    w.stream_until(id, None, |m| m.kind() == "started", &mut first)
        .await;
    // Dropped; the job still completes and a new reader sees it.
    let msgs = w.stream_all(id, None).await;
    assert!(matches!(msgs.last(), Some(Msg::Done)));
    assert_eq!(msgs[msgs.len() - 2].kind(), "complete");
}
