//! Who started which A1111 job, so `GET /sdapi/v1/progress` can report the
//! job the caller started last (A1111 has one user; this worker may have
//! several). A caller is its peer IP address (the port changes with every
//! connection a client opens) and the `Authorization` header it sent, if any.
//! The map is bounded: past [`CALLERS_KEPT`] callers the one seen longest ago
//! is forgotten (it then sees the running job, as an unknown caller does).

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

/// How many callers' last jobs are remembered.
pub const CALLERS_KEPT: usize = 1024;

/// One A1111 client: its IP address and `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    ip: IpAddr,
    authorization: Option<Vec<u8>>,
}

impl Caller {
    /// The caller of a request, from the peer address the server attached
    /// (`ConnectInfo<SocketAddr>`); `None` where there is none (a request
    /// that did not come through the server's accept loop).
    pub fn of(parts: &Parts) -> Option<Caller> {
        let ConnectInfo(peer) = parts.extensions.get::<ConnectInfo<SocketAddr>>()?;
        Some(Caller {
            ip: peer.ip().to_canonical(),
            authorization: parts
                .headers
                .get(AUTHORIZATION)
                .map(|v| v.as_bytes().to_vec()),
        })
    }
}

/// Extracts the request's [`Caller`], if known; never rejects.
pub struct MaybeCaller(pub Option<Caller>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeCaller {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(MaybeCaller(Caller::of(parts)))
    }
}

/// Each caller's last A1111 job id, for at most `capacity` callers.
pub struct Callers {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Default)]
struct Inner {
    /// Increases with every record: the smallest is the caller seen longest ago.
    clock: u64,
    last: HashMap<Caller, (u64, String)>,
}

impl Default for Callers {
    fn default() -> Self {
        Self::new(CALLERS_KEPT)
    }
}

impl Callers {
    /// Remembers at most `capacity` (at least 1) callers.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
        }
    }

    /// `caller` started `job_id`: its last job from now on. A new caller
    /// beyond the capacity evicts the caller recorded longest ago.
    pub fn record(&self, caller: Caller, job_id: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.clock += 1;
        let now = inner.clock;
        if !inner.last.contains_key(&caller) && inner.last.len() >= self.capacity {
            let oldest = inner
                .last
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(c, _)| c.clone());
            if let Some(oldest) = oldest {
                inner.last.remove(&oldest);
            }
        }
        inner.last.insert(caller, (now, job_id.to_string()));
    }

    /// The id of the job `caller` started last, if it is remembered.
    pub fn last(&self, caller: &Caller) -> Option<String> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.last.get(caller).map(|(_, id)| id.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(last_octet: u8, auth: Option<&str>) -> Caller {
        Caller {
            ip: IpAddr::from([127, 0, 0, last_octet]),
            authorization: auth.map(|a| a.as_bytes().to_vec()),
        }
    }

    #[test]
    fn each_caller_gets_its_own_last_job_and_the_oldest_is_evicted_past_the_capacity() {
        let callers = Callers::new(2);
        callers.record(caller(1, None), "a1");
        callers.record(caller(2, None), "b1");
        callers.record(caller(1, None), "a2");
        assert_eq!(callers.last(&caller(1, None)).as_deref(), Some("a2"));
        assert_eq!(callers.last(&caller(1, Some("Basic x"))), None);
        // Caller 2 was recorded before caller 1's second job: it goes.
        callers.record(caller(3, None), "c1");
        assert_eq!(callers.last(&caller(2, None)), None);
        assert_eq!(callers.last(&caller(1, None)).as_deref(), Some("a2"));
        assert_eq!(callers.last(&caller(3, None)).as_deref(), Some("c1"));
    }

    #[test]
    fn an_ipv4_mapped_peer_is_the_same_caller_as_its_ipv4_address() {
        let mut parts = axum::http::Request::new(()).into_parts().0;
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        parts.extensions.insert(ConnectInfo(mapped));
        assert_eq!(Caller::of(&parts), Some(caller(1, None)));
    }
}
