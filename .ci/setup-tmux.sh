#!/usr/bin/env bash
# Installs what the test of load-test's live view in a real terminal needs (tests/loadtest_live.rs):
# tmux. Idempotent and quiet: does nothing when the binary is already there.
set -euo pipefail
if command -v tmux >/dev/null 2>&1; then
    exit 0
fi
source "$(dirname "$0")/lib.sh"
apt_install tmux
command -v tmux >/dev/null
