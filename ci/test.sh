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

cargo test --workspace --all-targets
bash ci/cli.sh
