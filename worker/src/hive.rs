//! Registration with the hive by heartbeat. A hive that is down is retried with
//! exponential backoff (capped at the interval) and never stops the worker.

use sd_worker_sdk::{Heartbeat, HeartbeatWorker, WorkerStatus};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};
use tracing::{info, warn};

use crate::http::AppState;

#[derive(Debug, Clone)]
pub struct HiveConfig {
    /// Base URL of the hive; heartbeats go to `{url}/v1/worker-heartbeat`.
    pub url: String,
    pub interval: Duration,
    pub worker_id: String,
    pub device: String,
    pub port: u16,
    pub advertise_url: Option<String>,
}

impl HiveConfig {
    fn endpoint(&self) -> String {
        format!("{}/v1/worker-heartbeat", self.url.trim_end_matches('/'))
    }
}

pub fn status_of(state: &AppState) -> WorkerStatus {
    if !state.accepting.load(Ordering::SeqCst) {
        WorkerStatus::Stopping
    } else if state.profile.get().is_none() {
        WorkerStatus::Starting
    } else if state.engine.is_busy() || state.engine.queue_len() > 0 {
        WorkerStatus::Busy
    } else {
        WorkerStatus::Ready
    }
}

fn heartbeat(state: &AppState, cfg: &HiveConfig, status: WorkerStatus) -> Heartbeat {
    Heartbeat {
        worker: HeartbeatWorker {
            id: cfg.worker_id.clone(),
            model_id: state
                .profile
                .get()
                .map(|p| p.info.model.id.clone())
                .unwrap_or_default(),
            device: cfg.device.clone(),
            port: cfg.port,
            status,
            implementation: "sd-worker".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            queue_length: state.engine.queue_len() as u32,
            url: cfg.advertise_url.clone(),
            queue_mode: state.engine.queue_mode(),
        },
        timestamp: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
    }
}

/// Sends one heartbeat; true when the hive answered 2xx.
pub async fn send(
    client: &reqwest::Client,
    state: &AppState,
    cfg: &HiveConfig,
    status: WorkerStatus,
) -> bool {
    let body = heartbeat(state, cfg, status);
    match client
        .post(cfg.endpoint())
        .json(&body)
        .timeout(Duration::from_secs(5))
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => true,
        Ok(r) => {
            warn!(status = %r.status(), hive = %cfg.url, "the hive refused the heartbeat");
            false
        }
        Err(e) => {
            warn!(error = %e, hive = %cfg.url, "the hive is unreachable");
            false
        }
    }
}

/// Heartbeats every `interval` (immediately on every status change) until the
/// worker stops accepting; the final `stopping` heartbeat is sent by shutdown.
pub fn spawn(state: AppState, cfg: HiveConfig) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut failures = 0u32;
        let mut last = None;
        let mut since_sent = Duration::MAX;
        let tick = Duration::from_millis(100).min(cfg.interval);
        loop {
            let status = status_of(&state);
            if status == WorkerStatus::Stopping {
                break;
            }
            // Backoff after failures: 0.5 s, 1 s, 2 s, ... capped at the interval.
            let wait = if failures == 0 {
                cfg.interval
            } else {
                (Duration::from_millis(500) * 2u32.saturating_pow(failures - 1)).min(cfg.interval)
            };
            if last != Some(status) || since_sent >= wait {
                let ok = send(&client, &state, &cfg, status).await;
                if ok && failures > 0 {
                    info!(hive = %cfg.url, "the hive is reachable again");
                }
                failures = if ok { 0 } else { failures.saturating_add(1) };
                last = Some(status);
                since_sent = Duration::ZERO;
            }
            tokio::time::sleep(tick).await;
            since_sent = since_sent.saturating_add(tick);
        }
    })
}
