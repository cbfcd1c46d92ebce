//! The generation thread: the only owner of the model. It takes jobs from the
//! queue one at a time and turns pipeline callbacks into job events. A panic
//! inside the pipeline fails that job; the thread carries on with the next.

use base64::Engine as _;
use candle_core::Tensor;
use sd_worker_sdk::{ErrorCode, GeneratedImage, ImageFormat, StreamEvent};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;
use tracing::{error, info, info_span, warn};

use super::job::Job;
use super::queue::JobQueue;
use crate::model::LoadedModel;
use crate::pipeline::{generate, preview::preview_jpeg, Observer, Outcome};

/// Runs jobs until the queue closes.
pub fn run(model: LoadedModel, queue: Arc<JobQueue>, busy: Arc<std::sync::atomic::AtomicBool>) {
    while let Some(job) = queue.pop_blocking() {
        busy.store(true, std::sync::atomic::Ordering::SeqCst);
        let span = info_span!("job", job_id = %job.id);
        let _enter = span.enter();
        run_one(&model, &job);
        busy.store(false, std::sync::atomic::Ordering::SeqCst);
    }
    info!("generation thread stopped");
}

fn run_one(model: &LoadedModel, job: &Arc<Job>) {
    if job.cancel_requested() {
        job.push(StreamEvent::Cancelled {});
        return;
    }
    let started = Instant::now();
    job.push(StreamEvent::Started {
        total: job.request.steps_to_run() as u32,
    });
    let mut observer = JobObserver {
        job,
        started,
        preview_every: job.preview_every,
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        generate::run(model, &job.request, &mut observer)
    }));
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match outcome {
        Ok(Ok(Outcome::Completed { images, timings })) => {
            info!(
                elapsed_ms,
                text_encoder_ms = timings.text_encoder_ms as u64,
                denoise_ms = timings.denoise_ms as u64,
                vae_decode_ms = timings.vae_decode_ms as u64,
                "job completed"
            );
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
            job.push(StreamEvent::Complete { images, elapsed_ms });
        }
        Ok(Ok(Outcome::Cancelled)) => {
            info!(elapsed_ms, "job cancelled");
            job.push(StreamEvent::Cancelled {});
        }
        Ok(Err(e)) => {
            warn!(error = %format!("{e:#}"), "job failed");
            job.fail(ErrorCode::GenerationFailed, format!("{e:#}"));
        }
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            error!(%message, "generation panicked; the job failed and the worker carries on");
            job.fail(
                ErrorCode::Internal,
                format!("generation panicked: {message}"),
            );
        }
    }
}

struct JobObserver<'a> {
    job: &'a Job,
    started: Instant,
    preview_every: u32,
}

impl Observer for JobObserver<'_> {
    fn warning(&mut self, code: &str, message: &str) {
        self.job.push(StreamEvent::Warning {
            code: code.into(),
            message: message.into(),
        });
    }

    fn step(&mut self, step: usize, total: usize, latents: &Tensor) -> bool {
        if self.job.cancel_requested() {
            return false;
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        let eta_ms = (elapsed / step as f64 * (total - step) as f64 * 1000.0) as u64;
        self.job.push(StreamEvent::Progress {
            step: step as u32,
            total: total as u32,
            percent: (step as f32 / total as f32 * 100.0 * 10.0).round() / 10.0,
            eta_ms,
        });
        if self.preview_every > 0 && step.is_multiple_of(self.preview_every as usize) {
            match preview_jpeg(latents) {
                Ok(jpeg) => {
                    self.job.push(StreamEvent::Preview {
                        step: step as u32,
                        image: base64::engine::general_purpose::STANDARD.encode(jpeg),
                        format: ImageFormat::Jpeg,
                    });
                }
                Err(e) => warn!(error = %e, "preview failed"),
            }
        }
        !self.job.cancel_requested()
    }
}
