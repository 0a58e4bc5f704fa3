#!/usr/bin/env bash
# Scanner: libclamav through `airlock scan` against `clamscan`, same files, same signatures, same limits, on one
# core and on all cores.
#
#   Benchmarks/scanner.sh [SIZE_MIB] [FILES]        (defaults 256 and 10000: one SIZE_MIB random file, FILES × 4 KiB)
#
# One core: both pinned with taskset to CPU 0 (`airlock scan` with one worker). All cores: `airlock scan` with one
# worker per core; clamscan is single-threaded, so the files are split between one clamscan per core.
# `airlock scan` also hashes each file and detects its type, which clamscan does not.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

size_mib=${1:-256}
files=${2:-10000}
need_packages clamav
airlock=$(airlock_binary)
cores=$(nproc)
limit=$(( (size_mib + 64) * 1024 * 1024 ))
export AIRLOCK_SCANNER_SIGNATURE_DIRECTORIES=$bench_root/Config/signatures AIRLOCK_SCANNER_MAX_FILE_SIZE=$limit
export AIRLOCK_SCANNER_MAX_SCAN_SIZE=$limit AIRLOCK_LOG_LEVEL=error

echo "generating one ${size_mib} MiB file and $files files of 4 KiB..." >&2
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$bench_work/large.bin"
mkdir -p "$bench_work/small"
python3 - "$bench_work/small" "$files" <<'PY'
import os, sys
directory, count = sys.argv[1], int(sys.argv[2])
for index in range(count):
    with open(os.path.join(directory, f"{index:05d}.bin"), "wb") as f:
        f.write(os.urandom(4096))
PY
cat "$bench_work/large.bin" "$bench_work"/small/* > /dev/null

clam_options=(--no-summary -d Config/signatures --max-filesize="$limit" --max-scansize="$limit" --alert-exceeds-max)

# time_of COMMAND...: seconds the command took (its output discarded; a non-zero exit other than 1 aborts).
time_of() {
    local started status=0
    started=$(now)
    "$@" > /dev/null 2>&1 || status=$?
    if [ "$status" -gt 1 ]; then
        echo "failed ($status): $*" >&2
        exit 1
    fi
    elapsed "$started"
}

# Splits the small files into one list per core.
ls "$bench_work"/small/* | split -n "r/$cores" - "$bench_work/part."

clamscan_parallel() {
    local pids=()
    for part in "$bench_work"/part.*; do
        clamscan "${clam_options[@]}" -f "$part" > /dev/null 2>&1 &
        pids+=($!)
    done
    local status=0
    for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
    [ "$status" -le 1 ]
}

echo "measuring..." >&2
large_clam_1=$(time_of taskset -c 0 clamscan "${clam_options[@]}" "$bench_work/large.bin")
large_air_1=$(AIRLOCK_SCANNER_WORKERS=1 time_of taskset -c 0 "$airlock" scan --no-summary "$bench_work/large.bin")
small_clam_1=$(time_of taskset -c 0 clamscan "${clam_options[@]}" -r "$bench_work/small")
small_air_1=$(AIRLOCK_SCANNER_WORKERS=1 time_of taskset -c 0 "$airlock" scan --no-summary "$bench_work/small")
small_clam_n=$(time_of clamscan_parallel)
small_air_n=$(AIRLOCK_SCANNER_WORKERS=$cores time_of "$airlock" scan --no-summary "$bench_work/small")

mibs() { python3 -c "import sys; print(f'{$size_mib / float(sys.argv[1]):.0f}')" "$1"; }
rate() { python3 -c "import sys; print(f'{$files / float(sys.argv[1]):.0f}')" "$1"; }
echo
echo "machine: $(machine_line); $(clamscan --version | cut -d/ -f1); bundled signatures"
echo
echo "| what | clamscan | airlock scan | airlock / clamscan (speed) |"
echo "| --- | --- | --- | --- |"
echo "| ${size_mib} MiB random, 1 core | $large_clam_1 s ($(mibs "$large_clam_1") MiB/s) | $large_air_1 s ($(mibs "$large_air_1") MiB/s) | $(ratio "$large_clam_1" "$large_air_1")× |"
echo "| $files × 4 KiB, 1 core | $small_clam_1 s ($(rate "$small_clam_1") files/s) | $small_air_1 s ($(rate "$small_air_1") files/s) | $(ratio "$small_clam_1" "$small_air_1")× |"
echo "| $files × 4 KiB, $cores cores | $small_clam_n s ($(rate "$small_clam_n") files/s, $cores processes) | $small_air_n s ($(rate "$small_air_n") files/s, $cores workers) | $(ratio "$small_clam_n" "$small_air_n")× |"
echo
echo "Times include start-up (engine load: a few ms with the bundled signatures) and, for airlock scan, SHA-256 and libmagic."
