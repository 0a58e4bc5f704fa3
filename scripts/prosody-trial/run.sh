#!/usr/bin/env bash
# Tries Airlock as a new user would: a real Prosody from Debian (mod_http_upload_external v2 and
# mod_http_file_share in external mode) hands uploads to Airlock, and an XMPP client (slixmpp) uploads a
# file with an awkward name, EICAR and random bytes, then fetches each GET URL. Loopback only; both servers
# are stopped by PID at the end. Not part of the test suite (it installs Prosody and PyPI packages).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

run() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prosody prosody-modules > /dev/null
python3 -m pip install -q slixmpp aiohttp
swift build --product airlock
run systemctl stop prosody 2>/dev/null || true

secret=$(openssl rand -hex 32)
sed -e "s|@WORK@|$work|g" -e "s|@SECRET@|$secret|g" scripts/prosody-trial/prosody.cfg.lua > "$work/prosody.cfg.lua"
mkdir -p "$work/data"
prosodyctl --config "$work/prosody.cfg.lua" register alice localhost alicepass 2> /dev/null

AIRLOCK_HTTP_PORT=18443 AIRLOCK_XEP0363_SECRET=$secret AIRLOCK_STORAGE_DATA_DIRECTORY=$work/var \
AIRLOCK_STORAGE_QUARANTINE_DIRECTORY=$work/Quarantine AIRLOCK_SCANNER_SIGNATURE_DIRECTORIES=$root/Config/signatures \
    "$(swift build --show-bin-path)/airlock" serve > "$work/airlock.log" 2>&1 &
pids+=($!)
prosody --config "$work/prosody.cfg.lua" > "$work/prosody.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
    curl -sf http://127.0.0.1:18443/healthz > /dev/null && python3 -c "import socket; socket.create_connection(('127.0.0.1', 15222), 1)" 2> /dev/null && break
    sleep 0.1
done

printf 'Hello from Prosody\n' > "$work/résumé (v2)+1.txt"
python3 -c "print('X5O!P%@AP[4\\\\PZX54(P^)7CC)7}\$' + 'EICAR-STANDARD-' + 'ANTIVIRUS-TEST-FILE!\$H+H*', end='')" > "$work/eicar.txt"
head -c 3000 /dev/urandom > "$work/random.bin"
for service in upload.localhost share.localhost; do
    for file in "résumé (v2)+1.txt" eicar.txt random.bin; do
        echo "== $service: $file"
        timeout 60 python3 scripts/prosody-trial/upload.py "$service" "$work/$file" 2>&1 | grep -E '^(URL|GET)'
    done
done
AIRLOCK_STORAGE_DATA_DIRECTORY=$work/var AIRLOCK_STORAGE_QUARANTINE_DIRECTORY=$work/Quarantine \
    "$(swift build --show-bin-path)/airlock" transfers list
