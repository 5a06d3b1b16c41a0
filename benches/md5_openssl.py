#!/usr/bin/env python3
"""OpenSSL's MD5 (Python's hashlib, what Django's ETags use) on the bodies of benches/md5.rs:
the reference the crate's MD5 is compared with. Prints MB/s per size, best of 5 rounds."""

import hashlib
import time


def body(length):
    return bytes((i * 31 % 251) for i in range(length))


for label, length in (("1KiB", 1024), ("32KiB", 32 * 1024), ("1MiB", 1024 * 1024)):
    data = body(length)
    n = max(1, (64 * 1024 * 1024) // length)
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            hashlib.md5(data).digest()
        best = max(best, n * length / (time.perf_counter() - start) / 1e6)
    print(f"openssl md5 {label}: {best:.0f} MB/s ({hashlib.md5(b'').name}, {n} digests a round)")
