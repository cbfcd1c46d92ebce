//! `GET /v1/jobs/{id}/stream`: the job's events as Server-Sent Events.
//!
//! Each reader walks the job's event history with its own cursor, so any
//! number of readers see the same events, a reconnecting reader resumes after
//! `Last-Event-ID` (header, or `?last_event_id=` for clients that cannot set
//! headers), and a reader arriving after the end gets the whole story. Closing
//! a stream never touches the job.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use futures::stream::{self, Stream};
use sd_worker_sdk::{self as sdk, StreamEvent, DONE_SENTINEL};
use serde::Deserialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use super::error::HttpError;
use super::jobs::find;
use super::AppState;
use crate::engine::job::Job;

#[derive(Deserialize)]
pub struct StreamQuery {
    last_event_id: Option<usize>,
}

/// The job's events as Server-Sent Events: unnamed `data:` JSON objects with `id:` sequence numbers, then `data: [DONE]`.
/// Send `Last-Event-ID` (or `?last_event_id=`) to resume after an event.
#[utoipa::path(get, path = "/v1/jobs/{id}/stream", tag = "jobs",
    params(("id" = String, Path, description = "Job id"), ("last_event_id" = Option<usize>, Query, description = "Resume after this event id")),
    responses((status = 200, description = "text/event-stream of StreamEvent", content_type = "text/event-stream", body = sdk::StreamEvent),
              (status = 404, body = sdk::ErrorBody), (status = 410, body = sdk::ErrorBody)))]
pub async fn stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, HttpError> {
    let job = find(&state, &id)?;
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .or(query.last_event_id)
        .unwrap_or(0);
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
