//! A real `nats-server` with JetStream for the shared-queue tests: a free
//! loopback port, its file store in a temporary folder, restartable on the
//! same port and store. The binary is `$NATS_SERVER`, else `nats-server` on
//! the PATH (Debian's package, installed by scripts/setup-nats.sh); without
//! it the tests fail saying so, never skip.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Worker;

pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    store: tempfile::TempDir,
    bin: PathBuf,
    /// The server's message size limit, when not its default (1 MB).
    max_payload: Option<usize>,
}

/// The `nats-server` binary, or a panic saying how to install it.
pub fn nats_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "nats-server is not installed: run scripts/setup-nats.sh (Debian's nats-server), \
             or set NATS_SERVER to its path"
        )
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl NatsServer {
    /// Starts a server with JetStream on a free port; returns once it accepts connections.
    pub fn start() -> NatsServer {
        Self::start_with(None)
    }

    /// Starts a server whose messages are limited to `max_payload` bytes.
    pub fn start_with(max_payload: Option<usize>) -> NatsServer {
        let mut s = NatsServer {
            child: None,
            port: free_port(),
            store: tempfile::tempdir().expect("a store folder"),
            bin: nats_server_bin(),
            max_payload,
        };
        s.launch();
        s
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(self.store.path());
        if let Some(max) = self.max_payload {
            let conf = self.store.path().join("limits.conf");
            std::fs::write(&conf, format!("max_payload: {max}\n")).expect("writing the config");
            cmd.arg("-c").arg(conf);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // JetStream recovers its store after the port opens.
        std::thread::sleep(Duration::from_millis(300));
    }

    /// Stops the server (SIGTERM, as a restart would) and starts it again on
    /// the same port and store; `down` is how long it stays away.
    pub fn restart(&mut self, down: Duration) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
        std::thread::sleep(down);
        self.launch();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `n` workers on the tiny model sharing `nats`'s queue, with a
/// short ack wait and these extra flags and environment.
pub async fn workers(
    nats: &NatsServer,
    n: usize,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Vec<Worker> {
    let url = nats.url();
    let model = super::tiny_model().to_str().unwrap().to_string();
    let mut args = vec![
        "--model-path",
        &model,
        "--queue",
        &url,
        "--queue-ack-wait",
        "3s",
    ];
    args.extend_from_slice(extra);
    let ws: Vec<Worker> = (0..n).map(|_| Worker::spawn(&args, env)).collect();
    for w in &ws {
        w.wait_ready().await;
    }
    ws
}

/// The `sd_worker_busy` gauge of a worker: whether it is generating now.
pub async fn busy(w: &Worker) -> bool {
    w.metrics().await.lines().any(|l| l == "sd_worker_busy 1")
}

/// Jobs a worker ran to completion (its `completed` counter).
pub async fn completed(w: &Worker) -> u64 {
    let text = w.metrics().await;
    text.lines()
        .filter(|l| l.starts_with("sd_worker_jobs_total{") && l.contains("outcome=\"completed\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Waits up to `timeout` for one of `workers` to be generating; its index.
pub async fn runner_of(workers: &[Worker], timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        for (i, w) in workers.iter().enumerate() {
            if busy(w).await {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no worker started the job");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `GET /v1/jobs/{id}` on `w` until the job ends; its snapshot.
pub async fn wait_end(w: &Worker, id: &str, timeout: Duration) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (status, snap) = w.get_json(&format!("/v1/jobs/{id}")).await;
        if status == 200 {
            let s = snap["status"].as_str().unwrap_or("");
            if matches!(s, "completed" | "failed" | "cancelled") {
                return snap;
            }
        }
        assert!(
            Instant::now() < deadline,
            "job {id} did not end within {timeout:?} (last: {status} {snap})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
