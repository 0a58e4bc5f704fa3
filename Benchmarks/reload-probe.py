#!/usr/bin/env python3
"""Uploads under load while `airlock reload` swaps the signatures, sampling the memory of the server and its scanner
processes; prints one JSON object. Used by Benchmarks/reload.sh.

    reload-probe.py URL API_KEY SERVER_PID SIGNATURE_DIR AIRLOCK_BIN DATA_DIR
"""
import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.parse

url, api_key, server_pid, signatures, airlock, data_dir = sys.argv[1:7]
server_pid = int(server_pid)
parsed = urllib.parse.urlparse(url)
stop = threading.Event()
samples = []  # (time, upload seconds, status)
lock = threading.Lock()


def uploader(index):
    rng = random.Random(index)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=120)
    n = 0
    while not stop.is_set():
        body = bytes(rng.getrandbits(8) for _ in range(8192))
        started = time.monotonic()
        try:
            connection.request(
                "POST",
                f"/v1/transfers?sender=a@example.org&recipient=b@example.org&filename=f{index}-{n}.bin",
                body=body,
                headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/octet-stream"},
            )
            response = connection.getresponse()
            response.read()
            status = response.status
        except Exception:
            status = 0
            connection.close()
            connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=120)
        with lock:
            samples.append((started, time.monotonic() - started, status))
        n += 1


def family_rss_kib():
    """The resident memory of the server and its children (the scanner processes), in KiB."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            parent = int(fields[1])
            if int(entry) != server_pid and parent != server_pid:
                continue
            with open(f"/proc/{entry}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
    return total


peaks = {"before": 0, "during": 0, "after": 0}
phase = ["before"]


def sampler():
    while not stop.is_set():
        rss = family_rss_kib()
        key = phase[0]
        peaks[key] = max(peaks[key], rss)
        time.sleep(0.05)


threads = [threading.Thread(target=uploader, args=(i,), daemon=True) for i in range(4)]
watch = threading.Thread(target=sampler, daemon=True)
for thread in threads + [watch]:
    thread.start()
time.sleep(10)

# A new signature file, then the request; the reload report says when it finished.
with open(os.path.join(signatures, "reload-bench.ndb"), "w") as handle:
    handle.write("Airlock.Bench.Reload:0:*:" + os.urandom(24).hex() + "\n")
phase[0] = "during"
reload_started = time.monotonic()
result = subprocess.run(
    [airlock, "reload"],
    env={**os.environ, "AIRLOCK_STORAGE_DATA_DIRECTORY": os.path.join(data_dir, "var")},
    capture_output=True,
    text=True,
)
reload_ended = time.monotonic()
phase[0] = "after"
time.sleep(5)
stop.set()
for thread in threads:
    thread.join()


def percentile(values, share):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(share * len(values)))]


def window(low, high):
    chosen = [(d, s) for (t, d, s) in samples if low <= t < high]
    ok = [d for d, s in chosen if s == 201]
    return {
        "uploads": len(chosen),
        "failed": sum(1 for _, s in chosen if s != 201),
        "p50_ms": round(percentile(ok, 0.5) * 1000, 1) if ok else None,
        "p99_ms": round(percentile(ok, 0.99) * 1000, 1) if ok else None,
        "max_ms": round(max(ok) * 1000, 1) if ok else None,
    }


status_path = None
for root, _, files in os.walk(os.path.join(data_dir, "var", "run")):
    if "reload-status.json" in files:
        status_path = os.path.join(root, "reload-status.json")
status = json.load(open(status_path)) if status_path else {}
print(
    json.dumps(
        {
            "reload_exit": result.returncode,
            "reload_output": result.stdout.strip(),
            "reload_seconds": status.get("reloadSeconds"),
            "reload_wall_seconds": round(reload_ended - reload_started, 2),
            "signatures": status.get("signatureCount"),
            "before": window(reload_started - 10, reload_started),
            "during": window(reload_started, reload_ended),
            "after": window(reload_ended, reload_ended + 5),
            "peak_rss_mb": {key: round(value / 1024) for key, value in peaks.items()},
        }
    )
)
