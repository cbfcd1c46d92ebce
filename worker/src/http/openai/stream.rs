//! `stream: true`: the job's events as OpenAI's image stream. Up to
//! `partial_images` (0..=3) of our previews become `<prefix>.partial_image`
//! events, then each final image a `<prefix>.completed` event, where the
//! prefix is `image_generation` or `image_edit`. A failed or cancelled job
//! ends the stream with `{"type": "error", "error": {…}}` (OpenAI's clients
//! raise it). The stream closes after the last event; a client that closes it
//! first cancels the job.

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream;
use sd_worker_sdk::{ImageFormat, StreamEvent};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use super::CancelOnDrop;
use crate::engine::job::Job;
use crate::http::AppState;
use crate::profile::Profile;

/// Most partial images OpenAI allows.
pub const MAX_PARTIAL_IMAGES: u32 = 3;

/// What a streamed answer needs besides the job's events.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// `image_generation` or `image_edit`.
    pub prefix: &'static str,
    /// 0..=[`MAX_PARTIAL_IMAGES`].
    pub partial_images: u32,
}

/// `WIDTHxHEIGHT` of an encoded image in base64, read from its header
/// (previews are smaller than the image: see `preview_every`).
fn size_of(b64: &str) -> Option<String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let (w, h) = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .ok()?
        .into_dimensions()
        .ok()?;
    Some(format!("{w}x{h}"))
}

/// `preview_every` for `partial` previews over the steps the job will run:
/// the model's default steps (OpenAI's requests cannot set them) times
/// `strength` (diffusers' img2img runs `int(steps * strength)` of them).
/// `None` for no previews.
pub fn preview_every(partial: u32, profile: &Profile, strength: f64) -> Option<u32> {
    if partial == 0 {
        return None;
    }
    let run = (profile.info.defaults.steps as f64 * strength).floor() as u32;
    Some((run / (partial + 1)).max(1))
}

fn format_name(f: ImageFormat) -> &'static str {
    match f {
        ImageFormat::Png => "png",
        ImageFormat::Jpeg => "jpeg",
    }
}

/// One OpenAI event, named by its `type`.
fn event(data: &Value) -> Event {
    let name = data["type"].as_str().unwrap_or("error").to_string();
    Event::default().event(name).data(data.to_string())
}

struct Cursor {
    guard: CancelOnDrop,
    spec: StreamSpec,
    after: usize,
    changes: tokio::sync::watch::Receiver<usize>,
    pending: VecDeque<Event>,
    partials_sent: u32,
    ended: bool,
}

impl Cursor {
    /// The OpenAI events for one of ours (none for most). `size` is each
    /// image's own: a preview's is smaller than the final image's.
    fn translate(&mut self, ev: StreamEvent) {
        let created_at = crate::engine::job::unix_ms() / 1000;
        let common = |kind: &str, b64: String, format: ImageFormat, size: String| {
            json!({
                "type": format!("{}.{kind}", self.spec.prefix), "b64_json": b64, "created_at": created_at,
                "size": size, "quality": "auto", "background": "opaque", "output_format": format_name(format),
            })
        };
        match ev {
            StreamEvent::Preview { image, format, .. }
                if self.partials_sent < self.spec.partial_images =>
            {
                let size = size_of(&image).unwrap_or_else(|| "auto".into());
                let mut data = common("partial_image", image, format, size);
                data["partial_image_index"] = json!(self.partials_sent);
                self.partials_sent += 1;
                self.pending.push_back(event(&data));
            }
            StreamEvent::Complete { images, .. } => {
                for img in images {
                    let size = format!("{}x{}", img.width, img.height);
                    let mut data = common("completed", img.image, img.format, size);
                    data["usage"] = json!({"input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
                                           "input_tokens_details": {"image_tokens": 0, "text_tokens": 0}});
                    self.pending.push_back(event(&data));
                }
                self.ended = true;
            }
            StreamEvent::Error { code, message } => {
                let code = serde_json::to_value(code).unwrap_or(Value::Null);
                self.error(message, code);
            }
            StreamEvent::Cancelled {} => {
                self.error("the job was cancelled".into(), json!("conflict"))
            }
            _ => {}
        }
    }

    fn error(&mut self, message: String, code: Value) {
        let data = json!({"type": "error", "error": {"message": message, "type": "server_error", "param": null, "code": code}});
        self.pending.push_back(event(&data));
        self.ended = true;
    }
}

/// The job's events as OpenAI's image stream (see the module docs).
pub fn respond(state: AppState, job: Arc<Job>, spec: StreamSpec) -> Response {
    let job_id = job.id.clone();
    let changes = job.subscribe();
    let cursor = Cursor {
        guard: CancelOnDrop { state, job },
        spec,
        after: 0,
        changes,
        pending: VecDeque::new(),
        partials_sent: 0,
        ended: false,
    };
    let events = stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(e) = c.pending.pop_front() {
                return Some((Ok::<_, Infallible>(e), c));
            }
            if c.ended {
                return None;
            }
            c.changes.borrow_and_update();
            let fresh = c.guard.job.events_after(c.after);
            if let Some((last, _)) = fresh.last() {
                c.after = *last;
                for (_, ev) in fresh {
                    if !c.ended {
                        c.translate(ev);
                    }
                }
                continue;
            }
            if c.changes.changed().await.is_err() {
                return None;
            }
        }
    });
    let mut res = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    res.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    if let Ok(v) = axum::http::HeaderValue::from_str(&job_id) {
        res.headers_mut().insert("x-job-id", v);
    }
    res
}
