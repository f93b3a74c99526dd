#!/usr/bin/env bash
# Fuzzes the parsers of outside input, each target for a bounded time from its checked-in corpus,
# and fails if any target crashes (panic, overflow, sanitizer report, timeout or out of memory).
#
#   scripts/fuzz.sh [SECONDS] [TARGET|CRATE ...]   SECONDS per target (default 20); default: all
#   scripts/fuzz.sh --list                          the targets, as CRATE:TARGET
#
# Targets live in <crate>/fuzz (cargo-fuzz projects outside the main workspace). The corpus in
# <crate>/fuzz/corpus/<target>/ is only read: what libFuzzer finds goes to a scratch directory
# (FUZZ_WORK_DIR, default target/fuzz/work). A crash leaves its input in
# <crate>/fuzz/artifacts/<target>/; turn it into a regression test beside the parser
# (<module>/fuzz_regressions.rs) before fixing it.
#
# Toolchain: cargo-fuzz passes nightly-only flags to rustc (-Z sanitizer, coverage). By default
# the stable toolchain runs with RUSTC_BOOTSTRAP=1, which lets it take those flags (checked with
# stable 1.95); FUZZ_TOOLCHAIN=nightly uses `cargo +nightly` instead (a separate, cold build).
# cargo-fuzz itself is installed if missing. Every fuzz crate builds into target/fuzz (FUZZ_TARGET_DIR), so dependencies they
# share build once: keep that directory cached in CI, a cold build takes many minutes.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
all_targets=(
    scrape:parse_text
    scrape:parse_openmetrics
    daemonset:log_line
    daemonset:log_decoder
    pipeline:otlp_traces
    pipeline:trace_wire
    pipeline:otlp_metrics
    pipeline:otlp_logs
    pipeline:zipkin_spans
    pipeline:jaeger_thrift
    pipeline:otlp_json
    pipeline:logs_parts
    pipeline:metrics_parts
    config:config_yaml
)

if [[ "${1:-}" == "--list" ]]; then
    printf '%s\n' "${all_targets[@]}"
    exit 0
fi
seconds=20
if [[ "${1:-}" =~ ^[0-9]+$ ]]; then
    seconds=$1
    shift
fi
selected=()
if [[ $# -eq 0 ]]; then
    selected=("${all_targets[@]}")
else
    for want in "$@"; do
        found=0
        for t in "${all_targets[@]}"; do
            if [[ "$want" == "$t" || "$want" == "${t#*:}" || "$want" == "${t%%:*}" ]]; then
                selected+=("$t")
                found=1
            fi
        done
        if [[ $found -eq 0 ]]; then
            echo "fuzz.sh: no target or crate named '$want' (see --list)" >&2
            exit 2
        fi
    done
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
if [[ -n "${FUZZ_TOOLCHAIN:-}" ]]; then
    fuzz=(cargo "+$FUZZ_TOOLCHAIN" fuzz)
    toolchain=$FUZZ_TOOLCHAIN
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
    toolchain="$(rustc --version | cut -d' ' -f2) with RUSTC_BOOTSTRAP=1"
fi
target_dir=${FUZZ_TARGET_DIR:-$root/target/fuzz}
work_dir=${FUZZ_WORK_DIR:-$target_dir/work}

# Build each crate's targets once (one cargo invocation per crate).
crates=()
for t in "${selected[@]}"; do
    c=${t%%:*}
    [[ " ${crates[*]-} " == *" $c "* ]] || crates+=("$c")
done
started=$(date +%s)
for c in "${crates[@]}"; do
    echo "fuzz.sh: building $c/fuzz ($toolchain)"
    (cd "$root/$c" && "${fuzz[@]}" build --target-dir "$target_dir")
done
built=$(date +%s)
bin_dir="$target_dir/$(rustc -vV | sed -n 's/^host: //p')/release"

failed=()
summary=()
for t in "${selected[@]}"; do
    c=${t%%:*}
    name=${t#*:}
    corpus="$root/$c/fuzz/corpus/$name"
    scratch="$work_dir/$name"
    mkdir -p "$scratch"
    log="$work_dir/$name.log"
    echo "fuzz.sh: $t for ${seconds}s from $(find "$corpus" -type f | wc -l) seed(s)"
    set +e
    # The binary built above, run as `cargo fuzz run` would, without a second freshness check
    # (which rebuilds if a source changed meanwhile).
    mkdir -p "$root/$c/fuzz/artifacts/$name"
    "$bin_dir/$name" -artifact_prefix="$root/$c/fuzz/artifacts/$name/" -max_total_time="$seconds" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$scratch" "$corpus" >"$log" 2>&1
    rc=$?
    set -e
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
    if [[ $rc -eq 0 ]]; then
        summary+=("$(printf '%-28s ok     %10s runs' "$t" "${runs:-?}")")
    else
        summary+=("$(printf '%-28s CRASH  see %s' "$t" "$log")")
        failed+=("$t")
        grep -E 'panicked|ERROR|SUMMARY|artifact|Test unit written' "$log" | head -20 >&2 || true
    fi
done
finished=$(date +%s)

echo
echo "fuzz.sh: ${#selected[@]} target(s), ${seconds}s each; build $((built - started))s, total $((finished - started))s"
printf '  %s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz.sh: crashed: ${failed[*]}" >&2
    exit 1
fi
