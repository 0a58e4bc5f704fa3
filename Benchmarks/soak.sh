#!/usr/bin/env bash
# Soak: 10 minutes of mixed traffic at a fixed rate (uploads of 8 KiB–2 MiB with some EICAR, a download with its
# SHA-256 checked and a new token for every clean upload, `airlock quarantine rescan --all` every minute) against
# one server; then `airlock doctor` and an empty staging directory. Prints latencies, errors and the server's
# memory over time; exits 1 on any error.
#
#   Benchmarks/soak.sh [SECONDS] [UPLOADS_PER_SECOND] [RESCAN_EVERY_SECONDS]        (defaults 600, 10, 60)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

seconds=${1:-600}
rate=${2:-10}
rescan=${3:-60}
airlock=$(airlock_binary)
export AIRLOCK_STORAGE_DATA_DIRECTORY=$bench_work/airlock/var AIRLOCK_STORAGE_QUARANTINE_DIRECTORY=$bench_work/airlock/Quarantine
export AIRLOCK_SCANNER_SIGNATURE_DIRECTORIES=$bench_root/Config/signatures
export AIRLOCK_SERVERS="{\"bench\": {\"apiKey\": \"$api_key\"}}" AIRLOCK_LOG_LEVEL=error
start_airlock "$bench_work/airlock"
echo "soaking for $seconds s at $rate uploads/s against $airlock_url (PID $airlock_pid)..." >&2
status=0
python3 "$bench_root/Benchmarks/soak.py" "$airlock_url" "$airlock_pid" "$api_key" "$airlock" "$seconds" "$rate" "$rescan" || status=$?
stop_airlock
doctor=0
"$airlock" doctor > "$bench_work/doctor.txt" 2>&1 || doctor=$?
staging=$(find "$AIRLOCK_STORAGE_DATA_DIRECTORY/staging" -type f 2>/dev/null | wc -l)
transfers=$("$airlock" transfers list --json --limit 1000000 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' || echo "?")
echo
echo "after the soak: airlock doctor exit $doctor; $staging staging files; $transfers transfers in the ledger"
[ "$doctor" -eq 0 ] || { cat "$bench_work/doctor.txt"; status=1; }
[ "$staging" -eq 0 ] || status=1
echo "machine: $(machine_line)"
exit "$status"
