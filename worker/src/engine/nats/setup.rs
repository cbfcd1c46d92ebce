//! The streams, the object store and the consumers, created by the first
//! worker that needs them and found by the others (an existing stream keeps
//! its configuration: change it with `nats stream edit`).

use anyhow::{Context as _, Result};
use async_nats::jetstream::{
    self, consumer::pull, object_store::ObjectStore, stream, stream::Stream,
};
use std::time::Duration;

use super::config::{self, NatsConfig};

/// How long events and blobs outlive the job TTL: a job's first events are
/// written when it is queued, its end up to a queue wait and a generation later.
const EXTRA_RETENTION: Duration = Duration::from_secs(3600);

/// Workers of one model the stream leaves room for, beside the waiting jobs.
const MAX_RUNNING: i64 = 256;

/// `SDW_JOBS` (work queue, file storage, at most `--queue-size` + 256
/// messages per model, new ones refused past it), `SDW_EVENTS` (file
/// storage, kept the job TTL plus an hour) and the `sdw-images` object store.
pub async fn streams(
    js: &jetstream::Context,
    cfg: &NatsConfig,
    job_ttl: Duration,
) -> Result<(Stream, Stream, ObjectStore)> {
    let keep = job_ttl + EXTRA_RETENTION;
    let jobs = js
        .get_or_create_stream(stream::Config {
            name: config::JOBS_STREAM.into(),
            subjects: vec!["sdw.jobs.>".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            // Waiting and running jobs both stay in a work-queue stream until
            // acked; the waiting ones are bounded at the front (`--queue-size`),
            // this is the hard ceiling: those plus one running per worker.
            max_messages_per_subject: i64::from(cfg.queue_size) + MAX_RUNNING,
            discard: stream::DiscardPolicy::New,
            discard_new_per_subject: true,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .context(
            "creating the JetStream stream SDW_JOBS (is JetStream enabled: nats-server -js?)",
        )?;
    let events = js
        .get_or_create_stream(stream::Config {
            name: config::EVENTS_STREAM.into(),
            subjects: vec!["sdw.events.>".into()],
            storage: stream::StorageType::File,
            max_age: keep,
            duplicate_window: Duration::from_secs(120),
            allow_direct: true,
            ..Default::default()
        })
        .await
        .context("creating the JetStream stream SDW_EVENTS")?;
    let blobs = match js.get_object_store(config::BLOB_BUCKET).await {
        Ok(store) => store,
        Err(_) => js
            .create_object_store(jetstream::object_store::Config {
                bucket: config::BLOB_BUCKET.into(),
                max_age: keep,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .context("creating the JetStream object store sdw-images")?,
    };
    Ok((jobs, events, blobs))
}

/// The durable pull consumer every worker serving `model` shares: explicit
/// acks, `--queue-ack-wait`, unlimited deliveries (the poison limit is the
/// worker's, so the job ends `failed` rather than stuck).
pub async fn consumer(jobs: &Stream, cfg: &NatsConfig, model: &str) -> Result<super::JobConsumer> {
    let name = config::consumer_name(model);
    jobs.get_or_create_consumer(
        &name,
        pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: config::jobs_subject(model),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: cfg.ack_wait,
            max_deliver: -1,
            ..Default::default()
        },
    )
    .await
    .with_context(|| format!("creating the JetStream consumer {name}"))
}
