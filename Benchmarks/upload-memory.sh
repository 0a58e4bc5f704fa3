#!/usr/bin/env bash
# Measures the broker's peak memory while it receives one large upload through POST /v1/transfers.
#
#   Benchmarks/upload-memory.sh [SIZE_MIB]        (default 2048, DESIGN's streaming target)
#
# Builds airlock in release mode (or uses $AIRLOCK_BIN), starts it on a free loopback port with a temporary
# data directory, uploads SIZE_MIB of random bytes with curl (streamed from a file, Content-Length set), and
# prints idle RSS, peak RSS (VmHWM) and their difference. The server is stopped by PID at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

size_mib=${1:-2048}
if [ -z "${AIRLOCK_BIN:-}" ]; then
    swift build -c release --product airlock >&2
    AIRLOCK_BIN=$(swift build -c release --show-bin-path)/airlock
fi
work=$(mktemp -d)
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
limit=$(( (size_mib + 64) * 1024 * 1024 ))
# libclamav scans files below 2 GiB only: larger uploads are received, hashed and encrypted into the quarantine as
# unscannable (set BENCH_SCANNER_MAX_FILE_SIZE to choose; the ceiling is 2147483647).
scan_limit=$(( limit < 2147483647 ? limit : 2147483647 ))
export AIRLOCK_HTTP_HOST=127.0.0.1 AIRLOCK_HTTP_PORT=$port
export AIRLOCK_STORAGE_DATA_DIRECTORY=$work/var AIRLOCK_STORAGE_QUARANTINE_DIRECTORY=$work/Quarantine
export AIRLOCK_SCANNER_SIGNATURE_DIRECTORIES=$PWD/Config/signatures
# BENCH_SCANNER_MAX_FILE_SIZE below the upload size measures receiving, hashing and quarantine encryption without the scan.
export AIRLOCK_LIMITS_MAX_UPLOAD_BYTES=$limit AIRLOCK_SCANNER_MAX_SCAN_SIZE=$limit
export AIRLOCK_SCANNER_MAX_FILE_SIZE=${BENCH_SCANNER_MAX_FILE_SIZE:-$scan_limit}
export AIRLOCK_LOG_LEVEL=error

echo "generating ${size_mib} MiB of random bytes..." >&2
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/upload.bin"

"$AIRLOCK_BIN" serve > "$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$port/readyz" > /dev/null 2>&1 && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.1
done

rss_kib() { awk -v key="$1:" '$1 == key { print $2 }' "/proc/$server_pid/status"; }
idle=$(rss_kib VmRSS)
idle_anon=$(rss_kib RssAnon)
# Sample anonymous (heap) and file-backed (mapped file pages, reclaimable) RSS while the upload runs.
(
    max_anon=0 max_file=0
    while kill -0 "$server_pid" 2>/dev/null && [ ! -e "$work/done" ]; do
        anon=$(rss_kib RssAnon); file=$(rss_kib RssFile)
        [ "${anon:-0}" -gt "$max_anon" ] && max_anon=$anon
        [ "${file:-0}" -gt "$max_file" ] && max_file=$file
        echo "$max_anon $max_file" > "$work/samples"
        sleep 0.2
    done
) &
sampler_pid=$!
started=$(date +%s.%N)
status=$(curl -s --max-time 900 -o "$work/response.json" -w '%{http_code}' -X POST -T "$work/upload.bin" \
    -H "Authorization: Bearer dev-api-key-change-me" -H "Content-Type: application/octet-stream" \
    "http://127.0.0.1:$port/v1/transfers?sender=alice@example.org&recipient=bob@example.org&filename=big.bin")
finished=$(date +%s.%N)
peak=$(rss_kib VmHWM)
touch "$work/done"
wait "$sampler_pid" 2>/dev/null || true
read -r max_anon max_file < "$work/samples"

verdict=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d.get("verdict"), d.get("reason") or "")' "$work/response.json" 2>/dev/null || echo "?")
seconds=$(python3 -c "print(f'{$finished - $started:.1f}')")
mb() { echo "scale=1; $1 / 1024" | bc; }
printf '| upload | status | verdict | time | idle RSS | peak RSS (VmHWM) | peak above idle | peak heap (RssAnon) above idle | peak mapped file pages (RssFile) |\n'
printf '| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n'
printf '| %s MiB | %s | %s | %s s | %s MB | %s MB | %s MB | %s MB | %s MB |\n' "$size_mib" "$status" "$verdict" "$seconds" \
    "$(mb "$idle")" "$(mb "$peak")" "$(mb "$((peak - idle))")" "$(mb "$((max_anon - idle_anon))")" "$(mb "$max_file")"
