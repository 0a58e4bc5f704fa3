#!/usr/bin/env bash
# Crash safety (DESIGN §8): hand off files concurrently, SIGKILL the server mid-flight, restart it, and check
# that every transfer acknowledged with 201 is intact, nothing half-written is visible and staging is empty.
#
#   scripts/crash-safety.sh [ROUNDS]        (default 10)
#
# Environment:
#   AIRLOCK_BIN        the airlock binary (default .build/release/airlock, else .build/debug/airlock); nothing is built
#   CRASH_HANDOFFS     concurrent hand-offs per round (default 100)
#   CRASH_SERVER_LIMIT seconds any one server may live before it is killed (default 600)
#   CRASH_POWER_CUT    1: simulate a power cut instead of a kill (issue 18; needs root, loop devices, mkfs.ext4)
#
# Each round: start `airlock serve` on 127.0.0.1 (free port) with a fresh data directory; 100 clients hand off
# distinct files (every 7th is EICAR, assembled at run time from two halves); after a random number of 201s
# (10 to 60) the server gets SIGKILL while the other hand-offs are in flight; restart; then `airlock doctor`
# must exit 0, every 201 transfer must be downloadable (clean) with the same SHA-256 or still quarantined
# (infected), ledger and disk must agree both ways, and staging must be empty.
# Prints one line per round and a table at the end; exits 1 if any round failed.
#
# With CRASH_POWER_CUT=1 the data lives on a fresh ext4 filesystem in a loop-mounted image, and what reaches that
# image is only what a sync forced there: the kernel's periodic writeback is switched off for the run
# (vm.dirty_writeback_centisecs = 0, long dirty_expire, high dirty ratios; restored at the end) and ext4 commits its
# journal only when asked (commit=600). The cut: the server is frozen (SIGSTOP) after the random number of 201s and
# the image is copied as it stands. Everything in the page cache is lost from the copy, as from a disk at a power
# cut. The copy is mounted (ext4 replays its journal), the server restarted on it, and the same checks run, except
# that bytes of hand-offs that were never acknowledged may remain without a row (they were synced before their
# commit was: the durability order), and are counted.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
rounds=${1:-10}
handoffs=${CRASH_HANDOFFS:-100}
server_limit=${CRASH_SERVER_LIMIT:-600}
power=${CRASH_POWER_CUT:-0}

bin=${AIRLOCK_BIN:-}
if [[ -z "$bin" ]]; then
    if [[ -x .build/release/airlock ]]; then bin=.build/release/airlock; else bin=.build/debug/airlock; fi
fi
if [[ ! -x "$bin" ]]; then
    echo "crash-safety: no airlock binary at $bin: build one (swift build -c release) or set AIRLOCK_BIN" >&2
    exit 2
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
command -v python3 >/dev/null || { echo "crash-safety: needs python3" >&2; exit 2; }

if [[ "$power" == 1 ]]; then
    for tool in losetup mkfs.ext4 mount umount; do
        command -v "$tool" >/dev/null || { echo "crash-safety: CRASH_POWER_CUT=1 needs $tool" >&2; exit 2; }
    done
    [[ $(id -u) -eq 0 ]] || { echo "crash-safety: CRASH_POWER_CUT=1 needs root (loop devices, mount, sysctl)" >&2; exit 2; }
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/airlock-crash-XXXXXX")
server_pid=""
watchdog_pid=""
loops=()
mounts=()
saved_sysctls=()

stop_server() {
    if [[ -n "$server_pid" ]]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
    if [[ -n "$watchdog_pid" ]]; then
        kill "$watchdog_pid" 2>/dev/null || true
        wait "$watchdog_pid" 2>/dev/null || true
        watchdog_pid=""
    fi
}

# Unmounts and detaches what a power-cut round set up.
release_disks() {
    local index
    for ((index = ${#mounts[@]} - 1; index >= 0; index--)); do umount "${mounts[$index]}" 2>/dev/null || true; done
    for loop in ${loops[@]+"${loops[@]}"}; do losetup -d "$loop" 2>/dev/null || true; done
    mounts=()
    loops=()
}

cleanup() {
    stop_server
    release_disks
    for setting in ${saved_sysctls[@]+"${saved_sysctls[@]}"}; do sysctl -q -w "$setting" >/dev/null 2>&1 || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts the server on the round's directories; sets server_pid and port. Every server is killed by PID after
# $server_limit seconds at most.
start_server() {
    local dir=$1 log=$2
    AIRLOCK_HTTP_HOST=127.0.0.1 AIRLOCK_HTTP_PORT=0 AIRLOCK_LOG_LEVEL=notice \
        AIRLOCK_STORAGE_DATA_DIRECTORY="$dir/var" AIRLOCK_STORAGE_QUARANTINE_DIRECTORY="$dir/Quarantine" \
        AIRLOCK_SCANNER_SIGNATURE_DIRECTORIES="$root/Config/signatures" \
        "$bin" serve >/dev/null 2>"$log" </dev/null &
    server_pid=$!
    ( sleep "$server_limit"; kill -KILL "$server_pid" 2>/dev/null ) >/dev/null 2>&1 &
    watchdog_pid=$!
    port=""
    for _ in $(seq 1 600); do
        if ! kill -0 "$server_pid" 2>/dev/null; then
            echo "crash-safety: the server exited at start:" >&2
            cat "$log" >&2
            return 1
        fi
        port=$(grep -m1 "Airlock is serving" "$log" | sed -n 's/.*:\([0-9][0-9]*\).*/\1/p' || true)
        [[ -n "$port" ]] && return 0
        sleep 0.1
    done
    echo "crash-safety: the server did not announce its port within 60 s" >&2
    return 1
}

# Concurrent hand-offs; SIGKILLs the server after a random number of 201s. Writes one JSON line per hand-off.
clients=$(cat <<'PY'
import hashlib, http.client, json, os, random, signal, sys, threading, time

port, pid, count, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
# SIGKILL, or SIGSTOP for a power cut (the script copies the disk while the server is frozen).
stop = signal.SIGSTOP if len(sys.argv) > 5 and sys.argv[5] == "STOP" else signal.SIGKILL
kill_after = random.randint(10, 60)
eicar = ("X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + "EICAR-STANDARD-" + "ANTIVIRUS-TEST-FILE!$H+H*").encode()
lock = threading.Lock()
acked = 0
killed = False
results = []
sent = {}
start = threading.Barrier(count)

def handoff(index):
    global acked, killed
    if index % 7 == 3:
        content = eicar + b"\n" + os.urandom(16).hex().encode()
    else:
        content = os.urandom(random.randint(1_000, 1_500_000))
    digest = hashlib.sha256(content).hexdigest()
    sent[index] = digest
    record = {"index": index, "sha256": digest, "size": len(content), "eicar": index % 7 == 3}
    start.wait()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        connection.request(
            "POST",
            f"/v1/transfers?sender=alice@example.org&recipient=bob@example.org&filename=crash-{index}.bin",
            body=content,
            headers={"Authorization": "Bearer dev-api-key-change-me", "Content-Type": "application/octet-stream"},
        )
        response = connection.getresponse()
        body = response.read()
        record["status"] = response.status
        if response.status == 201:
            record["transfer"] = json.loads(body)
    except Exception as error:  # the server was killed under this request
        record["status"] = None
        record["error"] = type(error).__name__
    with lock:
        results.append(record)
        if record["status"] == 201:
            acked += 1
            if acked >= kill_after and not killed:
                killed = True
                os.kill(pid, stop)

threads = [threading.Thread(target=handoff, args=(index,), daemon=True) for index in range(count)]
for thread in threads:
    thread.start()
if stop == signal.SIGSTOP:
    # A frozen server answers nothing more: once it is stopped, the answers already sent get two seconds to be read;
    # the hand-offs still waiting count as dropped by the cut.
    for thread in threads:
        while thread.is_alive() and not killed:
            thread.join(0.1)
    deadline = time.monotonic() + 2
    for thread in threads:
        thread.join(max(0, deadline - time.monotonic()))
else:
    for thread in threads:
        thread.join()
with lock:
    if not killed:
        os.kill(pid, stop)  # every hand-off finished first: kill anyway, the check still holds
    indices = {r["index"] for r in results}
    for index in range(count):
        if index not in indices:  # still waiting on the frozen server
            results.append({"index": index, "sha256": sent.get(index, ""), "status": None, "error": "cut"})
    with open(out, "w") as handle:
        json.dump({"killAfter": kill_after, "killedMidFlight": killed, "results": results}, handle)
    os._exit(0)
PY
)

# Checks the restarted server and the disk against the clients' record; prints "acked clean infected" on success.
checker=$(cat <<'PY'
import hashlib, http.client, json, os, sqlite3, sys

port, results_file, data, quarantine = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
# After a power cut, bytes synced for a hand-off whose commit never reached the disk may remain without a row: allowed
# for content that was sent and never acknowledged (counted), never for anything else.
power_cut = len(sys.argv) > 5 and sys.argv[5] == "1"
record = json.load(open(results_file))
problems = []
auth = {"Authorization": "Bearer dev-api-key-change-me", "Content-Type": "application/json"}

def call(method, path, body=None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    return response.status, response.read()

acked = [r for r in record["results"] if r["status"] == 201]
clean = infected = 0
for r in acked:
    transfer = r["transfer"]
    if transfer["sha256"] != r["sha256"] or transfer["size"] != r["size"]:
        problems.append(f"hand-off {r['index']}: 201 reported another sha256/size than was sent")
    status, body = call("GET", f"/v1/transfers/{transfer['id']}", headers=auth)
    if status != 200:
        problems.append(f"transfer {transfer['id']} (acknowledged 201) answers {status} after the restart")
        continue
    state = json.loads(body)["state"]
    if transfer["verdict"] == "clean":
        clean += 1
        status, body = call("POST", f"/v1/transfers/{transfer['id']}/tokens", json.dumps({"recipient": "bob@example.org"}), auth)
        if status != 201:
            problems.append(f"transfer {transfer['id']}: token request answered {status}")
            continue
        url = json.loads(body)["url"]
        status, content = call("GET", url[url.index("/v1/files/"):])
        if status != 200 or hashlib.sha256(content).hexdigest() != r["sha256"]:
            problems.append(f"transfer {transfer['id']}: download answered {status}, sha256 {hashlib.sha256(content).hexdigest()[:12]}")
    else:
        infected += 1
        if not r["eicar"]:
            problems.append(f"hand-off {r['index']}: random bytes got verdict {transfer['verdict']}")
        if state != "quarantined" or not os.path.isfile(os.path.join(quarantine, transfer["id"])):
            problems.append(f"transfer {transfer['id']}: infected but state {state} / no quarantined bytes")
    if r["eicar"] and transfer["verdict"] == "clean":
        problems.append(f"hand-off {r['index']}: EICAR acknowledged clean")

# Ledger and disk agree both ways.
db = sqlite3.connect(f"file:{os.path.join(data, 'airlock.sqlite')}?mode=ro", uri=True)
rows = db.execute("SELECT id, sha256, state FROM \"transfer\"").fetchall()
stored = {sha for (_, sha, state) in rows if state in ("stored", "released")}
quarantined = {tid for (tid, _, state) in rows if state == "quarantined"}
on_disk = {}
for directory, _, files in os.walk(os.path.join(data, "files")):
    for name in files:
        on_disk[name] = os.path.join(directory, name)
for sha in stored:
    if sha not in on_disk:
        problems.append(f"ledger row for {sha[:12]} has no bytes")
unacked_sent = {r["sha256"] for r in record["results"] if r["status"] != 201}
unacked_bytes = 0
for sha, path in on_disk.items():
    if sha not in stored and power_cut and sha in unacked_sent:
        unacked_bytes += 1
    elif sha not in stored:
        problems.append(f"bytes {sha[:12]} without a ledger row")
    elif hashlib.sha256(open(path, "rb").read()).hexdigest() != sha:
        problems.append(f"bytes {sha[:12]} do not hash to their name")
quarantine_files = set(os.listdir(quarantine)) - {".gitkeep"} if os.path.isdir(quarantine) else set()
for tid in quarantined - quarantine_files:
    problems.append(f"quarantined row {tid} has no bytes")
for name in quarantine_files - {tid for (tid, _, _) in rows}:
    if power_cut and not name.startswith("."):
        unacked_bytes += 1  # an unacknowledged EICAR hand-off's encrypted bytes (its id was never answered)
    else:
        problems.append(f"quarantine file {name} without a ledger row")
acked_ids = {r["transfer"]["id"] for r in acked}
rows_not_acked = len([1 for (tid, _, _) in rows if tid not in acked_ids])
staging = os.path.join(data, "staging")
leftover = [f for _, _, names in os.walk(staging) for f in names]  # every node's directory
if leftover:
    problems.append(f"staging holds {len(leftover)} files")

for problem in problems[:20]:
    print("  problem: " + problem, file=sys.stderr)
failed_in_flight = len([r for r in record["results"] if r["status"] is None])
other = len([r for r in record["results"] if r["status"] not in (None, 201)])
if other:
    problems.append(f"{other} hand-offs answered neither 201 nor a dropped connection")
    print(f"  problem: {other} hand-offs answered neither 201 nor a dropped connection", file=sys.stderr)
print(len(acked), clean, infected, failed_in_flight, rows_not_acked, unacked_bytes, "ok" if not problems else "FAIL")
sys.exit(1 if problems else 0)
PY
)

if [[ "$power" == 1 ]]; then
    # Only syncs reach the disk: no periodic writeback for the run (restored by cleanup).
    for setting in vm.dirty_writeback_centisecs=0 vm.dirty_expire_centisecs=360000 vm.dirty_background_ratio=80 vm.dirty_ratio=90; do
        saved_sysctls+=("${setting%%=*}=$(sysctl -n "${setting%%=*}")")
        sysctl -q -w "$setting" >/dev/null
    done
    printf '%s\n' "crash-safety: $rounds rounds of $handoffs concurrent hand-offs, POWER CUT mid-flight (data on a loop-mounted ext4 image), with $bin"
else
    printf '%s\n' "crash-safety: $rounds rounds of $handoffs concurrent hand-offs, SIGKILL mid-flight, with $bin"
fi
summary=()
failures=0
for round in $(seq 1 "$rounds"); do
    dir="$work/round-$round"
    mkdir -p "$dir"
    started=$(date +%s.%N)
    verdict="FAIL"
    figures="- - - - - -"
    data="$dir"
    stop_signal=KILL
    if [[ "$power" == 1 ]]; then
        # A fresh filesystem; its journal is committed only when a sync asks for it.
        data="$dir/disk"
        mkdir -p "$data"
        truncate -s 2G "$dir/disk.img"
        mkfs.ext4 -q -F "$dir/disk.img"
        loops+=("$(losetup -f --show "$dir/disk.img")")
        mount -o commit=600 "${loops[-1]}" "$data"
        mounts+=("$data")
        stop_signal=STOP
    fi
    if start_server "$data" "$dir/server-1.log"; then
        killed_pid=$server_pid
        # Bash reports the SIGKILLed job on standard error when it reaps it: keep that out of the report.
        {
            python3 -c "$clients" "$port" "$server_pid" "$handoffs" "$dir/results.json" "$stop_signal" || true
            if [[ "$power" == 1 ]]; then
                # The cut: the image as the disk holds it now, while the server is frozen; then the server goes.
                cp --sparse=always "$dir/disk.img" "$dir/after-cut.img"
                # The server and its scanner process go, so that the filesystem can be unmounted.
                scanners=$(pgrep -P "$killed_pid" || true)
                kill -KILL "$killed_pid" $scanners 2>/dev/null || true
                for _ in $(seq 1 50); do
                    kill -0 $scanners 2>/dev/null || break
                    sleep 0.1
                done
            fi
            wait "$killed_pid" || true
        } 2>>"$dir/clients.log"
        server_pid=""
        kill "$watchdog_pid" 2>/dev/null || true
        wait "$watchdog_pid" 2>/dev/null || true
        watchdog_pid=""
        if [[ "$power" == 1 ]]; then
            # Restart on what survived the cut: the copy, its journal replayed by the mount.
            release_disks
            rm -f "$dir/disk.img"
            loops+=("$(losetup -f --show "$dir/after-cut.img")")
            mount "${loops[-1]}" "$data"
            mounts+=("$data")
        fi
        staged_at_kill=$(find "$data/var/staging" -type f 2>/dev/null | wc -l)
        if [[ -f "$dir/results.json" ]] && start_server "$data" "$dir/server-2.log"; then
            doctor_status=0
            AIRLOCK_STORAGE_DATA_DIRECTORY="$data/var" AIRLOCK_STORAGE_QUARANTINE_DIRECTORY="$data/Quarantine" \
                AIRLOCK_SCANNER_SIGNATURE_DIRECTORIES="$root/Config/signatures" \
                "$bin" doctor >"$dir/doctor.txt" 2>&1 || doctor_status=$?
            if output=$(python3 -c "$checker" "$port" "$dir/results.json" "$data/var" "$data/Quarantine" "$power"); then
                check_ok=1
            else
                check_ok=0
            fi
            read -r acked clean infected dropped unacked_rows unacked_bytes result <<<"$output"
            figures="$acked $clean $infected $dropped $unacked_rows $unacked_bytes"
            if [[ $doctor_status -eq 0 && $check_ok -eq 1 ]]; then
                verdict="ok"
            else
                [[ $doctor_status -ne 0 ]] && { echo "  problem: airlock doctor exited $doctor_status:" >&2; cat "$dir/doctor.txt" >&2; }
            fi
            stop_server
        fi
    fi
    release_disks
    elapsed=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$started" "$(date +%s.%N)")
    [[ "$verdict" == "ok" ]] || failures=$((failures + 1))
    read -r acked clean infected dropped unacked_rows unacked_bytes <<<"$figures"
    printf 'round %2d: %s  acknowledged %s (clean %s, infected %s), dropped by the %s %s, unacknowledged rows %s, unacknowledged bytes without a row %s, staged at the %s %s, %ss\n' \
        "$round" "$verdict" "$acked" "$clean" "$infected" "${stop_signal/STOP/cut}" "$dropped" "$unacked_rows" "$unacked_bytes" "${stop_signal/STOP/cut}" "${staged_at_kill:-?}" "$elapsed"
    summary+=("$(printf '| %5d | %-4s | %12s | %5s | %8s | %7s | %14s | %15s | %14s | %7s |' \
        "$round" "$verdict" "$acked" "$clean" "$infected" "$dropped" "$unacked_rows" "$unacked_bytes" "${staged_at_kill:-?}" "$elapsed")")
    rm -rf "$dir"
done

echo
echo "| round | ok   | acknowledged | clean | infected | dropped | rows not acked | bytes not acked | staged at stop | seconds |"
echo "| ----- | ---- | ------------ | ----- | -------- | ------- | -------------- | --------------- | -------------- | ------- |"
printf '%s\n' "${summary[@]}"
echo
echo "$((rounds - failures)) passed, $failures failed"
[[ $failures -eq 0 ]]
