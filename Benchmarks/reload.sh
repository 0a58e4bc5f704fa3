#!/usr/bin/env bash
# Live signature reload (issue 15) with a large database: upload latency (8 KiB, 4 clients) before and during a
# reload, peak resident memory of the server and its scanner processes, and how long the reload takes, for
# scanner.reloadMode concurrent and blocking. The database is synthetic (Benchmarks/generate-signatures.py), the
# size of ClamAV's official one, which cannot be downloaded here.
#
#   Benchmarks/reload.sh [COUNT]        (default 1000000)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

count=${1:-1000000}
need_packages curl
airlock=$(airlock_binary)
signatures=$bench_work/signatures
echo "generating $count signatures..." >&2
python3 "$bench_root/Benchmarks/generate-signatures.py" "$signatures" "$count" >&2
rm -rf "$signatures/canaries"

echo
echo "machine: $(machine_line); $count synthetic signatures; 8 KiB uploads from 4 clients"
echo
echo "| reloadMode | reload (s) | uploads before: p50 / p99 (ms) | during: p50 / p99 / max (ms) | failed uploads | peak RSS before / during (MB) |"
echo "| --- | --- | --- | --- | --- | --- |"
for mode in concurrent blocking; do
    rm -f "$signatures/reload-bench.ndb"
    start_airlock "$bench_work/$mode" AIRLOCK_SCANNER_SIGNATURE_DIRECTORIES="$signatures" AIRLOCK_SCANNER_RELOAD_MODE="$mode" \
        AIRLOCK_SCANNER_RELOAD_CHECK_SECONDS=0 AIRLOCK_LEDGER_GROUP_COMMIT_MICROSECONDS=0
    result=$(AIRLOCK_SCANNER_SIGNATURE_DIRECTORIES="$signatures" python3 "$bench_root/Benchmarks/reload-probe.py" \
        "$airlock_url" "$api_key" "$airlock_pid" "$signatures" "$airlock" "$bench_work/$mode")
    stop_airlock
    echo "$result" > "$bench_work/$mode.json"
    python3 - "$mode" "$bench_work/$mode.json" <<'PY'
import json, sys
mode, path = sys.argv[1], sys.argv[2]
r = json.load(open(path))
b, d, a = r["before"], r["during"], r["after"]
failed = b["failed"] + d["failed"] + a["failed"]
print(f"| {mode} | {r['reload_seconds']:.1f} (wall {r['reload_wall_seconds']}) | {b['p50_ms']} / {b['p99_ms']} ({b['uploads']} uploads) "
      f"| {d['p50_ms']} / {d['p99_ms']} / {d['max_ms']} ({d['uploads']} uploads) | {failed} "
      f"| {r['peak_rss_mb']['before']} / {r['peak_rss_mb']['during']} |")
if r["reload_exit"] != 0:
    print("reload failed: " + r["reload_output"], file=sys.stderr)
PY
done
