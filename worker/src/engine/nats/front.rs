//! The front side: accepting a job into the shared queue, cancelling one,
//! and publishing a job's events (also used by the consumer side).

use async_nats::HeaderMap;
use sd_worker_sdk::{JobStatus, StreamEvent};
use std::sync::Arc;
use std::time::Duration;

use super::config::{self, H_BODY_REF, H_JOB_ID, H_OPERATION, H_SEED};
use super::{blobs, NatsQueue};
use crate::engine::job::Job;
use crate::engine::queue::PushError;
use crate::engine::CancelOutcome;

/// Room left in a NATS message for headers: bodies larger than the server's
/// limit minus this go to the object store.
const HEADER_ROOM: usize = 16 * 1024;

impl NatsQueue {
    /// Publishes a validated job: a `queued` event first (so every event of
    /// the job, its first included, is on its subject in order), then the
    /// body on the model's subject. Answers with the job (followed from its
    /// events here, like any other) and its position. Errors: `Full` when
    /// `--queue-size` jobs of the model already wait (or the stream refuses
    /// more), `Unavailable` when NATS cannot be reached.
    pub async fn submit(
        self: &Arc<Self>,
        job: Arc<Job>,
        body: &[u8],
    ) -> Result<(Arc<Job>, u32), PushError> {
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(PushError::Closed);
        }
        let Some((subject, _)) = self.model.get() else {
            return Err(PushError::Unavailable("the model is not loaded yet".into()));
        };
        let waiting = match self.consumer() {
            Some(mut c) => match c.info().await {
                Ok(info) => info.num_pending as usize,
                Err(e) => return Err(unavailable(e)),
            },
            None => 0,
        };
        self.backlog
            .store(waiting, std::sync::atomic::Ordering::Relaxed);
        if waiting >= self.config.queue_size as usize {
            return Err(PushError::Full);
        }
        let position = waiting as u32 + 1;
        let body = with_seed(body, &job);
        let queued = StreamEvent::Queued { position };
        let first = self
            .publish_event(&job, &queued, 0, &format!("{}:q", job.id))
            .await
            .map_err(unavailable)?;
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", job.id.as_str());
        headers.insert(H_JOB_ID, job.id.as_str());
        let max = self.client.server_info().max_payload;
        let payload = if body.len() + HEADER_ROOM > max {
            let name = format!("body/{}", job.id);
            if let Err(e) = blobs::put(&self.blobs, &name, &body).await {
                self.forget(&job.id).await;
                return Err(unavailable(e));
            }
            headers.insert(H_BODY_REF, name.as_str());
            Vec::new()
        } else {
            body
        };
        let published = match self
            .js
            .publish_with_headers(subject.clone(), headers, payload.into())
            .await
        {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        if let Err(e) = published {
            self.forget(&job.id).await;
            let text = error_chain(&e);
            return Err(if text.contains("maximum messages per subject") {
                PushError::Full
            } else {
                unavailable(text)
            });
        }
        let job = self.registry.insert_if_absent(job);
        let caught_up = self.spawn_follower(job.clone(), first);
        let _ = tokio::time::timeout(Duration::from_secs(5), caught_up).await;
        Ok((job, position))
    }

    /// Drops what a refused submission left: its `queued` event and body.
    async fn forget(&self, id: &str) {
        let _ = self.events.purge().filter(config::events_subject(id)).await;
        let _ = self.blobs.delete(format!("body/{id}")).await;
    }

    /// Cancels the job wherever it is: a core message reaches the worker
    /// running it (it stops at its next step); a job still waiting gets its
    /// `cancelled` event now, and the worker that later takes it skips it.
    pub fn cancel(self: &Arc<Self>, job: &Arc<Job>) -> CancelOutcome {
        job.request_cancel();
        let waiting = job.status() == JobStatus::Queued;
        let me = self.clone();
        let job = job.clone();
        self.runtime.spawn(async move {
            if waiting {
                let id = format!("{}:cancel", job.id);
                if let Err(e) = me
                    .publish_event(&job, &StreamEvent::Cancelled {}, 0, &id)
                    .await
                {
                    tracing::warn!(job_id = %job.id, error = %e, "could not publish the cancel");
                }
            }
            let _ = me
                .client
                .publish(config::cancel_subject(&job.id), "".into())
                .await;
            let _ = me.client.flush().await;
        });
        if waiting {
            CancelOutcome::Cancelled
        } else {
            CancelOutcome::Requested
        }
    }

    /// Publishes one event of `job` on `sdw.events.<id>` (images of a
    /// `complete` event to the object store first), with the job's operation
    /// and seed in headers, deduplicated by `msg_id`; returns its sequence.
    /// `attempt` is the delivery running the job (0 on the front).
    pub(crate) async fn publish_event(
        &self,
        job: &Job,
        event: &StreamEvent,
        attempt: i64,
        msg_id: &str,
    ) -> anyhow::Result<u64> {
        let wire = blobs::to_wire(&self.blobs, &job.id, attempt, event.clone()).await?;
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id);
        headers.insert(H_OPERATION, job.operation.as_str());
        headers.insert(H_SEED, job.seed.to_string().as_str());
        let payload = serde_json::to_vec(&wire)?;
        let ack = self
            .js
            .publish_with_headers(config::events_subject(&job.id), headers, payload.into())
            .await?
            .await?;
        Ok(ack.sequence)
    }
}

/// The body with the seed the front drew (a body without one would get
/// another random seed on the worker that runs it).
fn with_seed(body: &[u8], job: &Job) -> Vec<u8> {
    if job.request.as_ref().and_then(|w| w.generation()).is_none() {
        return body.to_vec();
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.insert("seed".into(), job.seed.into());
            serde_json::to_vec(&map).unwrap_or_else(|_| body.to_vec())
        }
        _ => body.to_vec(),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn unavailable(e: impl std::fmt::Display) -> PushError {
    PushError::Unavailable(format!("the shared job queue (NATS) is unavailable: {e}"))
}
