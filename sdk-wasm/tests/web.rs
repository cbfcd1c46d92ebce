//! The browser client against a real worker, in headless Chromium.
//!
//! Run with `scripts/test-wasm.sh`, which starts two workers on a tiny
//! random-weight model and passes their addresses at compile time:
//! `SD_WORKER_TEST_URL` (no auth) and `SD_WORKER_TEST_AUTH_URL` (started with
//! `--api-token test-token`). Every call goes through the same `Promise`
//! returning methods that JavaScript sees.
#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Function, Promise, Reflect, JSON};
use sd_worker_sdk::wasm::SdClient;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;
use web_sys::AbortController;

wasm_bindgen_test_configure!(run_in_browser);

// A `fetch` wrapper to inject failures the real worker never produces: the
// client calls the global `fetch` on every request, so replacing it is enough.
#[wasm_bindgen(inline_js = r#"
export function installFetchFaults(faults) {
  const original = globalThis.fetch;
  const log = [];
  globalThis.fetch = async (input, init) => {
    const url = String(input);
    const headers = (init && init.headers) || {};
    log.push({ method: (init && init.method) || "GET", url, lastEventId: headers["last-event-id"] ?? null });
    const fault = faults.find((f) => f.times > 0 && url.includes(f.urlPart) && (!f.method || f.method === ((init && init.method) || "GET")));
    if (!fault) return original(input, init);
    fault.times -= 1;
    if (fault.kind === "reject") throw new TypeError("Failed to fetch (injected)");
    if (fault.kind === "status") {
      return new Response(JSON.stringify({ error: { code: fault.code, message: "injected" } }), {
        status: fault.status,
        headers: { "content-type": "application/json", "retry-after": fault.retryAfter },
      });
    }
    // "cut": pass the body through until `events` events went by, then a few
    // bytes of the next one, then fail ("error") or end ("close") the body.
    const response = await original(input, init);
    const reader = response.body.getReader();
    let pending = new Uint8Array(0);
    let cut = false;
    const body = new ReadableStream({
      async pull(controller) {
        if (cut) return;
        const { done, value } = await reader.read();
        if (done) { controller.close(); return; }
        const all = new Uint8Array(pending.length + value.length);
        all.set(pending); all.set(value, pending.length);
        pending = all;
        const text = new TextDecoder().decode(pending);
        let seen = 0, at = -1, from = 0;
        for (;;) {
          const i = text.indexOf("\n\n", from);
          if (i < 0) break;
          if (!text.slice(from, i).startsWith(":")) seen += 1;
          from = i + 2;
          if (seen === fault.events) { at = from; break; }
        }
        if (at < 0) return;
        cut = true;
        controller.enqueue(new TextEncoder().encode(text.slice(0, at) + "id: 999\ndata: {\"ty"));
        reader.cancel();
        if (fault.end === "close") controller.close(); else controller.error(new TypeError("network error (injected)"));
      },
    });
    return new Response(body, { status: response.status, headers: response.headers });
  };
  return { log, restore() { globalThis.fetch = original; } };
}
"#)]
extern "C" {
    #[wasm_bindgen(js_name = installFetchFaults)]
    fn install_fetch_faults(faults: JsValue) -> JsValue;
}

/// Replaces `fetch` with one that injects `faults` (a JSON array) until dropped.
struct FetchFaults(JsValue);

impl FetchFaults {
    fn install(faults: &str) -> Self {
        Self(install_fetch_faults(json(faults)))
    }

    /// `[method, url, Last-Event-ID]` of every request so far.
    fn log(&self) -> Vec<(String, String, Option<String>)> {
        let log: js_sys::Array = get(&self.0, "log").unchecked_into();
        log.iter()
            .map(|r| {
                (
                    get_str(&r, "method"),
                    get_str(&r, "url"),
                    get(&r, "lastEventId").as_string(),
                )
            })
            .collect()
    }
}

impl Drop for FetchFaults {
    fn drop(&mut self) {
        let restore: Function = get(&self.0, "restore").unchecked_into();
        restore.call0(&self.0).unwrap();
    }
}

const TOKEN: &str = "test-token";

// Not `env!`: the tests must still compile (for clippy) where no worker runs.
#[allow(clippy::option_env_unwrap)]
fn worker_url() -> &'static str {
    option_env!("SD_WORKER_TEST_URL").expect(
        "SD_WORKER_TEST_URL was not set when the tests were compiled: run scripts/test-wasm.sh",
    )
}

#[allow(clippy::option_env_unwrap)]
fn auth_worker_url() -> &'static str {
    option_env!("SD_WORKER_TEST_AUTH_URL").expect(
        "SD_WORKER_TEST_AUTH_URL was not set when the tests were compiled: run scripts/test-wasm.sh",
    )
}

fn json(text: &str) -> JsValue {
    JSON::parse(text).unwrap_or_else(|_| panic!("bad JSON in the test: {text}"))
}

fn client_with(options: &str) -> SdClient {
    SdClient::new(json(options)).expect("client options")
}

fn client() -> SdClient {
    client_with(&format!(r#"{{"baseUrl":"{}"}}"#, worker_url()))
}

fn get(value: &JsValue, key: &str) -> JsValue {
    Reflect::get(value, &JsValue::from_str(key)).unwrap()
}

fn get_str(value: &JsValue, key: &str) -> String {
    get(value, key)
        .as_string()
        .unwrap_or_else(|| panic!("{key} is not a string in {}", stringify(value)))
}

fn get_num(value: &JsValue, key: &str) -> f64 {
    get(value, key)
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {}", stringify(value)))
}

fn stringify(value: &JsValue) -> String {
    JSON::stringify(value)
        .ok()
        .and_then(|s| s.as_string())
        .unwrap_or_else(|| format!("{value:?}"))
}

async fn resolve(promise: Promise) -> JsValue {
    match JsFuture::from(promise).await {
        Ok(value) => value,
        Err(error) => panic!(
            "rejected: {} {}",
            stringify(&error),
            get(&error, "message").as_string().unwrap_or_default()
        ),
    }
}

async fn reject(promise: Promise) -> JsValue {
    match JsFuture::from(promise).await {
        Ok(value) => panic!("resolved, expected a rejection: {}", stringify(&value)),
        Err(error) => error,
    }
}

/// Checks that `error` is an `SdError` with this status and code.
fn assert_sd_error(error: &JsValue, status: u16, code: &str) {
    assert!(
        error.is_instance_of::<js_sys::Error>(),
        "not an Error: {error:?}"
    );
    assert_eq!(get_str(error, "name"), "SdError");
    assert_eq!(
        get_str(error, "code"),
        code,
        "message: {}",
        get(error, "message").as_string().unwrap_or_default()
    );
    assert_eq!(get_num(error, "status"), f64::from(status));
    assert!(!get_str(error, "message").is_empty());
}

async fn sleep_ms(ms: i32) {
    let promise = Promise::new(&mut |resolve, _| {
        let set_timeout: Function = Reflect::get(&js_sys::global(), &"setTimeout".into())
            .unwrap()
            .unchecked_into();
        set_timeout
            .call2(&JsValue::NULL, &resolve, &JsValue::from(ms))
            .unwrap();
    });
    JsFuture::from(promise).await.unwrap();
}

/// Polls the job until it has ended; returns its final snapshot.
async fn wait_until_ended(client: &SdClient, job_id: &str) -> JsValue {
    for _ in 0..600 {
        let snapshot = resolve(client.status(job_id.to_owned())).await;
        if matches!(
            get_str(&snapshot, "status").as_str(),
            "completed" | "failed" | "cancelled"
        ) {
            return snapshot;
        }
        sleep_ms(50).await;
    }
    panic!("job {job_id} did not end within 30 s");
}

/// `(id, event as JSON text)` pairs, recorded by an `onEvent` callback.
type Recorded = Rc<RefCell<Vec<(u64, String)>>>;

/// An `onEvent(event, id)` callback that records every call and runs `then`.
fn recorder(
    then: impl Fn(&JsValue, u64) + 'static,
) -> (Recorded, Closure<dyn FnMut(JsValue, JsValue)>) {
    let seen: Recorded = Rc::default();
    let sink = seen.clone();
    let closure = Closure::new(move |event: JsValue, id: JsValue| {
        let id = id.as_f64().expect("id is a number") as u64;
        sink.borrow_mut().push((id, stringify(&event)));
        then(&event, id);
    });
    (seen, closure)
}

fn as_function(closure: &Closure<dyn FnMut(JsValue, JsValue)>) -> Function {
    closure.as_ref().unchecked_ref::<Function>().clone()
}

fn event_type(text: &str) -> String {
    get_str(&json(text), "type")
}

fn assert_png(image: &JsValue) {
    assert_eq!(get_str(image, "format"), "png");
    // Base64 of the PNG signature \x89PNG\r\n\x1a\n.
    assert!(get_str(image, "image").starts_with("iVBORw0KGgo"));
    assert!(get_num(image, "width") > 0.0 && get_num(image, "height") > 0.0);
}

#[wasm_bindgen_test]
async fn health_and_info() {
    let client = client();
    let health = resolve(client.health()).await;
    assert_eq!(get_str(&health, "status"), "ok");
    let info = resolve(client.info()).await;
    assert_eq!(get_str(&info, "implementation"), "sd-worker");
    let limits = get(&info, "limits");
    assert_eq!(get_num(&limits, "max_seed"), 9_007_199_254_740_991.0);
}

#[wasm_bindgen_test]
async fn submit_then_stream_to_done() {
    let client = client();
    let accepted = resolve(client.submit(json(
        r#"{"operation":"image_generation","prompt":"a red circle","steps":3,"seed":9007199254740991}"#,
    )))
    .await;
    let job_id = get_str(&accepted, "job_id");
    assert!(job_id.starts_with("job-"));
    assert_eq!(
        get_num(&accepted, "seed"),
        9_007_199_254_740_991.0,
        "seed is an exact number"
    );
    assert!(get_num(&accepted, "queue_position") >= 1.0);

    let (seen, on_event) = recorder(|_, _| {});
    let end = resolve(client.stream(job_id.clone(), as_function(&on_event), None)).await;
    let seen = seen.borrow();
    let ids: Vec<u64> = seen.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        (1..=ids.len() as u64).collect::<Vec<_>>(),
        "ids count from 1, in order"
    );
    let types: Vec<String> = seen.iter().map(|(_, e)| event_type(e)).collect();
    let progress: Vec<JsValue> = seen
        .iter()
        .map(|(_, e)| json(e))
        .filter(|e| get_str(e, "type") == "progress")
        .collect();
    assert_eq!(progress.len(), 3, "one progress event per step: {types:?}");
    for (i, event) in progress.iter().enumerate() {
        assert_eq!(get_num(event, "step"), (i + 1) as f64);
        assert_eq!(get_num(event, "total"), 3.0);
    }
    assert!(types.contains(&"started".to_owned()), "{types:?}");
    assert_eq!(types.last().map(String::as_str), Some("complete"));

    assert_eq!(get_num(&end, "lastEventId"), *ids.last().unwrap() as f64);
    let terminal = get(&end, "terminal");
    assert_eq!(get_str(&terminal, "type"), "complete");
    let images: js_sys::Array = get(&terminal, "images").unchecked_into();
    assert_eq!(images.length(), 1);
    assert_png(&images.get(0));
    assert_eq!(get_num(&images.get(0), "seed"), 9_007_199_254_740_991.0);
}

#[wasm_bindgen_test]
async fn generate_resolves_images_and_reports_each_step() {
    let client = client();
    let accepted = Rc::new(RefCell::new(Vec::<JsValue>::new()));
    let steps = Rc::new(RefCell::new(Vec::<f64>::new()));
    let events = Rc::new(RefCell::new(0u32));
    let (a, s, e) = (accepted.clone(), steps.clone(), events.clone());
    let on_accepted = Closure::<dyn FnMut(JsValue)>::new(move |v: JsValue| a.borrow_mut().push(v));
    let on_progress = Closure::<dyn FnMut(JsValue)>::new(move |v: JsValue| {
        s.borrow_mut().push(get_num(&v, "step"))
    });
    let on_event = Closure::<dyn FnMut(JsValue, JsValue)>::new(move |_: JsValue, _: JsValue| {
        *e.borrow_mut() += 1;
    });
    let options = js_sys::Object::new();
    Reflect::set(&options, &"onAccepted".into(), on_accepted.as_ref()).unwrap();
    Reflect::set(&options, &"onProgress".into(), on_progress.as_ref()).unwrap();
    Reflect::set(&options, &"onEvent".into(), on_event.as_ref()).unwrap();

    let images = resolve(client.generate(
        json(r#"{"operation":"image_generation","prompt":"a blue square","steps":4,"seed":7,"num_images":2}"#),
        Some(options.into()),
    ))
    .await;
    let images: js_sys::Array = images.unchecked_into();
    assert_eq!(images.length(), 2);
    for (i, image) in images.iter().enumerate() {
        assert_png(&image);
        assert_eq!(get_num(&image, "seed"), 7.0 + i as f64);
    }
    assert_eq!(
        *steps.borrow(),
        vec![1.0, 2.0, 3.0, 4.0],
        "onProgress once per step"
    );
    assert_eq!(accepted.borrow().len(), 1, "onAccepted once");
    assert_eq!(get_num(&accepted.borrow()[0], "seed"), 7.0);
    assert!(
        *events.borrow() >= 6,
        "onEvent sees started, 4 progress, complete"
    );

    // Without options at all.
    let images = resolve(client.generate(
        json(r#"{"operation":"image_generation","prompt":"x","steps":1}"#),
        None,
    ))
    .await;
    assert_eq!(images.unchecked_into::<js_sys::Array>().length(), 1);
}

#[wasm_bindgen_test]
async fn cancel_mid_run_rejects_generate_with_cancelled() {
    let client = Rc::new(client());
    let job_id = Rc::new(RefCell::new(String::new()));
    let cancels = Rc::new(RefCell::new(Vec::<Promise>::new()));
    let id = job_id.clone();
    let on_accepted = Closure::<dyn FnMut(JsValue)>::new(move |v: JsValue| {
        *id.borrow_mut() = get_str(&v, "job_id");
    });
    let (c, id, k) = (client.clone(), job_id.clone(), cancels.clone());
    // Cancel as soon as the first step is done, while the job is running.
    let on_progress = Closure::<dyn FnMut(JsValue)>::new(move |v: JsValue| {
        if get_num(&v, "step") == 1.0 {
            k.borrow_mut().push(c.cancel(id.borrow().clone()));
        }
    });
    let options = js_sys::Object::new();
    Reflect::set(&options, &"onAccepted".into(), on_accepted.as_ref()).unwrap();
    Reflect::set(&options, &"onProgress".into(), on_progress.as_ref()).unwrap();

    let error = reject(client.generate(
        json(r#"{"operation":"image_generation","prompt":"long","steps":150,"num_images":4}"#),
        Some(options.into()),
    ))
    .await;
    assert_sd_error(&error, 0, "cancelled");

    let cancel = cancels.borrow_mut().pop().expect("cancel was called");
    let job_id = job_id.borrow().clone();
    let snapshot = resolve(cancel).await;
    assert_eq!(get_str(&snapshot, "job_id"), job_id);
    let snapshot = wait_until_ended(&client, &job_id).await;
    assert_eq!(get_str(&snapshot, "status"), "cancelled");

    // Cancelling an ended job is a 409.
    let error = reject(client.cancel(job_id)).await;
    assert_sd_error(&error, 409, "conflict");
}

#[wasm_bindgen_test]
async fn stream_resumes_after_last_event_id_without_loss_or_repeat() {
    let client = client();
    let accepted = resolve(client.submit(json(
        r#"{"operation":"image_generation","prompt":"resume","steps":6,"seed":1,"preview_every":2}"#,
    )))
    .await;
    let job_id = get_str(&accepted, "job_id");

    // First part: stop listening after the third event (while the job runs on).
    let controller = AbortController::new().unwrap();
    let signal = controller.signal();
    let (first, on_first) = recorder(move |_, id| {
        if id == 3 {
            controller.abort();
        }
    });
    let options = js_sys::Object::new();
    Reflect::set(&options, &"signal".into(), &signal).unwrap();
    let error =
        reject(client.stream(job_id.clone(), as_function(&on_first), Some(options.into()))).await;
    assert_sd_error(&error, 0, "aborted");
    let first_ids: Vec<u64> = first.borrow().iter().map(|(id, _)| *id).collect();
    assert_eq!(
        first_ids,
        vec![1, 2, 3],
        "nothing is delivered after the abort"
    );

    // Second part: resume after event 3.
    let (second, on_second) = recorder(|_, _| {});
    let end = resolve(client.stream(
        job_id.clone(),
        as_function(&on_second),
        Some(json(r#"{"lastEventId":3}"#)),
    ))
    .await;
    assert!(second.borrow().iter().all(|(id, _)| *id > 3));

    // The whole history, read again from the start.
    let (full, on_full) = recorder(|_, _| {});
    let full_end = resolve(client.stream(job_id.clone(), as_function(&on_full), None)).await;

    let union: Vec<(u64, String)> = first
        .borrow()
        .iter()
        .chain(second.borrow().iter())
        .cloned()
        .collect();
    assert_eq!(
        union,
        *full.borrow(),
        "first part + resumed part = full history, exactly once"
    );
    assert_eq!(
        get_num(&end, "lastEventId"),
        get_num(&full_end, "lastEventId")
    );
    let types: Vec<String> = full.borrow().iter().map(|(_, e)| event_type(e)).collect();
    assert!(types.contains(&"preview".to_owned()), "{types:?}");

    // Resuming after the terminal event still resolves with the terminal event.
    let (nothing, on_nothing) = recorder(|_, _| {});
    let last = get_num(&full_end, "lastEventId");
    let options = js_sys::Object::new();
    Reflect::set(&options, &"lastEventId".into(), &JsValue::from(last)).unwrap();
    let after_end =
        resolve(client.stream(job_id, as_function(&on_nothing), Some(options.into()))).await;
    assert!(nothing.borrow().is_empty());
    assert_eq!(get_num(&after_end, "lastEventId"), last);
    assert_eq!(get_str(&get(&after_end, "terminal"), "type"), "complete");
    assert_eq!(
        stringify(&get(&get(&after_end, "terminal"), "images")),
        stringify(&get(&get(&full_end, "terminal"), "images"))
    );
}

#[wasm_bindgen_test]
async fn validation_error_names_the_field() {
    let client = client();
    let error = reject(client.submit(json(
        r#"{"operation":"image_generation","prompt":"p","steps":0}"#,
    )))
    .await;
    assert_sd_error(&error, 422, "invalid_value");
    assert_eq!(get_str(&error, "field"), "steps");
    assert!(get(&error, "retryAfterMs").is_undefined());

    // Errors without a field leave it undefined.
    let error = reject(client.status("job-does-not-exist".into())).await;
    assert_sd_error(&error, 404, "not_found");
    assert!(get(&error, "field").is_undefined());

    // So does generate, before any stream.
    let error = reject(client.generate(
        json(r#"{"operation":"image_generation","prompt":""}"#),
        None,
    ))
    .await;
    assert_eq!(get_num(&error, "status"), 422.0);

    // A stream of an unknown job is a 404, not retried forever.
    let (_, on_event) = recorder(|_, _| {});
    let error = reject(client.stream("job-nope".into(), as_function(&on_event), None)).await;
    assert_sd_error(&error, 404, "not_found");
}

#[wasm_bindgen_test]
async fn bad_client_options_throw_sd_error() {
    let error = match SdClient::new(json(r#"{"token":"t"}"#)) {
        Ok(_) => panic!("accepted options without baseUrl"),
        Err(error) => error,
    };
    assert_sd_error(&error, 0, "invalid_request");
    assert!(SdClient::new(json(r#"{"baseUrl":"http://x","maxRetries":-1}"#)).is_err());
}

#[wasm_bindgen_test]
async fn missing_or_wrong_token_is_unauthorized() {
    let url = auth_worker_url();
    let anonymous = client_with(&format!(r#"{{"baseUrl":"{url}"}}"#));
    let error = reject(anonymous.info()).await;
    assert_sd_error(&error, 401, "unauthorized");
    let error =
        reject(anonymous.submit(json(r#"{"operation":"image_generation","prompt":"p"}"#))).await;
    assert_sd_error(&error, 401, "unauthorized");

    let wrong = client_with(&format!(r#"{{"baseUrl":"{url}","token":"not-the-token"}}"#));
    let error = reject(wrong.info()).await;
    assert_sd_error(&error, 401, "unauthorized");

    // The right token works on every request, the stream included.
    let authorised = client_with(&format!(r#"{{"baseUrl":"{url}/","token":"{TOKEN}"}}"#));
    resolve(authorised.info()).await;
    let images = resolve(authorised.generate(
        json(r#"{"operation":"image_generation","prompt":"p","steps":2}"#),
        None,
    ))
    .await;
    assert_eq!(images.unchecked_into::<js_sys::Array>().length(), 1);
    let accepted = resolve(authorised.submit(json(
        r#"{"operation":"image_generation","prompt":"p","steps":1}"#,
    )))
    .await;
    let job_id = get_str(&accepted, "job_id");
    // Without the token, the stream of that job is refused too.
    let (_, on_event) = recorder(|_, _| {});
    let error = reject(anonymous.stream(job_id, as_function(&on_event), None)).await;
    assert_sd_error(&error, 401, "unauthorized");
}

#[wasm_bindgen_test]
async fn abort_stops_listening_without_cancelling_the_job() {
    let client = client();
    let controller = AbortController::new().unwrap();
    let job_id = Rc::new(RefCell::new(String::new()));
    let id = job_id.clone();
    let on_accepted = Closure::<dyn FnMut(JsValue)>::new(move |v: JsValue| {
        *id.borrow_mut() = get_str(&v, "job_id");
    });
    let progress_after_abort = Rc::new(RefCell::new(0u32));
    let aborted = Rc::new(RefCell::new(false));
    let (p, a, ctl) = (
        progress_after_abort.clone(),
        aborted.clone(),
        controller.clone(),
    );
    let on_progress = Closure::<dyn FnMut(JsValue)>::new(move |_: JsValue| {
        if *a.borrow() {
            *p.borrow_mut() += 1;
        }
        *a.borrow_mut() = true;
        ctl.abort();
    });
    let options = js_sys::Object::new();
    Reflect::set(&options, &"signal".into(), &controller.signal()).unwrap();
    Reflect::set(&options, &"onAccepted".into(), on_accepted.as_ref()).unwrap();
    Reflect::set(&options, &"onProgress".into(), on_progress.as_ref()).unwrap();

    let error = reject(client.generate(
        json(r#"{"operation":"image_generation","prompt":"keep going","steps":20}"#),
        Some(options.into()),
    ))
    .await;
    assert_sd_error(&error, 0, "aborted");
    assert_eq!(
        *progress_after_abort.borrow(),
        0,
        "no callback after the abort"
    );

    let job_id = job_id.borrow().clone();
    let snapshot = wait_until_ended(&client, &job_id).await;
    assert_eq!(
        get_str(&snapshot, "status"),
        "completed",
        "the job was not cancelled"
    );
    assert!(!get(&snapshot, "cancel_requested").is_truthy());

    // An already aborted signal rejects at once, without submitting.
    let options = js_sys::Object::new();
    Reflect::set(&options, &"signal".into(), &controller.signal()).unwrap();
    let error = reject(client.generate(
        json(r#"{"operation":"image_generation","prompt":"p"}"#),
        Some(options.into()),
    ))
    .await;
    assert_sd_error(&error, 0, "aborted");
}

#[wasm_bindgen_test]
async fn dropped_streams_reconnect_with_last_event_id_and_lose_nothing() {
    let client = client();
    let accepted = resolve(client.submit(json(
        r#"{"operation":"image_generation","prompt":"flaky network","steps":10,"seed":3}"#,
    )))
    .await;
    let job_id = get_str(&accepted, "job_id");

    // First connection fails after 3 events, the second ends cleanly (but
    // before [DONE]) after 3 more; each time a partial event follows the cut.
    let faults = FetchFaults::install(
        r#"[{"urlPart":"/stream","kind":"cut","events":3,"end":"error","times":1},
            {"urlPart":"/stream","kind":"cut","events":3,"end":"close","times":1}]"#,
    );
    let (seen, on_event) = recorder(|_, _| {});
    let end = resolve(client.stream(job_id.clone(), as_function(&on_event), None)).await;
    let stream_requests: Vec<Option<String>> = faults
        .log()
        .into_iter()
        .filter(|(_, url, _)| url.ends_with("/stream"))
        .map(|(_, _, last)| last)
        .collect();
    drop(faults);
    assert_eq!(
        stream_requests,
        vec![None, Some("3".into()), Some("6".into())],
        "reconnects send Last-Event-ID = the last id delivered"
    );

    let (full, on_full) = recorder(|_, _| {});
    let full_end = resolve(client.stream(job_id, as_function(&on_full), None)).await;
    assert_eq!(
        *seen.borrow(),
        *full.borrow(),
        "every event exactly once, in order"
    );
    assert_eq!(
        get_num(&end, "lastEventId"),
        get_num(&full_end, "lastEventId")
    );
    assert_eq!(get_str(&get(&end, "terminal"), "type"), "complete");
}

#[wasm_bindgen_test]
async fn reconnection_gives_up_after_max_retries() {
    let client = client_with(&format!(
        r#"{{"baseUrl":"{}","maxRetries":1}}"#,
        worker_url()
    ));
    let accepted = resolve(client.submit(json(
        r#"{"operation":"image_generation","prompt":"p","steps":2}"#,
    )))
    .await;
    let faults = FetchFaults::install(r#"[{"urlPart":"/stream","kind":"reject","times":5}]"#);
    let (_, on_event) = recorder(|_, _| {});
    let error =
        reject(client.stream(get_str(&accepted, "job_id"), as_function(&on_event), None)).await;
    let attempts = faults.log().len();
    drop(faults);
    assert_sd_error(&error, 0, "network");
    assert_eq!(attempts, 2, "one try and one retry");
}

#[wasm_bindgen_test]
async fn busy_answers_are_retried_honouring_retry_after() {
    let client = client();
    // 429 then 503 on the submission, then the real worker: submit succeeds.
    let faults = FetchFaults::install(
        r#"[{"urlPart":"/v1/jobs","method":"POST","kind":"status","status":429,"code":"queue_full","retryAfter":"0","times":1},
            {"urlPart":"/v1/jobs","method":"POST","kind":"status","status":503,"code":"unavailable","retryAfter":"0.1","times":1}]"#,
    );
    let accepted = resolve(client.submit(json(
        r#"{"operation":"image_generation","prompt":"p","steps":1}"#,
    )))
    .await;
    let posts = faults.log().iter().filter(|(m, _, _)| m == "POST").count();
    drop(faults);
    assert!(get_str(&accepted, "job_id").starts_with("job-"));
    assert_eq!(posts, 3);

    // Out of retries: the last answer's error, with its Retry-After.
    let impatient = client_with(&format!(
        r#"{{"baseUrl":"{}","maxRetries":0}}"#,
        worker_url()
    ));
    let faults = FetchFaults::install(
        r#"[{"urlPart":"/v1/info","kind":"status","status":429,"code":"queue_full","retryAfter":"7","times":1}]"#,
    );
    let error = reject(impatient.info()).await;
    drop(faults);
    assert_sd_error(&error, 429, "queue_full");
    assert_eq!(get_num(&error, "retryAfterMs"), 7_000.0);

    // 4xx answers are never retried; network errors are not retried on POST.
    let faults = FetchFaults::install(
        r#"[{"urlPart":"/v1/jobs","method":"POST","kind":"reject","times":1}]"#,
    );
    let error = reject(client.submit(json(
        r#"{"operation":"image_generation","prompt":"p","steps":1}"#,
    )))
    .await;
    let posts = faults.log().len();
    drop(faults);
    assert_sd_error(&error, 0, "network");
    assert_eq!(
        posts, 1,
        "a POST that may have reached the worker is not sent again"
    );
    // The message says what to check (browsers say only "Failed to fetch").
    let message = get_str(&error, "message");
    assert!(
        message.contains("worker running") && message.contains("--cors-origin"),
        "{message}"
    );
}
