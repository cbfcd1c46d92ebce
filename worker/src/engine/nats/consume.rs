//! The consumer side: take a job of this worker's model from the shared
//! queue when the generation thread is idle, run it there, publish its
//! events, and ack it once its end is on the stream.

use async_nats::jetstream::message::{AckKind, Acker};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use futures::StreamExt;
use sd_worker_sdk::{ErrorCode, Operation, StreamEvent};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use super::config::{self, H_BODY_REF, H_JOB_ID, H_OPERATION, H_SEED};
use super::{blobs, setup, Active, NatsQueue, Validator};
use crate::engine::job::Job;
use crate::engine::RunnerShared;

/// How long one pull request waits for a job before asking again.
const PULL_EXPIRES: Duration = Duration::from_secs(2);

impl NatsQueue {
    /// Starts consuming jobs for `model` (after the model loaded): creates
    /// the shared consumer, listens for cancels, refreshes the backlog gauge
    /// every second, and feeds the generation thread one job at a time.
    pub fn start_consuming(
        self: &Arc<Self>,
        model: &str,
        shared: Arc<RunnerShared>,
        validate: Validator,
    ) {
        let _ = self
            .model
            .set((config::jobs_subject(model), model.to_string()));
        let me = self.clone();
        let model = model.to_string();
        self.runtime.spawn(async move {
            let consumer = loop {
                match setup::consumer(&me.jobs, &me.config, &model).await {
                    Ok(c) => break c,
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "could not create the queue consumer; retrying");
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
            };
            *me.consumer.lock().unwrap_or_else(|e| e.into_inner()) = Some(consumer.clone());
            tokio::spawn(me.clone().refresh_backlog(consumer.clone(), model.clone()));
            tokio::spawn(me.clone().listen_for_cancels());
            tracing::info!(%model, "taking jobs from the shared queue");
            me.consume(consumer, shared, validate).await;
            me.consumer_done.store(true, Ordering::SeqCst);
        });
    }

    async fn refresh_backlog(self: Arc<Self>, mut consumer: super::JobConsumer, model: String) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if let Ok(info) = consumer.info().await {
                let n = info.num_pending as usize;
                self.backlog.store(n, Ordering::Relaxed);
                self.metrics
                    .queue_backlog
                    .with_label_values(&[model.as_str()])
                    .set(n as i64);
            }
        }
    }

    /// Core `sdw.cancel.*`: the job this worker runs stops at its next step.
    async fn listen_for_cancels(self: Arc<Self>) {
        let mut sub = match self
            .client
            .subscribe(format!("{}.*", config::CANCEL_PREFIX))
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "could not listen for cancels");
                return;
            }
        };
        while let Some(msg) = sub.next().await {
            let Some(id) = msg.subject.as_str().rsplit('.').next() else {
                continue;
            };
            let mut active = self.active();
            if let Some(a) = active.as_mut().filter(|a| config::token(&a.id) == id) {
                tracing::info!(job_id = %a.id, "cancel received");
                a.cancelled = true;
                if let Some(job) = &a.job {
                    job.request_cancel();
                }
            }
        }
    }

    async fn consume(
        &self,
        consumer: super::JobConsumer,
        shared: Arc<RunnerShared>,
        validate: Validator,
    ) {
        while !self.stopping.load(Ordering::SeqCst) {
            let batch = consumer
                .batch()
                .max_messages(1)
                .expires(PULL_EXPIRES)
                .messages()
                .await;
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(error = %e, "pulling a job");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            while let Some(next) = batch.next().await {
                match next {
                    Ok(msg) if self.stopping.load(Ordering::SeqCst) => {
                        let _ = msg.ack_with(AckKind::Nak(None)).await;
                    }
                    Ok(msg) => self.take(msg, &shared, &validate).await,
                    Err(e) => {
                        tracing::debug!(error = %e, "pulling a job");
                        break;
                    }
                }
            }
        }
        tracing::info!("stopped taking jobs from the shared queue");
    }

    /// One delivery of a job message.
    async fn take(
        &self,
        msg: async_nats::jetstream::Message,
        shared: &Arc<RunnerShared>,
        validate: &Validator,
    ) {
        let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
        let (msg, acker) = msg.split();
        let header = |name: &str| {
            msg.headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_string())
        };
        let Some(id) = header(H_JOB_ID) else {
            tracing::warn!(subject = %msg.subject, "a queue message without a job id; dropped");
            let _ = acker.ack().await;
            return;
        };
        *self.active() = Some(Active {
            id: id.clone(),
            cancelled: false,
            job: None,
        });
        let span = tracing::info_span!("job", job_id = %id);
        self.run(
            &id,
            delivered,
            header(H_BODY_REF),
            msg.payload.to_vec(),
            &acker,
            shared,
            validate,
        )
        .instrument(span)
        .await;
        *self.active() = None;
    }

    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        id: &str,
        delivered: i64,
        body_ref: Option<String>,
        payload: Vec<u8>,
        acker: &Acker,
        shared: &Arc<RunnerShared>,
        validate: &Validator,
    ) {
        // Ended already: cancelled while it waited, or run to its end by a
        // worker that stopped before it could ack.
        let (operation, seed) = match self
            .events
            .get_last_raw_message_by_subject(&config::events_subject(id))
            .await
        {
            Ok(last) => {
                if serde_json::from_slice::<StreamEvent>(&last.payload)
                    .is_ok_and(|e| e.is_terminal())
                {
                    tracing::info!("the job already ended; skipped");
                    let _ = acker.ack().await;
                    return;
                }
                let get = |n: &str| {
                    last.headers
                        .get(n)
                        .map(|v| v.as_str().to_string())
                        .unwrap_or_default()
                };
                let op = serde_json::from_value(serde_json::Value::String(get(H_OPERATION)))
                    .unwrap_or(Operation::ImageGeneration);
                (op, get(H_SEED).parse().unwrap_or(0))
            }
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => {
                (Operation::ImageGeneration, 0)
            }
            Err(e) => {
                // NATS unreachable: hand it back for later.
                tracing::warn!(error = %e, "could not read the job's events; handing it back");
                let _ = acker
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await;
                return;
            }
        };
        let carrier = Job::follower(id.to_string(), operation, seed);
        if delivered > i64::from(self.config.max_deliver) {
            let workers = delivered - 1;
            tracing::error!(
                deliveries = workers,
                "a job whose workers keep stopping (poison); failed"
            );
            self.publish_end(&carrier, StreamEvent::Error {
                code: ErrorCode::Internal,
                message: format!("the job was given to a worker {workers} times and each worker stopped before it ended (a job that crashes workers?); it is not run again"),
            }, delivered, acker).await;
            return;
        }
        let valid = match self.read_and_validate(body_ref, payload, validate).await {
            Ok(v) => v,
            Err((code, message)) => {
                let end = StreamEvent::Error { code, message };
                self.publish_end(&carrier, end, delivered, acker).await;
                return;
            }
        };
        let job = Arc::new(Job::new(
            id.to_string(),
            valid.operation,
            valid.request,
            valid.preview_every,
        ));
        if delivered > 1 {
            let requeued = StreamEvent::Requeued {
                attempt: delivered as u32,
            };
            tracing::info!(
                attempt = delivered,
                "running a job again after its worker stopped"
            );
            self.publish_retrying(&job, &requeued, delivered, &format!("{id}:{delivered}:r"))
                .await;
        }
        if let Some(a) = self.active().as_mut() {
            if a.cancelled {
                job.request_cancel();
            }
            a.job = Some(job.clone());
        }
        if shared.queue.push(job.clone()).is_err() {
            let _ = acker.ack_with(AckKind::Nak(None)).await;
            return;
        }
        self.forward(&job, delivered, acker).await;
    }

    /// Publishes the local job's events as the runner pushes them, with an
    /// in-progress ack every third of the ack wait; acks after the terminal
    /// one (or, when shutdown abandons the job, naks instead).
    async fn forward(&self, job: &Arc<Job>, delivered: i64, acker: &Acker) {
        let mut changes = job.subscribe();
        let mut after = 0;
        let mut alive = tokio::time::interval(self.config.ack_wait / 3);
        alive.tick().await;
        loop {
            changes.borrow_and_update();
            for (index, event) in job.events_after(after) {
                after = index;
                if self.abandon.load(Ordering::SeqCst) {
                    tracing::info!("shutting down: the job goes back to the queue");
                    let _ = acker.ack_with(AckKind::Nak(None)).await;
                    return;
                }
                if matches!(event, StreamEvent::Queued { .. }) {
                    continue;
                }
                let msg_id = format!("{}:{delivered}:{index}", job.id);
                self.publish_retrying(job, &event, delivered, &msg_id).await;
                if event.is_terminal() {
                    ack_surely(acker).await;
                    return;
                }
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = alive.tick() => { let _ = acker.ack_with(AckKind::Progress).await; }
            }
        }
    }

    /// The terminal event of a job that does not run here, then the ack.
    /// The job's request (from the message, or the object store when it was
    /// too large for one) validated as the front did; the error the job ends
    /// with otherwise.
    async fn read_and_validate(
        &self,
        body_ref: Option<String>,
        payload: Vec<u8>,
        validate: &Validator,
    ) -> Result<crate::validation::Validated, (ErrorCode, String)> {
        let body = match body_ref {
            Some(name) => blobs::get(&self.blobs, &name).await.map_err(|e| {
                let message = format!(
                    "the job's request could not be read back from the shared store: {e:#}"
                );
                (ErrorCode::Internal, message)
            })?,
            None => payload,
        };
        let check = validate.clone();
        match tokio::task::spawn_blocking(move || check(&body)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err((e.code, e.message)),
            Err(e) => Err((ErrorCode::Internal, format!("validation failed: {e}"))),
        }
    }

    async fn publish_end(&self, carrier: &Job, event: StreamEvent, delivered: i64, acker: &Acker) {
        self.publish_retrying(
            carrier,
            &event,
            delivered,
            &format!("{}:{delivered}:end", carrier.id),
        )
        .await;
        ack_surely(acker).await;
    }

    /// Publishes until JetStream stores it (NATS restarting: the retries are
    /// deduplicated by the message id), or shutdown abandons the job.
    async fn publish_retrying(&self, job: &Job, event: &StreamEvent, attempt: i64, msg_id: &str) {
        let mut wait = Duration::from_millis(100);
        loop {
            match self.publish_event(job, event, attempt, msg_id).await {
                Ok(_) => return,
                Err(e) => {
                    if self.abandon.load(Ordering::SeqCst) {
                        return;
                    }
                    tracing::warn!(error = %format!("{e:#}"), "publishing an event failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// Acks, confirmed by the server, retried a few times.
async fn ack_surely(acker: &Acker) {
    for _ in 0..10 {
        if acker.double_ack().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tracing::warn!("could not ack the job; JetStream will hand it out again (its end is on the stream: it is skipped)");
}
