//! The shared queue: many workers, one NATS JetStream work queue
//! (`--queue nats://…`). Every worker is a front (it accepts, answers for and
//! cancels any job) and a consumer (it runs jobs of its model).
//!
//! - [`front`]: `submit` publishes the request's JSON body on
//!   `sdw.jobs.<model>` of the work-queue stream `SDW_JOBS`, after a first
//!   `queued` event on the job's subject `sdw.events.<id>` of `SDW_EVENTS`;
//!   `cancel` publishes on core `sdw.cancel.<id>`.
//! - [`consume`]: a durable pull consumer per model, shared by the workers
//!   serving it, takes one job at a time when the generation thread is idle,
//!   validates the body again, hands a local [`Job`] to the same runner as
//!   embedded mode, forwards its events to `sdw.events.<id>` (images to the
//!   object store `sdw-images`), keeps the message alive with in-progress
//!   acks and acks it after the terminal event. A worker that dies leaves it
//!   un-acked: JetStream redelivers it after the ack wait (`requeued`).
//! - [`mirror`]: any worker answers for any job by replaying its events into
//!   a local [`Job`] and following them to the end, so snapshots, streams
//!   (same SSE ids on every worker) and images work unchanged.
//! - [`blobs`]: the object store, for images and large bodies.

pub mod blobs;
pub mod config;
pub mod consume;
pub mod front;
pub mod mirror;
mod setup;

pub use config::NatsConfig;

use async_nats::jetstream::{self, consumer::pull, object_store::ObjectStore, stream::Stream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use super::job::Job;
use super::registry::Registry;
use crate::metrics::Metrics;

/// Validates a job body taken from the queue against the loaded model, as
/// the front did ([`crate::validation::validate_body`] with its profile).
pub type Validator = Arc<
    dyn Fn(&[u8]) -> Result<crate::validation::Validated, sd_worker_sdk::ApiError> + Send + Sync,
>;

/// The durable pull consumer of a model's jobs.
pub type JobConsumer = jetstream::consumer::Consumer<pull::Config>;

/// This worker's side of the shared queue.
pub struct NatsQueue {
    config: NatsConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    jobs: Stream,
    events: Stream,
    blobs: ObjectStore,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    runtime: tokio::runtime::Handle,
    /// `sdw.jobs.<model>` and the model id, once the model is loaded.
    model: OnceLock<(String, String)>,
    /// The shared consumer of the model, once created.
    consumer: Mutex<Option<JobConsumer>>,
    /// Jobs of the model waiting in the stream, as last read.
    backlog: AtomicUsize,
    /// The job this worker has taken from the queue, while it has one.
    active: Mutex<Option<Active>>,
    /// Shutdown: take nothing more.
    stopping: AtomicBool,
    /// Shutdown past the grace period: hand the running job back (nak)
    /// instead of publishing its end.
    abandon: AtomicBool,
    /// The consumer loop has ended (shutdown).
    consumer_done: AtomicBool,
}

/// The job taken from the queue: its id, whether a cancel arrived for it,
/// and its local job once built.
struct Active {
    id: String,
    cancelled: bool,
    job: Option<Arc<Job>>,
}

impl NatsQueue {
    /// Connects and creates (or finds) the streams and the object store.
    /// Errors: no server, or JetStream refused a stream (not enabled, or
    /// an existing one of another kind).
    pub async fn connect(
        config: NatsConfig,
        job_ttl: Duration,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let client = config.connect().await?;
        let js = jetstream::new(client.clone());
        let (jobs, events, blobs) = setup::streams(&js, &config, job_ttl).await?;
        tracing::info!(url = %config.url, "sharing the NATS JetStream queue");
        Ok(Self {
            config,
            client,
            js,
            jobs,
            events,
            blobs,
            registry,
            metrics,
            runtime: tokio::runtime::Handle::current(),
            model: OnceLock::new(),
            consumer: Mutex::new(None),
            backlog: AtomicUsize::new(0),
            active: Mutex::new(None),
            stopping: AtomicBool::new(false),
            abandon: AtomicBool::new(false),
            consumer_done: AtomicBool::new(false),
        })
    }

    /// Jobs of the model waiting in the shared stream (refreshed every second).
    pub fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }

    fn active(&self) -> MutexGuard<'_, Option<Active>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn consumer(&self) -> Option<JobConsumer> {
        self.consumer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops taking jobs. The running job may finish within `grace` (its end
    /// is published and its message acked); past it, or if it had not
    /// started, it goes back to the queue for another worker (nak), rather
    /// than failing. Returns whether the running job (if any) finished.
    pub fn shutdown(
        &self,
        shared: &super::RunnerShared,
        runner: Option<std::thread::JoinHandle<()>>,
        grace: Duration,
    ) -> bool {
        self.stopping.store(true, Ordering::SeqCst);
        if !shared.queue.close().is_empty() {
            self.abandon.store(true, Ordering::SeqCst);
        }
        let deadline = std::time::Instant::now() + grace;
        let mut finished = true;
        if let Some(handle) = runner {
            while !handle.is_finished() {
                if std::time::Instant::now() >= deadline {
                    finished = false;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if finished {
                let _ = handle.join();
            }
        }
        if !finished {
            self.abandon.store(true, Ordering::SeqCst);
            if let Some(job) = self.active().as_ref().and_then(|a| a.job.clone()) {
                job.request_cancel();
            }
        }
        // Let the consumer publish the end (or the nak) and ack.
        let wait_until = std::time::Instant::now() + Duration::from_secs(10);
        while self.consumer().is_some()
            && !self.consumer_done.load(Ordering::SeqCst)
            && std::time::Instant::now() < wait_until
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        finished
    }
}
