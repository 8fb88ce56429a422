#!/usr/bin/env bash
# Installs what the metrics tests need: a real Prometheus (Debian package `prometheus`).
# Idempotent and quiet: does nothing when the binary is already there.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1; then
    exit 0
fi
source "$(dirname "$0")/lib.sh"
apt_install prometheus
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
fi
# The package may start a system service; the tests start their own on a free port.
if command -v service >/dev/null 2>&1; then
    $SUDO service prometheus stop >/dev/null 2>&1 || true
fi
command -v prometheus >/dev/null
