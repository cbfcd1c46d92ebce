//! The engine: the job registry, the bounded queue and the generation thread
//! behind them. HTTP handlers talk to it through [`Engine`] only.

pub mod job;
pub mod queue;
pub mod registry;
pub mod runner;

use sd_worker_sdk::{ErrorCode, Operation, StreamEvent};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::model::LoadedModel;
use crate::pipeline::Request;
use job::Job;
use queue::{JobQueue, PushError};
use registry::{Lookup, Registry};

pub struct Engine {
    queue: Arc<JobQueue>,
    registry: Registry,
    busy: Arc<AtomicBool>,
    runner: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
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
    pub fn new(queue_capacity: usize, job_ttl: Duration) -> Self {
        Self {
            queue: Arc::new(JobQueue::new(queue_capacity)),
            registry: Registry::new(job_ttl),
            busy: Arc::new(AtomicBool::new(false)),
            runner: std::sync::Mutex::new(None),
        }
    }

    /// Starts the generation thread with a loaded model.
    pub fn start(&self, model: LoadedModel) -> std::io::Result<()> {
        let queue = self.queue.clone();
        let busy = self.busy.clone();
        let handle = std::thread::Builder::new()
            .name("generation".into())
            .spawn(move || runner::run(model, queue, busy))?;
        *self.runner.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(())
    }

    /// Queues a validated request; returns the job and its queue position.
    pub fn submit(
        &self,
        id: String,
        operation: Operation,
        request: Request,
        preview_every: u32,
    ) -> Result<(Arc<Job>, u32), PushError> {
        let job = Arc::new(Job::new(id, operation, request, preview_every));
        // Registered first so a stream opened right after the answer finds it.
        self.registry.insert(job.clone());
        match self.queue.push(job.clone()) {
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
        if self.queue.remove(&job.id) {
            job.push(StreamEvent::Cancelled {});
            return CancelOutcome::Cancelled;
        }
        // Not waiting: running (or just popped); the runner sees the flag.
        if job.status().is_terminal() {
            CancelOutcome::Cancelled
        } else {
            CancelOutcome::Requested
        }
    }

    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    pub fn queue_capacity(&self) -> usize {
        self.queue.capacity()
    }

    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst)
    }

    pub fn sweep_expired(&self) -> usize {
        self.registry.sweep()
    }

    /// Stops taking jobs: waiting jobs fail with a clear error; the running one
    /// may finish within `grace`. Returns whether the runner stopped in time.
    pub fn shutdown(&self, grace: Duration) -> bool {
        for job in self.queue.close() {
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
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = handle.join();
        true
    }
}
