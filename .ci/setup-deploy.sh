#!/usr/bin/env bash
# Installs the offline Kubernetes schema validator that tests/deploy.rs runs over deploy/.
# Idempotent and quiet: does nothing when the pinned version is already there.
set -euo pipefail

KUBERNETES_VALIDATE_VERSION=1.37.0

installed=$(python3 -m kubernetes_validate --version 2>/dev/null || true)
if [ "$installed" = "$KUBERNETES_VALIDATE_VERSION" ]; then
    exit 0
fi
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}" "PyYAML>=6.0" "jsonschema>=4.23"
python3 -m kubernetes_validate --version >/dev/null
