# Shared by the benchmark commands: a release build, a scratch directory, loopback servers stopped by PID.
# Source it from a benchmark script after `set -euo pipefail`.

bench_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$bench_root"

# The release binary: $AIRLOCK_BIN, or built once here.
airlock_binary() {
    if [ -z "${AIRLOCK_BIN:-}" ]; then
        echo "building airlock (release)..." >&2
        swift build -c release --product airlock >&2
        AIRLOCK_BIN=$(swift build -c release --show-bin-path)/airlock
    fi
    echo "$AIRLOCK_BIN"
}

# The release build of airlock-cost-benchmark: $AIRLOCK_COST_BIN, or built once here.
cost_binary() {
    if [ -z "${AIRLOCK_COST_BIN:-}" ]; then
        echo "building airlock-cost-benchmark (release)..." >&2
        swift build -c release --product airlock-cost-benchmark >&2
        AIRLOCK_COST_BIN=$(swift build -c release --show-bin-path)/airlock-cost-benchmark
    fi
    echo "$AIRLOCK_COST_BIN"
}

# Installs Debian packages the benchmark needs when they are missing.
need_packages() {
    local missing=()
    for package in "$@"; do
        dpkg -s "$package" > /dev/null 2>&1 || missing+=("$package")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing ${missing[*]}..." >&2
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo=sudo
        $sudo apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
    fi
}

bench_work=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/airlock-bench.XXXXXX")
bench_pids=()
bench_cleanup() {
    for pid in "${bench_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$bench_work"
}
trap bench_cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# now: seconds since the epoch with nanoseconds.
now() { date +%s.%N; }
# elapsed START [END]: seconds, 3 decimals.
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "${2:-$(now)}"; }
# ratio A B: A / B, 2 decimals.
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$2"; }

api_key="bench-api-key-0123456789"

# start_airlock DIR [VAR=VALUE ...]: runs `airlock serve` on a free loopback port with its data under DIR and the
# bundled signatures; sets airlock_pid and airlock_url. Extra environment settings override the defaults.
start_airlock() {
    local dir=$1
    shift
    mkdir -p "$dir"
    local port
    port=$(free_port)
    env AIRLOCK_HTTP_HOST=127.0.0.1 AIRLOCK_HTTP_PORT="$port" \
        AIRLOCK_STORAGE_DATA_DIRECTORY="$dir/var" AIRLOCK_STORAGE_QUARANTINE_DIRECTORY="$dir/Quarantine" \
        AIRLOCK_SCANNER_SIGNATURE_DIRECTORIES="$bench_root/Config/signatures" \
        AIRLOCK_SERVERS="{\"bench\": {\"apiKey\": \"$api_key\"}}" AIRLOCK_LOG_LEVEL=error "$@" \
        ${bench_wrapper[@]+"${bench_wrapper[@]}"} "$(airlock_binary)" serve > "$dir/server.log" 2>&1 &
    airlock_pid=$!
    bench_pids+=("$airlock_pid")
    airlock_url="http://127.0.0.1:$port"
    for _ in $(seq 1 600); do
        curl -sf "$airlock_url/readyz" > /dev/null 2>&1 && return 0
        kill -0 "$airlock_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "airlock did not start:" >&2
    cat "$dir/server.log" >&2
    exit 1
}

stop_airlock() {
    kill "$airlock_pid" 2>/dev/null || true
    wait "$airlock_pid" 2>/dev/null || true
}

# rss_kib PID FIELD: a field of /proc/PID/status in KiB (VmRSS, VmHWM, RssAnon, RssFile).
rss_kib() { awk -v key="$2:" '$1 == key { print $2 }' "/proc/$1/status"; }

machine_line() {
    echo "$(nproc) cores, $(awk '/model name/ { $1=$2=$3=""; print; exit }' /proc/cpuinfo | sed 's/^ *//'), $(free -g | awk '/Mem:/ { print $2 }') GiB RAM, $(date -u +%Y-%m-%d)"
}
