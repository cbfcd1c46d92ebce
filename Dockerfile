# syntax=docker/dockerfile:1
#
# sd-worker, CPU image. See docs/DEPLOY.md.
#
#   docker build -t sd-worker:cpu .
#   docker build -t sd-worker:cpu-mkl --build-arg FEATURES=mkl .      # Intel MKL, x86-64
#
# The studio is served at / (SD_WORKER_NO_STUDIO=true to turn it off).
#
#   docker run -d --name sd-worker --stop-timeout 45 -p 8600:8600 -v sd-data:/data \
#     --env-file /etc/sd-worker/env sd-worker:cpu
#
# The image binds 0.0.0.0 (SD_WORKER_HOST), and the worker refuses to listen on a
# non-loopback address without a token: pass a non-empty SD_WORKER_API_TOKEN
# (or, on a network you trust entirely, SD_WORKER_ALLOW_UNAUTHENTICATED=true).
# With neither, the container exits at once with an error saying so.
#
# Stopping: the worker lets the running job finish for --shutdown-grace (30 s by
# default) after SIGTERM; Docker's default stop timeout is 10 s, so run with
# --stop-timeout 45 (compose: stop_grace_period: 45s).
#
# Needs BuildKit (the default builder since Docker 23) for the cache mounts.

# The studio: the browser SDK (Rust to WebAssembly) and the React app, built by
# the same scripts as on a workstation. Node 20 image plus a minimal Rust.
FROM node:20-bookworm AS studio
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:$PATH
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --no-modify-path
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,id=sd-worker-target-wasm,target=/src/target \
    scripts/setup-web.sh && scripts/build-wasm.sh && pnpm build \
 && cp -r app/dist /out-studio

FROM rust:1-bookworm AS builder
# Extra cargo features, comma-separated: "" (plain CPU) or "mkl".
ARG FEATURES=""
WORKDIR /src
COPY . .
# The registry and target dir live in cache mounts, so rebuilds after a source
# change reuse the compiled dependencies (Candle is most of the build). The
# binary is copied out of the cached target dir within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,id=sd-worker-target-cpu,target=/src/target \
    cargo build --release -p sd-worker --locked ${FEATURES:+--features "$FEATURES"} \
 && install -D -m 0755 target/release/sd-worker /out/sd-worker

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 sd-worker \
 && useradd --system --uid 10001 --gid sd-worker --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin sd-worker \
 && mkdir -p /data/hf /data/cache \
 && chown -R sd-worker:sd-worker /data
COPY --from=builder /out/sd-worker /usr/local/bin/sd-worker
COPY --from=studio /out-studio /usr/share/sd-worker/studio

# HF_HOME: the Hugging Face cache (hub downloads). SD_WORKER_CACHE: the bundled
# model when no model is configured. Both on the /data volume, so a model is
# downloaded once, not on every container start.
ENV SD_WORKER_HOST=0.0.0.0 \
    SD_WORKER_PORT=8600 \
    SD_WORKER_STUDIO_DIR=/usr/share/sd-worker/studio \
    HF_HOME=/data/hf \
    SD_WORKER_CACHE=/data/cache
USER sd-worker
WORKDIR /data
VOLUME /data
EXPOSE 8600

# Liveness: GET /health must answer HTTP 200. Done with bash's /dev/tcp rather
# than curl: bash is already in the image, while curl would add libcurl and a
# dozen libraries (and their CVEs) for one request. It checks the HTTP status
# line, not just an open port; Docker's --timeout bounds it. /health, not
# /ready: /ready is 503 while a model downloads, which can take longer than any
# start period, and an orchestrator acting on "unhealthy" would kill the
# download. Set the port with SD_WORKER_PORT (not --port) so this check follows.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD bash -c 'exec 3<>"/dev/tcp/127.0.0.1/${SD_WORKER_PORT:-8600}" && printf "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" >&3 && IFS= read -r -t 4 status <&3 && [[ $status == HTTP/1.?" 200"* ]]'

ENTRYPOINT ["sd-worker"]
