//! Many workers, one queue: a real `nats-server` with JetStream (free port,
//! temporary store) and three real workers on the tiny model, each both a
//! front and a consumer. One test at a time (they share two CPU cores).
//! Without `nats-server` installed these fail, naming scripts/setup-nats.sh.

mod common;

use common::nats::{busy, completed, runner_of, wait_end, workers, NatsServer};
use common::{long_job, Msg, Worker};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// One test at a time: each starts a server and three workers.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A job of a few seconds on the tiny model, with progress on every step.
fn medium_job(seed: u64) -> Value {
    json!({
        "operation": "image_generation", "prompt": "a medium job", "steps": 40,
        "num_images": 2, "width": 96, "height": 96, "seed": seed
    })
}

/// A job of well under a second.
fn quick_job(seed: u64) -> Value {
    json!({
        "operation": "image_generation", "prompt": "a quick job", "steps": 2,
        "width": 64, "height": 64, "seed": seed
    })
}

fn id_of(accepted: &Value) -> String {
    accepted["job_id"].as_str().unwrap().to_string()
}

fn kinds(msgs: &[Msg]) -> Vec<&str> {
    msgs.iter().map(Msg::kind).collect()
}

#[tokio::test]
async fn jobs_submitted_round_robin_complete_exactly_once() {
    let _serial = SERIAL.lock().await;
    let nats = NatsServer::start();
    let ws = workers(&nats, 3, &[], &[]).await;
    let mut ids = Vec::new();
    for i in 0..9 {
        let accepted = ws[i % 3].submit(quick_job(i as u64)).await;
        assert!(accepted["queue_position"].as_u64().unwrap() >= 1);
        assert_eq!(accepted["seed"], i as u64);
        ids.push(id_of(&accepted));
    }
    for (i, id) in ids.iter().enumerate() {
        // Read on another worker than the one it was submitted to.
        let msgs = ws[(i + 1) % 3].stream_all(id, None).await;
        let k = kinds(&msgs);
        assert_eq!(k.first(), Some(&"queued"), "{k:?}");
        assert_eq!(&k[k.len() - 2..], ["complete", "[DONE]"], "{k:?}");
        assert_eq!(k.iter().filter(|k| **k == "started").count(), 1, "{k:?}");
        assert!(!k.contains(&"requeued"), "{k:?}");
        let ids: Vec<u64> = msgs.iter().filter_map(Msg::id).collect();
        assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
        let complete = msgs.iter().find(|m| m.kind() == "complete").unwrap();
        assert_eq!(complete.json()["images"][0]["seed"], i as u64);
        // The image, on the third worker.
        let r = ws[(i + 2) % 3]
            .client
            .get(ws[(i + 2) % 3].url(&format!("/v1/jobs/{id}/images/0")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.bytes().await.unwrap().starts_with(b"\x89PNG"));
    }
    let mut total = 0;
    for w in &ws {
        total += completed(w).await;
    }
    assert_eq!(total, 9, "every job ran exactly once");
    let (status, _) = ws[0].get_json("/v1/jobs/job-does-not-exist").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_stream_on_another_worker_resumes_after_a_disconnect() {
    let _serial = SERIAL.lock().await;
    let nats = NatsServer::start();
    let ws = workers(&nats, 3, &[], &[]).await;
    let id = id_of(&ws[0].submit(medium_job(5)).await);
    let mut first = Vec::new();
    let ended = ws[1]
        .stream_until(
            &id,
            None,
            |m| m.kind() == "progress" && m.json()["step"] == 5,
            &mut first,
        )
        .await;
    assert!(!ended, "the job ended before the disconnect");
    let last = first.last().and_then(Msg::id).unwrap();
    let rest = ws[1].stream_all(&id, Some(last)).await;
    let joined: Vec<Msg> = first.into_iter().chain(rest).collect();
    let ids: Vec<u64> = joined.iter().filter_map(Msg::id).collect();
    assert_eq!(
        ids,
        (1..=ids.len() as u64).collect::<Vec<_>>(),
        "nothing lost, nothing repeated"
    );
    // The whole history is the same story on every worker, ids included.
    let on_a = ws[0].stream_all(&id, None).await;
    let on_c = ws[2].stream_all(&id, None).await;
    assert_eq!(joined, on_a);
    assert_eq!(joined, on_c);
    assert_eq!(kinds(&joined).last(), Some(&"[DONE]"));
    assert!(kinds(&joined).contains(&"complete"));
}

#[tokio::test]
async fn cancel_on_one_worker_stops_the_job_running_on_another() {
    let _serial = SERIAL.lock().await;
    let nats = NatsServer::start();
    let ws = workers(&nats, 3, &[], &[]).await;
    let id = id_of(&ws[0].submit(long_job()).await);
    let runner = runner_of(&ws, Duration::from_secs(20)).await;
    let other = (runner + 1) % 3;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    let (status, snap) = ws[other].delete(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 200, "{snap}");
    let msgs = ws[(runner + 2) % 3].stream_all(&id, None).await;
    let k = kinds(&msgs);
    assert_eq!(&k[k.len() - 2..], ["cancelled", "[DONE]"], "{k:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while busy(&ws[runner]).await {
        assert!(Instant::now() < deadline, "the runner kept generating");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("cancel reached the running worker in {:?}", asked.elapsed());
    let (status, _) = ws[other].delete(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 409, "already ended");
}

#[tokio::test]
async fn a_killed_workers_job_completes_on_another() {
    let _serial = SERIAL.lock().await;
    let nats = NatsServer::start();
    let mut ws = workers(&nats, 3, &[], &[]).await;
    let id = id_of(&ws[0].submit(medium_job(9)).await);
    let runner = runner_of(&ws, Duration::from_secs(20)).await;
    let reader = (runner + 1) % 3;
    let mut seen = Vec::new();
    ws[reader]
        .stream_until(&id, None, |m| m.kind() == "progress", &mut seen)
        .await;
    let mut killed = ws.remove(runner);
    let pid = killed.pid();
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let killed_at = Instant::now();
    killed
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("killed");
    // The client's stream on a third worker: the job goes back, then completes.
    let reader = ws.iter().position(|w| w.base != killed.base).unwrap();
    let last = seen.last().and_then(Msg::id).unwrap();
    let mut rest = Vec::new();
    ws[reader]
        .stream_until(&id, Some(last), |m| m.kind() == "requeued", &mut rest)
        .await;
    let requeued_after = killed_at.elapsed();
    let tail = ws[reader]
        .stream_all(&id, rest.last().and_then(Msg::id))
        .await;
    let all: Vec<Msg> = seen.into_iter().chain(rest).chain(tail).collect();
    let k = kinds(&all);
    assert_eq!(&k[k.len() - 2..], ["complete", "[DONE]"], "{k:?}");
    let requeued = all.iter().find(|m| m.kind() == "requeued").unwrap();
    assert_eq!(requeued.json()["attempt"], 2);
    assert_eq!(k.iter().filter(|k| **k == "started").count(), 2, "{k:?}");
    println!("redelivery: kill -9 to `requeued` in {requeued_after:?} (ack wait 3 s)");
    drop(killed);
}

#[tokio::test]
async fn a_nats_restart_mid_run_loses_no_accepted_job() {
    let _serial = SERIAL.lock().await;
    let mut nats = NatsServer::start();
    let ws = workers(&nats, 3, &[], &[]).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(id_of(&ws[i % 3].submit(medium_job(20 + i as u64)).await));
    }
    runner_of(&ws, Duration::from_secs(20)).await;
    nats.restart(Duration::from_secs(1));
    for (i, id) in ids.iter().enumerate() {
        let snap = wait_end(&ws[(i + 1) % 3], id, Duration::from_secs(120)).await;
        assert_eq!(snap["status"], "completed", "{snap}");
    }
    let mut total = 0;
    for w in &ws {
        total += completed(w).await;
    }
    assert!(total >= 6, "every accepted job ran: {total}");
}

#[tokio::test]
async fn a_full_queue_answers_429_on_every_front() {
    let _serial = SERIAL.lock().await;
    let nats = NatsServer::start();
    let ws = workers(&nats, 3, &["--queue-size", "2"], &[]).await;
    let mut ids = Vec::new();
    // Three run (one per worker), two wait.
    for w in &ws {
        ids.push(id_of(&w.submit(long_job()).await));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for w in &ws {
        while !busy(w).await {
            assert!(Instant::now() < deadline, "not every worker took a job");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for w in ws.iter().take(2) {
        ids.push(id_of(&w.submit(long_job()).await));
    }
    for w in &ws {
        let (status, retry, body) = w.submit_raw(long_job().to_string()).await;
        assert_eq!(status, 429, "{body}");
        assert_eq!(body["error"]["code"], "queue_full");
        assert!(retry.is_some());
    }
    assert!(
        ws[2]
            .metrics_until(|m| m.contains("sd_worker_queue_backlog{model="))
            .await,
        "the backlog gauge"
    );
    for id in &ids {
        let _ = ws[0].delete(&format!("/v1/jobs/{id}")).await;
    }
}

#[tokio::test]
async fn a_large_body_and_an_upscale_go_through_the_shared_queue() {
    let _serial = SERIAL.lock().await;
    // 256 KiB messages (the object store's chunks still fit); the body is larger.
    let nats = NatsServer::start_with(Some(256 * 1024));
    let ws = workers(&nats, 2, &[], &[]).await;
    let noise = image::RgbImage::from_fn(320, 320, |x, y| {
        let v =
            (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)).wrapping_mul(2_246_822_519);
        image::Rgb([(v >> 8) as u8, (v >> 16) as u8, (v >> 24) as u8])
    });
    let image = common::b64_png(image::DynamicImage::ImageRgb8(noise));
    assert!(image.len() > 256 * 1024, "the body must exceed a message");
    let body = json!({"operation": "image_transform", "prompt": "noise", "steps": 4,
                      "strength": 0.5, "width": 64, "height": 64, "seed": 2, "image": image});
    let mut ids = Vec::new();
    for w in &ws {
        ids.push(id_of(&w.submit(body.clone()).await));
    }
    for (i, id) in ids.iter().enumerate() {
        let snap = wait_end(&ws[(i + 1) % 2], id, Duration::from_secs(60)).await;
        assert_eq!(snap["status"], "completed", "{snap}");
    }
    // An upscale (no seed, no diffusion) goes the same way.
    let small = common::b64_png(image::DynamicImage::ImageRgb8(common::gradient(32, 32)));
    let up = ws[0]
        .submit(json!({"operation": "image_upscale", "image": small, "upscaler": "NEAREST"}))
        .await;
    let snap = wait_end(&ws[1], &id_of(&up), Duration::from_secs(60)).await;
    assert_eq!(snap["status"], "completed", "{snap}");
    assert!(
        snap["result"]["images"][0]["width"].as_u64().unwrap() > 32,
        "{snap}"
    );
}

#[tokio::test]
async fn a_stopping_worker_hands_its_running_job_back() {
    let _serial = SERIAL.lock().await;
    let nats = NatsServer::start();
    let mut ws = workers(&nats, 2, &["--shutdown-grace", "300ms"], &[]).await;
    let id = id_of(&ws[0].submit(medium_job(4)).await);
    let runner = runner_of(&ws, Duration::from_secs(20)).await;
    let mut stopping = ws.remove(runner);
    stopping.terminate();
    let status = stopping.wait_exit(Duration::from_secs(20)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let msgs = ws[0].stream_all(&id, None).await;
    let k = kinds(&msgs);
    assert_eq!(&k[k.len() - 2..], ["complete", "[DONE]"], "{k:?}");
    assert!(k.contains(&"requeued"), "{k:?}");
    assert!(!k.contains(&"error"), "{k:?}");
}

#[tokio::test]
async fn a_job_that_kills_its_workers_ends_failed() {
    let _serial = SERIAL.lock().await;
    let nats = NatsServer::start();
    let env = [("SD_WORKER_TEST_ABORT_ON_PROMPT", "poison")];
    let mut ws = workers(&nats, 3, &["--queue-max-deliver", "2"], &env).await;
    let mut job = quick_job(1);
    job["prompt"] = json!("a poison job");
    let id = id_of(&ws[0].submit(job).await);
    // Two deliveries kill two workers; the third delivery fails the job.
    let deadline = Instant::now() + Duration::from_secs(60);
    let snap = loop {
        let mut alive = Vec::new();
        for mut w in ws.drain(..) {
            if w.wait_exit(Duration::ZERO).await.is_none() {
                alive.push(w);
            }
        }
        ws = alive;
        assert!(!ws.is_empty(), "every worker died");
        let (status, snap) = ws[0].get_json(&format!("/v1/jobs/{id}")).await;
        if status == 200 && snap["status"] == "failed" {
            break snap;
        }
        assert!(
            Instant::now() < deadline,
            "the poison job never failed: {snap}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(ws.len(), 1, "two workers were killed");
    let message = snap["error"]["message"].as_str().unwrap();
    assert!(message.contains("2 times"), "{message}");
}

/// 200 quick jobs over three workers, then over one; all complete exactly
/// once. Prints the throughput of each (on the same machine, so three
/// workers gain only as far as its cores allow).
#[tokio::test]
async fn load_200_jobs_over_three_workers() {
    let _serial = SERIAL.lock().await;
    let nats = NatsServer::start();
    let ws = workers(&nats, 3, &["--queue-size", "256"], &[]).await;
    let three = run_load(&ws, 200, 0).await;
    drop(ws);
    let nats = NatsServer::start();
    let one = workers(&nats, 1, &["--queue-size", "256"], &[]).await;
    let single = run_load(&one, 200, 1000).await;
    println!(
        "load: 200 jobs, 3 workers {three:.1} jobs/s, 1 worker {single:.1} jobs/s ({:.2}x)",
        three / single
    );
}

/// Submits `n` quick jobs round-robin over `ws`, waits for all to complete;
/// jobs per second from the first submission to the last completion.
async fn run_load(ws: &[Worker], n: usize, seed0: u64) -> f64 {
    let started = Instant::now();
    let submits = (0..n).map(|i| {
        let w = &ws[i % ws.len()];
        async move { id_of(&w.submit(quick_job(seed0 + i as u64)).await) }
    });
    let ids: Vec<String> = futures::future::join_all(submits).await;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let mut total = 0;
        for w in ws {
            total += completed(w).await;
        }
        if total >= n as u64 {
            assert_eq!(total, n as u64, "each job ran exactly once");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {total} of {n} jobs completed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    for (i, id) in ids.iter().enumerate() {
        let snap = wait_end(&ws[(i + 1) % ws.len()], id, Duration::from_secs(30)).await;
        assert_eq!(snap["status"], "completed", "{snap}");
    }
    rate
}
