//! `SdClient`: the JS API of the SDK.
//!
//! Every method returns a promise that resolves with the worker's JSON as
//! `JSON.parse` gives it (so numbers stay exactly as the worker sent them;
//! their TypeScript types are generated from the crate's Rust types) or
//! rejects with an [`SdError`]. The answers are not decoded into Rust types:
//! serde_json and the decoders of every contract type would triple the size of
//! the wasm, and the worker serialises those very types.

use std::rc::Rc;

use js_sys::{Function, Object, Promise, JSON};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::future_to_promise;
use web_sys::AbortSignal;

use super::error::{self, SdError};
use super::js;
use super::transport::{self, HttpRequest, ReadError};
use super::ClientOptions;
use crate::events::DONE_SENTINEL;
use crate::retry;
use crate::sse::SseParser;

/// A stream that delivers no byte (not even the worker's 15 s keep-alive)
/// for this long is presumed dead and reopened.
const STREAM_IDLE_MS: f64 = 45_000.0;

struct Config {
    base_url: String,
    token: Option<String>,
    max_retries: u32,
}

/// A client of one sd-worker.
#[wasm_bindgen]
pub struct SdClient {
    config: Rc<Config>,
}

#[wasm_bindgen]
impl SdClient {
    /// A client of the worker at `options.baseUrl`. Throws an `SdError` (code
    /// "invalid_request") when the options are malformed.
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(unchecked_param_type = "ClientOptions")] options: JsValue,
    ) -> Result<SdClient, JsValue> {
        let options = ClientOptions::from_js(&options)?;
        Ok(SdClient {
            config: Rc::new(Config {
                base_url: options.base_url.trim_end_matches('/').to_owned(),
                token: options.token.filter(|t| !t.is_empty()),
                max_retries: options.max_retries.unwrap_or(retry::DEFAULT_MAX_RETRIES),
            }),
        })
    }

    /// Submits a job (`POST /v1/jobs`). Retried on 429 and 503 only (never
    /// after a network error: the job may have been created).
    #[wasm_bindgen(unchecked_return_type = "Promise<JobAccepted>")]
    pub fn submit(
        &self,
        #[wasm_bindgen(unchecked_param_type = "JobRequest")] request: JsValue,
    ) -> Promise {
        let config = self.config.clone();
        future_to_promise(async move { Ok(submit(&config, &request, None).await?) })
    }

    /// A snapshot of the job (`GET /v1/jobs/{id}`).
    #[wasm_bindgen(unchecked_return_type = "Promise<JobSnapshot>")]
    pub fn status(&self, #[wasm_bindgen(js_name = jobId)] job_id: String) -> Promise {
        let config = self.config.clone();
        future_to_promise(async move {
            let text = call(&config, "GET", &job_path(&job_id, ""), None, None).await?;
            Ok(parse(&text)?)
        })
    }

    /// Cancels the job (`DELETE /v1/jobs/{id}`); resolves with its snapshot.
    #[wasm_bindgen(unchecked_return_type = "Promise<JobSnapshot>")]
    pub fn cancel(&self, #[wasm_bindgen(js_name = jobId)] job_id: String) -> Promise {
        let config = self.config.clone();
        future_to_promise(async move {
            let text = call(&config, "DELETE", &job_path(&job_id, ""), None, None).await?;
            Ok(parse(&text)?)
        })
    }

    /// What the worker serves and accepts (`GET /v1/info`).
    #[wasm_bindgen(unchecked_return_type = "Promise<WorkerInfo>")]
    pub fn info(&self) -> Promise {
        let config = self.config.clone();
        future_to_promise(async move {
            let text = call(&config, "GET", "/v1/info", None, None).await?;
            Ok(parse(&text)?)
        })
    }

    /// The LoRA files the worker can apply (`GET /v1/loras`); empty when it
    /// has none.
    #[wasm_bindgen(unchecked_return_type = "Promise<LoraInfo[]>")]
    pub fn loras(&self) -> Promise {
        let config = self.config.clone();
        future_to_promise(async move {
            let text = call(&config, "GET", "/v1/loras", None, None).await?;
            Ok(parse_array(&text)?)
        })
    }

    /// The textual-inversion embeddings the worker has (`GET /v1/embeddings`);
    /// empty when it has none.
    #[wasm_bindgen(unchecked_return_type = "Promise<EmbeddingInfo[]>")]
    pub fn embeddings(&self) -> Promise {
        let config = self.config.clone();
        future_to_promise(async move {
            let text = call(&config, "GET", "/v1/embeddings", None, None).await?;
            Ok(parse_array(&text)?)
        })
    }

    /// The upscalers an `image_upscale` job's (or a hires fix's)
    /// `upscaler` may name (`GET /v1/upscalers`): the built-in resamplers,
    /// then the model files of the worker's `--upscaler-dir`.
    #[wasm_bindgen(unchecked_return_type = "Promise<UpscalerInfo[]>")]
    pub fn upscalers(&self) -> Promise {
        let config = self.config.clone();
        future_to_promise(async move {
            let text = call(&config, "GET", "/v1/upscalers", None, None).await?;
            Ok(parse_array(&text)?)
        })
    }

    /// `GET /health`.
    #[wasm_bindgen(unchecked_return_type = "Promise<{ status: string }>")]
    pub fn health(&self) -> Promise {
        let config = self.config.clone();
        future_to_promise(async move {
            let text = call(&config, "GET", "/health", None, None).await?;
            Ok(parse(&text)?)
        })
    }

    /// The control map of an image (`POST /v1/preprocess`), as a ControlNet
    /// unit with the same `preprocessor` and thresholds would compute it.
    /// Resolves with the worker's PNG as a `Blob` (`image/png`); rejects with
    /// an `SdError` (422 naming the field at fault, 413 for an image over the
    /// worker's input limits). `options.signal` aborting rejects with code
    /// "aborted".
    #[wasm_bindgen(unchecked_return_type = "Promise<Blob>")]
    pub fn preprocess(
        &self,
        #[wasm_bindgen(unchecked_param_type = "PreprocessRequest")] request: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "PreprocessOptions")] options: Option<
            JsValue,
        >,
    ) -> Promise {
        let config = self.config.clone();
        future_to_promise(async move {
            let options = options.unwrap_or(JsValue::UNDEFINED);
            let signal = signal_of(&options);
            Ok(preprocess(&config, &request, signal.as_ref()).await?)
        })
    }

    /// Follows a job's stream, calling `onEvent(event, id)` once per event, in
    /// order. Resolves with `{ lastEventId, terminal }` after `[DONE]`. A
    /// dropped connection (network error, stream ending before `[DONE]`, 45 s
    /// of silence) reconnects with `Last-Event-ID` = the last id delivered and
    /// loses or repeats nothing (up to `maxRetries` consecutive failures, with
    /// jittered backoff). `options.signal` aborting stops listening (rejects
    /// with code "aborted") and does NOT cancel the job. `options.lastEventId`
    /// resumes after that event. If `onEvent` throws, the stream is closed and
    /// the promise rejects with what it threw.
    #[wasm_bindgen(unchecked_return_type = "Promise<StreamEnd>")]
    pub fn stream(
        &self,
        #[wasm_bindgen(js_name = jobId)] job_id: String,
        #[wasm_bindgen(js_name = onEvent, unchecked_param_type = "(event: StreamEvent, id: number) => void")]
        on_event: Function,
        #[wasm_bindgen(unchecked_optional_param_type = "StreamOptions")] options: Option<JsValue>,
    ) -> Promise {
        let config = self.config.clone();
        future_to_promise(async move {
            let options = options.unwrap_or(JsValue::UNDEFINED);
            let signal = signal_of(&options);
            let last_event_id = match js::get(&options, "lastEventId").as_f64() {
                Some(n) if n >= 0.0 && n.fract() == 0.0 => n as u64,
                Some(_) => {
                    return Err(SdError::new(
                        error::INVALID_REQUEST,
                        "lastEventId must be a whole number >= 0",
                    )
                    .into())
                }
                None => 0,
            };
            let end = follow(
                &config,
                &job_id,
                last_event_id,
                signal.as_ref(),
                &mut |event, _, id| {
                    on_event
                        .call2(&JsValue::NULL, event, &JsValue::from(id as f64))
                        .map(drop)
                },
            )
            .await?;
            let result = Object::new();
            js::set(
                &result,
                "lastEventId",
                &JsValue::from(end.last_event_id as f64),
            );
            js::set(&result, "terminal", &end.terminal);
            Ok(result.into())
        })
    }

    /// Submits the job and follows it. Resolves with the images of the
    /// `complete` event; rejects with the job's `error` (its code) or with code
    /// "cancelled". `options.signal` aborting stops listening (rejects with
    /// code "aborted") and does NOT cancel the job.
    #[wasm_bindgen(unchecked_return_type = "Promise<GeneratedImage[]>")]
    pub fn generate(
        &self,
        #[wasm_bindgen(unchecked_param_type = "JobRequest")] request: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "GenerateOptions")] options: Option<JsValue>,
    ) -> Promise {
        let config = self.config.clone();
        future_to_promise(async move {
            let options = options.unwrap_or(JsValue::UNDEFINED);
            generate(&config, request, &options).await
        })
    }
}

impl Config {
    fn request<'a>(
        &self,
        method: &'static str,
        path: &str,
        accept: &'static str,
        json_body: Option<&'a str>,
        signal: Option<&'a AbortSignal>,
    ) -> HttpRequest<'a> {
        let mut headers = vec![("accept", accept.to_owned())];
        if let Some(token) = &self.token {
            headers.push(("authorization", format!("Bearer {token}")));
        }
        HttpRequest {
            method,
            url: format!("{}{}", self.base_url, path),
            headers,
            json_body,
            signal,
        }
    }
}

/// `/v1/jobs/{id}{rest}`, the id escaped.
fn job_path(job_id: &str, rest: &str) -> String {
    let id = String::from(js_sys::encode_uri_component(job_id));
    format!("/v1/jobs/{id}{rest}")
}

fn is_aborted(signal: Option<&AbortSignal>) -> bool {
    signal.is_some_and(AbortSignal::aborted)
}

fn signal_of(options: &JsValue) -> Option<AbortSignal> {
    js::get(options, "signal").dyn_into::<AbortSignal>().ok()
}

fn callback(options: &JsValue, key: &str) -> Option<Function> {
    js::get(options, key).dyn_into::<Function>().ok()
}

fn invalid_response(message: &str) -> SdError {
    SdError::new(error::INVALID_RESPONSE, message)
}

/// A 2xx body: a JSON object.
fn parse(text: &str) -> Result<JsValue, SdError> {
    JSON::parse(text)
        .ok()
        .filter(JsValue::is_object)
        .ok_or_else(|| invalid_response("the worker's answer is not a JSON object"))
}

/// A 2xx body: a JSON array.
fn parse_array(text: &str) -> Result<JsValue, SdError> {
    JSON::parse(text)
        .ok()
        .filter(js_sys::Array::is_array)
        .ok_or_else(|| invalid_response("the worker's answer is not a JSON array"))
}

/// One request with retries: 429/502/503/504 answers always (honouring
/// `Retry-After`), network errors only when `method` is not POST (a POST may
/// have created a job). Resolves with the body of a 2xx answer.
async fn call(
    config: &Config,
    method: &'static str,
    path: &str,
    json_body: Option<&str>,
    signal: Option<&AbortSignal>,
) -> Result<String, SdError> {
    let answer = answer(config, method, path, "application/json", json_body, signal).await?;
    answer.text().await.map_err(|e| read_failure(&e, signal))
}

/// A body that could not be read: the caller's abort, or the connection.
fn read_failure(cause: &JsValue, signal: Option<&AbortSignal>) -> SdError {
    if is_aborted(signal) {
        SdError::aborted()
    } else {
        SdError::network(cause)
    }
}

/// The 2xx answer of one request, with the retries of [`call`]; its body is
/// left to the caller (text, or bytes for an image).
async fn answer(
    config: &Config,
    method: &'static str,
    path: &str,
    accept: &'static str,
    json_body: Option<&str>,
    signal: Option<&AbortSignal>,
) -> Result<transport::HttpResponse, SdError> {
    let mut attempt = 0;
    loop {
        let request = config.request(method, path, accept, json_body, signal);
        let failure = match transport::send(&request).await {
            Ok(answer) if (200..300).contains(&answer.status()) => return Ok(answer),
            Ok(answer) => {
                let status = answer.status();
                let retry_after = answer.header("retry-after");
                let body = answer.text().await.unwrap_or_default();
                let failure = SdError::from_answer(status, &body, retry_after.as_deref());
                if !retry::is_retryable_status(status) {
                    return Err(failure);
                }
                failure
            }
            Err(cause) => {
                if is_aborted(signal) {
                    return Err(SdError::aborted());
                }
                let failure = SdError::network(&cause);
                if method == "POST" {
                    return Err(failure);
                }
                failure
            }
        };
        if attempt >= config.max_retries {
            return Err(failure);
        }
        let wait = retry::delay_ms(attempt, failure.retry_after_ms, transport::random());
        transport::sleep(wait, signal).await;
        if is_aborted(signal) {
            return Err(SdError::aborted());
        }
        attempt += 1;
    }
}

/// The JSON text of a request body the caller built (a JS object).
fn json_object_body(request: &JsValue, what: &str) -> Result<String, SdError> {
    Some(request)
        .filter(|r| r.is_object())
        .and_then(|r| JSON::stringify(r).ok())
        .and_then(|body| body.as_string())
        .ok_or_else(|| {
            SdError::new(
                error::INVALID_REQUEST,
                format!("the {what} must be an object that JSON.stringify accepts"),
            )
        })
}

/// `POST /v1/preprocess`: the control map as the worker's PNG bytes, in a
/// `Blob` of the answer's type (`image/png`). Not retried after a network
/// error (the rule of every POST); retried on 429/502/503/504.
async fn preprocess(
    config: &Config,
    request: &JsValue,
    signal: Option<&AbortSignal>,
) -> Result<JsValue, SdError> {
    let body = json_object_body(request, "preprocess request")?;
    let answer = answer(
        config,
        "POST",
        "/v1/preprocess",
        "image/png",
        Some(&body),
        signal,
    )
    .await?;
    answer.blob().await.map_err(|e| read_failure(&e, signal))
}

/// `POST /v1/jobs`. The request is sent as the caller built it (the worker
/// validates it and names the field at fault); it must be a JSON object.
async fn submit(
    config: &Config,
    request: &JsValue,
    signal: Option<&AbortSignal>,
) -> Result<JsValue, SdError> {
    let body = json_object_body(request, "job request")?;
    let text = call(config, "POST", "/v1/jobs", Some(&body), signal).await?;
    parse(&text)
}

/// The end of a followed stream.
struct Followed {
    last_event_id: u64,
    terminal: JsValue,
}

/// How long the end of a stream's response is awaited after `[DONE]`.
const DRAIN_MS: f64 = 2_000.0;

fn is_terminal(kind: &str) -> bool {
    matches!(kind, "complete" | "error" | "cancelled")
}

/// Follows `GET /v1/jobs/{id}/stream` from after `last_id` to `[DONE]`,
/// reconnecting as needed, and calls `on_event(event, type, id)` once per
/// event, in order.
async fn follow(
    config: &Config,
    job_id: &str,
    mut last_id: u64,
    signal: Option<&AbortSignal>,
    on_event: &mut dyn FnMut(&JsValue, &str, u64) -> Result<(), JsValue>,
) -> Result<Followed, JsValue> {
    let path = job_path(job_id, "/stream");
    let mut failures = 0;
    let mut terminal: Option<JsValue> = None;
    loop {
        if is_aborted(signal) {
            return Err(SdError::aborted().into());
        }
        let mut request = config.request("GET", &path, "text/event-stream", None, signal);
        if last_id > 0 {
            request.headers.push(("last-event-id", last_id.to_string()));
        }
        let failure = match transport::send(&request).await {
            Err(cause) => {
                if is_aborted(signal) {
                    return Err(SdError::aborted().into());
                }
                SdError::network(&cause)
            }
            Ok(answer) if answer.status() != 200 => {
                let status = answer.status();
                let retry_after = answer.header("retry-after");
                let body = answer.text().await.unwrap_or_default();
                let failure = SdError::from_answer(status, &body, retry_after.as_deref());
                if !retry::is_retryable_status(status) {
                    return Err(failure.into());
                }
                failure
            }
            Ok(answer) => {
                let Some(mut body) = answer.into_byte_stream() else {
                    return Err(invalid_response("the stream has no body").into());
                };
                let mut parser = SseParser::new();
                let failure = loop {
                    let chunk = match body.next(STREAM_IDLE_MS).await {
                        Ok(Some(chunk)) => chunk,
                        Ok(None) => {
                            break SdError::new(error::NETWORK, "the stream ended before [DONE]")
                        }
                        Err(ReadError::Idle) => {
                            break SdError::new(error::NETWORK, "the stream fell silent")
                        }
                        Err(ReadError::Failed(cause)) => {
                            if is_aborted(signal) {
                                return Err(SdError::aborted().into());
                            }
                            break SdError::network(&cause);
                        }
                    };
                    for event in parser.feed(&chunk) {
                        if event.data == DONE_SENTINEL {
                            // The worker ends the response after [DONE]: read it
                            // to its end, so the browser records a finished
                            // request rather than one the client aborted. A body
                            // still open after a short wait is cancelled.
                            while let Ok(Some(_)) = body.next(DRAIN_MS).await {}
                            drop(body);
                            let terminal = match terminal {
                                Some(terminal) => terminal,
                                // Resumed after the terminal event: the worker sends only [DONE].
                                None => terminal_from_snapshot(config, job_id, signal).await?,
                            };
                            return Ok(Followed {
                                last_event_id: last_id,
                                terminal,
                            });
                        }
                        let Some(Ok(id)) = event.id.as_deref().map(str::parse::<u64>) else {
                            return Err(
                                invalid_response("a stream event without a numeric id").into()
                            );
                        };
                        if id <= last_id {
                            continue; // already delivered
                        }
                        if is_aborted(signal) {
                            // Aborted by a callback: nothing more, even from this chunk.
                            return Err(SdError::aborted().into());
                        }
                        let value = parse(&event.data)?;
                        let kind = js::get_string(&value, "type")
                            .ok_or_else(|| invalid_response("a stream event without a type"))?;
                        on_event(&value, &kind, id)?;
                        last_id = id;
                        failures = 0;
                        if is_terminal(&kind) {
                            terminal = Some(value);
                        }
                    }
                };
                if let Some(terminal) = terminal {
                    // Cut after the terminal event, before [DONE]: nothing is missing.
                    return Ok(Followed {
                        last_event_id: last_id,
                        terminal,
                    });
                }
                failure
            }
        };
        if failures >= config.max_retries {
            return Err(failure.into());
        }
        let wait = retry::delay_ms(failures, failure.retry_after_ms, transport::random());
        transport::sleep(wait, signal).await;
        failures += 1;
    }
}

/// The terminal event of an ended job, rebuilt from its snapshot (for a stream
/// resumed after its terminal event): the fields of `StreamEvent`'s
/// `complete`, `error` and `cancelled`.
async fn terminal_from_snapshot(
    config: &Config,
    job_id: &str,
    signal: Option<&AbortSignal>,
) -> Result<JsValue, SdError> {
    let text = call(config, "GET", &job_path(job_id, ""), None, signal).await?;
    let snapshot = parse(&text)?;
    let event = Object::new();
    match js::get_string(&snapshot, "status").as_deref() {
        Some("completed") => {
            let result = js::get(&snapshot, "result");
            js::set(&event, "type", &"complete".into());
            js::set(&event, "images", &js::get(&result, "images"));
            js::set(&event, "elapsed_ms", &js::get(&result, "elapsed_ms"));
        }
        Some("failed") => {
            let failure = js::get(&snapshot, "error");
            js::set(&event, "type", &"error".into());
            js::set(&event, "code", &js::get(&failure, "code"));
            js::set(&event, "message", &js::get(&failure, "message"));
        }
        Some("cancelled") => js::set(&event, "type", &"cancelled".into()),
        _ => return Err(invalid_response("the stream ended but the job has not")),
    }
    Ok(event.into())
}

async fn generate(
    config: &Config,
    request: JsValue,
    options: &JsValue,
) -> Result<JsValue, JsValue> {
    let signal = signal_of(options);
    let signal = signal.as_ref();
    if is_aborted(signal) {
        return Err(SdError::aborted().into());
    }
    let on_event = callback(options, "onEvent");
    let on_queued = callback(options, "onQueued");
    let on_progress = callback(options, "onProgress");
    let on_preview = callback(options, "onPreview");
    let accepted = submit(config, &request, signal).await?;
    if let Some(on_accepted) = callback(options, "onAccepted") {
        on_accepted.call1(&JsValue::NULL, &accepted)?;
    }
    let job_id = js::get_string(&accepted, "job_id")
        .ok_or_else(|| invalid_response("the worker's answer has no job_id"))?;
    let this = JsValue::NULL;
    let end = follow(config, &job_id, 0, signal, &mut |event, kind, id| {
        if let Some(f) = &on_event {
            f.call2(&this, event, &JsValue::from(id as f64))?;
        }
        let (f, arg) = match kind {
            "queued" => (&on_queued, js::get(event, "position")),
            "progress" => (&on_progress, event.clone()),
            "preview" => (&on_preview, event.clone()),
            _ => return Ok(()),
        };
        if let Some(f) = f {
            f.call1(&this, &arg)?;
        }
        Ok(())
    })
    .await?;
    let terminal = end.terminal;
    match js::get_string(&terminal, "type").as_deref() {
        Some("complete") => Ok(js::get(&terminal, "images")),
        Some("error") => Err(SdError {
            code: js::get_string(&terminal, "code").unwrap_or_else(|| "internal".into()),
            ..SdError::new("", js::get_string(&terminal, "message").unwrap_or_default())
        }
        .into()),
        _ => Err(SdError::new(error::CANCELLED, "the job was cancelled").into()),
    }
}
