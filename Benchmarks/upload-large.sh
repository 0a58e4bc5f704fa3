#!/usr/bin/env bash
# End-to-end large upload: POST /v1/transfers of SIZE_MIB random bytes, against `clamscan` plus
# `openssl dgst -sha256` run one after the other on the same file with the same signatures and limits
# (DESIGN §7: Airlock ≤ 1.0× that sum).
#
#   Benchmarks/upload-large.sh [SIZE_MIB] [RUNS]        (defaults 256 and 3; the best run of each is reported)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

size_mib=${1:-256}
runs=${2:-3}
need_packages clamav openssl curl
airlock_binary > /dev/null
limit=$(( (size_mib + 64) * 1024 * 1024 ))
file=$bench_work/upload.bin
echo "generating ${size_mib} MiB of random bytes..." >&2
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$file"

best() { sort -n | head -1; }

reference=()
for _ in $(seq 1 "$runs"); do
    cat "$file" > /dev/null
    started=$(now)
    # Exit 1 means "found" (random bytes sometimes trip a heuristic): still a complete scan.
    clamscan --no-summary -d Config/signatures --max-filesize="$limit" --max-scansize="$limit" --alert-exceeds-max "$file" > /dev/null \
        || [ $? -eq 1 ]
    scanned=$(now)
    openssl dgst -sha256 "$file" > /dev/null
    finished=$(now)
    reference+=("$(elapsed "$started" "$scanned") $(elapsed "$scanned" "$finished") $(elapsed "$started" "$finished")")
done
read -r clam_s sha_s reference_s < <(printf '%s\n' "${reference[@]}" | sort -k3 -n | head -1)

start_airlock "$bench_work/airlock" AIRLOCK_LIMITS_MAX_UPLOAD_BYTES="$limit" AIRLOCK_SCANNER_MAX_FILE_SIZE="$limit" \
    AIRLOCK_SCANNER_MAX_SCAN_SIZE="$((limit * 4))"
times=()
for run in $(seq 1 "$runs"); do
    # Distinct content every run, so the verdict cache never answers: the first 16 bytes change.
    head -c 16 /dev/urandom | dd of="$file" bs=16 count=1 conv=notrunc status=none
    cat "$file" > /dev/null
    started=$(now)
    status=$(curl -s --max-time 600 -o "$bench_work/response.json" -w '%{http_code}' -X POST -T "$file" \
        -H "Authorization: Bearer $api_key" -H "Content-Type: application/octet-stream" \
        "$airlock_url/v1/transfers?sender=alice@example.org&recipient=bob@example.org&filename=run$run.bin")
    finished=$(now)
    verdict=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("verdict"))' "$bench_work/response.json" 2>/dev/null || echo "?")
    if [ "$status" != 201 ]; then
        echo "run $run: HTTP $status, verdict $verdict" >&2
        cat "$bench_work/response.json" >&2
    fi
    times+=("$(elapsed "$started" "$finished") $status $verdict")
done
stop_airlock
read -r airlock_s status verdict < <(printf '%s\n' "${times[@]}" | sort -n | head -1)

echo
echo "machine: $(machine_line); best of $runs runs; ${size_mib} MiB random, page cache warm"
echo
echo "| what | seconds | MiB/s |"
echo "| --- | --- | --- |"
mibs() { python3 -c "import sys; print(f'{$size_mib / float(sys.argv[1]):.0f}')" "$1"; }
echo "| clamscan (same signatures, limits, --alert-exceeds-max) | $clam_s | $(mibs "$clam_s") |"
echo "| openssl dgst -sha256 | $sha_s | $(mibs "$sha_s") |"
echo "| reference: clamscan + openssl, one after the other | $reference_s | $(mibs "$reference_s") |"
echo "| Airlock POST /v1/transfers (HTTP $status, $verdict) | $airlock_s | $(mibs "$airlock_s") |"
echo
echo "Airlock / reference: $(ratio "$airlock_s" "$reference_s")× (target ≤ 1.0×)"
