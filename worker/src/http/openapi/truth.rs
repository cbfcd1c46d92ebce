//! What the document derived from the handlers' annotations cannot say by
//! itself, added in one place so that every route gets it:
//! - `401` on every route the bearer token guards (all but `/health` and `/ready`);
//! - `400` on every route with path or query parameters (a value that does not
//!   parse is refused by `http/extract.rs` with the field named);
//! - `415` on `POST /v1/jobs` (only `application/json` bodies);
//! - the SSE body as what it is: `text/event-stream` events whose `data:`
//!   holds one JSON `StreamEvent` (or the closing `[DONE]`); and the adapters'
//!   streams (OpenAI's) as named events with JSON `data`;
//! - links from a submitted job to the operations that take its id;
//! - and, once the model is loaded, this worker's limits on the request
//!   fields ([`apply_limits`]), so a generated valid request is one the worker
//!   accepts.

use sd_worker_sdk::WorkerInfo;
use serde_json::{json, Map, Value};

const METHODS: [&str; 5] = ["get", "post", "delete", "put", "patch"];

fn error_response(description: &str) -> Value {
    error_response_in(description, "ErrorBody")
}

/// An error response whose body is the schema `body` (OpenAI's routes answer `OpenAiErrorBody`).
fn error_response_in(description: &str, body: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{body}")}}}
    })
}

/// The error body schema of a path: the adapters answer in their API's shape.
fn error_body_of(path: &str) -> &'static str {
    if path.starts_with("/v1/images/") {
        "OpenAiErrorBody"
    } else if path.starts_with("/sdapi/") || path.starts_with("/controlnet/") {
        "SdErrorBody"
    } else {
        "ErrorBody"
    }
}

/// Adds the responses, the event-stream body and the links described in the
/// module docs. Leaves a response the annotations already give untouched.
pub fn complete(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        for method in METHODS {
            let Some(op) = item.get_mut(method).and_then(Value::as_object_mut) else {
                continue;
            };
            // `security: [{}]` marks the open routes; absent means the global bearer scheme.
            let open = op
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(|reqs| {
                    reqs.iter()
                        .any(|r| r.as_object().is_some_and(Map::is_empty))
                });
            let has_params = op
                .get("parameters")
                .and_then(Value::as_array)
                .is_some_and(|p| !p.is_empty());
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                continue;
            };
            if !open {
                let body = error_body_of(path);
                responses.entry("401").or_insert_with(|| {
                    error_response_in(
                        "Missing or wrong bearer token (`Authorization: Bearer <token>`)",
                        body,
                    )
                });
            }
            if has_params {
                responses.entry("400").or_insert_with(|| {
                    error_response_in(
                        "A path or query parameter (or `Last-Event-ID`) that does not parse; `field` names it",
                        error_body_of(path),
                    )
                });
            }
            if path == "/v1/jobs" && method == "post" {
                responses.entry("415").or_insert_with(|| {
                    error_response("The body is not sent as `Content-Type: application/json`")
                });
                if let Some(accepted) = responses.get_mut("202").and_then(Value::as_object_mut) {
                    accepted.insert("links".into(), job_links());
                }
            }
            if let Some(ok) = responses.get_mut("200").and_then(Value::as_object_mut) {
                if path == "/v1/jobs/{id}/stream" {
                    ok.insert("content".into(), event_stream());
                } else if let Some(sse) = ok
                    .get_mut("content")
                    .and_then(|c| c.get_mut("text/event-stream"))
                {
                    // Another tool's stream (OpenAI's `stream: true`): named
                    // events whose `data` is JSON in that tool's shapes.
                    sse["schema"] = foreign_event();
                }
            }
        }
    }
}

fn job_links() -> Value {
    let link = |operation: &str, description: &str| {
        json!({
            "operationId": operation,
            "parameters": {"id": "$response.body#/job_id"},
            "description": description
        })
    };
    let mut first_image = link("image", "The job's first image, once it has completed");
    first_image["parameters"]["index"] = json!(0);
    json!({
        "GetJob": link("status", "The job's snapshot"),
        "CancelJob": link("cancel", "Cancel the job"),
        "StreamJob": link("stream", "Follow the job's events"),
        "GetFirstImage": first_image,
    })
}

fn event_stream() -> Value {
    // Open API before 3.2 describes each event of a text/event-stream with
    // `schema` (fields `id`, `event`, `data`); the JSON inside `data` with
    // `contentMediaType` and `contentSchema`.
    json!({
        "text/event-stream": {
            "schema": {
                "type": "object",
                "description": "One Server-Sent Event: `id: <sequence>` and one `data:` line holding a JSON \
                                `StreamEvent`; after the terminal event (`complete`, `error`, `cancelled`) a last \
                                `data: [DONE]` without an id, then the stream closes. Comment lines \
                                (`: keep-alive`) every 15 s.",
                "required": ["data"],
                "properties": {
                    "id": {"type": "string", "pattern": "^[0-9]+$"},
                    "event": {"type": "string"},
                    "retry": {"type": "integer"},
                    "data": {"oneOf": [
                        {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "contentSchema": {"$ref": "#/components/schemas/StreamEvent"}
                        },
                        {"const": "[DONE]"}
                    ]}
                }
            }
        }
    })
}

/// One Server-Sent Event of another tool's stream, as Open API 3.1 tools
/// read it: a named event whose `data` holds JSON.
fn foreign_event() -> Value {
    json!({
        "type": "object",
        "required": ["data"],
        "properties": {
            "id": {"type": "string"},
            "event": {"type": "string"},
            "retry": {"type": "integer"},
            "data": {"type": "string", "contentMediaType": "application/json"}
        }
    })
}

/// Writes the loaded model's limits into the request schema's properties:
/// steps, sizes (bounds and multiple), images, guidance, seed, prompt length,
/// and the schedulers it takes. Only bounds the worker enforces; a property
/// the schema does not have is left alone.
pub fn apply_limits(doc: &mut Value, info: &WorkerInfo) {
    let l = &info.limits;
    let Some(props) = doc
        .pointer_mut("/components/schemas/GenerationParams/properties")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let mut set = |name: &str, extra: Value| {
        if let (Some(p), Value::Object(extra)) =
            (props.get_mut(name).and_then(Value::as_object_mut), extra)
        {
            p.extend(extra);
        }
    };
    set("steps", json!({"minimum": 1, "maximum": l.max_steps}));
    for side in ["width", "height"] {
        set(
            side,
            json!({"minimum": l.min_size, "maximum": l.max_size, "multipleOf": l.size_multiple}),
        );
    }
    set("num_images", json!({"minimum": 1, "maximum": l.max_images}));
    set(
        "guidance_scale",
        json!({"minimum": l.min_guidance_scale, "maximum": l.max_guidance_scale}),
    );
    set("seed", json!({"maximum": l.max_seed}));
    set("prompt", json!({"maxLength": l.max_prompt_chars}));
    set("negative_prompt", json!({"maxLength": l.max_prompt_chars}));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        json!({"paths": {
            "/health": {"get": {"security": [{}], "responses": {"200": {"description": "ok"}}}},
            "/v1/jobs": {"post": {"responses": {"202": {"description": "accepted"}}}},
            "/v1/images/generations": {"post": {"responses": {"200": {"description": "images",
                "content": {"text/event-stream": {"schema": {"type": "string"}}}}}}},
            "/v1/jobs/{id}/stream": {"get": {
                "parameters": [{"name": "id", "in": "path"}],
                "responses": {"200": {"description": "events", "content": {"text/event-stream": {
                    "schema": {"$ref": "#/components/schemas/StreamEvent"}}}}}}}
        }})
    }

    #[test]
    fn the_openai_routes_401_is_documented_in_openais_error_shape() {
        let mut d = json!({"paths": {
            "/v1/images/generations": {"post": {"responses": {"200": {"description": "ok"}}}},
            "/v1/jobs": {"post": {"responses": {"202": {"description": "accepted"}}}}
        }});
        complete(&mut d);
        let schema = |p: &str| {
            d["paths"][p]["post"]["responses"]["401"]["content"]["application/json"]["schema"]
                ["$ref"]
                .clone()
        };
        assert_eq!(
            schema("/v1/images/generations"),
            "#/components/schemas/OpenAiErrorBody"
        );
        assert_eq!(schema("/v1/jobs"), "#/components/schemas/ErrorBody");
    }

    #[test]
    fn guarded_routes_get_401_parameterised_ones_400_and_submit_415() {
        let mut d = doc();
        complete(&mut d);
        let responses = |p: &str, m: &str| d["paths"][p][m]["responses"].clone();
        assert!(responses("/health", "get").get("401").is_none());
        // Another tool's stream: each event an object with JSON `data`.
        let openai = &responses("/v1/images/generations", "post")["200"]["content"];
        let event = &openai["text/event-stream"]["schema"];
        assert_eq!(event["type"], "object");
        assert_eq!(
            event["properties"]["data"]["contentMediaType"],
            "application/json"
        );
        assert!(responses("/v1/jobs", "post").get("401").is_some());
        assert!(responses("/v1/jobs", "post").get("415").is_some());
        assert!(responses("/v1/jobs", "post").get("400").is_none());
        assert!(responses("/v1/jobs/{id}/stream", "get")
            .get("400")
            .is_some());
        assert_eq!(
            responses("/v1/jobs", "post")["202"]["links"]["GetJob"]["parameters"]["id"],
            "$response.body#/job_id"
        );
        assert_eq!(
            responses("/v1/jobs/{id}/stream", "get")["200"]["content"]["text/event-stream"]
                ["schema"]["properties"]["data"]["oneOf"][0]["contentSchema"]["$ref"],
            "#/components/schemas/StreamEvent"
        );
    }
}
