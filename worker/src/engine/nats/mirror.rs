//! Following a job's events on `sdw.events.<id>` into a local [`Job`]: the
//! same events in the same order on every worker, so a snapshot, a stream
//! (its SSE ids included) and the images read alike wherever they are asked.

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use futures::StreamExt;
use sd_worker_sdk::{Operation, StreamEvent};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

use super::config::{self, H_OPERATION, H_SEED};
use super::{blobs, NatsQueue};
use crate::engine::job::Job;
use crate::engine::registry::Lookup;

/// How long a lookup waits for the history of a job to be replayed.
const CATCH_UP: Duration = Duration::from_secs(10);

impl NatsQueue {
    /// A job this worker has not seen: found by the last event on its
    /// subject (none: unknown), replayed up to it, then followed to its end.
    pub async fn follow(self: &Arc<Self>, id: &str) -> Lookup {
        let subject = config::events_subject(id);
        let last = match self.events.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => m,
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => {
                return Lookup::Unknown
            }
            Err(e) => {
                tracing::warn!(job_id = %id, error = %e, "could not look the job up in NATS");
                return Lookup::Unknown;
            }
        };
        let header = |name: &str| {
            last.headers
                .get(name)
                .map(|v| v.as_str().to_string())
                .unwrap_or_default()
        };
        let Ok(operation) =
            serde_json::from_value::<Operation>(serde_json::Value::String(header(H_OPERATION)))
        else {
            return Lookup::Unknown;
        };
        let seed = header(H_SEED).parse().unwrap_or(0);
        let job = Arc::new(Job::follower(id.to_string(), operation, seed));
        let caught_up = self.spawn_follower(job.clone(), last.sequence);
        if tokio::time::timeout(CATCH_UP, caught_up).await.is_err() {
            tracing::warn!(job_id = %id, "replaying the job's events took too long");
        }
        Lookup::Found(self.registry.insert_if_absent(job))
    }

    /// Replays and follows the events of `job` until its terminal one; the
    /// answer comes once the event at stream sequence `until` is applied.
    pub(crate) fn spawn_follower(
        self: &Arc<Self>,
        job: Arc<Job>,
        until: u64,
    ) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let me = self.clone();
        self.runtime.spawn(async move {
            me.follow_events(job, until, tx).await;
        });
        rx
    }

    async fn follow_events(&self, job: Arc<Job>, until: u64, tx: oneshot::Sender<()>) {
        let subject = config::events_subject(&job.id);
        let mut tx = Some(tx);
        let mut last_seen = 0u64;
        loop {
            let deliver_policy = if last_seen == 0 {
                DeliverPolicy::All
            } else {
                DeliverPolicy::ByStartSequence {
                    start_sequence: last_seen + 1,
                }
            };
            let consumer = self
                .events
                .create_consumer(pull::OrderedConfig {
                    filter_subject: subject.clone(),
                    deliver_policy,
                    ..Default::default()
                })
                .await;
            let mut messages = match consumer {
                Ok(c) => match c.messages().await {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::debug!(job_id = %job.id, error = %e, "following events");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                },
                Err(e) => {
                    tracing::debug!(job_id = %job.id, error = %e, "following events");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            while let Some(next) = messages.next().await {
                let Ok(msg) = next else { break };
                let Ok(seq) = msg.info().map(|i| i.stream_sequence) else {
                    continue;
                };
                last_seen = seq;
                match serde_json::from_slice::<StreamEvent>(&msg.payload) {
                    Ok(event) => {
                        let event = self.restore(&job.id, event).await;
                        job.push(event);
                    }
                    Err(e) => {
                        tracing::warn!(job_id = %job.id, error = %e, "an unreadable event")
                    }
                }
                if seq >= until {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
                if job.status().is_terminal() {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A `complete` event with its images fetched back from the object store
    /// (retried a few times; a store that stays unreachable fails the job
    /// here, saying so).
    async fn restore(&self, id: &str, event: StreamEvent) -> StreamEvent {
        let mut tries = 0;
        loop {
            match blobs::from_wire(&self.blobs, event.clone()).await {
                Ok(e) => return e,
                Err(e) if tries >= 5 => {
                    tracing::warn!(job_id = %id, error = %format!("{e:#}"), "could not fetch the result images");
                    return StreamEvent::Error {
                        code: sd_worker_sdk::ErrorCode::Internal,
                        message: format!("the job completed but its images could not be read from the shared store: {e:#}"),
                    };
                }
                Err(_) => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                }
            }
        }
    }
}
