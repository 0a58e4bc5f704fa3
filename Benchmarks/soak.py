#!/usr/bin/env python3
"""Soak: mixed traffic at a fixed rate against a running broker, with admin rescans, for a fixed time.

Driven by Benchmarks/soak.sh, which starts the server and passes its URL, PID and API key. Uploads (8 KiB to
2 MiB, some carrying EICAR built at run time), downloads of every clean upload (SHA-256 checked), token
requests, and `airlock quarantine rescan --all` every RESCAN seconds. Every answer is checked; the server's
memory and descriptors are sampled. Exit status 1 if anything went wrong.
"""
import concurrent.futures
import hashlib
import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.parse

url, pid, api_key, airlock = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
seconds, rate, rescan_every = float(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
host = urllib.parse.urlparse(url)
# EICAR, assembled at run time from two halves so the repository never holds it whole.
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-" + b"ANTIVIRUS-TEST-FILE!$H+H*"

lock = threading.Lock()
counts = {}
errors = []
latencies = {}
downloads_due = []


def record(kind, started, problem=None):
    elapsed = time.monotonic() - started
    with lock:
        counts[kind] = counts.get(kind, 0) + 1
        latencies.setdefault(kind, []).append(elapsed)
        if problem:
            errors.append(f"{kind}: {problem}")


def request(method, path, body=None, headers=None):
    connection = http.client.HTTPConnection(host.hostname, host.port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def upload(rng):
    roll = rng.random()
    if roll < 0.05:
        body, kind = os.urandom(rng.randrange(1, 64 << 10)) + EICAR, "upload-infected"
    elif roll < 0.65:
        body, kind = os.urandom(8 << 10), "upload-8KiB"
    elif roll < 0.90:
        body, kind = os.urandom(256 << 10), "upload-256KiB"
    else:
        body, kind = os.urandom(2 << 20), "upload-2MiB"
    started = time.monotonic()
    query = urllib.parse.urlencode({"sender": "alice@example.org", "recipient": "bob@example.org", "filename": f"{kind}.bin"})
    try:
        status, answer = request("POST", f"/v1/transfers?{query}", body,
                                 {"Authorization": f"Bearer {api_key}", "Content-Type": "application/octet-stream"})
    except Exception as error:  # noqa: BLE001 - every failure is reported
        return record(kind, started, f"{type(error).__name__}: {error}")
    if status != 201:
        return record(kind, started, f"HTTP {status}: {answer[:200]!r}")
    document = json.loads(answer)
    verdict = document.get("verdict")
    if kind == "upload-infected":
        if verdict != "infected":
            return record(kind, started, f"EICAR upload answered verdict {verdict}")
    elif verdict == "clean":
        if document.get("sha256") != hashlib.sha256(body).hexdigest():
            return record(kind, started, "the recorded SHA-256 differs")
        with lock:
            downloads_due.append((document["downloads"][0]["url"], hashlib.sha256(body).hexdigest(), document["id"]))
    elif verdict not in ("blocked",):  # ~2% of random bytes look like DOS executables, which policy blocks
        return record(kind, started, f"verdict {verdict}: {document.get('reason')}")
    record(kind, started)


def download():
    with lock:
        if not downloads_due:
            return
        target, digest, transfer = downloads_due.pop(0)
    started = time.monotonic()
    try:
        status, body = request("GET", urllib.parse.urlparse(target).path)
    except Exception as error:  # noqa: BLE001
        return record("download", started, f"{type(error).__name__}: {error}")
    if status != 200:
        return record("download", started, f"HTTP {status} for {transfer}")
    if hashlib.sha256(body).hexdigest() != digest:
        return record("download", started, f"content of {transfer} differs")
    record("download", started)
    # And a fresh token for the same transfer, as an IM server asks for a late recipient.
    started = time.monotonic()
    try:
        status, answer = request("POST", f"/v1/transfers/{transfer}/tokens", json.dumps({"recipient": "bob@example.org"}),
                                 {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"})
    except Exception as error:  # noqa: BLE001
        return record("token", started, f"{type(error).__name__}: {error}")
    record("token", started, None if status == 201 else f"HTTP {status}: {answer[:200]!r}")


def rescan():
    started = time.monotonic()
    result = subprocess.run([airlock, "quarantine", "rescan", "--all", "--json"], capture_output=True, text=True, timeout=600)
    record("admin-rescan", started, None if result.returncode == 0 else f"exit {result.returncode}: {result.stderr[-300:]}")


def status_kib(field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


samples = []
stop = threading.Event()


def sampler():
    while not stop.is_set():
        samples.append((time.monotonic(), status_kib("VmRSS"), len(os.listdir(f"/proc/{pid}/fd"))))
        stop.wait(5)


threading.Thread(target=sampler, daemon=True).start()
rng = random.Random(7)
begin = time.monotonic()
next_rescan = begin + rescan_every
last_report = begin
with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
    tick = 0
    while time.monotonic() - begin < seconds:
        tick += 1
        due = begin + tick / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        pool.submit(upload, rng)
        pool.submit(download)
        if time.monotonic() >= next_rescan:
            next_rescan += rescan_every
            pool.submit(rescan)
        if time.monotonic() - last_report >= 60:
            last_report = time.monotonic()
            with lock:
                done = sum(counts.values())
            print(f"  {int(last_report - begin)} s: {done} operations, {len(errors)} errors, "
                  f"RSS {samples[-1][1] / 1024:.0f} MB", file=sys.stderr, flush=True)
stop.set()

elapsed = time.monotonic() - begin
print(f"{elapsed:.0f} s at {rate:g} uploads/s (+ a download and a token request per clean upload, "
      f"a rescan of the whole quarantine every {rescan_every:g} s)")
print()
print("| operation | count | p50 ms | p99 ms | max ms |")
print("| --- | --- | --- | --- | --- |")
for kind in sorted(counts):
    values = sorted(latencies[kind])
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))] * 1000  # noqa: E731
    print(f"| {kind} | {counts[kind]} | {pick(0.5):.0f} | {pick(0.99):.0f} | {values[-1] * 1000:.0f} |")
first = [s for s in samples if s[0] - begin <= 60]
last = [s for s in samples if s[0] - begin >= elapsed - 60]
mb = lambda values: sum(values) / len(values) / 1024 if values else 0  # noqa: E731
print()
print(f"server RSS: first minute {mb([s[1] for s in first]):.0f} MB, last minute {mb([s[1] for s in last]):.0f} MB, "
      f"peak {max(s[1] for s in samples) / 1024:.0f} MB; open descriptors first {first[0][2]}, last {last[-1][2]}")
print(f"errors: {len(errors)}")
for problem in errors[:20]:
    print(f"  {problem}")
sys.exit(1 if errors else 0)
