#!/usr/bin/env bash
# Small uploads: 8 KiB bodies, every one distinct, CONNECTIONS concurrent connections for SECONDS with wrk, against
# nginx storing the same PUTs with dav_methods (no scanning), both on the same filesystem in the same run
# (DESIGN §7: Airlock ≥ 0.30× nginx's rate).
#
#   Benchmarks/small-uploads.sh [SECONDS] [CONNECTIONS]        (defaults 10 and 32)
#
# Both store under BENCH_TMPDIR (default /dev/shm: a tmpfs gives stable figures; this machine's disk makes nginx
# vary 3×). Set BENCH_TMPDIR=/tmp to measure on disk.
set -euo pipefail
export BENCH_TMPDIR=${BENCH_TMPDIR:-/dev/shm}
source "$(dirname "$0")/lib.sh"

seconds=${1:-10}
connections=${2:-32}
need_packages wrk nginx-light curl
airlock_binary > /dev/null

# Every request gets its own body: 8 KiB of text whose first bytes are the thread and request number.
cat > "$bench_work/upload.lua" <<'LUA'
local counter = 0
thread_id = 0
local threads = {}
local filler

function setup(thread)
    thread:set("thread_id", #threads + 1)
    table.insert(threads, thread)
end

function init(args)
    math.randomseed(thread_id * 7919)
    local alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 \n"
    local parts = {}
    for i = 1, 8192 do
        local k = math.random(1, #alphabet)
        parts[i] = alphabet:sub(k, k)
    end
    filler = table.concat(parts)
end

request = function()
    counter = counter + 1
    local tag = string.format("upload %d-%d ", thread_id, counter)
    local body = tag .. filler:sub(#tag + 1)
    local path = string.gsub(os.getenv("BENCH_PATH"), "{n}", thread_id .. "-" .. counter)
    return wrk.format(os.getenv("BENCH_METHOD"), path, nil, body)
end

done = function(summary, latency, requests)
    io.write(string.format("RESULT %d %d %d %.1f %.1f\n", summary.requests, summary.errors.status,
        summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
        latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
LUA

# run_wrk NAME URL METHOD PATH HEADER...: prints "requests/s requests non-2xx socket-errors p50-ms p99-ms".
run_wrk() {
    local name=$1 url=$2 method=$3 path=$4
    shift 4
    local headers=()
    for header in "$@"; do headers+=(-H "$header"); done
    BENCH_METHOD=$method BENCH_PATH=$path wrk -t2 -c"$connections" -d"${seconds}s" --timeout 10s "${headers[@]}" \
        -s "$bench_work/upload.lua" "$url" > "$bench_work/$name.wrk" 2>&1
    local rate
    rate=$(awk '/Requests\/sec/ { print $2 }' "$bench_work/$name.wrk")
    read -r _ requests status_errors socket_errors p50 p99 < <(grep '^RESULT' "$bench_work/$name.wrk")
    echo "$rate $requests $status_errors $socket_errors $p50 $p99"
}

# nginx, started here on loopback with a PUT-only WebDAV location.
nginx_dir=$bench_work/nginx
mkdir -p "$nginx_dir/root/dav" "$nginx_dir/body"
# nginx's workers run as nobody: they need to reach and write these directories.
chmod 755 "$bench_work"
chmod -R 777 "$nginx_dir"
nginx_port=$(free_port)
cat > "$nginx_dir/nginx.conf" <<CONF
worker_processes 2;
daemon off;
pid $nginx_dir/nginx.pid;
error_log $nginx_dir/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $nginx_dir/body;
    client_max_body_size 1m;
    server {
        listen 127.0.0.1:$nginx_port;
        root $nginx_dir/root;
        location /dav/ { dav_methods PUT; create_full_put_path on; }
    }
}
CONF
nginx -c "$nginx_dir/nginx.conf" -p "$nginx_dir" &
nginx_pid=$!
bench_pids+=("$nginx_pid")
for _ in $(seq 1 100); do
    curl -sf -o /dev/null -X PUT --data-binary probe "http://127.0.0.1:$nginx_port/dav/probe" && break
    sleep 0.1
done
rm -f "$nginx_dir/root/dav/probe"
read -r nginx_rate nginx_requests nginx_status nginx_socket nginx_p50 nginx_p99 < <(run_wrk nginx "http://127.0.0.1:$nginx_port" PUT "/dav/{n}.txt")
nginx_files=$(find "$nginx_dir/root/dav" -type f | wc -l)
kill "$nginx_pid" 2>/dev/null || true
wait "$nginx_pid" 2>/dev/null || true

start_airlock "$bench_work/airlock"
read -r airlock_rate airlock_requests airlock_status airlock_socket airlock_p50 airlock_p99 < <(
    run_wrk airlock "$airlock_url" POST "/v1/transfers?sender=alice@example.org&recipient=bob@example.org&filename={n}.txt" \
        "Authorization: Bearer $api_key" "Content-Type: text/plain"
)
stop_airlock
airlock_files=$(find "$bench_work/airlock/var/files" -type f | wc -l)

echo
echo "machine: $(machine_line); storage: $(df --output=fstype "$bench_work" | tail -1) ($BENCH_TMPDIR); ${seconds} s, $connections connections, 2 wrk threads"
echo
echo "| server | requests/s | requests | non-2xx | socket errors | p50 ms | p99 ms |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
echo "| nginx PUT (dav_methods, $nginx_files files stored) | $nginx_rate | $nginx_requests | $nginx_status | $nginx_socket | $nginx_p50 | $nginx_p99 |"
echo "| Airlock POST /v1/transfers (hashed, typed, scanned, recorded; $airlock_files files stored) | $airlock_rate | $airlock_requests | $airlock_status | $airlock_socket | $airlock_p50 | $airlock_p99 |"
echo
echo "Airlock / nginx: $(ratio "$airlock_rate" "$nginx_rate")× (target ≥ 0.30×)"
