//! The engine: the job registry, the bounded queue and the generation thread
//! behind them. HTTP handlers talk to it through [`Engine`] only.
//!
//! One façade, two ways to queue ([`Dispatch`]): `embedded`, the worker's own
//! in-memory [`queue::JobQueue`] (the default), and `nats`, a NATS JetStream
//! work queue shared by many workers ([`nats`]). Both run jobs on the same
//! generation thread ([`runner`]) and keep them as the same [`job::Job`]
//! (its event history the single source of truth); in NATS mode the events
//! also travel through JetStream, and every worker replays them into its own
//! `Job` to answer for jobs run elsewhere.

pub mod job;
pub mod nats;
pub mod queue;
pub mod registry;
pub mod runner;

use sd_worker_sdk::{ErrorCode, StreamEvent};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::metrics::Metrics;
use crate::model::LoadedModel;
use crate::validation::Validated;
use job::Job;
use queue::{JobQueue, PushError};
use registry::{Lookup, Registry};

/// What the generation thread shares with the rest of the worker.
pub struct RunnerShared {
    pub queue: JobQueue,
    pub busy: AtomicBool,
    /// The job being generated, for shutdown to fail if it outlives the grace period.
    pub current: Mutex<Option<Arc<Job>>>,
    pub metrics: Arc<Metrics>,
    pub job_timeout: Option<Duration>,
}

/// The job engine the HTTP layer talks to, whichever way jobs are queued.
pub struct Engine {
    shared: Arc<RunnerShared>,
    registry: Arc<Registry>,
    runner: Mutex<Option<std::thread::JoinHandle<()>>>,
    dispatch: Dispatch,
}

/// Where submitted jobs wait, and how they reach a generation thread.
pub enum Dispatch {
    /// This worker's own bounded queue; it runs every job it accepts.
    Embedded,
    /// A JetStream work queue shared with every worker serving the model.
    Nats(Arc<nats::NatsQueue>),
}

pub enum CancelOutcome {
    /// It was waiting and is now cancelled.
    Cancelled,
    /// It is running and stops at its next step.
    Requested,
    /// It had already ended.
    AlreadyEnded,
}

impl Engine {
    /// An engine with its own in-memory queue of `queue_capacity` jobs.
    pub fn new(
        queue_capacity: usize,
        job_ttl: Duration,
        job_timeout: Option<Duration>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self::with_dispatch(
            queue_capacity,
            Arc::new(Registry::new(job_ttl)),
            job_timeout,
            metrics,
            Dispatch::Embedded,
        )
    }

    /// An engine whose jobs wait in the NATS JetStream queue of `config`
    /// (connected, streams and buckets created, before this returns). Errors:
    /// the server cannot be reached or refuses the streams.
    pub async fn with_nats(
        queue_capacity: usize,
        job_ttl: Duration,
        job_timeout: Option<Duration>,
        metrics: Arc<Metrics>,
        config: nats::NatsConfig,
    ) -> anyhow::Result<Self> {
        let registry = Arc::new(Registry::new(job_ttl));
        let queue =
            nats::NatsQueue::connect(config, job_ttl, registry.clone(), metrics.clone()).await?;
        // The local queue only hands one job at a time to the runner.
        Ok(Self::with_dispatch(
            queue_capacity,
            registry,
            job_timeout,
            metrics,
            Dispatch::Nats(Arc::new(queue)),
        ))
    }

    fn with_dispatch(
        queue_capacity: usize,
        registry: Arc<Registry>,
        job_timeout: Option<Duration>,
        metrics: Arc<Metrics>,
        dispatch: Dispatch,
    ) -> Self {
        metrics.queue_capacity.set(queue_capacity as i64);
        Self {
            shared: Arc::new(RunnerShared {
                queue: JobQueue::new(queue_capacity),
                busy: AtomicBool::new(false),
                current: Mutex::new(None),
                metrics,
                job_timeout,
            }),
            registry,
            runner: Mutex::new(None),
            dispatch,
        }
    }

    /// `embedded` or `nats`, as the heartbeat reports it.
    pub fn queue_mode(&self) -> sd_worker_sdk::QueueMode {
        match self.dispatch {
            Dispatch::Embedded => sd_worker_sdk::QueueMode::Embedded,
            Dispatch::Nats(_) => sd_worker_sdk::QueueMode::Nats,
        }
    }

    /// Starts the generation thread with a loaded model (and, in NATS mode,
    /// the consumer that feeds it jobs for that model). Must be called from
    /// within the Tokio runtime in NATS mode.
    /// `validate` turns a job body taken from the shared queue into work
    /// (unused in embedded mode, where jobs arrive validated).
    pub fn start(&self, model: LoadedModel, validate: nats::Validator) -> std::io::Result<()> {
        if let Dispatch::Nats(q) = &self.dispatch {
            q.start_consuming(&model.meta().id, self.shared.clone(), validate);
        }
        let shared = self.shared.clone();
        let handle = std::thread::Builder::new()
            .name("generation".into())
            .spawn(move || runner::run(model, shared))?;
        *self.runner.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(())
    }

    /// Queues a validated request; returns the job and its queue position.
    /// `body` is the contract's JSON body it was validated from: in NATS
    /// mode the worker that takes the job validates it again from that.
    pub async fn submit(
        &self,
        id: String,
        valid: Validated,
        body: &[u8],
    ) -> Result<(Arc<Job>, u32), PushError> {
        let Validated {
            operation,
            request,
            preview_every,
        } = valid;
        let job = Arc::new(Job::new(id, operation, request, preview_every));
        if let Dispatch::Nats(q) = &self.dispatch {
            return q.submit(job, body).await;
        }
        // Registered first so a stream opened right after the answer finds it.
        self.registry.insert(job.clone());
        match self.shared.queue.push(job.clone()) {
            Ok(position) => Ok((job, position)),
            Err(e) => {
                self.registry.remove(&job.id);
                Err(e)
            }
        }
    }

    /// The job of this id. In NATS mode a job this worker has not seen is
    /// looked up in the shared event stream and followed from there.
    pub async fn lookup(&self, id: &str) -> Lookup {
        match (self.registry.get(id), &self.dispatch) {
            (Lookup::Unknown, Dispatch::Nats(q)) => q.follow(id).await,
            (found, _) => found,
        }
    }

    /// Asks the job to stop: a waiting job is cancelled, a running one stops
    /// at its next step (NATS mode: on whichever worker runs it).
    pub fn cancel(&self, job: &Arc<Job>) -> CancelOutcome {
        if job.status().is_terminal() {
            return CancelOutcome::AlreadyEnded;
        }
        if let Dispatch::Nats(q) = &self.dispatch {
            return q.cancel(job);
        }
        job.request_cancel();
        if self.shared.queue.remove(&job.id) {
            job.push(StreamEvent::Cancelled {});
            self.shared
                .metrics
                .jobs_finished
                .with_label_values(&[job.operation.as_str(), "cancelled"])
                .inc();
            return CancelOutcome::Cancelled;
        }
        // Not waiting: running (or just popped); the runner sees the flag.
        if job.status().is_terminal() {
            CancelOutcome::Cancelled
        } else {
            CancelOutcome::Requested
        }
    }

    /// The job being generated now, if any.
    pub fn current(&self) -> Option<Arc<Job>> {
        self.shared
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Jobs waiting: in this worker's queue, or (NATS mode) the shared
    /// backlog of its model, as last read from the stream.
    pub fn queue_len(&self) -> usize {
        match &self.dispatch {
            Dispatch::Embedded => self.shared.queue.len(),
            Dispatch::Nats(q) => q.backlog(),
        }
    }

    pub fn queue_capacity(&self) -> usize {
        self.shared.queue.capacity()
    }

    pub fn is_busy(&self) -> bool {
        self.shared.busy.load(Ordering::SeqCst)
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    pub fn sweep_expired(&self) -> usize {
        self.registry.sweep()
    }

    /// Stops taking jobs: waiting jobs fail with a clear error; the running one
    /// may finish within `grace`, after which it fails too. Returns whether the
    /// running job (if any) finished in time.
    pub fn shutdown(&self, grace: Duration) -> bool {
        if let Dispatch::Nats(q) = &self.dispatch {
            let handle = self.runner.lock().unwrap_or_else(|e| e.into_inner()).take();
            return q.shutdown(&self.shared, handle, grace);
        }
        for job in self.shared.queue.close() {
            job.fail(
                ErrorCode::ShuttingDown,
                "the worker is shutting down; submit the job again elsewhere",
            );
        }
        let handle = self.runner.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(handle) = handle else { return true };
        let deadline = std::time::Instant::now() + grace;
        while !handle.is_finished() {
            if std::time::Instant::now() >= deadline {
                if let Some(job) = self
                    .shared
                    .current
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                {
                    job.request_cancel();
                    job.fail(
                        ErrorCode::ShuttingDown,
                        "the worker stopped before the job could finish",
                    );
                }
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = handle.join();
        true
    }
}
