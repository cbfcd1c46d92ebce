//! Abuse from unauthenticated or impatient clients, against the real binary:
//! invented methods and paths must not grow `/metrics`, and refusals must cost
//! no more than the answer (no image decoded for a 429, bounded decoding).

mod common;

use base64::Engine as _;
use common::{long_job, Worker};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The route templates of the API (the label `route`).
const ROUTES: [&str; 9] = [
    "/health",
    "/ready",
    "/metrics",
    "/openapi.json",
    "/v1/info",
    "/v1/jobs",
    "/v1/jobs/{id}",
    "/v1/jobs/{id}/stream",
    "/v1/jobs/{id}/images/{index}",
];
/// The label `method` takes one of these, or `other`.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];
/// The label `status` takes one of these, or `other`.
const STATUSES: [&str; 15] = [
    "200", "202", "400", "401", "404", "405", "409", "410", "413", "415", "422", "429", "500",
    "503", "504",
];
const OPERATIONS: usize = 3;
const OUTCOMES: usize = 5;
/// The contract's error codes (18 today), with room for two more.
const ERROR_CODES: usize = 20;
/// Lines of a histogram: its buckets, `+Inf`, `_sum` and `_count`.
const fn histogram_lines(buckets: usize) -> usize {
    buckets + 3
}

/// The most sample lines the scrape can have, from the fixed label sets.
fn series_bound() -> usize {
    let http = ROUTES.len() * (METHODS.len() + 1) * (STATUSES.len() + 1);
    let http_duration = ROUTES.len() * histogram_lines(8);
    let jobs = OPERATIONS // submitted
        + ERROR_CODES // rejected
        + OPERATIONS * OUTCOMES // ended
        + histogram_lines(15) // queue wait
        + OPERATIONS * histogram_lines(15); // generation
                                            // queue size and capacity, busy, steps, steps/s, model load, info,
                                            // validations, validations in flight.
    let singles = 9;
    http + http_duration + jobs + singles
}

fn word(rng: &mut impl Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789-_"[rng.random_range(0..38)]))
        .collect()
}

/// A random request target: real routes with invented ids, and paths that
/// exist nowhere.
fn random_path(rng: &mut impl Rng) -> String {
    match rng.random_range(0..6) {
        0 => "/v1/jobs".to_string(),
        1 => format!("/v1/jobs/{}", word(rng, 12)),
        2 => format!("/v1/jobs/{}/stream", word(rng, 8)),
        3 => format!("/v1/jobs/{}/images/{}", word(rng, 8), word(rng, 3)),
        4 => format!("/{}/{}", word(rng, 6), word(rng, 20)),
        _ => ["/health", "/ready", "/metrics", "/v1/info", "/openapi.json"][rng.random_range(0..5)]
            .to_string(),
    }
}

/// A method a client invented (`X` and 1-15 token characters), or now and
/// then a standard one (not CONNECT, which the client treats apart).
fn random_method(rng: &mut impl Rng) -> reqwest::Method {
    const STANDARD: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"];
    if rng.random_bool(0.2) {
        return reqwest::Method::from_bytes(
            STANDARD[rng.random_range(0..STANDARD.len())].as_bytes(),
        )
        .unwrap();
    }
    let n = rng.random_range(1..16);
    let name: String =
        std::iter::once('X')
            .chain((0..n).map(|_| {
                char::from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[rng.random_range(0..36)])
            }))
            .collect();
    reqwest::Method::from_bytes(name.as_bytes()).unwrap()
}

async fn scrape(w: &Worker, token: Option<&str>) -> String {
    let mut req = w.client.get(w.url("/metrics"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

fn sample_lines(scrape: &str) -> Vec<&str> {
    scrape
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// The value of `label` in a sample line `name{a="x",b="y"} 1`.
fn label<'a>(line: &'a str, label: &str) -> Option<&'a str> {
    let start = line.find(&format!("{label}=\""))? + label.len() + 2;
    let end = start + line[start..].find('"')?;
    Some(&line[start..end])
}

/// The value of the first sample of `name` (0 when there is none).
fn sample(scrape: &str, name: &str) -> f64 {
    sample_lines(scrape)
        .into_iter()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

async fn random_requests_leave_the_series_bounded(token: Option<&str>) {
    const REQUESTS: usize = 2_000;
    let mut args = vec!["--no-studio"];
    if let Some(t) = token {
        args.extend(["--api-token", t]);
    }
    let w = Arc::new(Worker::start(&args).await);
    let before = sample_lines(&scrape(&w, token).await).len();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(15);
    let requests: Vec<_> = (0..REQUESTS)
        .map(|_| (random_method(&mut rng), random_path(&mut rng)))
        .collect();
    // Eight clients at a time, as a scanner would.
    let mut tasks = Vec::new();
    for chunk in requests.chunks(REQUESTS / 8) {
        let (w, chunk) = (w.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            for (method, path) in chunk {
                let r = w.client.request(method, w.url(&path)).send().await.unwrap();
                assert!(r.status().as_u16() < 500, "{} {path}", r.status());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let text = scrape(&w, token).await;
    let lines = sample_lines(&text);
    let bound = series_bound();
    println!(
        "series before {before}, after {REQUESTS} random requests {} (bound {bound}), {} bytes",
        lines.len(),
        text.len()
    );
    for line in lines
        .iter()
        .filter(|l| l.starts_with("sd_worker_http_requests_total{"))
    {
        let route = label(line, "route").unwrap();
        let method = label(line, "method").unwrap();
        let status = label(line, "status").unwrap();
        assert!(ROUTES.contains(&route), "route label {route:?}: {line}");
        assert!(
            method == "other" || METHODS.contains(&method),
            "method label {method:?}: {line}"
        );
        assert!(
            status == "other" || STATUSES.contains(&status),
            "status label {status:?}: {line}"
        );
    }
    assert!(
        lines.len() <= bound,
        "{} series after {REQUESTS} requests, more than the {bound} the fixed label sets allow",
        lines.len()
    );
    // Invented methods were counted, under `other`.
    assert!(text.contains("method=\"other\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_methods_and_paths_leave_the_number_of_metric_series_bounded() {
    random_requests_leave_the_series_bounded(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_methods_and_paths_without_the_token_leave_the_number_of_metric_series_bounded() {
    random_requests_leave_the_series_bounded(Some("abuse-test-token")).await;
}

/// A 4096x4096 RGBA 16-bit PNG of zeros: ~130 KB that decode to 128 MiB.
fn huge_png_b64() -> &'static str {
    static PNG: OnceLock<String> = OnceLock::new();
    PNG.get_or_init(|| {
        let (w, h) = (4096u32, 4096u32);
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, w, h);
            enc.set_color(png::ColorType::Rgba);
            enc.set_depth(png::BitDepth::Sixteen);
            enc.set_compression(png::Compression::High);
            let mut writer = enc.write_header().unwrap();
            let mut stream = writer.stream_writer().unwrap();
            let row = vec![0u8; w as usize * 8];
            for _ in 0..h {
                std::io::Write::write_all(&mut stream, &row).unwrap();
            }
            stream.finish().unwrap();
        }
        base64::engine::general_purpose::STANDARD.encode(out)
    })
}

fn huge_transform() -> Value {
    json!({
        "operation": "image_transform", "prompt": "huge input", "image": huge_png_b64(),
        "width": 64, "height": 64, "steps": 1, "strength": 0.5
    })
}

/// Waits until the job is generating (it left the queue).
async fn wait_running(w: &Worker, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, snap) = w.get_json(&format!("/v1/jobs/{id}")).await;
        if snap["status"] == "running" {
            return;
        }
        assert!(Instant::now() < deadline, "job never ran: {snap}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_retry_later(status: u16, retry_after: Option<&str>, body: &Value) {
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "queue_full", "{body}");
    let secs: u64 = retry_after
        .expect("a 429 carries Retry-After")
        .parse()
        .expect("Retry-After is whole seconds");
    assert!(secs >= 1);
}

#[tokio::test]
async fn with_the_queue_full_a_huge_png_gets_429_without_being_decoded() {
    let w = Worker::start(&["--queue-size", "1"]).await;
    let running = w.submit(long_job()).await;
    wait_running(&w, running["job_id"].as_str().unwrap()).await;
    w.submit(long_job()).await; // waits: the queue of one is full
    let body = huge_transform().to_string();
    let before = scrape(&w, None).await;
    let started = Instant::now();
    let (status, retry_after, answer) = w.submit_raw(body).await;
    let took = started.elapsed();
    assert_retry_later(status, retry_after.as_deref(), &answer);
    let after = scrape(&w, None).await;
    println!(
        "time to 429 with a 4096x4096 16-bit PNG ({} KB of base64): {took:?}",
        huge_png_b64().len() / 1024
    );
    assert_eq!(
        sample(&after, "sd_worker_job_validations_total"),
        sample(&before, "sd_worker_job_validations_total"),
        "the refused body was not validated (its image not decoded)"
    );
    assert!(after.contains("sd_worker_job_validations_total"), "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn submissions_beyond_the_decoding_slots_get_429_and_text_jobs_do_not_wait_for_them() {
    let w = Arc::new(Worker::start(&["--max-concurrent-decodes", "1"]).await);
    // One submission decodes a huge input image (seconds)...
    let first = {
        let w = w.clone();
        tokio::spawn(async move { w.submit_raw(huge_transform().to_string()).await })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while sample(
        &scrape(&w, None).await,
        "sd_worker_image_validations_in_flight",
    ) < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "the first image was never decoded"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // ...so a second one with an input image finds no slot...
    let mut small = huge_transform();
    small["image"] = Value::String(small_png_b64());
    let (status, retry_after, answer) = w.submit_raw(small.to_string()).await;
    assert_retry_later(status, retry_after.as_deref(), &answer);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("decod"),
        "{answer}"
    );
    // ...while a job without one is taken at once.
    let text = w
        .submit(json!({"operation": "image_generation", "prompt": "p", "steps": 1}))
        .await;
    assert!(text["job_id"].is_string());
    let (status, _, answer) = first.await.unwrap();
    assert_eq!(
        status, 202,
        "the first submission holds its slot to the end: {answer}"
    );
    let after = scrape(&w, None).await;
    assert_eq!(sample(&after, "sd_worker_image_validations_in_flight"), 0.0);
}

/// A 64x64 PNG, cheap to decode.
fn small_png_b64() -> String {
    let img = image::RgbImage::from_pixel(64, 64, image::Rgb([200, 100, 50]));
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    base64::engine::general_purpose::STANDARD.encode(png)
}
