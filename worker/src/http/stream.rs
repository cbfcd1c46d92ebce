//! `GET /v1/jobs/{id}/stream`: the job's events as Server-Sent Events.
//!
//! Each reader walks the job's event history with its own cursor, so any
//! number of readers see the same events, a reconnecting reader resumes after
//! `Last-Event-ID` (header, or `?last_event_id=` for clients that cannot set
//! headers), and a reader arriving after the end gets the whole story. Closing
//! a stream never touches the job. Both forms of the event id follow one rule
//! ([`EventId`]); one that does not follow it is a 400 naming it, never a
//! silent replay from the start.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use futures::stream::{self, Stream};
use sd_worker_sdk::{self as sdk, StreamEvent, DONE_SENTINEL};
use serde::Deserialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use super::error::HttpError;
use super::extract::{quote, ApiPath, ApiQuery};
use super::jobs::find;
use super::AppState;
use crate::engine::job::Job;

#[derive(Deserialize)]
pub struct StreamQuery {
    last_event_id: Option<EventId>,
}

/// The id of a stream event to resume after, from `Last-Event-ID` or
/// `?last_event_id=`: decimal digits only (`0` replays everything), at most
/// `usize::MAX`. Empty, signed, fractional or other text is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventId(pub usize);

impl FromStr for EventId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "must be an event id (decimal digits, 0 for the whole history), not `{}`",
                quote(s)
            ));
        }
        s.parse()
            .map(EventId)
            .map_err(|_| format!("`{}` is larger than any event id", quote(s)))
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The `Last-Event-ID` header, read by the same rule as the query parameter.
fn header_event_id(headers: &HeaderMap) -> Result<Option<EventId>, HttpError> {
    const FIELD: &str = "Last-Event-ID";
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let refuse = |why: String| {
        HttpError::from(
            sdk::ApiError::new(sdk::ErrorCode::InvalidRequest, format!("`{FIELD}` {why}"))
                .with_field(FIELD),
        )
    };
    let text = value
        .to_str()
        .map_err(|_| refuse("must be an event id (decimal digits), not binary data".into()))?;
    text.parse().map(Some).map_err(refuse)
}

/// The job's events as Server-Sent Events: unnamed `data:` JSON objects with `id:` sequence numbers, then `data: [DONE]`.
/// Send `Last-Event-ID` (or `?last_event_id=`) to resume after an event.
#[utoipa::path(get, path = "/v1/jobs/{id}/stream", tag = "jobs",
    params(("id" = String, Path, description = "Job id"),
           ("last_event_id" = Option<String>, Query, description = "Resume after this event id (decimal digits)", pattern = "^[0-9]+$"),
           ("Last-Event-ID" = Option<String>, Header, nullable = false, description = "Resume after this event id (decimal digits); wins over the query parameter", pattern = "^[0-9]+$")),
    responses((status = 200, description = "text/event-stream of StreamEvent", content_type = "text/event-stream", body = sdk::StreamEvent),
              (status = 400, description = "`Last-Event-ID` or `last_event_id` is not an event id", body = sdk::ErrorBody),
              (status = 404, body = sdk::ErrorBody), (status = 410, body = sdk::ErrorBody)))]
pub async fn stream(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<StreamQuery>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, HttpError> {
    // Both forms are checked before the job is looked up, whichever is used.
    let header = header_event_id(&headers)?;
    let job = find(&state, &id).await?;
    let after = header.or(query.last_event_id).map_or(0, |EventId(n)| n);
    let sse =
        Sse::new(events(job, after)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)));
    Ok((
        [
            // Reverse proxies (nginx) buffer responses unless told not to.
            (
                HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
            (
                axum::http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache"),
            ),
        ],
        sse,
    ))
}

struct Cursor {
    job: Arc<Job>,
    after: usize,
    changes: watch::Receiver<usize>,
    pending: VecDeque<(usize, StreamEvent)>,
    ended: bool,
    done_sent: bool,
}

fn events(job: Arc<Job>, after: usize) -> impl Stream<Item = Result<Event, Infallible>> {
    let changes = job.subscribe();
    let cursor = Cursor {
        job,
        after,
        changes,
        pending: VecDeque::new(),
        ended: false,
        done_sent: false,
    };
    stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some((id, event)) = c.pending.pop_front() {
                c.ended |= event.is_terminal();
                let data = serde_json::to_string(&event).unwrap_or_else(|_| "{}".into());
                return Some((Ok(Event::default().id(id.to_string()).data(data)), c));
            }
            if c.ended {
                if c.done_sent {
                    return None;
                }
                c.done_sent = true;
                return Some((Ok(Event::default().data(DONE_SENTINEL)), c));
            }
            c.changes.borrow_and_update();
            let fresh = c.job.events_after(c.after);
            if let Some((last, _)) = fresh.last() {
                c.after = *last;
                c.pending.extend(fresh);
                continue;
            }
            if c.job.status().is_terminal() {
                // Resumed after the terminal event: nothing left but the sentinel.
                c.ended = true;
                continue;
            }
            if c.changes.changed().await.is_err() {
                return None;
            }
        }
    })
}
