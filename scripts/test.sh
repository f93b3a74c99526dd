#!/usr/bin/env bash
# Runs every test of the project: installs missing peers, then format, lint and the test suite
# (unit tests, property tests and the integration tests against real Prometheus and rotel), the
# chart checks, and every fuzz target for FUZZ_SECONDS (default 15) from its checked-in corpus.
# The fuzz builds (sanitizer-instrumented, outside the workspace) are kept in FUZZ_TARGET_DIR,
# default ~/.cache/lgtm-agent/fuzz-target, as a CI cache: a cold build takes about 15 minutes on
# two cores, a warm one only rebuilds the changed crates. FUZZ_SECONDS=0 skips fuzzing.
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
echo "== fuzz targets"
if [[ "${FUZZ_SECONDS:-15}" != 0 ]]; then
    FUZZ_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/lgtm-agent/fuzz-target}" scripts/fuzz.sh "${FUZZ_SECONDS:-15}"
fi
