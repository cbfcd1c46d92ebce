//! The engine: the job registry, the bounded queue and the generation thread
//! behind them. HTTP handlers talk to it through [`Engine`] only.

pub mod job;
pub mod queue;
pub mod registry;
pub mod runner;

use sd_worker_sdk::{ErrorCode, Operation, StreamEvent};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::metrics::Metrics;
use crate::model::LoadedModel;
use crate::pipeline::Work;
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

pub struct Engine {
    shared: Arc<RunnerShared>,
    registry: Registry,
    runner: Mutex<Option<std::thread::JoinHandle<()>>>,
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
    pub fn new(
        queue_capacity: usize,
        job_ttl: Duration,
        job_timeout: Option<Duration>,
        metrics: Arc<Metrics>,
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
            registry: Registry::new(job_ttl),
            runner: Mutex::new(None),
        }
    }

    /// Starts the generation thread with a loaded model.
    pub fn start(&self, model: LoadedModel) -> std::io::Result<()> {
        let shared = self.shared.clone();
        let handle = std::thread::Builder::new()
            .name("generation".into())
            .spawn(move || runner::run(model, shared))?;
        *self.runner.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(())
    }

    /// Queues a validated request; returns the job and its queue position.
    pub fn submit(
        &self,
        id: String,
        operation: Operation,
        request: Work,
        preview_every: u32,
    ) -> Result<(Arc<Job>, u32), PushError> {
        let job = Arc::new(Job::new(id, operation, request, preview_every));
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

    pub fn lookup(&self, id: &str) -> Lookup {
        self.registry.get(id)
    }

    pub fn cancel(&self, job: &Arc<Job>) -> CancelOutcome {
        if job.status().is_terminal() {
            return CancelOutcome::AlreadyEnded;
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

    pub fn queue_len(&self) -> usize {
        self.shared.queue.len()
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
