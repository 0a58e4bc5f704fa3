#!/usr/bin/env bash
# Repeat upload: the same SIZE_MIB of random bytes uploaded twice; the second hand-off finds the verdict in the
# cache (same SHA-256, same signatures) and skips the scan (DESIGN §7: ≥ 5× faster than the first).
#
#   Benchmarks/upload-repeat.sh [SIZE_MIB] [ROUNDS]        (defaults 64 and 3: fresh content each round)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

size_mib=${1:-64}
rounds=${2:-3}
need_packages curl
airlock_binary > /dev/null
limit=$(( (size_mib + 64) * 1024 * 1024 ))
file=$bench_work/upload.bin
start_airlock "$bench_work/airlock" AIRLOCK_LIMITS_MAX_UPLOAD_BYTES="$limit" AIRLOCK_SCANNER_MAX_FILE_SIZE="$limit" \
    AIRLOCK_SCANNER_MAX_SCAN_SIZE="$limit"

upload() {
    local started status
    started=$(now)
    status=$(curl -s --max-time 600 -o "$bench_work/response.json" -w '%{http_code}' -X POST -T "$file" \
        -H "Authorization: Bearer $api_key" -H "Content-Type: application/octet-stream" \
        "$airlock_url/v1/transfers?sender=alice@example.org&recipient=bob@example.org&filename=$1.bin")
    [ "$status" = 201 ] || { echo "HTTP $status" >&2; cat "$bench_work/response.json" >&2; exit 1; }
    elapsed "$started"
}

echo
echo "machine: $(machine_line); ${size_mib} MiB random, page cache warm"
echo
echo "| round | first upload (s) | same bytes again (s) | speed-up |"
echo "| --- | --- | --- | --- |"
for round in $(seq 1 "$rounds"); do
    head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$file"
    first=$(upload "first$round")
    again=$(upload "again$round")
    echo "| $round | $first | $again | $(ratio "$first" "$again")× |"
done
echo
echo "target: ≥ 5×"
