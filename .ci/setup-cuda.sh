#!/usr/bin/env bash
# What the tests of scripts/build-cuda --dry-run and scripts/gpu-smoke need: gcc, readelf (binutils) and a
# compressor (zstd or xz). No CUDA toolkit: that is only for a real build. Idempotent and quiet.
set -euo pipefail
need=()
command -v gcc >/dev/null || need+=(gcc)
command -v readelf >/dev/null || need+=(binutils)
command -v zstd >/dev/null || command -v xz >/dev/null || need+=(zstd)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "setup-cuda: install ${need[*]}" >&2
    exit 1
  fi
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
