#!/usr/bin/env bash
# tmux, for the test of load-test's live view in a real terminal (tests/loadtest_live.rs).
set -euo pipefail
if command -v tmux >/dev/null 2>&1; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q tmux >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q tmux >/dev/null 2>&1; } || true
fi
command -v tmux >/dev/null 2>&1 || echo "note: tmux could not be installed; the live-view test will skip"
