//! Serving: bind, load the model in the background (the API answers /health
//! and a 503 /ready meanwhile), run until a signal, then stop in order.

use anyhow::{Context, Result};
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info, warn};

use crate::cli::ServeArgs;
use crate::device::{default_dtype, device_name, dtype_name, parse_device};
use crate::engine::Engine;
use crate::http::{router, AppState, HttpOptions, Shared};
use crate::model::{LoadedModel, ModelSpec};
use crate::profile::{Profile, Runtime};

pub fn model_spec(args: &ServeArgs) -> ModelSpec {
    match (&args.model_path, &args.model) {
        (Some(dir), _) => ModelSpec::Local(dir.clone()),
        (None, Some(repo)) => ModelSpec::Hub {
            repo: repo.clone(),
            revision: args.revision.clone(),
        },
        (None, None) => ModelSpec::Bundled,
    }
}

pub async fn serve(args: ServeArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let dtype = args
        .dtype
        .map(|d| d.to_candle())
        .unwrap_or_else(|| default_dtype(&device));
    let engine = Engine::new(args.queue_size as usize, args.job_ttl);
    let state = Shared::new(engine);

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

    spawn_model_load(state.clone(), &args, device.clone(), dtype, worker_id);
    spawn_sweeper(state.clone());

    let app = router(
        state.clone(),
        &HttpOptions {
            max_body_bytes: args.max_body_bytes,
            cors_origins: args.cors_origins.clone(),
        },
    );
    let grace = args.shutdown_grace;
    let stopping = state.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            info!("shutdown requested: refusing new jobs, finishing the running one");
            stopping.accepting.store(false, Ordering::SeqCst);
            let s = stopping.clone();
            let finished = tokio::task::spawn_blocking(move || s.engine.shutdown(grace))
                .await
                .unwrap_or(false);
            if !finished {
                warn!(
                    ?grace,
                    "the running job did not finish within the grace period"
                );
            }
        })
        .await
        .context("serving HTTP")?;
    info!("stopped");
    Ok(())
}

fn spawn_model_load(
    state: AppState,
    args: &ServeArgs,
    device: candle_core::Device,
    dtype: candle_core::DType,
    worker_id: String,
) {
    let spec = model_spec(args);
    let queue_capacity = args.queue_size;
    let max_input_pixels = args.max_input_pixels;
    std::thread::Builder::new()
        .name("model-load".into())
        .spawn(move || {
            info!(?spec, device = %device_name(&device), dtype = dtype_name(dtype), "loading model");
            match LoadedModel::load(&spec, &device, dtype) {
                Ok(model) => {
                    let dev = device_name(&device);
                    let profile = Profile::new(
                        &model.meta,
                        &Runtime { worker_id: &worker_id, device: &dev, dtype: dtype_name(dtype), queue_capacity, max_input_pixels },
                    );
                    info!(model = %model.meta.id, family = model.meta.family.name(), load_ms = model.meta.load_ms, "model ready");
                    let _ = state.profile.set(profile);
                    if let Err(e) = state.engine.start(model) {
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
