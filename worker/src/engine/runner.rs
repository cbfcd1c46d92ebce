//! The generation thread: the only owner of the model. It takes jobs from the
//! queue one at a time and turns pipeline callbacks into job events. A panic
//! inside the pipeline fails that job; the thread carries on with the next.

use base64::Engine as _;
use candle_core::Tensor;
use sd_worker_sdk::{ErrorCode, GeneratedImage, ImageFormat, StreamEvent};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{error, info, info_span, warn};

use super::job::Job;
use super::RunnerShared;
use crate::model::LoadedModel;
use crate::pipeline::{preview::preview_jpeg, Observer, Outcome};

/// Runs jobs until the queue closes.
pub fn run(model: LoadedModel, shared: Arc<RunnerShared>) {
    while let Some(job) = shared.queue.pop_blocking() {
        *shared.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(job.clone());
        shared.busy.store(true, Ordering::SeqCst);
        let span = info_span!("job", job_id = %job.id);
        let _enter = span.enter();
        run_one(&model, &job, &shared);
        shared.busy.store(false, Ordering::SeqCst);
        *shared.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
    info!("generation thread stopped");
}

fn run_one(model: &LoadedModel, job: &Arc<Job>, shared: &RunnerShared) {
    let m = &shared.metrics;
    let op = job.operation.as_str();
    if job.cancel_requested() {
        m.jobs_finished.with_label_values(&[op, "cancelled"]).inc();
        job.push(StreamEvent::Cancelled {});
        return;
    }
    let Some(work) = job.request.as_ref() else {
        // Only jobs followed from another worker lack a request, and those
        // are never queued here.
        job.fail(ErrorCode::Internal, "the job has no request to run");
        return;
    };
    m.queue_wait.observe(job.waited().as_secs_f64());
    let started = Instant::now();
    job.push(StreamEvent::Started {
        total: work.steps_to_run() as u32,
    });
    let mut observer = JobObserver {
        job,
        model,
        started,
        preview_every: job.preview_every,
        timeout: shared.job_timeout,
        timed_out: false,
        shared,
        phase: None,
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        inject_fault(job);
        work.run(model, &mut observer)
    }));
    let timed_out = observer.timed_out;
    let elapsed = started.elapsed();
    let elapsed_ms = elapsed.as_millis() as u64;
    m.generation
        .with_label_values(&[op])
        .observe(elapsed.as_secs_f64());
    // Counted before the terminal event goes out, so a client that has seen
    // it also sees the job in /metrics.
    let finished = |label: &str| m.jobs_finished.with_label_values(&[op, label]).inc();
    match outcome {
        Ok(Ok(Outcome::Completed {
            images,
            timings,
            loras,
        })) => {
            info!(
                elapsed_ms,
                text_encoder_ms = timings.text_encoder_ms as u64,
                denoise_ms = timings.denoise_ms as u64,
                vae_decode_ms = timings.vae_decode_ms as u64,
                "job completed"
            );
            if timings.denoise_ms > 0.0 {
                m.steps_per_second
                    .set(timings.unet_steps as f64 / (timings.denoise_ms / 1000.0));
            }
            let b64 = base64::engine::general_purpose::STANDARD;
            let images = images
                .into_iter()
                .map(|img| GeneratedImage {
                    image: b64.encode(&img.bytes),
                    format: img.format,
                    seed: img.seed,
                    width: img.width,
                    height: img.height,
                })
                .collect();
            finished("completed");
            job.push(StreamEvent::Complete {
                images,
                elapsed_ms,
                loras,
            });
        }
        Ok(Ok(Outcome::Cancelled)) if timed_out => {
            let limit = shared.job_timeout.unwrap_or_default();
            warn!(elapsed_ms, ?limit, "job timed out");
            finished("timeout");
            job.fail(
                ErrorCode::Timeout,
                format!(
                    "the job ran longer than the worker's limit of {}",
                    humantime::format_duration(limit)
                ),
            );
        }
        Ok(Ok(Outcome::Cancelled)) => {
            info!(elapsed_ms, "job cancelled");
            finished("cancelled");
            job.push(StreamEvent::Cancelled {});
        }
        Ok(Err(e)) => {
            warn!(error = %format!("{e:#}"), "job failed");
            finished("failed");
            job.fail(ErrorCode::GenerationFailed, format!("{e:#}"));
        }
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            error!(%message, "generation panicked; the job failed and the worker carries on");
            finished("panicked");
            job.fail(
                ErrorCode::Internal,
                format!("generation panicked: {message}"),
            );
        }
    }
}

/// Test-only fault injection, compiled into debug builds alone: a job whose
/// prompt contains `$SD_WORKER_TEST_PANIC_ON_PROMPT` panics inside generation;
/// one whose prompt contains `$SD_WORKER_TEST_ABORT_ON_PROMPT` aborts the
/// whole process half a second in, as a job that crashes its worker would.
fn inject_fault(job: &Job) {
    #[cfg(debug_assertions)]
    {
        let prompt = job
            .request
            .as_ref()
            .and_then(|w| w.generation())
            .map_or("", |r| r.prompt.as_str());
        let marked = |var: &str| {
            std::env::var(var).is_ok_and(|marker| !marker.is_empty() && prompt.contains(&marker))
        };
        if marked("SD_WORKER_TEST_PANIC_ON_PROMPT") {
            panic!("injected fault (SD_WORKER_TEST_PANIC_ON_PROMPT)");
        }
        // A job that kills its worker (the poison-job test of the NATS queue),
        // half a second in, so the worker that accepted it has answered.
        if marked("SD_WORKER_TEST_ABORT_ON_PROMPT") {
            std::thread::sleep(std::time::Duration::from_millis(500));
            std::process::abort();
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = job;
}

/// Test-only, compiled into debug builds alone: `$SD_WORKER_TEST_STEP_DELAY_MS`
/// holds every step back, so a browser test can watch a job's progress on a
/// model fast enough to finish before the page renders it. Read once: this
/// runs on every step.
fn hold_step_for_tests() {
    #[cfg(debug_assertions)]
    {
        static DELAY: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
        let delay = DELAY.get_or_init(|| {
            std::env::var("SD_WORKER_TEST_STEP_DELAY_MS")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .map(std::time::Duration::from_millis)
        });
        if let Some(delay) = delay {
            std::thread::sleep(*delay);
        }
    }
}

struct JobObserver<'a> {
    job: &'a Job,
    model: &'a LoadedModel,
    started: Instant,
    preview_every: u32,
    timeout: Option<Duration>,
    timed_out: bool,
    shared: &'a RunnerShared,
    /// The pass of a multi-pass job, written on its events.
    phase: Option<sd_worker_sdk::Phase>,
}

impl Observer for JobObserver<'_> {
    fn warning(&mut self, code: &str, message: &str) {
        self.job.push(StreamEvent::Warning {
            code: code.into(),
            message: message.into(),
        });
    }

    fn step(&mut self, step: usize, total: usize) -> bool {
        self.shared.metrics.steps.inc();
        hold_step_for_tests();
        if self.job.cancel_requested() {
            return false;
        }
        let elapsed = self.started.elapsed();
        if self.timeout.is_some_and(|limit| elapsed > limit) {
            self.timed_out = true;
            return false;
        }
        let eta_ms = (elapsed.as_secs_f64() / step as f64 * (total - step) as f64 * 1000.0) as u64;
        self.job.push(StreamEvent::Progress {
            step: step as u32,
            total: total as u32,
            percent: (step as f32 / total as f32 * 100.0 * 10.0).round() / 10.0,
            eta_ms,
            phase: self.phase,
        });
        !self.job.cancel_requested()
    }

    fn set_phase(&mut self, phase: sd_worker_sdk::Phase) {
        self.phase = Some(phase);
    }

    fn wants_preview(&self, step: usize) -> bool {
        self.preview_every > 0 && step.is_multiple_of(self.preview_every as usize)
    }

    fn preview(&mut self, step: usize, clean_latents: &Tensor) {
        let Some(req) = self.job.request.as_ref().and_then(|w| w.generation()) else {
            return;
        };
        match preview_jpeg(self.model, clean_latents, req.decoding.preview) {
            Ok(jpeg) => {
                self.job.push(StreamEvent::Preview {
                    step: step as u32,
                    image: base64::engine::general_purpose::STANDARD.encode(jpeg),
                    format: ImageFormat::Jpeg,
                    phase: self.phase,
                });
            }
            Err(e) => warn!(error = %format!("{e:#}"), "preview failed"),
        }
    }
}
