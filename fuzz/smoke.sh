#!/usr/bin/env bash
# Runs every fuzz target for a short, fixed time (BNC_FUZZ_SECONDS, default 30) from its seed
# corpus (fuzz/seeds/<target>, and the example and golden models for `.nn` text), in a scratch
# copy so the repository is not modified. Fails if any target finds a crash, a leak, a
# timeout or an out-of-memory; the input is left in fuzz/artifacts/<target>/.
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`); without either it
# says so and skips. Builds with debug assertions, so integer overflows count as crashes.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${BNC_FUZZ_SECONDS:-30}"
# A fixed libFuzzer seed makes a CI run repeatable: the same binary explores the same inputs
# in the same order (how far it gets depends on the machine). BNC_FUZZ_RUN_SEED=0 is random.
seed="${BNC_FUZZ_RUN_SEED:-1}"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz/smoke.sh: skipped: no nightly toolchain (rustup toolchain install nightly)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    # CI installs it and sets BNC_FUZZ_REQUIRED=1, so there a missing cargo-fuzz fails.
    echo "fuzz/smoke.sh: skipped: cargo-fuzz is missing (cargo install cargo-fuzz --locked)"
    [ "${BNC_FUZZ_REQUIRED:-0}" = 1 ] && exit 1
    exit 0
fi

flags=(-O --debug-assertions)
start=$(date +%s)
cargo +nightly fuzz build "${flags[@]}"
echo "fuzz/smoke.sh: built the targets in $(($(date +%s) - start)) s"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo +nightly fuzz list); do
    corpus="$scratch/$target"
    mkdir -p "$corpus"
    if [ -d "seeds/$target" ]; then
        cp seeds/"$target"/* "$corpus"/
    fi
    if [ "$target" = nn_text ]; then
        cp ../examples/*.nn ../tests/golden/*.nn "$corpus"/
    fi
    echo "fuzz/smoke.sh: $target for $seconds s from $(ls "$corpus" | wc -l) seed(s)"
    # -timeout: one input may take at most 30 s; -rss_limit_mb: and 2 GiB.
    log="$scratch/$target.log"
    status=0
    cargo +nightly fuzz run "${flags[@]}" "$target" "$corpus" -- \
        -seed="$seed" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    grep -E '^(Done|stat::peak_rss_mb)' "$log" || true
    if [ "$status" -ne 0 ]; then
        grep -A2 -m1 "panicked at" "$log" >&2 || true
        grep -E "^(SUMMARY|Reproduce|[[:space:]]+cargo fuzz run)" "$log" >&2 || true
        echo "fuzz/smoke.sh: $target FAILED; the input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
done
echo "fuzz/smoke.sh: every target ran clean"
