//! One job: its validated request, its state, and its event history. The
//! history is the single source of truth: state changes only by appending an
//! event, so every stream reader, the status endpoint and a reader arriving
//! late all see the same story.

use sd_worker_sdk::{
    ApiError, ErrorCode, JobResult, JobSnapshot, JobStatus, Operation, StreamEvent, Timings,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

use crate::pipeline::Work;

/// A job as this worker knows it. The worker that queued or runs it holds
/// its validated request; a worker that only follows it (NATS mode: a job
/// submitted or run elsewhere, replayed from its event stream) holds none.
pub struct Job {
    pub id: String,
    pub operation: Operation,
    /// The validated request: `None` on a job followed from elsewhere.
    pub request: Option<Work>,
    /// The request's seed (0 for operations without one).
    pub seed: u64,
    pub preview_every: u32,
    cancel: AtomicBool,
    state: Mutex<JobState>,
    /// Number of events so far; stream readers wait on changes.
    events_len: watch::Sender<usize>,
}

struct JobState {
    status: JobStatus,
    queue_position: Option<u32>,
    step: u32,
    total_steps: u32,
    events: Vec<StreamEvent>,
    warnings: Vec<String>,
    created_at_ms: u64,
    created: Instant,
    started: Option<(u64, Instant)>,
    finished: Option<(u64, Instant)>,
}

impl Job {
    /// A job with its validated request, before its first event.
    pub fn new(id: String, operation: Operation, request: Work, preview_every: u32) -> Self {
        let total_steps = request.steps_to_run() as u32;
        let seed = request.seed();
        Self::build(
            id,
            operation,
            Some(request),
            seed,
            total_steps,
            preview_every,
        )
    }

    /// A job followed from its event stream (NATS mode): no request here;
    /// its state comes from the events pushed into it.
    pub fn follower(id: String, operation: Operation, seed: u64) -> Self {
        Self::build(id, operation, None, seed, 0, 0)
    }

    fn build(
        id: String,
        operation: Operation,
        request: Option<Work>,
        seed: u64,
        total_steps: u32,
        preview_every: u32,
    ) -> Self {
        Self {
            id,
            operation,
            request,
            seed,
            preview_every,
            cancel: AtomicBool::new(false),
            state: Mutex::new(JobState {
                status: JobStatus::Queued,
                queue_position: None,
                step: 0,
                total_steps,
                events: Vec::new(),
                warnings: Vec::new(),
                created_at_ms: unix_ms(),
                created: Instant::now(),
                started: None,
                finished: None,
            }),
            events_len: watch::channel(0).0,
        }
    }

    fn state(&self) -> MutexGuard<'_, JobState> {
        // A panic while holding this lock cannot leave the state half-written
        // (every update is a single push), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends an event and applies it to the state. Events after the terminal
    /// one are dropped: a job ends exactly once.
    pub fn push(&self, event: StreamEvent) -> bool {
        let mut s = self.state();
        if s.status.is_terminal() {
            return false;
        }
        match &event {
            StreamEvent::Queued { position } => {
                if s.status != JobStatus::Queued || s.queue_position == Some(*position) {
                    return false;
                }
                s.queue_position = Some(*position);
            }
            StreamEvent::Started { total } => {
                s.status = JobStatus::Running;
                s.queue_position = None;
                s.total_steps = *total;
                s.started = Some((unix_ms(), Instant::now()));
            }
            StreamEvent::Progress { step, total, .. } => {
                s.step = *step;
                s.total_steps = *total;
            }
            StreamEvent::Warning { message, .. } => s.warnings.push(message.clone()),
            StreamEvent::Preview { .. } => {}
            StreamEvent::Complete { .. } => s.status = JobStatus::Completed,
            StreamEvent::Error { .. } => s.status = JobStatus::Failed,
            StreamEvent::Cancelled {} => s.status = JobStatus::Cancelled,
            // Back in the queue after its worker stopped: it starts over.
            StreamEvent::Requeued { .. } => {
                s.status = JobStatus::Queued;
                s.step = 0;
                s.started = None;
            }
        }
        if s.status.is_terminal() {
            s.queue_position = None;
            s.finished = Some((unix_ms(), Instant::now()));
        }
        s.events.push(event);
        let len = s.events.len();
        drop(s);
        self.events_len.send_replace(len);
        true
    }

    /// Events with sequence ids greater than `after` (ids start at 1), with their ids.
    pub fn events_after(&self, after: usize) -> Vec<(usize, StreamEvent)> {
        let s = self.state();
        s.events
            .iter()
            .enumerate()
            .skip(after)
            .map(|(i, e)| (i + 1, e.clone()))
            .collect()
    }

    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.events_len.subscribe()
    }

    pub fn status(&self) -> JobStatus {
        self.state().status
    }

    pub fn request_cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    pub fn cancel_requested(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// How long the job has waited since it was submitted.
    pub fn waited(&self) -> std::time::Duration {
        self.state().created.elapsed()
    }

    /// Seconds since the job ended, if it has.
    pub fn finished_for(&self) -> Option<std::time::Duration> {
        self.state().finished.map(|(_, at)| at.elapsed())
    }

    /// The encoded images of a completed job, base64 as on the wire.
    pub fn result_images(&self) -> Option<Vec<sd_worker_sdk::GeneratedImage>> {
        match self.state().events.last() {
            Some(StreamEvent::Complete { images, .. }) => Some(images.clone()),
            _ => None,
        }
    }

    pub fn snapshot(&self) -> JobSnapshot {
        let s = self.state();
        let (result, error) = match s.events.last() {
            Some(StreamEvent::Complete {
                images, elapsed_ms, ..
            }) => (
                Some(JobResult {
                    images: images.clone(),
                    elapsed_ms: *elapsed_ms,
                }),
                None,
            ),
            Some(StreamEvent::Error { code, message }) => {
                (None, Some(ApiError::new(*code, message.clone())))
            }
            _ => (None, None),
        };
        let queue_ms = s
            .started
            .map(|(_, at)| at.duration_since(s.created))
            .or_else(|| {
                s.finished
                    .filter(|_| s.started.is_none())
                    .map(|(_, at)| at.duration_since(s.created))
            });
        let generation_ms = match (s.started, s.finished) {
            (Some((_, a)), Some((_, b))) => Some(b.duration_since(a)),
            (Some((_, a)), None) => Some(a.elapsed()),
            _ => None,
        };
        JobSnapshot {
            job_id: self.id.clone(),
            operation: self.operation,
            status: s.status,
            queue_position: s.queue_position,
            step: s.step,
            total_steps: s.total_steps,
            seed: self.seed,
            cancel_requested: self.cancel_requested() && !s.status.is_terminal(),
            timings: Timings {
                created_at_ms: s.created_at_ms,
                started_at_ms: s.started.map(|(ms, _)| ms),
                finished_at_ms: s.finished.map(|(ms, _)| ms),
                queue_ms: queue_ms.map(|d| d.as_millis() as u64),
                generation_ms: generation_ms.map(|d| d.as_millis() as u64),
            },
            warnings: s.warnings.clone(),
            result,
            error,
        }
    }

    /// Fails a job that never ran (shutdown, engine gone).
    pub fn fail(&self, code: ErrorCode, message: impl Into<String>) -> bool {
        self.push(StreamEvent::Error {
            code,
            message: message.into(),
        })
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(step: u32) -> StreamEvent {
        StreamEvent::Progress {
            step,
            total: 4,
            percent: step as f32 * 25.0,
            eta_ms: 0,
            phase: None,
        }
    }

    #[test]
    fn a_requeued_job_starts_over_and_ends_once() {
        let job = Job::follower("job-1".into(), Operation::ImageGeneration, 7);
        for e in [
            StreamEvent::Queued { position: 2 },
            StreamEvent::Started { total: 4 },
            progress(1),
            progress(2),
            StreamEvent::Requeued { attempt: 2 },
        ] {
            assert!(job.push(e));
        }
        let snap = job.snapshot();
        assert_eq!(snap.status, JobStatus::Queued);
        assert_eq!(snap.step, 0);
        assert_eq!(snap.seed, 7);
        assert!(job.push(StreamEvent::Started { total: 4 }));
        assert!(job.push(StreamEvent::Cancelled {}));
        // A second end (another worker's, or a late one) is dropped: the
        // history, and so every SSE id, is the same on every worker.
        assert!(!job.push(StreamEvent::Cancelled {}));
        assert!(!job.push(progress(3)));
        assert_eq!(job.events_after(0).len(), 7);
        assert_eq!(job.status(), JobStatus::Cancelled);
        assert!(job.request.is_none());
    }
}
