#!/usr/bin/env bash
# Signature database scale: a synthetic database of COUNT signatures (Benchmarks/generate-signatures.py: hash and
# body signatures of random content, the size of ClamAV's official database, which cannot be downloaded here):
# engine load time and memory, scan throughput, canaries detected; `airlock scan` and `airlock serve` against
# clamscan.
#
#   Benchmarks/signature-scale.sh [COUNT] [SIZE_MIB]        (defaults 1000000 and 64)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

count=${1:-1000000}
size_mib=${2:-64}
need_packages clamav curl
airlock=$(airlock_binary)
signatures=$bench_work/signatures
echo "generating $count signatures..." >&2
python3 "$bench_root/Benchmarks/generate-signatures.py" "$signatures" "$count" >&2
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$bench_work/large.bin"
limit=$(( (size_mib + 64) * 1024 * 1024 ))
export AIRLOCK_SCANNER_SIGNATURE_DIRECTORIES=$signatures AIRLOCK_SCANNER_MAX_FILE_SIZE=$limit
export AIRLOCK_SCANNER_MAX_SCAN_SIZE=$limit AIRLOCK_SCANNER_WORKERS=1 AIRLOCK_LOG_LEVEL=error

# measure NAME COMMAND...: "seconds peak-MB" of the command (exit 1, "found", is expected for the canaries).
measure() {
    local name=$1
    shift
    local status=0
    /usr/bin/time -f "%e %M" -o "$bench_work/$name.time" "$@" > "$bench_work/$name.out" 2>&1 || status=$?
    if [ "$status" -gt 1 ]; then
        echo "failed ($status): $*" >&2
        cat "$bench_work/$name.out" >&2
        exit 1
    fi
    # GNU time puts "Command exited with non-zero status 1" first when the command found something.
    tail -1 "$bench_work/$name.time" | awk '{ printf "%s %.0f\n", $1, $2 / 1024 }'
}

clam=(clamscan --no-summary -d "$signatures" --max-filesize="$limit" --max-scansize="$limit")
read -r clam_load clam_load_mb < <(measure clam-canaries "${clam[@]}" "$signatures/canaries")
read -r clam_scan clam_scan_mb < <(measure clam-large "${clam[@]}" "$bench_work/large.bin")
read -r air_load air_load_mb < <(measure airlock-canaries "$airlock" scan --no-summary "$signatures/canaries")
read -r air_scan air_scan_mb < <(measure airlock-large "$airlock" scan --no-summary "$bench_work/large.bin")
clam_found=$(grep -c "FOUND" "$bench_work/clam-canaries.out" || true)
air_found=$(grep -c "FOUND" "$bench_work/airlock-canaries.out" || true)

# The server: time from start to ready, and its resident memory once ready.
started=$(now)
start_airlock "$bench_work/airlock" AIRLOCK_SCANNER_SIGNATURE_DIRECTORIES="$signatures"
ready=$(elapsed "$started")
server_mb=$(( $(rss_kib "$airlock_pid" VmRSS) / 1024 ))
stop_airlock

throughput() { python3 -c "import sys; d=float(sys.argv[1])-float(sys.argv[2]); print(f'{$size_mib / d:.0f}' if d > 0 else '?')" "$1" "$2"; }
echo
echo "machine: $(machine_line); $(clamscan --version | cut -d/ -f1); $count synthetic signatures (80% hash, 20% body)"
echo
echo "| what | clamscan | airlock |"
echo "| --- | --- | --- |"
echo "| load + scan the 2 canaries (s) | $clam_load | $air_load |"
echo "| canaries detected | $clam_found of 2 | $air_found of 2 |"
echo "| peak RSS, load + canaries (MB) | $clam_load_mb | $air_load_mb |"
echo "| load + scan ${size_mib} MiB random (s) | $clam_scan | $air_scan |"
echo "| scan throughput, load time subtracted (MiB/s) | $(throughput "$clam_scan" "$clam_load") | $(throughput "$air_scan" "$air_load") |"
echo "| peak RSS with the ${size_mib} MiB scan (MB) | $clam_scan_mb | $air_scan_mb |"
echo "| airlock serve: start to ready (s), RSS when ready (MB) | | $ready s, $server_mb MB |"
