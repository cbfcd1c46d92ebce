//! Serving: bind, load the model in the background (the API answers /health
//! and a 503 /ready meanwhile), heartbeat to the hive, run until a signal, then
//! stop in order.

use anyhow::{bail, Context, Result};
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt as _;
use tracing::{debug, error, info, warn};

use crate::cli::ServeArgs;
use crate::device::{device_name, parse_device_for, precision_name, resolve_precision};
use crate::engine::Engine;
use crate::hive::{self, HiveConfig};
use crate::http::studio::StudioDir;
use crate::http::{router, AppState, HttpOptions, Shared};
use crate::metrics::Metrics;
use crate::model::{LoadOptions, LoadedModel, ModelSpec};
use crate::profile::{Profile, Runtime};

pub fn model_spec(args: &ServeArgs) -> ModelSpec {
    match (&args.model_path, &args.model) {
        (Some(path), _) if crate::model::single_file::is_single_file(path) => {
            ModelSpec::SingleFile {
                file: path.clone(),
                tokenizer: args.tokenizer.clone(),
            }
        }
        (Some(dir), _) => ModelSpec::Local(dir.clone()),
        (None, Some(repo)) => ModelSpec::Hub {
            repo: repo.clone(),
            revision: args.revision.clone(),
        },
        (None, None) => ModelSpec::Bundled,
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A worker reachable from other machines must not be open to all of them by accident.
fn check_exposure(args: &ServeArgs) -> Result<()> {
    if args
        .api_token
        .as_deref()
        .is_some_and(|t| t.trim().is_empty())
    {
        bail!("--api-token (SD_WORKER_API_TOKEN) is set but empty; give a real token or leave it unset");
    }
    if is_loopback(&args.host) || args.api_token.is_some() {
        return Ok(());
    }
    if !args.allow_unauthenticated {
        bail!(
            "refusing to listen on {} without --api-token: anyone who can reach it could use it. \
             Set --api-token (or SD_WORKER_API_TOKEN), or pass --allow-unauthenticated to accept the risk",
            args.host
        );
    }
    warn!(host = %args.host, "listening on a non-loopback address WITHOUT authentication (--allow-unauthenticated)");
    Ok(())
}

/// The studio to serve: `--studio-dir` must hold a built app; with neither flag,
/// the source tree's `app/dist` when it is built (`cargo run` after
/// scripts/run.sh), else the API alone, said once in the log.
fn studio_dir(args: &ServeArgs) -> Result<Option<StudioDir>> {
    if args.no_studio {
        return Ok(None);
    }
    if let Some(dir) = &args.studio_dir {
        return StudioDir::open(dir).map(Some);
    }
    let found = StudioDir::from_source_tree();
    if found.is_none() {
        info!("the studio is not built (scripts/run.sh builds it); serving the API alone");
    }
    Ok(found)
}

pub async fn serve(args: ServeArgs) -> Result<()> {
    check_exposure(&args)?;
    let device = parse_device_for(&args.device, args.dtype)?;
    let (dtype, quant) = resolve_precision(&device, args.dtype)?;
    let metrics = Metrics::new();
    let engine = match &args.queue {
        None => Engine::new(
            args.queue_size as usize,
            args.job_ttl,
            args.job_timeout,
            metrics,
        ),
        Some(url) => {
            let config = crate::engine::nats::NatsConfig {
                url: url.clone(),
                ack_wait: args.queue_ack_wait,
                max_deliver: args.queue_max_deliver,
                queue_size: args.queue_size,
                creds: args.queue_creds.clone(),
                tls_ca: args.queue_tls_ca.clone(),
            };
            anyhow::ensure!(
                args.queue_ack_wait >= Duration::from_secs(1),
                "--queue-ack-wait must be at least 1s"
            );
            Engine::with_nats(
                args.queue_size as usize,
                args.job_ttl,
                args.job_timeout,
                metrics,
                config,
            )
            .await?
        }
    };
    let decodes = args.max_concurrent_decodes.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |n| n as usize,
    );
    let state = Shared::new(engine, args.max_body_bytes, decodes);
    let studio = studio_dir(&args)?;
    let catalogs =
        crate::catalog::Catalogs::open(args.lora_dir.as_deref(), args.embeddings_dir.as_deref())?;
    if let Some(dir) = &args.upscaler_dir {
        anyhow::ensure!(
            dir.is_dir(),
            "--upscaler-dir {}: not a folder",
            dir.display()
        );
    }
    // A local depth model is checked now; a hub one is fetched on first use.
    if let crate::preprocess::depth_weights::DepthSource::Local(path) =
        crate::preprocess::depth_weights::DepthSource::parse(&args.depth_model)
    {
        anyhow::ensure!(
            path.exists(),
            "--depth-model {}: no such file or folder (nor a hub repository `owner/name`; `sd-worker generate-depth-model --out DIR` writes a tiny one for tests)",
            path.display()
        );
    }

    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("binding {}:{}", args.host, args.port))?;
    let addr = listener.local_addr()?;
    let worker_id = args
        .worker_id
        .clone()
        .unwrap_or_else(|| format!("sd-worker-{}", addr.port()));
    // The one line on stdout: scripts and tests read the bound address from it.
    println!("sd-worker listening on http://{addr}");
    std::io::stdout().flush().ok();
    if let Some(dir) = &studio {
        info!("studio at http://{addr}/ (from {})", dir.path().display());
    }

    spawn_model_load(
        state.clone(),
        &args,
        device.clone(),
        (dtype, quant),
        worker_id.clone(),
        catalogs,
    );
    spawn_sweeper(state.clone());
    let hive = args.hive_url.clone().map(|url| HiveConfig {
        url,
        interval: args.heartbeat_interval,
        worker_id: worker_id.clone(),
        device: device_name(&device),
        port: addr.port(),
        advertise_url: args.advertise_url.clone(),
    });
    let heartbeats = hive.clone().map(|cfg| hive::spawn(state.clone(), cfg));

    let app = router(
        state.clone(),
        &HttpOptions {
            max_body_bytes: args.max_body_bytes,
            cors_origins: args.cors_origins.clone(),
            api_token: args.api_token.clone(),
            worker_id: worker_id.clone(),
            studio,
        },
    );
    let grace = args.shutdown_grace;
    let stopping = state.clone();
    let drain_jobs = async move {
        shutdown_signal().await;
        info!(
            "shutdown requested: refusing new jobs, failing queued ones, finishing the running one"
        );
        stopping.accepting.store(false, Ordering::SeqCst);
        if let Some(task) = heartbeats {
            task.abort();
        }
        let say_stopping = || async {
            if let Some(cfg) = &hive {
                hive::send(
                    &reqwest::Client::new(),
                    &stopping,
                    cfg,
                    sd_worker_sdk::WorkerStatus::Stopping,
                )
                .await;
            }
        };
        // Tell the hive at once, so it routes nothing new here while the job
        // finishes, and again once it has.
        say_stopping().await;
        let s = stopping.clone();
        let finished = tokio::task::spawn_blocking(move || s.engine.shutdown(grace))
            .await
            .unwrap_or(false);
        if !finished {
            let fate = match stopping.engine.queue_mode() {
                sd_worker_sdk::QueueMode::Embedded => "was failed",
                sd_worker_sdk::QueueMode::Nats => "went back to the shared queue",
            };
            warn!(
                ?grace,
                "the running job did not finish within the grace period and {fate}"
            );
        }
        say_stopping().await;
    };
    serve_http(listener, app, args.header_read_timeout, drain_jobs).await;
    info!("stopped");
    Ok(())
}

/// How long connections still open when the jobs are drained may take to
/// finish (a last event, an image download) before they are closed.
pub const CONNECTION_DRAIN: Duration = Duration::from_secs(5);

/// Serves HTTP/1.1 on `listener` (as `axum::serve` did) until `drain_jobs` completes, then
/// stops accepting, asks every connection to close after its current request,
/// and returns at most [`CONNECTION_DRAIN`] later whatever clients do (a
/// request half sent, a body trickling in, a stream left open). A client must
/// send a request's headers within `header_read_timeout`, which also closes
/// idle keep-alive connections; it does not limit a response being streamed.
async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    header_read_timeout: Duration,
    drain_jobs: impl Future<Output = ()>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut drain_jobs = std::pin::pin!(drain_jobs);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it
                    // was accepted: wait a little rather than spin.
                    warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut drain_jobs => break,
        };
        let _ = stream.set_nodelay(true);
        // Each request carries its peer address as axum's `ConnectInfo` (as
        // `axum::serve` with `into_make_service_with_connect_info` gives it).
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            },
        ));
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(CONNECTION_DRAIN) => {
            warn!(after = ?CONNECTION_DRAIN, "connections still open after the jobs drained are closed");
        }
    }
}

/// Test-only, compiled into debug builds alone: `$SD_WORKER_TEST_LOAD_DELAY_MS`
/// holds the model load back, so the studio's loading screen can be tested.
fn hold_load_for_tests() {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("SD_WORKER_TEST_LOAD_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

fn spawn_model_load(
    state: AppState,
    args: &ServeArgs,
    device: candle_core::Device,
    (dtype, quant): (candle_core::DType, crate::model::quant::WeightQuant),
    worker_id: String,
    catalogs: crate::catalog::Catalogs,
) {
    let precision = precision_name(dtype, quant);
    let spec = model_spec(args);
    let queue_capacity = args.queue_size;
    let max_input_pixels = args.max_input_pixels;
    let (max_pixels, max_images) = (args.max_pixels, args.max_images);
    let skip_t5 = args.no_t5;
    let depth = crate::preprocess::depth_weights::DepthSource::parse(&args.depth_model);
    let taesd = args.taesd.clone();
    let upscaler_dir = args.upscaler_dir.clone();
    let controlnets = crate::controlnet::ControlNetOptions {
        models: args.controlnets.clone(),
        dir: args.controlnet_dir.clone(),
        cache_bytes: args.controlnet_cache_mb.saturating_mul(1 << 20),
    };
    std::thread::Builder::new()
        .name("model-load".into())
        .spawn(move || {
            info!(?spec, device = %device_name(&device), dtype = precision, "loading model");
            hold_load_for_tests();
            match LoadedModel::load(&spec, &device, LoadOptions { dtype, skip_t5, quant }) {
                Ok(mut model) => {
                    if let Some(t) = &taesd {
                        if let Err(e) = load_taesd(&mut model, t, &device, dtype) {
                            error!(error = %format!("{e:#}"), "could not load TAESD");
                            eprintln!("error: --taesd {t}: {e:#}");
                            std::process::exit(2);
                        }
                    }
                    let dev = device_name(&device);
                    let rt = Runtime { worker_id: &worker_id, device: &dev, dtype: precision, queue_capacity, max_input_pixels, max_pixels, max_images };
                    let registry = match crate::controlnet::ControlNetRegistry::build(&controlnets, model.meta(), model.unet_config(), &device, dtype) {
                        Ok(r) => r,
                        Err(e) => {
                            error!(error = %format!("{e:#}"), "could not load the ControlNets");
                            eprintln!("error: could not load the ControlNets: {e:#}");
                            std::process::exit(2);
                        }
                    };
                    let profile = Profile::new(model.meta(), &rt)
                        .with_controlnets(registry)
                        .with_lora_merge_bytes(model.lora_merge_bytes())
                        .with_taesd(model.vae().tiny().is_some())
                        .with_upscalers(crate::upscale::registry::UpscalerRegistry::new(upscaler_dir, &device, dtype))
                        .with_lora_targets(crate::lora::keys::Targets::new(
                            model.weight_tables(),
                            model.unet_config().map(|c| c.layers_per_block),
                        ))
                        .with_preprocessors(preprocessors(depth, &device, dtype))
                        .with_catalogs(catalogs);
                    let m = state.engine.metrics();
                    m.model_load.set(model.meta().load_ms as f64 / 1000.0);
                    m.info
                        .with_label_values(&[env!("CARGO_PKG_VERSION"), &model.meta().id, model.meta().family.name(), &dev, precision])
                        .set(1.0);
                    info!(model = %model.meta().id, family = model.meta().family.name(), load_ms = model.meta().load_ms, "model ready");
                    let _ = state.profile.set(profile);
                    if let Err(e) = state.engine.start(model, validator(&state)) {
                        error!(error = %e, "could not start the generation thread");
                        std::process::exit(2);
                    }
                }
                Err(e) => {
                    // Without a model the worker can serve nothing: exit so the
                    // hive (or the person) sees the failure at once.
                    error!(error = %format!("{e:#}"), "could not load the model");
                    eprintln!("error: could not load the model: {e:#}");
                    std::process::exit(2);
                }
            }
        })
        .expect("spawning the model-load thread");
}

/// Validates a job body from the shared queue as the front did, against
/// the loaded model's profile.
fn validator(state: &AppState) -> crate::engine::nats::Validator {
    let state = Arc::downgrade(state);
    Arc::new(move |body: &[u8]| {
        let unavailable = || {
            sd_worker_sdk::ApiError::new(
                sd_worker_sdk::ErrorCode::Unavailable,
                "the worker is stopping",
            )
        };
        let state = state.upgrade().ok_or_else(unavailable)?;
        let profile = state.profile.get().ok_or_else(unavailable)?;
        crate::validation::validate_body(body, profile)
    })
}

/// Loads `--taesd` (a folder, a hub repository, or `auto`: the family's
/// madebyollin repository) beside the model's VAE.
fn load_taesd(
    model: &mut LoadedModel,
    spec: &str,
    device: &candle_core::Device,
    dtype: candle_core::DType,
) -> anyhow::Result<()> {
    use crate::model::Family;
    let repo = match (spec, model.meta().family) {
        ("auto", Family::StableDiffusionXl) => "madebyollin/taesdxl",
        ("auto", Family::StableDiffusion3) => "madebyollin/taesd3",
        ("auto", _) => "madebyollin/taesd",
        (other, _) => other,
    };
    let local = std::path::Path::new(repo);
    let dir = if local.exists() {
        local.to_path_buf()
    } else if repo.split('/').count() == 2 && !repo.starts_with('.') && !repo.starts_with('/') {
        crate::model::source::hub_controlnet(repo, dtype != candle_core::DType::F32)?
    } else {
        anyhow::bail!("no such folder (nor a hub repository `owner/name`, nor `auto`)");
    };
    let tiny = crate::model::taesd::Taesd::load(&dir, device, dtype)?;
    info!(taesd = %dir.display(), parameters = tiny.parameter_count(), "TAESD loaded");
    model.set_taesd(tiny)
}

/// The built-in preprocessors and `depth`, whose model loads on first use
/// (f32 on the CPU, where half precision is slow; the model's dtype elsewhere).
fn preprocessors(
    depth: crate::preprocess::depth_weights::DepthSource,
    device: &candle_core::Device,
    dtype: candle_core::DType,
) -> crate::preprocess::Preprocessors {
    use crate::preprocess::depth::{DepthPreprocessor, LazyDepthEstimator};
    let dtype = if device.is_cpu() {
        candle_core::DType::F32
    } else {
        dtype
    };
    let estimator = LazyDepthEstimator::new(depth, device.clone(), dtype);
    crate::preprocess::Preprocessors::builtin().with(Arc::new(DepthPreprocessor::new(estimator)))
}

/// Drops jobs whose results outlived --job-ttl, every ten seconds.
fn spawn_sweeper(state: AppState) {
    let state = Arc::downgrade(&state);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tick.tick().await;
            let Some(state) = state.upgrade() else { break };
            let n = state.engine.sweep_expired();
            if n > 0 {
                info!(expired = n, "dropped expired jobs");
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn loopback_addresses() {
        for h in ["127.0.0.1", "127.8.9.10", "::1", "localhost"] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["0.0.0.0", "192.168.1.2", "::", "example.com"] {
            assert!(!is_loopback(h), "{h}");
        }
    }
}
