//! The HTTP API: routes by resource, one file each. Handlers only translate
//! between HTTP and the engine; validation and generation live elsewhere.

pub mod a1111;
pub mod adapter;
pub mod auth;
pub mod catalog;
pub mod error;
pub mod extract;
pub mod info;
pub mod jobs;
pub mod openai;
pub mod openapi;
pub mod origin;
pub mod preprocess;
pub mod stream;
pub mod studio;

use axum::http::{header, HeaderName, Method, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use sd_worker_sdk::ErrorCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::engine::Engine;
use crate::metrics;
use crate::profile::Profile;
use error::HttpError;

/// State shared by every handler.
pub struct Shared {
    pub engine: Engine,
    /// Set once the model is loaded.
    pub profile: OnceLock<Profile>,
    /// Cleared when shutdown begins.
    pub accepting: AtomicBool,
    /// One permit per validation of a body that carries input images, whose
    /// decoding is the costly part: `--max-concurrent-decodes`.
    pub decode_slots: Arc<tokio::sync::Semaphore>,
    /// `--max-body-bytes`: also the most of a refused request's body that is
    /// read (and dropped) before the answer.
    pub max_body_bytes: usize,
    /// Each A1111 caller's last job, for `GET /sdapi/v1/progress`.
    pub a1111_callers: a1111::callers::Callers,
}

pub type AppState = Arc<Shared>;

impl Shared {
    /// `max_concurrent_decodes` (at least 1) bounds the submissions whose
    /// input images are decoded at the same time; `max_body_bytes` is the
    /// largest body accepted, in bytes.
    pub fn new(engine: Engine, max_body_bytes: usize, max_concurrent_decodes: usize) -> AppState {
        Arc::new(Self {
            engine,
            profile: OnceLock::new(),
            accepting: AtomicBool::new(true),
            decode_slots: Arc::new(tokio::sync::Semaphore::new(max_concurrent_decodes.max(1))),
            max_body_bytes,
            a1111_callers: a1111::callers::Callers::default(),
        })
    }

    /// The profile, or the 503 a client should see while loading or stopping.
    pub fn ready_profile(&self) -> Result<&Profile, HttpError> {
        if !self.accepting.load(Ordering::SeqCst) {
            return Err(HttpError::new(
                ErrorCode::ShuttingDown,
                "the worker is shutting down",
            ));
        }
        self.profile.get().ok_or_else(|| {
            let mut e = HttpError::new(
                ErrorCode::Unavailable,
                "the model is still loading; retry shortly",
            );
            e.retry_after_secs = Some(5);
            e
        })
    }
}

pub struct HttpOptions {
    pub max_body_bytes: usize,
    /// Sent as `X-Worker-Id` on every response, so clients and balancers know who answered.
    pub worker_id: String,
    /// Allowed browser origins; `*` allows any.
    pub cors_origins: Vec<String>,
    pub api_token: Option<String>,
    /// The built studio, served at `/`; `None` serves the API alone.
    pub studio: Option<studio::StudioDir>,
}

pub fn router(state: AppState, opts: &HttpOptions) -> Router {
    let x_request_id = HeaderName::from_static("x-request-id");
    let metrics = state.engine.metrics().clone();
    let same_site = axum::middleware::from_fn_with_state(
        origin::AllowedOrigins(Arc::new(opts.cors_origins.clone())),
        origin::refuse_cross_site,
    );
    let mut api = Router::new()
        .route("/health", get(info::health))
        .route("/ready", get(info::ready))
        .route("/metrics", get(info::metrics))
        .route("/openapi.json", get(openapi::spec))
        .route("/v1/info", get(info::info))
        .route("/v1/loras", get(catalog::loras))
        .route("/v1/embeddings", get(catalog::embeddings))
        .route("/v1/upscalers", get(catalog::upscalers))
        .route("/v1/jobs", post(jobs::submit))
        .route("/v1/preprocess", post(preprocess::preprocess))
        .route("/v1/jobs/{id}", get(jobs::status).delete(jobs::cancel))
        .route("/v1/jobs/{id}/stream", get(stream::stream))
        .route("/v1/jobs/{id}/images/{index}", get(jobs::image))
        .route(
            "/v1/images/generations",
            post(openai::generations::generations),
        )
        .route(
            "/v1/images/edits",
            post(openai::edits::edits).layer(axum::middleware::from_fn_with_state(
                origin::AllowedOrigins(Arc::new(opts.cors_origins.clone())),
                origin::refuse_cross_site,
            )),
        )
        .route("/sdapi/v1/txt2img", post(a1111::txt2img))
        .route("/sdapi/v1/img2img", post(a1111::img2img))
        .route("/sdapi/v1/samplers", get(a1111::misc::samplers))
        .route("/sdapi/v1/schedulers", get(a1111::misc::schedulers))
        .route("/sdapi/v1/sd-models", get(a1111::misc::sd_models))
        .route("/sdapi/v1/loras", get(a1111::networks::loras))
        .route("/sdapi/v1/upscalers", get(a1111::extras::upscalers))
        .route(
            "/sdapi/v1/latent-upscale-modes",
            get(a1111::extras::latent_upscale_modes),
        )
        .route(
            "/sdapi/v1/extra-single-image",
            post(a1111::extras::extra_single_image),
        )
        .route("/sdapi/v1/embeddings", get(a1111::networks::embeddings))
        // These take bodies a browser posts cross-site without a preflight.
        .route(
            "/sdapi/v1/options",
            get(a1111::misc::get_options)
                .post(a1111::misc::set_options)
                .layer(same_site.clone()),
        )
        .route("/sdapi/v1/progress", get(a1111::misc::progress))
        .route("/sdapi/v1/cmd-flags", get(a1111::misc::cmd_flags))
        .route("/sdapi/v1/memory", get(a1111::memory::memory))
        .route(
            "/sdapi/v1/interrupt",
            post(a1111::misc::interrupt).layer(same_site.clone()),
        )
        .route(
            "/sdapi/v1/skip",
            post(a1111::misc::skip).layer(same_site.clone()),
        )
        .route(
            "/sdapi/v1/png-info",
            post(a1111::misc::png_info).layer(same_site),
        )
        .route(
            "/controlnet/version",
            get(a1111::controlnet_routes::version),
        )
        .route(
            "/controlnet/model_list",
            get(a1111::controlnet_routes::model_list),
        )
        .route(
            "/controlnet/module_list",
            get(a1111::controlnet_routes::module_list),
        )
        .route("/controlnet/detect", post(a1111::controlnet_routes::detect))
        .method_not_allowed_fallback(|| async {
            let mut res = axum::response::IntoResponse::into_response(HttpError::new(
                ErrorCode::InvalidRequest,
                "method not allowed on this route",
            ));
            *res.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            res
        })
        .layer(axum::extract::DefaultBodyLimit::max(opts.max_body_bytes))
        .with_state(state);
    // A route layer: the token guards the API routes, not the studio's files
    // (a browser cannot send a header when it loads a page) nor 404s.
    if let Some(token) = &opts.api_token {
        api = api.route_layer(axum::middleware::from_fn_with_state(
            auth::Token(Arc::new(token.clone())),
            auth::require_token,
        ));
    }
    // Outside the token check, so a 401 on the OpenAI routes is OpenAI-shaped too.
    let mut app = api
        .route_layer(axum::middleware::from_fn(openai::error::reshape))
        .route_layer(axum::middleware::from_fn(a1111::error::reshape))
        .route_layer(axum::middleware::from_fn_with_state(metrics, metrics::track))
        .fallback(studio::serve)
        .with_state(opts.studio.clone())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &axum::http::Request<_>| {
                    let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
                    tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
                })
                // 503s while loading or stopping are expected: warn, do not shout.
                .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::WARN)),
        )
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("x-worker-id"),
            axum::http::HeaderValue::from_str(&opts.worker_id).unwrap_or_else(|_| axum::http::HeaderValue::from_static("sd-worker")),
        ))
        .layer(PropagateRequestIdLayer::new(x_request_id.clone()))
        .layer(SetRequestIdLayer::new(x_request_id, MakeRequestUuid));
    if !opts.cors_origins.is_empty() {
        let origins = if opts.cors_origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(opts.cors_origins.iter().filter_map(|o| o.parse().ok()))
        };
        app = app.layer(
            CorsLayer::new()
                .allow_origin(origins)
                .allow_methods([Method::GET, Method::POST, Method::DELETE])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    HeaderName::from_static("last-event-id"),
                ])
                .expose_headers([header::RETRY_AFTER, HeaderName::from_static("x-request-id")]),
        );
    }
    // Outermost: sees preflights before the CORS layer answers them.
    app.layer(axum::middleware::from_fn_with_state(
        origin::AllowedOrigins(Arc::new(opts.cors_origins.clone())),
        origin::log_foreign_origin,
    ))
}
