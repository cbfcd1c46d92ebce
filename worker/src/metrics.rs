//! Prometheus metrics (`GET /metrics`). Names follow `sd_worker_*`, counters end
//! in `_total`, durations are histograms in seconds.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry, TextEncoder,
};
use std::sync::Arc;

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub queue_size: IntGauge,
    pub queue_capacity: IntGauge,
    pub busy: IntGauge,
    pub jobs_submitted: IntCounterVec,
    pub jobs_rejected: IntCounterVec,
    pub jobs_finished: IntCounterVec,
    pub queue_wait: Histogram,
    pub generation: HistogramVec,
    pub steps: IntCounter,
    pub steps_per_second: Gauge,
    pub model_load: Gauge,
    pub info: GaugeVec,
}

fn seconds_buckets() -> Vec<f64> {
    vec![
        0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    ]
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        let m = Self {
            http_requests: IntCounterVec::new(
                Opts::new(
                    "sd_worker_http_requests_total",
                    "HTTP requests by route template, method and status",
                ),
                &["route", "method", "status"],
            )
            .expect("metric"),
            http_duration: HistogramVec::new(
                HistogramOpts::new(
                    "sd_worker_http_request_duration_seconds",
                    "Time to the response head, by route",
                )
                .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
                &["route"],
            )
            .expect("metric"),
            queue_size: IntGauge::new("sd_worker_queue_size", "Jobs waiting in the queue")
                .expect("metric"),
            queue_capacity: IntGauge::new(
                "sd_worker_queue_capacity",
                "Jobs the queue holds at most",
            )
            .expect("metric"),
            busy: IntGauge::new("sd_worker_busy", "1 while a job is generating").expect("metric"),
            jobs_submitted: IntCounterVec::new(
                Opts::new(
                    "sd_worker_jobs_submitted_total",
                    "Jobs accepted, by operation",
                ),
                &["operation"],
            )
            .expect("metric"),
            jobs_rejected: IntCounterVec::new(
                Opts::new(
                    "sd_worker_jobs_rejected_total",
                    "Submissions refused, by reason (error code)",
                ),
                &["reason"],
            )
            .expect("metric"),
            jobs_finished: IntCounterVec::new(
                Opts::new(
                    "sd_worker_jobs_total",
                    "Jobs that ended, by operation and outcome",
                ),
                &["operation", "outcome"],
            )
            .expect("metric"),
            queue_wait: Histogram::with_opts(
                HistogramOpts::new(
                    "sd_worker_queue_wait_duration_seconds",
                    "Time jobs waited before starting",
                )
                .buckets(seconds_buckets()),
            )
            .expect("metric"),
            generation: HistogramVec::new(
                HistogramOpts::new(
                    "sd_worker_generation_duration_seconds",
                    "Time from start to end of a job, by operation",
                )
                .buckets(seconds_buckets()),
                &["operation"],
            )
            .expect("metric"),
            steps: IntCounter::new("sd_worker_denoise_steps_total", "Denoising steps run")
                .expect("metric"),
            steps_per_second: Gauge::new(
                "sd_worker_steps_per_second",
                "Denoising steps per second of the last job",
            )
            .expect("metric"),
            model_load: Gauge::new(
                "sd_worker_model_load_duration_seconds",
                "Time the model took to load",
            )
            .expect("metric"),
            info: GaugeVec::new(
                Opts::new("sd_worker_info", "Always 1; labels describe the worker"),
                &["version", "model", "family", "device", "dtype"],
            )
            .expect("metric"),
            registry,
        };
        for c in [
            Box::new(m.http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.http_duration.clone()),
            Box::new(m.queue_size.clone()),
            Box::new(m.queue_capacity.clone()),
            Box::new(m.busy.clone()),
            Box::new(m.jobs_submitted.clone()),
            Box::new(m.jobs_rejected.clone()),
            Box::new(m.jobs_finished.clone()),
            Box::new(m.queue_wait.clone()),
            Box::new(m.generation.clone()),
            Box::new(m.steps.clone()),
            Box::new(m.steps_per_second.clone()),
            Box::new(m.model_load.clone()),
            Box::new(m.info.clone()),
        ] {
            m.registry.register(c).expect("unique metric names");
        }
        Arc::new(m)
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Counts every request by its route template (never the raw path, whose job
/// ids would explode the label space).
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let timer = metrics
        .http_duration
        .with_label_values(&[&route])
        .start_timer();
    let res = next.run(req).await;
    timer.observe_duration();
    metrics
        .http_requests
        .with_label_values(&[route.as_str(), method.as_str(), res.status().as_str()])
        .inc();
    res
}
