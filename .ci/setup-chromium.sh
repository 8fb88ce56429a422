#!/usr/bin/env bash
# Installs what the comparison.html test needs: a headless browser (Debian package `chromium`).
# Idempotent and quiet: does nothing when the binary is already there.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
source "$(dirname "$0")/lib.sh"
apt_install chromium
command -v chromium >/dev/null
