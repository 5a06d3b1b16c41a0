#!/usr/bin/env python3
"""OpenSSL's MD5 (Python's hashlib, what Django's ETags use) on the bodies of benches/md5.rs:
the reference the crate's MD5 is compared with (benches/criterion.sh runs both, interleaved).

Prints one line per size, "openssl md5 <size>: <MB/s> MB/s ...", where MB/s is the median of
REPEATS timed passes (criterion reports a median too), each hashing about 64 MB."""

import hashlib
import statistics
import sys
import time

REPEATS = int(sys.argv[1]) if len(sys.argv) > 1 else 11


def body(length):
    return bytes((i * 31 % 251) for i in range(length))


for label, length in (("1KiB", 1024), ("32KiB", 32 * 1024), ("1MiB", 1024 * 1024)):
    data = body(length)
    n = max(1, (64 * 1024 * 1024) // length)
    rates = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(n):
            hashlib.md5(data).digest()
        rates.append(n * length / (time.perf_counter() - start) / 1e6)
    print(
        f"openssl md5 {label}: {statistics.median(rates):.0f} MB/s "
        f"(median of {REPEATS} passes of {n} digests; min {min(rates):.0f}, max {max(rates):.0f}; "
        f"{hashlib.md5(b'').name} from {__import__('ssl').OPENSSL_VERSION})"
    )
