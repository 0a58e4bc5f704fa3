#!/usr/bin/env bash
# Runs every benchmark once, in release mode, and writes their tables to Benchmarks/results/DATE.md (printing them
# too). Takes about 15 minutes on 2 cores. Run it on an otherwise idle machine: other load skews every figure.
#
#   Benchmarks/run-all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product airlock >&2
swift build -c release --product airlock-token-benchmark >&2
swift build -c release --product airlock-cost-benchmark >&2
export AIRLOCK_BIN=$PWD/.build/release/airlock AIRLOCK_COST_BIN=$PWD/.build/release/airlock-cost-benchmark
mkdir -p Benchmarks/results
out=Benchmarks/results/$(date -u +%Y-%m-%d).md
{
    echo "# Benchmark run $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo
    echo "Load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
    for step in "scanner.sh" "upload-large.sh" "small-uploads.sh" "cluster.sh" "upload-memory.sh" "upload-repeat.sh" \
        "token-verification" "signature-scale.sh"; do
        echo
        echo "## $step"
        if [ "$step" = token-verification ]; then
            .build/release/airlock-token-benchmark 3
        else
            "Benchmarks/$step" 2> /dev/null || echo "**$step failed (exit $?): run it alone to see why.**"
        fi
    done
} | tee "$out"
echo "written to $out" >&2
