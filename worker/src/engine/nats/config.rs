//! Connecting to NATS (`--queue`, `--queue-creds`, `--queue-tls-ca`), and the
//! names of everything the workers share on it.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::Duration;

/// How to reach the shared queue and how it treats jobs (the `--queue*` flags).
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// `nats://HOST:PORT` or `tls://HOST:PORT`; several comma separated.
    pub url: String,
    /// How long a taken job may go without an ack or a sign of life before
    /// JetStream redelivers it (`--queue-ack-wait`).
    pub ack_wait: Duration,
    /// Deliveries after which a job that keeps losing its worker fails
    /// (`--queue-max-deliver`).
    pub max_deliver: u32,
    /// Jobs of one model the stream holds, waiting or running (`--queue-size`).
    pub queue_size: u32,
    /// A `.creds` file (JWT and NKey seed).
    pub creds: Option<PathBuf>,
    /// PEM CA certificates for the server's TLS certificate (implies TLS).
    pub tls_ca: Option<PathBuf>,
}

/// The work-queue stream: one subject per model, `sdw.jobs.<model>`.
pub const JOBS_STREAM: &str = "SDW_JOBS";
/// The events of every job, one subject per job, `sdw.events.<id>`.
pub const EVENTS_STREAM: &str = "SDW_EVENTS";
/// Result images and large request bodies.
pub const BLOB_BUCKET: &str = "sdw-images";
/// Core NATS (not stored): `sdw.cancel.<id>` reaches the worker running it.
pub const CANCEL_PREFIX: &str = "sdw.cancel";

/// Header: the job id, on job messages.
pub const H_JOB_ID: &str = "Sdw-Job-Id";
/// Header: the job's operation (snake case), on every event.
pub const H_OPERATION: &str = "Sdw-Operation";
/// Header: the job's seed, on every event.
pub const H_SEED: &str = "Sdw-Seed";
/// Header: the body is in the object store under this name.
pub const H_BODY_REF: &str = "Sdw-Body-Ref";

/// `sdw.jobs.<model>` for a model id (characters NATS subjects and consumer
/// names cannot hold become `_`).
pub fn jobs_subject(model: &str) -> String {
    format!("sdw.jobs.{}", token(model))
}

/// The durable consumer every worker serving `model` shares.
pub fn consumer_name(model: &str) -> String {
    format!("sdw-{}", token(model))
}

/// `sdw.events.<id>`.
pub fn events_subject(id: &str) -> String {
    format!("sdw.events.{}", token(id))
}

/// `sdw.cancel.<id>`.
pub fn cancel_subject(id: &str) -> String {
    format!("{CANCEL_PREFIX}.{}", token(id))
}

/// One subject token: letters, digits, `-` and `_` kept, anything else `_`.
pub fn token(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() {
        "_".into()
    } else {
        t
    }
}

impl NatsConfig {
    /// Connects, with the credentials and TLS options given. Errors: a
    /// credentials or CA file that cannot be read, or no server answering
    /// within 10 s.
    pub async fn connect(&self) -> Result<async_nats::Client> {
        let mut opts = async_nats::ConnectOptions::new()
            .name("sd-worker")
            .connection_timeout(Duration::from_secs(10))
            // Never give up reconnecting: a NATS restart must not stop a worker.
            .max_reconnects(None);
        if let Some(path) = &self.creds {
            opts = opts
                .credentials_file(path)
                .await
                .with_context(|| format!("--queue-creds {}", path.display()))?;
        }
        if let Some(ca) = &self.tls_ca {
            anyhow::ensure!(
                ca.is_file(),
                "--queue-tls-ca {}: no such file",
                ca.display()
            );
            opts = opts.add_root_certificates(ca.clone()).require_tls(true);
        }
        if self.url.starts_with("tls://") {
            opts = opts.require_tls(true);
        }
        opts.connect(self.url.as_str())
            .await
            .with_context(|| format!("connecting to the NATS queue at {}", self.url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_subject_tokens() {
        assert_eq!(
            jobs_subject("runwayml/sd-v1.5"),
            "sdw.jobs.runwayml_sd-v1_5"
        );
        assert_eq!(consumer_name("a b*>"), "sdw-a_b__");
        assert_eq!(events_subject("job-12ab"), "sdw.events.job-12ab");
        assert_eq!(cancel_subject("job-1"), "sdw.cancel.job-1");
        assert_eq!(token(""), "_");
    }
}
