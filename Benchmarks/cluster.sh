#!/usr/bin/env bash
# Several nodes (issue 14): hand-offs per second of 8 KiB bodies, all distinct, CONNECTIONS connections for SECONDS,
# with 1, 2 and 3 `airlock serve` nodes sharing one PostgreSQL ledger and one data directory, against 1 node on
# SQLite, same bodies, same run; and the PostgreSQL round trips each hand-off costs, counted by PostgreSQL itself.
#
#   Benchmarks/cluster.sh [SECONDS] [CONNECTIONS]        (defaults 10 and 32)
#
# BENCH_BODIES: the kinds of body (default "image random"; as Benchmarks/small-uploads.sh makes them: a JPEG header
# then random bytes, or random bytes, what an end-to-end encrypted upload looks like). BENCH_NODES: the most nodes
# (default 3). BENCH_TMPDIR: where the shared data directory lives (default /dev/shm, as small-uploads.sh).
#
# How the load is spread: one wrk per node, all started together, each with one thread and its share of the
# connections (32 over 3 nodes: 11, 11, 10), each tagging its bodies with the node's name so no two wrk processes
# ever send the same body. The rate is the sum of the wrk rates.
#
# PostgreSQL: a private instance (scripts/postgres-test-instance: initdb under /tmp, 127.0.0.1, a free port, fsync on),
# restarted once with pg_stat_statements loaded, a fresh database per configuration, stopped at the end. Per hand-off:
# transactions (pg_stat_database xact_commit + xact_rollback) and statements (pg_stat_statements calls, BEGIN and
# COMMIT included; postgres-nio does not pipeline, so each statement is one round trip), both divided by the
# transfers the ledger gained. Every server binds 127.0.0.1, runs under `timeout` and is stopped by PID.
set -euo pipefail
export BENCH_TMPDIR=${BENCH_TMPDIR:-/dev/shm}
source "$(dirname "$0")/lib.sh"

seconds=${1:-10}
connections=${2:-32}
bodies=${BENCH_BODIES:-image random}
max_nodes=${BENCH_NODES:-3}
need_packages wrk curl time postgresql
airlock_binary > /dev/null
binary=$(airlock_binary)
# Each server is killed after this many seconds whatever happens to this script.
node_limit=$((300 + 3 * seconds * $(wc -w <<< "$bodies")))


count_files() { { find "$1" -type f 2> /dev/null || true; } | wc -l; }
body_extension() { case $1 in image) echo jpg ;; text) echo txt ;; *) echo bin ;; esac; }
body_type() { case $1 in image) echo image/jpeg ;; text) echo text/plain ;; *) echo application/octet-stream ;; esac; }
calc() { python3 -c "import sys; print(format(eval(sys.argv[1]), sys.argv[2]))" "$1" "$2"; }

# PostgreSQL, private to this run.
pg_dir=""
cluster_cleanup() {
    bench_cleanup
    if [ -n "$pg_dir" ]; then "$bench_root/scripts/postgres-test-instance" stop "$pg_dir" > /dev/null 2>&1 || true; fi
}
trap cluster_cleanup EXIT
pg_started=$("$bench_root/scripts/postgres-test-instance" start)
pg_dir=$(sed -n 1p <<< "$pg_started")
pg_admin_url=$(sed -n 's/^AIRLOCK_TEST_POSTGRES_URL=//p' <<< "$pg_started")
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pg_as_owner() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_sql() { psql "$1" -X -q -A -t -v ON_ERROR_STOP=1 -c "$2"; }
# pg_stat_statements needs a restart to load; without it only transactions are counted.
statements=yes
if pg_sql "$pg_admin_url" "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'" \
    && pg_as_owner "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -t 60 restart > /dev/null \
    && pg_sql "$pg_admin_url" "CREATE EXTENSION pg_stat_statements"; then :; else
    statements=no
    echo "pg_stat_statements not available: statements per hand-off not counted" >&2
fi
postmaster_pid() { head -1 "$pg_dir/data/postmaster.pid"; }
pg_version=$(pg_sql "$pg_admin_url" "SHOW server_version")
pg_fs=$(df --output=fstype "$pg_dir" | tail -1)
# url_for DATABASE: the instance's URL naming DATABASE.
url_for() { sed "s#/airlock_test?#/$1?#" <<< "$pg_admin_url"; }

# CPU seconds (user + system) of PIDS, one "pid seconds" line each.
cpu_table() {
    local tick
    tick=$(getconf CLK_TCK)
    for pid in "$@"; do
        [ -r "/proc/$pid/stat" ] && awk -v pid="$pid" -v tick="$tick" '{ sub(/^.*\) /, ""); printf "%s %.2f\n", pid, ($12 + $13) / tick }' "/proc/$pid/stat" 2>/dev/null || true
    done
}
# The postmaster and its children (backends, writers).
postgres_pids() { local pm; pm=$(postmaster_pid); echo "$pm"; pgrep -P "$pm" || true; }
# cpu_delta BEFORE AFTER: seconds spent between two cpu_table outputs (a process absent before counts from 0).
cpu_delta() { awk 'NR == FNR { before[$1] = $2; next } { total += $2 - before[$1] } END { printf "%.2f", total }' "$1" "$2"; }

# start_node DIR SHARED NODE [VAR=VALUE ...]: one `airlock serve` on a free loopback port, its data under SHARED,
# under `timeout`; appends to node_pids (timeout's PID, which forwards SIGTERM), node_servers (airlock's PID) and
# node_urls.
node_pids=()
node_servers=()
node_urls=()
start_node() {
    local dir=$1 shared=$2 node=$3
    shift 3
    mkdir -p "$dir" "$shared"
    local port pid url
    port=$(free_port)
    env AIRLOCK_HTTP_HOST=127.0.0.1 AIRLOCK_HTTP_PORT="$port" \
        AIRLOCK_STORAGE_DATA_DIRECTORY="$shared/var" AIRLOCK_STORAGE_QUARANTINE_DIRECTORY="$shared/Quarantine" \
        AIRLOCK_SCANNER_SIGNATURE_DIRECTORIES="$bench_root/Config/signatures" AIRLOCK_NODE_ID="$node" \
        AIRLOCK_SERVERS="{\"bench\": {\"apiKey\": \"$api_key\"}}" AIRLOCK_LOG_LEVEL=error "$@" \
        timeout --kill-after=10 "$node_limit" "$binary" serve > "$dir/server.log" 2>&1 &
    pid=$!
    bench_pids+=("$pid")
    url="http://127.0.0.1:$port"
    for _ in $(seq 1 600); do
        curl -sf "$url/readyz" > /dev/null 2>&1 && break
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "airlock ($node) did not start:" >&2
            cat "$dir/server.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    curl -sf "$url/readyz" > /dev/null || { echo "airlock ($node) not ready after 60 s" >&2; cat "$dir/server.log" >&2; exit 1; }
    node_pids+=("$pid")
    node_servers+=("$(pgrep -P "$pid")")
    node_urls+=("$url")
}
stop_nodes() {
    for pid in "${node_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${node_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    node_pids=()
    node_servers=()
    node_urls=()
}

# measure LABEL BODY DATABASE SHARED: one wrk per node at once; sets result[LABEL BODY].
declare -A result top_statements
measure() {
    local label=$1 body=$2 database=$3 shared=$4
    local nodes=${#node_urls[@]} extension run="$bench_work/$1-$2"
    extension=$(body_extension "$body")
    local stored_before quarantined_before transfers_before=0 xacts_before=0
    stored_before=$(count_files "$shared/var/files")
    quarantined_before=$(count_files "$shared/Quarantine")
    if [ -n "$database" ]; then
        transfers_before=$(pg_sql "$(url_for "$database")" "SELECT count(*) FROM transfer")
        xacts_before=$(pg_sql "$pg_admin_url" "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '$database'")
        [ "$statements" = no ] || pg_sql "$pg_admin_url" "SELECT pg_stat_statements_reset()" > /dev/null
        cpu_table $(postgres_pids) > "$run.pg-before"
    fi
    cpu_table "${node_servers[@]}" > "$run.nodes-before"
    local wrk_pids=() index
    for index in $(seq 0 $((nodes - 1))); do
        local share=$((connections / nodes + (index < connections % nodes ? 1 : 0)))
        BENCH_BODY=$body BENCH_TAG="n$index-" \
            BENCH_PATH="/v1/transfers?sender=alice@example.org&recipient=bob@example.org&filename={n}.$extension" \
            /usr/bin/time -o "$run.$index.time" -f "%U %S" \
            wrk -t1 -c"$share" -d"${seconds}s" --timeout 10s -H "Authorization: Bearer $api_key" \
            -H "Content-Type: $(body_type "$body")" -s "$bench_root/Benchmarks/upload-bodies.lua" "${node_urls[$index]}" > "$run.$index.wrk" 2>&1 &
        wrk_pids+=($!)
    done
    for pid in "${wrk_pids[@]}"; do wait "$pid"; done
    cpu_table "${node_servers[@]}" > "$run.nodes-after"
    local pg_cpu=- transfers=- xacts=- calls=-
    if [ -n "$database" ]; then
        cpu_table $(postgres_pids) > "$run.pg-after"
        pg_cpu=$(cpu_delta "$run.pg-before" "$run.pg-after")
        # In-flight hand-offs finish; then the statistics collector gets every backend's counts (PostgreSQL 15
        # flushes an idle backend's within 10 s).
        sleep 11
        transfers=$(($(pg_sql "$(url_for "$database")" "SELECT count(*) FROM transfer") - transfers_before))
        xacts=$(($(pg_sql "$pg_admin_url" "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '$database'") - xacts_before))
        if [ "$statements" = yes ]; then
            # Everything the nodes sent to their database (this script's own count of transfers left out).
            local dbid="(SELECT oid FROM pg_database WHERE datname = '$database') AND query <> 'SELECT count(*) FROM transfer'"
            calls=$(pg_sql "$pg_admin_url" "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE dbid = $dbid")
            top_statements[$label $body]=$(pg_sql "$pg_admin_url" "SELECT '| ' || round(sum(calls)::numeric / $transfers, 2) || ' | \`' || left(regexp_replace(query, '\s+', ' ', 'g'), 110) || '\` |' FROM pg_stat_statements WHERE dbid = $dbid GROUP BY query ORDER BY sum(calls) DESC LIMIT 15")
        fi
    fi
    local node_cpu rate=0 requests=0 status=0 socket=0 p50s=() p99=0 wrk_cpu=0 rates=()
    node_cpu=$(cpu_delta "$run.nodes-before" "$run.nodes-after")
    for index in $(seq 0 $((nodes - 1))); do
        local r n s e p5 p9 u t
        r=$(awk '/Requests\/sec/ { print $2 }' "$run.$index.wrk")
        read -r _ n s e p5 p9 < <(grep '^RESULT' "$run.$index.wrk")
        read -r u t < "$run.$index.time"
        rate=$(calc "$rate + $r" .2f)
        rates+=("$(calc "$r" .0f)")
        requests=$((requests + n)); status=$((status + s)); socket=$((socket + e))
        p50s+=("$p5")
        p99=$(calc "max($p99, $p9)" .1f)
        wrk_cpu=$(calc "$wrk_cpu + $u + $t" .2f)
    done
    local stored quarantined
    stored=$(($(count_files "$shared/var/files") - stored_before))
    quarantined=$(($(count_files "$shared/Quarantine") - quarantined_before))
    local per_node
    per_node=$(IFS=/; echo "${rates[*]}")
    local pg_us=- xact_per=- calls_per=-
    if [ -n "$database" ]; then
        pg_us=$(calc "$pg_cpu * 1e6 / $requests" .0f)
        xact_per=$(calc "$xacts / $transfers" .2f)
        [ "$calls" = - ] || calls_per=$(calc "$calls / $transfers" .2f)
    fi
    local busy
    busy=$(calc "($node_cpu + $wrk_cpu + $([ "$pg_cpu" = - ] && echo 0 || echo "$pg_cpu")) / $seconds" .2f)
    result[$label $body]="$rate $requests $status $socket $(IFS=/; echo "${p50s[*]}") $p99 $stored $quarantined $transfers $xact_per $calls_per $(calc "$node_cpu * 1e6 / $requests" .0f) $pg_us $(calc "$wrk_cpu * 1e6 / $requests" .0f) $busy $per_node"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
configurations=("sqlite 1")
for nodes in $(seq 1 "$max_nodes"); do configurations+=("postgresql $nodes"); done
for configuration in "${configurations[@]}"; do
    read -r backend nodes <<< "$configuration"
    label="$backend-$nodes"
    shared="$bench_work/$label/shared"
    database=""
    settings=()
    if [ "$backend" = postgresql ]; then
        database="bench_${nodes}_nodes"
        pg_sql "$pg_admin_url" "CREATE DATABASE $database" > /dev/null
        settings=(AIRLOCK_LEDGER_BACKEND=postgresql "AIRLOCK_LEDGER_POSTGRESQL_URL=$(url_for "$database")")
    fi
    echo "running $label..." >&2
    for index in $(seq 0 $((nodes - 1))); do
        start_node "$bench_work/$label/node$index" "$shared" "node$index" "${settings[@]}"
    done
    for body in $bodies; do
        measure "$label" "$body" "$database" "$shared"
    done
    stop_nodes
done

echo
echo "machine: $(machine_line); load average before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "shared data directory: $(df --output=fstype "$bench_work" | tail -1) ($BENCH_TMPDIR); PostgreSQL $pg_version, data on $pg_fs (/tmp, fsync and synchronous_commit on), pool of 10 connections per node"
echo "${seconds} s per run, $connections connections in all, one wrk (1 thread) per node with its share of them, all nodes at once"
echo
echo "| body (8 KiB, all distinct) | ledger | nodes | hand-offs/s | × SQLite, 1 node | per node | requests | non-2xx | socket errors | p50 ms per node | p99 ms (worst node) | stored | quarantined | PostgreSQL transactions per hand-off | PostgreSQL statements (round trips) per hand-off | CPU µs per hand-off: nodes, PostgreSQL, wrk | cores busy |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for body in $bodies; do
    read -r sqlite_rate _ <<< "${result[sqlite-1 $body]}"
    for configuration in "${configurations[@]}"; do
        read -r backend nodes <<< "$configuration"
        read -r rate requests status socket p50 p99 stored quarantined _ xact_per calls_per node_us pg_us wrk_us busy per_node \
            <<< "${result[$backend-$nodes $body]}"
        echo "| $body | $backend | $nodes | **$rate** | $(ratio "$rate" "$sqlite_rate")× | $per_node | $requests | $status | $socket | $p50 | $p99 | $stored | $quarantined | $xact_per | $calls_per | $node_us, $pg_us, $wrk_us | $busy |"
    done
done
if [ "$statements" = yes ]; then
    for body in $bodies; do
        echo
        echo "Statements per hand-off, PostgreSQL, 1 node, $body (pg_stat_statements, top 15; BEGIN and COMMIT are statements):"
        echo
        echo "| calls per hand-off | statement |"
        echo "| --- | --- |"
        echo "${top_statements[postgresql-1 $body]}"
    done
fi
echo
read -r _ _ _ _ _ _ _ _ _ _ _ node_us pg_us wrk_us busy _ <<< "${result[postgresql-1 $(awk '{ print $1 }' <<< "$bodies")]}"
cores=$(nproc)
echo "What $cores cores allow: every node, PostgreSQL and every wrk run on the same $cores cores, so a second or third node"
echo "adds no CPU, only processes competing for it (\"cores busy\" is the CPU they used together ÷ wall time; $cores is all)."
echo "The rate can only stay or fall with more nodes here; what this run can say about a real cluster is the cost per"
echo "hand-off. With PostgreSQL on 1 node ($(awk '{ print $1 }' <<< "$bodies")): the node spent $node_us µs of CPU per hand-off, PostgreSQL $pg_us µs,"
echo "wrk $wrk_us µs. On machines of their own, each node of this kind would do at most $(calc "$cores * 1e6 / $node_us" .0f) hand-offs/s"
echo "($cores cores ÷ $node_us µs), and a PostgreSQL with $cores cores at most $(calc "$cores * 1e6 / $pg_us" .0f) (CPU only: disk flushes and"
echo "the audit chain's lock, taken by every hand-off on every node, are not in that figure)."
