#!/usr/bin/env python3
"""Writes a synthetic ClamAV signature database of random signatures, at the scale of ClamAV's official one.

    Benchmarks/generate-signatures.py DIRECTORY [COUNT] [--body-share 0.2]

DIRECTORY receives bench.hsb (SHA-256 hash signatures), bench.hdb (MD5) and bench.ndb (body signatures:
random byte patterns, some with wildcards), COUNT signatures in all (default 1,000,000), plus canaries/: files
that match one hash signature and one body signature each, to show the database is live.
"""
import hashlib
import os
import random
import sys


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if not args:
        sys.exit(__doc__)
    directory = args[0]
    count = int(args[1]) if len(args) > 1 else 1_000_000
    share = 0.2
    if "--body-share" in sys.argv:
        share = float(sys.argv[sys.argv.index("--body-share") + 1])
    rng = random.Random(20261122)
    os.makedirs(os.path.join(directory, "canaries"), exist_ok=True)
    body_count = int(count * share)
    hash_count = count - body_count

    canary_hashed = b"Airlock benchmark canary: matched by its hash.\n" + bytes(rng.getrandbits(8) for _ in range(64))
    canary_body_pattern = bytes(rng.getrandbits(8) for _ in range(24))
    canary_body = os.urandom(4096) + canary_body_pattern + os.urandom(4096)

    with open(os.path.join(directory, "bench.hsb"), "w") as hsb, open(os.path.join(directory, "bench.hdb"), "w") as hdb:
        for index in range(hash_count):
            size = rng.randrange(64, 1 << 24)
            if index % 2:
                hsb.write(f"{rng.getrandbits(256):064x}:{size}:Bench.Hash.Sha256-{index}\n")
            else:
                hdb.write(f"{rng.getrandbits(128):032x}:{size}:Bench.Hash.Md5-{index}\n")
        hsb.write(f"{hashlib.sha256(canary_hashed).hexdigest()}:{len(canary_hashed)}:Bench.Canary.Hash\n")

    with open(os.path.join(directory, "bench.ndb"), "w") as ndb:
        for index in range(body_count):
            pattern = rng.getrandbits(8 * 20).to_bytes(20, "big").hex()
            if index % 10 == 0:
                # A wildcard in the middle, as many real body signatures have.
                pattern = pattern[:20] + "??" + pattern[22:]
            ndb.write(f"Bench.Body-{index}:0:*:{pattern}\n")
        ndb.write(f"Bench.Canary.Body:0:*:{canary_body_pattern.hex()}\n")

    with open(os.path.join(directory, "canaries", "hashed.bin"), "wb") as f:
        f.write(canary_hashed)
    with open(os.path.join(directory, "canaries", "body.bin"), "wb") as f:
        f.write(canary_body)
    print(f"{hash_count + 1} hash and {body_count + 1} body signatures in {directory}")


if __name__ == "__main__":
    main()
