#!/usr/bin/env bash
# Builds the libFuzzer targets in Fuzz/ and runs each for a bounded time (issue 7, DESIGN §8).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 seconds, every target)
#
# Each target starts from a fresh copy of its committed seed corpus (Fuzz/Corpus/<Target>), so runs never dirty the
# repository; new corpus entries and crash reproducers stay under Fuzz/.build/fuzz-runs/<time>/. A target that
# crashes (an invariant failed, a Swift trap, an AddressSanitizer report, a timeout or running out of memory) makes
# the script exit non-zero; its reproducer is printed, to be fixed and kept as a regression test in Tests/.
# FUZZ_JOBS=N runs N targets at once (default 1). FUZZ_SANITIZERS="fuzzer" builds without AddressSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
all_targets=(FuzzDownloadToken FuzzXEP0363Path FuzzConfiguration FuzzFilename)
targets=("${all_targets[@]}")
if [ $# -gt 0 ]; then targets=("$@"); fi
sanitizers=${FUZZ_SANITIZERS:-fuzzer address}
jobs=${FUZZ_JOBS:-1}

sanitize_flags=()
for sanitizer in $sanitizers; do sanitize_flags+=(--sanitize "$sanitizer"); done
echo "== building Fuzz/ with ${sanitizers// /, } sanitizers"
swift build -c debug --package-path Fuzz "${sanitize_flags[@]}" 2>&1 | grep -v "Cannot export local symbol" | tail -3
bin=$(swift build -c debug --package-path Fuzz "${sanitize_flags[@]}" --show-bin-path)

run_dir="Fuzz/.build/fuzz-runs/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$run_dir"
echo "== running ${targets[*]} for ${seconds} s each; work in $run_dir"

run_target() {
    local target=$1 dir="$run_dir/$1"
    mkdir -p "$dir/artifacts"
    cp -R "Fuzz/Corpus/$target" "$dir/corpus"
    local seeds
    seeds=$(find "$dir/corpus" -type f | wc -l)
    # SWIFT_BACKTRACE off: libFuzzer reports the crash itself, and the backtracer would slow every crash down.
    # -timeout: one input running over 10 s is a hang; -rss_limit_mb: more than 2 GiB is a finding too.
    set +e
    SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=0 "$bin/$target" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 \
        -artifact_prefix="$dir/artifacts/" "$dir/corpus" >"$dir/log.txt" 2>&1
    local status=$?
    set -e
    local executions rate corpus
    executions=$(grep -E '^stat::number_of_executed_units:' "$dir/log.txt" | awk '{print $2}')
    rate=$(grep -E '^stat::average_exec_per_sec:' "$dir/log.txt" | awk '{print $2}')
    corpus=$(find "$dir/corpus" -type f | wc -l)
    local outcome="ok"
    local crashes
    crashes=$(find "$dir/artifacts" -type f | wc -l)
    if [ "$status" -ne 0 ] || [ "$crashes" -ne 0 ]; then
        outcome="FAILED (exit $status): $(grep -m1 -E 'invariant violated|Fatal error|ERROR: (AddressSanitizer|libFuzzer)|SUMMARY' "$dir/log.txt" || echo 'see log')"
    fi
    printf '%-20s %10s execs %8s exec/s  corpus %4s -> %4s  %s\n' "$target" "${executions:-?}" "${rate:-?}" "$seeds" "$corpus" "$outcome" \
        | tee "$dir/summary.txt"
    if [ "$outcome" != "ok" ]; then
        find "$dir/artifacts" -type f -exec echo "   reproducer: {} (run: $bin/$target {})" \;
        echo "   log: $dir/log.txt"
        return 1
    fi
}

failed=0
pids=()
for target in "${targets[@]}"; do
    if [ ! -d "Fuzz/Corpus/$target" ]; then
        echo "no such target: $target (targets: ${all_targets[*]})" >&2
        exit 2
    fi
    run_target "$target" &
    pids+=($!)
    if [ "${#pids[@]}" -ge "$jobs" ]; then
        wait "${pids[0]}" || failed=1
        pids=("${pids[@]:1}")
    fi
done
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done

if [ "$failed" -ne 0 ]; then
    echo "== a fuzz target failed"
    exit 1
fi
echo "== every target ran ${seconds} s without a finding"
