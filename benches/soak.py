#!/usr/bin/env python3
"""Soak test: the viewsets example under mixed reads and writes for a bounded time.

Starts `target/<profile>/examples/viewsets` (building it first) on a free 127.0.0.1 port and a
fresh SQLite file, drives it from several threads with keep-alive connections, prints
progress every few seconds, and checks at the end:

- no 5xx (and no connection error);
- no cached answer older than its configured stale bound (`Age` <= TTL + max stale for
  `/challenges/active`, <= max stale for `/state/summary`);
- read-your-writes, on every `GET /state/summary` a thread makes after its own writes, whatever
  its `Cache-Status` (`stale` included): each event it posted (`POST /progress`) is in
  `recent_progress`, and each row it wrote (2xx `POST`/`PUT`/`PATCH` to `/uploads`, `/claims`,
  `/reports`) is in that table's `core.<table>.latest` in the version it wrote or a newer one,
  unless newer entries pushed it out of the list; a row it deleted is not there. Only writes of
  its own thread are checked, and "pushed out" is decided by the list's own order, so other
  threads' concurrent writes cannot make a fresh answer fail; a `core` built before the write
  does;
- every `If-None-Match` with the ETag just received is a 304, and every `PUT` with the current
  `If-Match` is a 200 unless another thread wrote the row first (then a 412, never a lost
  update);
- memory flat after warm-up: the server's RSS at the end within 1.25x + 8 MiB of its RSS
  right after the warm-up (the first fifth of the run, at least 5 s).

Usage:
  python3 benches/soak.py                 # 60 s, 8 threads, debug build (what CI runs)
  python3 benches/soak.py --duration 600 --threads 16 --release
  python3 benches/soak.py --write-doc docs/proof.md   # replace the soak section there

Exit status 0 when every check passed, 1 otherwise. Standard library only.
"""

import argparse
import http.client
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

# The example's cache settings (examples/viewsets.rs): CHALLENGES_TTL and the default
# max stale age of response_cache (DEFAULT_MAX_STALE).
CHALLENGES_TTL = 30
MAX_STALE = 300
BOUNDS = {"/challenges/active": CHALLENGES_TTL + MAX_STALE, "/state/summary": MAX_STALE}
# How many events the summary's `recent_progress` section lists (RECENT_PROGRESS there).
RECENT_PROGRESS = 10
# How many rows per table the summary's `core` section lists (CORE_LATEST there), newest first
# by (`updated_at`, `id`).
CORE_LATEST = 3
# The row-level resources and how many rows each is seeded with (SEED there): the threads
# update the seeded rows, and create and delete rows of their own.
SEEDED = {"uploads": 3, "claims": 2, "reports": 2}
# How many of a thread's writes it keeps checking its reads against (the newest).
EXPECTATIONS = 64

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(msg):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.by_status = {}
        self.failures = []
        self.max_age = {path: 0 for path in BOUNDS}
        self.not_modified = 0
        self.conflicts = 0
        self.labels = {}
        # Read-your-writes: summaries checked against their thread's earlier writes, and
        # violations per section.
        self.ryw_reads = 0
        self.ryw_checks = 0
        self.ryw_violations = {"core": 0, "recent_progress": 0}
        self.ryw_violations_by_label = {}

    def record(self, status):
        with self.lock:
            self.requests += 1
            self.by_status[status] = self.by_status.get(status, 0) + 1

    def fail(self, what):
        with self.lock:
            if len(self.failures) < 50:
                self.failures.append(what)

    def age(self, path, age):
        with self.lock:
            self.max_age[path] = max(self.max_age[path], age)


class Client:
    """One keep-alive connection, reopened when the server closes it."""

    def __init__(self, port, stats):
        self.port, self.stats, self.conn = port, stats, None

    def send(self, method, path, body=None, headers=None):
        headers = dict(headers or {})
        if body is not None:
            body = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                self.conn.request(method, path, body=body, headers=headers)
                res = self.conn.getresponse()
                data = res.read()
                if res.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                self.stats.record(res.status)
                if res.status >= 500:
                    self.stats.fail(f"{method} {path}: {res.status} {data[:200]!r}")
                return res, data
            except (OSError, http.client.HTTPException) as err:
                self.conn.close()
                self.conn = None
                if attempt == 1:
                    self.stats.record("error")
                    self.stats.fail(f"{method} {path}: {err!r}")
                    return None, b""
        return None, b""


def worker(port, stats, stop, seed):
    # A thread that dies quietly would make the soak look better than it is.
    try:
        drive(port, stats, stop, seed)
    except Exception as err:  # noqa: BLE001 - any failure of the driver is a failed check
        stats.fail(f"worker {seed} crashed: {err!r}")


class Writes:
    """One thread's writes, and what every later `GET /state/summary` of that thread must show
    (read-your-writes). Keyed by what was written, newest kept: a later write of the same row
    replaces the earlier expectation."""

    def __init__(self):
        self.events = {}  # progress id -> True
        self.rows = {}  # (table, id) -> ("present", row) | ("deleted", row)

    def posted_event(self, event_id):
        self.events[event_id] = True
        trim(self.events)

    def wrote_row(self, table, row):
        key = (table, row["id"])
        self.rows.pop(key, None)
        self.rows[key] = ("present", row)
        trim(self.rows)

    def deleted_row(self, table, row):
        key = (table, row["id"])
        self.rows.pop(key, None)
        self.rows[key] = ("deleted", row)
        trim(self.rows)

    def pending(self):
        return bool(self.events or self.rows)

    def check(self, summary, label, stats):
        """Checks one summary answer against every remembered write; returns the violations.
        An expectation that newer entries pushed out of a list is dropped: it stays out."""
        violations = []
        checks = 0
        tail = summary.get("recent_progress") or []
        ids = [p["id"] for p in tail]
        for mine in list(self.events):
            checks += 1
            if mine in ids:
                continue
            if len(ids) >= RECENT_PROGRESS and min(ids) > mine:
                del self.events[mine]  # pushed out by newer events
                continue
            violations.append(("recent_progress", f"event {mine} not in recent_progress {ids} ({label})"))
        core = summary.get("core") or {}
        for (table, row_id), (kind, row) in list(self.rows.items()):
            checks += 1
            latest = (core.get(table) or {}).get("latest") or []
            if kind == "deleted":
                # Names are unique per write, so a reused id cannot match.
                if any(r.get("id") == row_id and r.get("name") == row["name"] for r in latest):
                    violations.append(("core", f"{table} {row_id} ({row['name']}) deleted but still in core.latest ({label})"))
                continue
            ours = order_key(row)
            if any(r.get("id") == row_id and order_key(r) >= ours for r in latest):
                continue  # the version written, or a newer one
            if len(latest) >= CORE_LATEST and all(order_key(r) > ours for r in latest):
                del self.rows[(table, row_id)]  # pushed out by newer writes
                continue
            shown = [(r.get("id"), r.get("updated_at")) for r in latest]
            violations.append(("core", f"{table} {row_id} at {row.get('updated_at')} not in core.{table}.latest {shown} ({label})"))
        with stats.lock:
            stats.ryw_reads += 1
            stats.ryw_checks += checks
            stats.labels[label] = stats.labels.get(label, 0) + 1
            for section, _ in violations:
                stats.ryw_violations[section] += 1
            if violations:
                stats.ryw_violations_by_label[label] = stats.ryw_violations_by_label.get(label, 0) + 1
        for _, what in violations[:1]:
            stats.fail(f"read-your-writes: {what}")
        return violations


def order_key(row):
    """Where a row sorts in `core.<table>.latest` (`ORDER BY updated_at DESC, id DESC`)."""
    return (row.get("updated_at") or 0, row.get("id") or 0)


def trim(expectations):
    while len(expectations) > EXPECTATIONS:
        del expectations[next(iter(expectations))]


def drive(port, stats, stop, seed):
    rnd = random.Random(seed)
    client = Client(port, stats)
    writes = Writes()
    tag = f"w{seed}"
    n = 0

    def read_summary():
        res, data = client.send("GET", "/state/summary")
        check_age(stats, "/state/summary", res)
        if res and res.status == 200 and writes.pending():
            writes.check(json.loads(data), cache_label(res.getheader("Cache-Status")), stats)

    while not stop.is_set():
        n += 1
        roll = rnd.random()
        if roll < 0.25:
            res, data = client.send("GET", "/uploads")
            if res and res.status == 200:
                etag = res.getheader("ETag")
                again, _ = client.send("GET", "/uploads", headers={"If-None-Match": etag})
                if again and again.status == 304:
                    with stats.lock:
                        stats.not_modified += 1
                elif again and again.status != 200:
                    stats.fail(f"GET /uploads with its own ETag: {again.status}")
        elif roll < 0.45:
            path = "/challenges/active"
            res, _ = client.send("GET", path)
            check_age(stats, path, res)
        elif roll < 0.70:
            read_summary()
        elif roll < 0.80:
            event = f"{tag}-{n}"
            res, data = client.send("POST", "/progress", body={"event": event})
            if res and res.status == 201:
                writes.posted_event(json.loads(data)["id"])
                read_summary()
        elif roll < 0.90:
            table = rnd.choice(sorted(SEEDED))
            item = f"/{table}/{rnd.randint(1, SEEDED[table])}"
            res, data = client.send("GET", item)
            if res and res.status == 200:
                etag = res.getheader("ETag")
                method = "PUT" if rnd.random() < 0.7 else "PATCH"
                put, data = client.send(
                    method, item, body={"name": f"{tag}-{n}.csv"}, headers={"If-Match": etag}
                )
                if put and put.status == 412:
                    with stats.lock:
                        stats.conflicts += 1
                elif put and put.status == 200:
                    writes.wrote_row(table, json.loads(data))
                    read_summary()
                elif put:
                    stats.fail(f"{method} {item} with its current If-Match: {put.status}")
        else:
            table = rnd.choice(sorted(SEEDED))
            res, data = client.send("POST", f"/{table}", body={"name": f"{tag}-{n}.tmp"})
            if res and res.status == 201:
                row = json.loads(data)
                writes.wrote_row(table, row)
                read_summary()
                gone, _ = client.send("DELETE", f"/{table}/{row['id']}")
                if gone and gone.status == 204:
                    writes.deleted_row(table, row)
                    read_summary()


def cache_label(cache_status):
    """The label of this library's `Cache-Status` member (RFC 9211): `hit`, `hit-revision`,
    `section`, `stale`, `refresh`, `coalesced`, `bypass` or `miss` (what `X-Cache` says when a
    cache opts in to it)."""
    if not cache_status:
        return None
    ours = [m for m in cache_status.split(",") if m.strip().startswith("actix-conditional")]
    if not ours:
        return None
    params = {}
    for part in ours[-1].split(";")[1:]:
        key, _, value = part.strip().partition("=")
        params[key] = value or "?1"
    detail, fwd = params.get("detail"), params.get("fwd")
    if "hit" in params:
        return {"revision": "hit-revision", "stale": "stale"}.get(detail, "hit")
    if fwd == "stale":
        return {"stale": "stale", "section": "section"}.get(detail, "refresh")
    if fwd == "bypass":
        return "bypass"
    if "collapsed" in params and detail is None:
        return "coalesced"
    return "miss"


def git_revision():
    """The commit measured, and whether the code differs from it."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "src", "examples", "Cargo.lock"], cwd=ROOT).returncode != 0
        return rev + (" with uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def check_age(stats, path, res):
    if res is None or res.status != 200:
        return
    age = int(res.getheader("Age", "0"))
    stats.age(path, age)
    if age > BOUNDS[path]:
        stats.fail(f"{path}: Age {age} > {BOUNDS[path]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=60, help="seconds of load (default 60)")
    parser.add_argument("--threads", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--release", action="store_true", help="build and run the release example")
    parser.add_argument("--progress", type=int, default=5, help="seconds between progress lines")
    parser.add_argument("--write-doc", metavar="FILE", help="replace the soak section of FILE")
    args = parser.parse_args()
    if args.duration < 10 or args.threads < 1:
        parser.error("--duration must be at least 10 and --threads at least 1")

    profile = "release" if args.release else "debug"
    # --all-features: the artifacts `cargo test --all-features` left behind (CI runs this after
    # the tests); without REDIS_URL the example's caches stay in its own memory.
    build = ["cargo", "build", "--locked", "--all-features", "--example", "viewsets"]
    build += ["--release"] if args.release else []
    log(f"building: {' '.join(build)}")
    subprocess.run(build, cwd=ROOT, check=True)
    binary = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), profile, "examples", "viewsets")

    work = tempfile.mkdtemp(prefix="soak-")
    env = dict(os.environ, BIND="127.0.0.1:0", DATABASE_URL=os.path.join(work, "soak.sqlite3"), RUST_LOG="error")
    env.pop("REDIS_URL", None)
    server = subprocess.Popen([binary], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        run(args, server, profile)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


def run(args, server, profile):
    # The address line, read on a thread so a silent server cannot hang the soak.
    found = {}

    def read_address():
        for line in server.stdout:
            match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
            if match:
                found["port"] = int(match.group(1))
                break
        server.stdout.read()  # keep draining so the server never blocks on stdout

    threading.Thread(target=read_address, daemon=True).start()
    deadline = time.time() + 30
    while "port" not in found and time.time() < deadline and server.poll() is None:
        time.sleep(0.05)
    port = found.get("port")
    if port is None:
        sys.exit("soak: the example did not print its address within 30 s")
    log(f"example (pid {server.pid}, {profile}) on 127.0.0.1:{port}; {args.threads} threads for {args.duration} s")

    stats, stop = Stats(), threading.Event()
    threads = [threading.Thread(target=worker, args=(port, stats, stop, i), daemon=True) for i in range(args.threads)]
    started = time.time()
    for t in threads:
        t.start()
    warmup = max(5, args.duration // 5)
    rss_start = rss_kib(server.pid)
    rss_warm = None
    rss_max_after = 0
    next_progress = started + args.progress
    last_requests = 0
    while True:
        now = time.time()
        elapsed = now - started
        if elapsed >= args.duration:
            break
        rss = rss_kib(server.pid) or 0
        if server.poll() is not None:
            stats.fail(f"the server exited with {server.returncode}")
            break
        if rss_warm is None and elapsed >= warmup:
            rss_warm = rss
            log(f"warm-up done: RSS {rss / 1024:.1f} MiB")
        elif rss_warm is not None and rss:
            rss_max_after = max(rss_max_after, rss)
        if now >= next_progress:
            with stats.lock:
                total, errors = stats.requests, sum(v for k, v in stats.by_status.items() if k == "error" or k >= 500)
            rate = (total - last_requests) / args.progress
            last_requests = total
            log(f"{elapsed:5.0f}/{args.duration} s  {total} requests  {rate:.0f} req/s  {errors} errors  RSS {rss / 1024:.1f} MiB")
            next_progress += args.progress
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(timeout=15)
    rss_end = rss_kib(server.pid)
    duration = time.time() - started
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()

    errors = sum(v for k, v in stats.by_status.items() if k == "error" or k >= 500)
    flat = rss_warm is not None and rss_end is not None and rss_end <= rss_warm * 1.25 + 8 * 1024
    if not flat:
        stats.fail(f"RSS grew: {rss_warm} KiB after warm-up, {rss_end} KiB at the end")
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(stats.by_status.items(), key=lambda kv: str(kv[0])))
    summary = [
        f"- Command: `python3 benches/soak.py --duration {args.duration} --threads {args.threads}{' --release' if args.release else ''}` ({profile} build of `examples/viewsets.rs`, fresh SQLite file, one process, {os.cpu_count()} CPUs shared with the clients)",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; code: `{git_revision()}`",
        f"- Requests: {stats.requests} in {duration:.0f} s ({stats.requests / duration:.0f} req/s); by status: {statuses}",
        f"- Errors (5xx or connection): {errors}",
        f"- Max staleness (`Age`): /challenges/active {stats.max_age['/challenges/active']} s (bound {BOUNDS['/challenges/active']} s), /state/summary {stats.max_age['/state/summary']} s (bound {BOUNDS['/state/summary']} s)",
        f"- 304s on a repeated `If-None-Match`: {stats.not_modified}; `If-Match` conflicts answered 412 (no lost update): {stats.conflicts}",
        f"- Read-your-writes: {stats.ryw_reads} reads of `/state/summary` after the thread's own writes ({stats.ryw_checks} write checks), violations: core {stats.ryw_violations['core']}, recent_progress {stats.ryw_violations['recent_progress']}; their `Cache-Status`: " + ", ".join(f"{k}: {v}" for k, v in sorted(stats.labels.items(), key=lambda kv: str(kv[0])))
        + ("" if not stats.ryw_violations_by_label else "; reads with a violation, by `Cache-Status`: " + ", ".join(f"{k}: {v}" for k, v in sorted(stats.ryw_violations_by_label.items(), key=lambda kv: str(kv[0])))),
        f"- RSS: {(rss_start or 0) / 1024:.1f} MiB at start, {(rss_warm or 0) / 1024:.1f} MiB after the {warmup} s warm-up, peak {rss_max_after / 1024:.1f} MiB after it, {(rss_end or 0) / 1024:.1f} MiB at the end ({'flat' if flat else 'GREW'})",
        f"- Checks failed: {len(stats.failures)}" + ("" if not stats.failures else ": " + "; ".join(stats.failures[:5])),
    ]
    print("\n".join(summary))
    if args.write_doc:
        section = "<!-- soak:begin -->\n" + "\n".join(summary) + "\n<!-- soak:end -->"
        with open(args.write_doc) as f:
            text = f.read()
        if "<!-- soak:begin -->" in text:
            text = re.sub(r"<!-- soak:begin -->.*?<!-- soak:end -->", lambda _: section, text, flags=re.S)
        else:
            text += "\n" + section + "\n"
        with open(args.write_doc, "w") as f:
            f.write(text)
        log(f"wrote the summary to {args.write_doc}")
    if stats.failures or errors or any(stats.ryw_violations.values()):
        log("FAILED")
        sys.exit(1)
    log("passed")


if __name__ == "__main__":
    main()
