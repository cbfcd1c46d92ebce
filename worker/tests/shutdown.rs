//! Stopping whatever clients do: half-sent requests, trickling bodies and open
//! streams neither keep the process alive past `--shutdown-grace` plus the
//! connection drain, nor does the header-read timeout cut a long stream.

mod common;

use common::{long_job, Worker};
use futures::StreamExt;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// `host:port` of the worker.
fn addr(w: &Worker) -> String {
    w.base.strip_prefix("http://").unwrap().to_string()
}

/// Requests cut short: half a request line, half the headers, the headers and
/// half the body.
fn partial_requests() -> [&'static str; 3] {
    [
        "POST /v1/jo",
        "GET /health HTTP/1.1\r\nHost: worker\r\nAccept: */",
        "POST /v1/jobs HTTP/1.1\r\nHost: worker\r\nContent-Type: application/json\r\n\
         Content-Length: 100000\r\n\r\n{\"operation\": \"image_gen",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_exits_zero_within_the_grace_whatever_clients_hold_open() {
    const GRACE_S: u64 = 2;
    let mut w = Worker::start(&["--shutdown-grace", &format!("{GRACE_S}s")]).await;
    // A job that runs past the grace, followed by an SSE reader.
    let job = w.submit(long_job()).await;
    let id = job["job_id"].as_str().unwrap().to_string();
    let resp = w
        .client
        .get(w.url(&format!("/v1/jobs/{id}/stream")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let reader = tokio::spawn(async move {
        let mut text = String::new();
        let mut body = resp.bytes_stream();
        while let Some(Ok(chunk)) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text
    });
    // Slow clients: requests cut short, held open.
    let mut held = Vec::new();
    for _ in 0..20 {
        for partial in partial_requests() {
            let mut s = TcpStream::connect(addr(&w)).unwrap();
            s.write_all(partial.as_bytes()).unwrap();
            held.push(s);
        }
    }
    // And one upload trickling a byte at a time.
    let mut trickle = TcpStream::connect(addr(&w)).unwrap();
    trickle
        .write_all(
            b"POST /v1/jobs HTTP/1.1\r\nHost: worker\r\nContent-Type: application/json\r\n\
              Content-Length: 100000\r\n\r\n",
        )
        .unwrap();
    // Ends when the worker closes the connection (or is gone).
    std::thread::spawn(move || {
        while trickle.write_all(b" ").is_ok() {
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    w.terminate();
    let status = w.wait_exit(Duration::from_secs(GRACE_S + 8)).await;
    let took = started.elapsed();
    println!(
        "exited {:?} after SIGTERM with {} half-sent requests, a trickling upload and an SSE reader open \
         (grace {GRACE_S} s)",
        took,
        held.len()
    );
    assert_eq!(
        status.map(|s| s.code()),
        Some(Some(0)),
        "exit status 0 within the grace + 8 s"
    );
    let text = reader.await.unwrap();
    assert!(
        text.contains(r#""code":"shutting_down""#),
        "the running job failed at the grace and the stream said so: {}",
        &text[text.len().saturating_sub(300)..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_header_read_timeout_closes_half_sent_headers_but_not_a_long_stream() {
    let w = Worker::start(&["--header-read-timeout", "1s"]).await;
    let job = w.submit(long_job()).await;
    let id = job["job_id"].as_str().unwrap().to_string();
    let opened = Instant::now();
    let resp = w
        .client
        .get(w.url(&format!("/v1/jobs/{id}/stream")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut half = Vec::new();
    for partial in partial_requests().into_iter().take(2) {
        let mut s = TcpStream::connect(addr(&w)).unwrap();
        s.write_all(partial.as_bytes()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        half.push(s);
    }

    // The stream keeps delivering well past the header-read timeout.
    let mut body = resp.bytes_stream();
    let mut last_chunk_at = Duration::ZERO;
    while opened.elapsed() < Duration::from_secs(3) {
        match tokio::time::timeout(Duration::from_secs(3), body.next()).await {
            Ok(Some(Ok(_))) => last_chunk_at = opened.elapsed(),
            other => panic!(
                "the stream ended or stalled after {:?}: {other:?}",
                opened.elapsed()
            ),
        }
    }
    assert!(last_chunk_at >= Duration::from_secs(2), "{last_chunk_at:?}");

    // The half-sent requests were closed by the worker long ago: reading
    // finds the end (or a 408 before it), not a read timeout.
    for mut s in half {
        let mut answer = Vec::new();
        let read = s.read_to_end(&mut answer);
        assert!(
            read.is_ok()
                || read
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "the worker closes a connection whose headers never end: {read:?}"
        );
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
    }
    w.delete(&format!("/v1/jobs/{id}")).await;
}
