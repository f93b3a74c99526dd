#!/usr/bin/env bash
# Runs every test of the project: installs missing peers, then format, lint and the test suite
# (unit tests, property tests and the integration tests against real Prometheus and rotel).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
echo "== chart, deploy scripts and generated configs"
LGTM_AGENT_BIN="${CARGO_TARGET_DIR:-target}/debug/lgtm-agent" scripts/check-chart.sh
