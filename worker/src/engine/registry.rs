//! Every job the worker knows, kept until its result's time to live runs out;
//! after that its id answers "expired" (410) rather than "unknown" (404) for a day.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::job::Job;

const TOMBSTONE_TTL: Duration = Duration::from_secs(24 * 3600);
const MAX_TOMBSTONES: usize = 100_000;

pub enum Lookup {
    Found(Arc<Job>),
    Expired,
    Unknown,
}

pub struct Registry {
    inner: Mutex<Inner>,
    ttl: Duration,
}

struct Inner {
    jobs: HashMap<String, Arc<Job>>,
    expired: HashMap<String, Instant>,
}

impl Registry {
    pub fn new(ttl: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner {
                jobs: HashMap::new(),
                expired: HashMap::new(),
            }),
            ttl,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(&self, job: Arc<Job>) {
        self.lock().jobs.insert(job.id.clone(), job);
    }

    /// Keeps `job` unless a job of its id is already known; returns the one kept.
    pub fn insert_if_absent(&self, job: Arc<Job>) -> Arc<Job> {
        self.lock()
            .jobs
            .entry(job.id.clone())
            .or_insert(job)
            .clone()
    }

    pub fn remove(&self, id: &str) {
        self.lock().jobs.remove(id);
    }

    pub fn get(&self, id: &str) -> Lookup {
        let inner = self.lock();
        if let Some(job) = inner.jobs.get(id) {
            Lookup::Found(job.clone())
        } else if inner.expired.contains_key(id) {
            Lookup::Expired
        } else {
            Lookup::Unknown
        }
    }

    pub fn len(&self) -> usize {
        self.lock().jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops finished jobs older than the time to live; returns how many.
    pub fn sweep(&self) -> usize {
        let mut inner = self.lock();
        let ttl = self.ttl;
        let old: Vec<String> = inner
            .jobs
            .values()
            .filter(|j| j.finished_for().is_some_and(|age| age >= ttl))
            .map(|j| j.id.clone())
            .collect();
        let now = Instant::now();
        for id in &old {
            inner.jobs.remove(id);
            inner.expired.insert(id.clone(), now);
        }
        inner
            .expired
            .retain(|_, at| now.duration_since(*at) < TOMBSTONE_TTL);
        if inner.expired.len() > MAX_TOMBSTONES {
            let mut by_age: Vec<(String, Instant)> = inner.expired.drain().collect();
            by_age.sort_by_key(|(_, at)| std::cmp::Reverse(*at));
            by_age.truncate(MAX_TOMBSTONES);
            inner.expired = by_age.into_iter().collect();
        }
        old.len()
    }
}
