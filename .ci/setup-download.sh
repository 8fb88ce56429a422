#!/usr/bin/env bash
# Installs Python's huggingface_hub for the interoperability tests of `gpubench download`
# (tests/download_interop.rs). Idempotent and quiet.
set -euo pipefail
VERSION=2.4.0
if python3 -c "import huggingface_hub, sys; sys.exit(huggingface_hub.__version__ != '$VERSION')" 2>/dev/null; then
  exit 0
fi
python3 -m pip install --quiet --disable-pip-version-check --no-input --root-user-action=ignore "huggingface_hub==$VERSION"
