//! Load against the real binary on loopback, bounded in count and time: a burst
//! of submissions overflowing a small queue, and many readers of one job.

mod common;

use common::{Msg, Worker};
use serde_json::{json, Value};
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

/// Awaits `fut` or fails the test after `secs` seconds.
async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {secs} s"))
}

fn kinds(msgs: &[Msg]) -> Vec<&str> {
    msgs.iter().map(Msg::kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_over_a_small_queue_is_accepted_or_refused_with_429_and_accepted_jobs_complete() {
    const SUBMISSIONS: usize = 40;
    let w = Arc::new(Worker::start(&["--queue-size", "4"]).await);
    let barrier = Arc::new(Barrier::new(SUBMISSIONS));
    let started = Instant::now();
    let tasks: Vec<_> = (0..SUBMISSIONS)
        .map(|i| {
            let (w, barrier) = (w.clone(), barrier.clone());
            tokio::spawn(async move {
                let side = if i % 2 == 0 { 64 } else { 32 };
                let body = json!({
                    "operation": "image_generation", "prompt": format!("burst job {i}"),
                    "steps": 2 + i % 3, "width": side, "height": side, "seed": i,
                });
                // Every task sends at the same moment.
                barrier.wait().await;
                within(60, "a submission", w.submit_raw(body.to_string())).await
            })
        })
        .collect();
    let answers: Vec<(u16, Option<String>, Value)> =
        within(90, "the burst", futures::future::join_all(tasks))
            .await
            .into_iter()
            .map(|r| r.expect("submission task"))
            .collect();
    let burst_ms = started.elapsed().as_millis();

    let mut accepted = Vec::new();
    let mut refused = 0;
    for (status, retry_after, body) in &answers {
        match status {
            202 => {
                let position = body["queue_position"].as_u64().expect("queue_position");
                assert!(
                    (1..=4).contains(&position),
                    "position {position} in a queue of 4"
                );
                accepted.push(body["job_id"].as_str().expect("job_id").to_string());
            }
            429 => {
                refused += 1;
                assert_eq!(body["error"]["code"], "queue_full", "{body}");
                assert!(!body["error"]["message"].as_str().unwrap_or("").is_empty());
                let secs: u64 = retry_after
                    .as_deref()
                    .expect("a 429 carries Retry-After")
                    .parse()
                    .expect("Retry-After is whole seconds");
                assert!(secs >= 1, "Retry-After {secs}");
            }
            other => panic!("unexpected answer {other}: {body}"),
        }
    }
    println!(
        "queue overflow: {SUBMISSIONS} submitted, {} accepted, {refused} refused (429) in {burst_ms} ms",
        accepted.len()
    );
    assert_eq!(accepted.len() + refused, SUBMISSIONS);
    assert!(!accepted.is_empty(), "no submission was accepted");
    assert!(
        refused > 0,
        "a burst of {SUBMISSIONS} never filled a queue of 4"
    );
    let unique: std::collections::BTreeSet<&String> = accepted.iter().collect();
    assert_eq!(unique.len(), accepted.len(), "job ids are unique");

    // Every accepted job runs to completion.
    let streams = futures::future::join_all(accepted.iter().map(|id| w.stream_all(id, None)));
    let streams = within(180, "the accepted jobs' streams", streams).await;
    for (id, msgs) in accepted.iter().zip(&streams) {
        let k = kinds(msgs);
        assert!(
            k.len() >= 2 && k[k.len() - 2..] == ["complete", "[DONE]"],
            "{id}: {k:?}"
        );
        let (status, snap) = within(10, "a snapshot", w.get_json(&format!("/v1/jobs/{id}"))).await;
        assert_eq!(
            (status, snap["status"].as_str()),
            (200, Some("completed")),
            "{snap}"
        );
    }
    println!(
        "queue overflow: all {} accepted jobs completed {} ms after the burst began",
        accepted.len(),
        started.elapsed().as_millis()
    );

    // With the queue drained, the worker takes jobs again.
    let (status, _, body) = within(
        30,
        "a submission after the burst",
        w.submit_raw(
            json!({"operation": "image_generation", "prompt": "after", "steps": 1, "width": 32, "height": 32})
                .to_string(),
        ),
    )
    .await;
    assert_eq!(status, 202, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_readers_of_a_running_job_all_get_the_whole_stream() {
    const READERS: usize = 100;
    const STEPS: u64 = 30;
    let w = Arc::new(Worker::start(&[]).await);
    let job = within(
        30,
        "the submission",
        w.submit(json!({
            "operation": "image_generation", "prompt": "one job, many readers",
            "steps": STEPS, "preview_every": 5, "width": 128, "height": 128, "seed": 21,
        })),
    )
    .await;
    let id = job["job_id"].as_str().unwrap().to_string();

    // Wait until it runs, then open every reader while it does.
    let mut first = Vec::new();
    within(
        60,
        "the job to start",
        w.stream_until(&id, None, |m| m.kind() == "started", &mut first),
    )
    .await;
    let started = Instant::now();
    let done_at: Arc<OnceLock<Instant>> = Arc::default();
    let watcher = {
        let (w, id, done_at) = (w.clone(), id.clone(), done_at.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            w.stream_until(
                &id,
                None,
                |m| {
                    if m.kind() == "complete" {
                        done_at.get_or_init(Instant::now);
                    }
                    false
                },
                &mut seen,
            )
            .await;
        })
    };
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (w, id) = (w.clone(), id.clone());
            tokio::spawn(async move {
                let first_event: OnceLock<Instant> = OnceLock::new();
                let mut msgs = Vec::new();
                let ended = w
                    .stream_until(
                        &id,
                        None,
                        |_| {
                            first_event.get_or_init(Instant::now);
                            false
                        },
                        &mut msgs,
                    )
                    .await;
                assert!(ended, "a reader's stream ended without [DONE]");
                (*first_event.get().unwrap(), msgs)
            })
        })
        .collect();
    let results: Vec<(Instant, Vec<Msg>)> =
        within(240, "the readers", futures::future::join_all(readers))
            .await
            .into_iter()
            .map(|r| r.expect("reader task"))
            .collect();
    let all_done_ms = started.elapsed().as_millis();
    within(30, "the watcher", watcher).await.unwrap();
    let done_at = *done_at.get().expect("the watcher saw `complete`");
    let last_attach = results.iter().map(|(t, _)| *t).max().unwrap();
    let attached_while_running = results.iter().filter(|(t, _)| *t < done_at).count();

    // A reader arriving after the end gets the whole history.
    let late = within(30, "the late reader", w.stream_all(&id, None)).await;
    let k = kinds(&late);
    assert_eq!(k.first(), Some(&"queued"), "{k:?}");
    assert_eq!(&k[k.len() - 2..], ["complete", "[DONE]"]);
    let ids: Vec<u64> = late.iter().filter_map(Msg::id).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
    let steps: Vec<u64> = late
        .iter()
        .filter(|m| m.kind() == "progress")
        .map(|m| m.json()["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=STEPS).collect::<Vec<_>>());
    let previews = late.iter().filter(|m| m.kind() == "preview").count();
    assert_eq!(previews as u64, STEPS / 5);
    for (i, (_, msgs)) in results.iter().enumerate() {
        assert_eq!(msgs, &late, "reader {i} saw another stream");
    }
    println!(
        "fan-out: {READERS} readers, {attached_while_running} attached while the job ran; \
         all attached {} ms and all finished {all_done_ms} ms after `started`; job done at {} ms; {} events each",
        last_attach.duration_since(started).as_millis(),
        done_at.duration_since(started).as_millis(),
        late.len()
    );
    assert!(
        attached_while_running > 0,
        "no reader attached before the job completed"
    );
    let (status, snap) = within(10, "the snapshot", w.get_json(&format!("/v1/jobs/{id}"))).await;
    assert_eq!((status, snap["status"].as_str()), (200, Some("completed")));
}
