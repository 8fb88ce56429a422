#!/usr/bin/env bash
# Installs the offline Kubernetes schema validator that tests/deploy.rs runs over deploy/.
# Idempotent and quiet: does nothing when the pinned version is already there.
set -euo pipefail

KUBERNETES_VALIDATE_VERSION=1.37.0

installed=$(python3 -m kubernetes_validate --version 2>/dev/null || true)
if [ "$installed" = "$KUBERNETES_VALIDATE_VERSION" ]; then
    exit 0
fi
packages=("kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}" "PyYAML>=6.0" "jsonschema>=4.23")
pip_install() {
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@"
}
# A Python whose packages the OS manages refuses a plain install: fall back to the user site
# (the tests run the tool as `python3 -m kubernetes_validate` when it is not on PATH).
pip_install "${packages[@]}" 2>/dev/null || PIP_BREAK_SYSTEM_PACKAGES=1 pip_install --user "${packages[@]}"
python3 -m kubernetes_validate --version >/dev/null
