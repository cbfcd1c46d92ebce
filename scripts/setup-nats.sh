#!/usr/bin/env bash
# Installs Debian's nats-server (with JetStream), which the shared-queue
# integration tests (worker/tests/nats.rs) start on a free port. Idempotent:
# does nothing when nats-server is already on the PATH (or $NATS_SERVER is set).
#
#   scripts/setup-nats.sh
set -euo pipefail

if [[ -n "${NATS_SERVER:-}" && -x "${NATS_SERVER}" ]] || command -v nats-server >/dev/null; then
    exit 0
fi
echo "installing nats-server from Debian" >&2
SUDO=""
[[ "$(id -u)" == 0 ]] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nats-server
# The package enables a system service; the tests start their own servers.
if command -v systemctl >/dev/null && systemctl is-active --quiet nats-server 2>/dev/null; then
    $SUDO systemctl disable --now nats-server >/dev/null 2>&1 || true
fi
nats-server --version
