//! Prometheus metrics (`GET /metrics`). Names follow `sd_worker_*`, counters end
//! in `_total`, durations are histograms in seconds.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::Arc;

/// The HTTP methods counted by name in `sd_worker_http_requests_total`; any
/// other method (a client may invent one per request) is counted as `other`.
pub const METHOD_LABELS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// The statuses counted by code in `sd_worker_http_requests_total`: those the
/// API answers. Any other is counted as `other`.
pub const STATUS_LABELS: [&str; 15] = [
    "200", "202", "400", "401", "404", "405", "409", "410", "413", "415", "422", "429", "500",
    "503", "504",
];

/// The label of every value outside a fixed set.
pub const OTHER: &str = "other";

/// `method`'s label: its name when it is one of [`METHOD_LABELS`], else [`OTHER`].
pub fn method_label(method: &Method) -> &'static str {
    fixed_label(&METHOD_LABELS, method.as_str())
}

/// `status`'s label: its code when it is one of [`STATUS_LABELS`], else [`OTHER`].
pub fn status_label(status: StatusCode) -> &'static str {
    fixed_label(&STATUS_LABELS, status.as_str())
}

fn fixed_label(set: &[&'static str], value: &str) -> &'static str {
    set.iter().copied().find(|l| *l == value).unwrap_or(OTHER)
}

/// Every label takes its value from a fixed set (route templates, the method
/// and status sets above, operations, outcomes, error codes) or from the
/// operator (`sd_worker_info`), never from a client, so the number of series
/// is bounded whatever clients send.
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub queue_size: IntGauge,
    pub queue_capacity: IntGauge,
    /// NATS mode: jobs waiting in the shared queue, per model (what an
    /// autoscaler reads).
    pub queue_backlog: IntGaugeVec,
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
    /// Job bodies parsed and validated (input images decoded included).
    pub validations: IntCounter,
    /// Validations of bodies carrying input images running now (at most
    /// `--max-concurrent-decodes`).
    pub image_validations_in_flight: IntGauge,
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
            queue_backlog: IntGaugeVec::new(
                Opts::new(
                    "sd_worker_queue_backlog",
                    "Jobs waiting in the shared NATS queue for the model (NATS mode)",
                ),
                &["model"],
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
            validations: IntCounter::new(
                "sd_worker_job_validations_total",
                "Job bodies parsed and validated, input images decoded; refusals before it cost none",
            )
            .expect("metric"),
            image_validations_in_flight: IntGauge::new(
                "sd_worker_image_validations_in_flight",
                "Validations of bodies with input images running now",
            )
            .expect("metric"),
            registry,
        };
        for c in [
            Box::new(m.http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.http_duration.clone()),
            Box::new(m.queue_size.clone()),
            Box::new(m.queue_capacity.clone()),
            Box::new(m.queue_backlog.clone()),
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
            Box::new(m.validations.clone()),
            Box::new(m.image_validations_in_flight.clone()),
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
/// ids would explode the label space), its method and its status, each mapped
/// to a fixed set. A route layer: only requests that matched a route get here.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = method_label(req.method());
    let timer = metrics
        .http_duration
        .with_label_values(&[&route])
        .start_timer();
    let res = next.run(req).await;
    timer.observe_duration();
    metrics
        .http_requests
        .with_label_values(&[route.as_str(), method, status_label(res.status())])
        .inc();
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_chosen_methods_and_unknown_statuses_map_to_other() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"X0000").unwrap()), OTHER);
        assert_eq!(method_label(&Method::from_bytes(b"get").unwrap()), OTHER);
        assert_eq!(status_label(StatusCode::TOO_MANY_REQUESTS), "429");
        assert_eq!(status_label(StatusCode::IM_A_TEAPOT), OTHER);
    }
}
