//! Everything that touches the browser's network and timers: `fetch`, reading
//! a response body as byte chunks, and abortable sleeps. The rest of the
//! client sees only these few functions, so the transport can be swapped
//! (for gloo-net, or a test double) without touching it.
//!
//! `fetch` and `setTimeout` are taken from the global scope, so the client
//! works in a window and in a (shared or service) worker alike.

use js_sys::{Function, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortSignal, ReadableStreamDefaultReader, RequestInit, Response};

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = fetch)]
    fn global_fetch(input: &str, init: &RequestInit) -> Promise;
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(handler: &Function, ms: f64) -> JsValue;
    #[wasm_bindgen(js_name = clearTimeout)]
    fn clear_timeout(id: &JsValue);
}

/// One HTTP request.
pub(crate) struct HttpRequest<'a> {
    pub method: &'static str,
    pub url: String,
    /// Header name and value pairs.
    pub headers: Vec<(&'static str, String)>,
    /// A JSON body (sent as `application/json`).
    pub json_body: Option<&'a str>,
    pub signal: Option<&'a AbortSignal>,
}

/// An answer's status line and headers; its body is read with [`HttpResponse::text`],
/// [`HttpResponse::blob`] or [`HttpResponse::into_byte_stream`].
pub(crate) struct HttpResponse {
    inner: Response,
}

impl HttpResponse {
    pub fn status(&self) -> u16 {
        self.inner.status()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.inner.headers().get(name).ok().flatten()
    }

    /// The whole body as text.
    pub async fn text(&self) -> Result<String, JsValue> {
        let text = JsFuture::from(self.inner.text()?).await?;
        Ok(text.as_string().unwrap_or_default())
    }

    /// The whole body as a `Blob` (of the answer's `content-type`).
    pub async fn blob(&self) -> Result<JsValue, JsValue> {
        JsFuture::from(self.inner.blob()?).await
    }

    /// The body as a stream of byte chunks (`None` for a response without body).
    pub fn into_byte_stream(self) -> Option<ByteStream> {
        let reader = self
            .inner
            .body()?
            .get_reader()
            .unchecked_into::<ReadableStreamDefaultReader>();
        Some(ByteStream { reader })
    }
}

/// Sends a request. `Err` is a network failure (or an abort): `fetch` rejected.
pub(crate) async fn send(request: &HttpRequest<'_>) -> Result<HttpResponse, JsValue> {
    let init = RequestInit::new();
    init.set_method(request.method);
    let headers = Object::new();
    for (name, value) in &request.headers {
        Reflect::set(
            &headers,
            &JsValue::from_str(name),
            &JsValue::from_str(value),
        )?;
    }
    if let Some(body) = request.json_body {
        Reflect::set(
            &headers,
            &JsValue::from_str("content-type"),
            &JsValue::from_str("application/json"),
        )?;
        init.set_body(&JsValue::from_str(body));
    }
    init.set_headers(&headers);
    init.set_signal(request.signal);
    let response = JsFuture::from(global_fetch(&request.url, &init)).await?;
    Ok(HttpResponse {
        inner: response.unchecked_into(),
    })
}

/// Why reading a body stopped early.
pub(crate) enum ReadError {
    /// No byte arrived for the idle timeout (the connection is presumed dead).
    Idle,
    /// The read failed: connection lost, or the request's signal aborted.
    Failed(JsValue),
}

/// Reader of a response body. Dropping it cancels the body, which closes the
/// connection (browsers allow only six per origin on HTTP/1.1).
pub(crate) struct ByteStream {
    reader: ReadableStreamDefaultReader,
}

impl ByteStream {
    /// The next chunk; `Ok(None)` at the end of the body. Fails with
    /// [`ReadError::Idle`] when nothing arrives for `idle_ms`.
    pub async fn next(&mut self, idle_ms: f64) -> Result<Option<Vec<u8>>, ReadError> {
        let mut timer = JsValue::UNDEFINED;
        let idle = Promise::new(&mut |resolve, _reject| {
            timer = set_timeout(&resolve, idle_ms);
        });
        let race = Promise::race(&js_sys::Array::of2(&self.reader.read(), &idle));
        let result = JsFuture::from(race).await;
        clear_timeout(&timer);
        let result = result.map_err(ReadError::Failed)?;
        if result.is_undefined() {
            return Err(ReadError::Idle);
        }
        let done = Reflect::get(&result, &JsValue::from_str("done"))
            .map_err(ReadError::Failed)?
            .is_truthy();
        if done {
            return Ok(None);
        }
        let value =
            Reflect::get(&result, &JsValue::from_str("value")).map_err(ReadError::Failed)?;
        Ok(Some(
            value
                .dyn_into::<Uint8Array>()
                .map_err(ReadError::Failed)?
                .to_vec(),
        ))
    }
}

impl Drop for ByteStream {
    fn drop(&mut self) {
        // Fire and forget; a rejection (already closed or errored) is ignored.
        let cancelled = JsFuture::from(self.reader.cancel());
        wasm_bindgen_futures::spawn_local(async move {
            let _ = cancelled.await;
        });
    }
}

/// Waits `ms` milliseconds, or less if `signal` aborts meanwhile (the caller
/// checks the signal afterwards).
pub(crate) async fn sleep(ms: u64, signal: Option<&AbortSignal>) {
    let promise = Promise::new(&mut |resolve, _reject| {
        set_timeout(&resolve, ms as f64);
        if let Some(signal) = signal {
            let _ = signal.add_event_listener_with_callback("abort", &resolve);
        }
    });
    let _ = JsFuture::from(promise).await;
}

/// A uniform draw in `[0, 1)` for backoff jitter.
pub(crate) fn random() -> f64 {
    js_sys::Math::random()
}
