//! The bounded queue between the HTTP handlers and the generation thread. It
//! owns queue positions: every change re-numbers the waiting jobs and each job
//! whose position moved gets a `queued` event.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use sd_worker_sdk::StreamEvent;

use super::job::Job;

pub struct JobQueue {
    inner: Mutex<Inner>,
    ready: Condvar,
    capacity: usize,
}

struct Inner {
    waiting: VecDeque<Arc<Job>>,
    closed: bool,
}

/// Why a job was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    /// The queue holds as many jobs as it may (429).
    Full,
    /// The worker is stopping (503).
    Closed,
    /// The shared queue (NATS) could not be reached or refused the job (503).
    Unavailable(String),
}

impl JobQueue {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                waiting: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.lock().waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a job at the back; returns its position (1 = next).
    pub fn push(&self, job: Arc<Job>) -> Result<u32, PushError> {
        let mut inner = self.lock();
        if inner.closed {
            return Err(PushError::Closed);
        }
        if inner.waiting.len() >= self.capacity {
            return Err(PushError::Full);
        }
        inner.waiting.push_back(job);
        renumber(&inner.waiting);
        let position = inner.waiting.len() as u32;
        drop(inner);
        self.ready.notify_one();
        Ok(position)
    }

    /// Blocks until a job is waiting; `None` once the queue is closed.
    pub fn pop_blocking(&self) -> Option<Arc<Job>> {
        let mut inner = self.lock();
        loop {
            if inner.closed {
                return None;
            }
            if let Some(job) = inner.waiting.pop_front() {
                renumber(&inner.waiting);
                return Some(job);
            }
            inner = self.ready.wait(inner).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Takes a waiting job out of the queue; false if it is not waiting.
    pub fn remove(&self, id: &str) -> bool {
        let mut inner = self.lock();
        let Some(index) = inner.waiting.iter().position(|j| j.id == id) else {
            return false;
        };
        inner.waiting.remove(index);
        renumber(&inner.waiting);
        true
    }

    /// Stops accepting and hands back every job still waiting.
    pub fn close(&self) -> Vec<Arc<Job>> {
        let mut inner = self.lock();
        inner.closed = true;
        let drained = inner.waiting.drain(..).collect();
        drop(inner);
        self.ready.notify_all();
        drained
    }
}

fn renumber(waiting: &VecDeque<Arc<Job>>) {
    for (i, job) in waiting.iter().enumerate() {
        job.push(StreamEvent::Queued {
            position: i as u32 + 1,
        });
    }
}
