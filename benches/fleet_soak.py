#!/usr/bin/env python3
"""Fleet soak: N instances of the viewsets example behind nginx, sharing one SQLite file and
one Redis topology (a 3-master, 3-replica Redis Cluster by default), under mixed reads and
writes for a bounded time.

Everything runs on 127.0.0.1 on free ports, in a temporary directory removed at the end:

- Redis: `--redis cluster` (default: six `redis-server --cluster-enabled yes`, joined with
  `redis-cli --cluster create --cluster-replicas 1`) or `--redis single` (one server); the
  instances get it as `REDIS_URL` (`cluster:redis://…,redis://…` for a cluster);
- the instances: `target/<profile>/examples/viewsets` (built first, `--all-features`), the first
  one started alone (it seeds the database file), then the others;
- nginx (`/usr/sbin/nginx`, as a normal user): an `upstream` of the instances, round robin,
  keep-alive, no cache of its own: every request goes to some instance.

Then, through nginx:

1. the herd: a cold key (`GET /challenges/active`, nobody has built it) asked by 100
   concurrent requests spread over the fleet is built once across the fleet (the sum of
   `actix_conditional_cache_builds_total{cache="challenges"}` over the instances' `/metrics`),
   and every answer is a 200 with the same bytes;
2. the soak of `benches/soak.py` (its threads and checks, imported from it): mixed reads and
   writes, each thread checking that its writes are in its next `GET /state/summary` whichever
   instance serves it (read-your-writes across instances), `Age` within the staleness bounds,
   304s on its own ETags, 412 (never a lost update) on conflicting `If-Match`, and no 5xx or
   connection error.

Usage:
  python3 benches/fleet_soak.py                        # 60 s, 3 instances, a cluster
  python3 benches/fleet_soak.py --duration 30 --instances 3 --redis single
  python3 benches/fleet_soak.py --write-doc docs/proof.md   # replace the soak-fleet section there

Exit status 0 when every check passed, 1 otherwise. Standard library only.
"""

import argparse
import concurrent.futures
import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import soak  # noqa: E402 - the soak's driver and checks, shared

ROOT = soak.ROOT
NGINX = "/usr/sbin/nginx"


def log(msg):
    print(f"[fleet {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port_pairs(n):
    """`n` free ports whose cluster bus port (+10000) is free too."""
    ports, held = [], []
    port = 20000 + os.getpid() % 20000
    while len(ports) < n:
        port = 20000 if port >= 45000 else port + 1
        try:
            a = socket.socket()
            a.bind(("127.0.0.1", port))
            b = socket.socket()
            b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        held += [a, b]
        ports.append(port)
    for s in held:
        s.close()
    return ports


def cli(port, *args):
    out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return out.stdout


def wait_for(what, timeout, ok):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ok():
            return
        time.sleep(0.1)
    sys.exit(f"fleet: timed out waiting for {what}")


def start_redis(kind, work, procs):
    """Starts the topology; returns the `REDIS_URL` for the instances."""
    count = 6 if kind == "cluster" else 1
    ports = free_port_pairs(count)
    for port in ports:
        node = os.path.join(work, f"redis-{port}")
        os.makedirs(node)
        args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning", "--dir", node]
        if kind == "cluster":
            args += ["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"]
        procs.append(subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL))
        wait_for(f"redis on {port}", 10, lambda p=port: cli(p, "PING").strip() == "PONG")
    if kind == "single":
        log(f"redis-server on 127.0.0.1:{ports[0]}")
        return f"redis://127.0.0.1:{ports[0]}/"
    subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                    "--cluster-replicas", "1", "--cluster-yes"],
                   check=True, capture_output=True, stdin=subprocess.DEVNULL)
    wait_for("cluster_state:ok", 30,
             lambda: all("cluster_state:ok" in cli(p, "CLUSTER", "INFO") for p in ports))
    log(f"redis cluster on 127.0.0.1:{ports[0]}..{ports[-1]} (3 masters, 3 replicas)")
    return "cluster:" + ",".join(f"redis://127.0.0.1:{p}/" for p in ports)


def start_instance(binary, env, procs):
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    procs.append(proc)
    found = {}

    def read_address():
        for line in proc.stdout:
            match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
            if match and "port" not in found:
                found["port"] = int(match.group(1))
        # keeps draining so the instance never blocks on stdout

    threading.Thread(target=read_address, daemon=True).start()
    wait_for("an instance's address", 30, lambda: "port" in found or proc.poll() is not None)
    if "port" not in found:
        sys.exit("fleet: an instance exited before serving")
    return proc, found["port"]


def start_nginx(work, ports, procs):
    port = free_port_pairs(1)[0]
    conf = os.path.join(work, "nginx.conf")
    servers = "\n".join(f"        server 127.0.0.1:{p};" for p in ports)
    with open(conf, "w") as f:
        f.write(f"""
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {work}/nginx-body;
    proxy_temp_path {work}/nginx-proxy;
    fastcgi_temp_path {work}/nginx-fastcgi;
    uwsgi_temp_path {work}/nginx-uwsgi;
    scgi_temp_path {work}/nginx-scgi;
    # Round robin over the instances (nginx's default), keep-alive to each.
    upstream fleet {{
{servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://fleet;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            # A failed instance is not retried elsewhere: a 5xx must show.
            proxy_next_upstream off;
        }}
    }}
}}
""")
    procs.append(subprocess.Popen([NGINX, "-p", work, "-c", conf], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def answers():
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/uploads")
            return c.getresponse().status == 200
        except OSError:
            return False

    wait_for("nginx", 10, answers)
    log(f"nginx on 127.0.0.1:{port}: upstream round robin over {len(ports)} instances")
    return port


def builds(port, cache):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    total = 0
    for line in text.splitlines():
        if line.startswith("actix_conditional_cache_builds_total{") and f'cache="{cache}"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def herd(front, instances, n=100):
    """`n` concurrent requests for a cold key through nginx: one build across the fleet."""
    before = sum(builds(p, "challenges") for p in instances)

    def one(_):
        c = http.client.HTTPConnection("127.0.0.1", front, timeout=15)
        c.request("GET", "/challenges/active", headers={"Host": "fleet.example"})
        res = c.getresponse()
        return res.status, res.read()

    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
        answers = list(pool.map(one, range(n)))
    after = sum(builds(p, "challenges") for p in instances)
    statuses = sorted({s for s, _ in answers})
    bodies = len({b for _, b in answers})
    return after - before, statuses, bodies


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=60, help="seconds of load (default 60)")
    parser.add_argument("--threads", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--instances", type=int, default=3, help="instances behind nginx (default 3)")
    parser.add_argument("--redis", choices=["cluster", "single"], default="cluster")
    parser.add_argument("--release", action="store_true", help="build and run the release example")
    parser.add_argument("--write-doc", metavar="FILE", help="replace the soak-fleet section of FILE")
    args = parser.parse_args()
    if args.duration < 10 or args.threads < 1 or args.instances < 2:
        parser.error("--duration must be at least 10, --threads at least 1, --instances at least 2")
    for tool in ["redis-server", "redis-cli", NGINX]:
        if shutil.which(tool) is None:
            sys.exit(f"fleet: {tool} is not installed (apt-get install -y redis-server redis-tools nginx)")

    profile = "release" if args.release else "debug"
    build = ["cargo", "build", "--locked", "--all-features", "--example", "viewsets"]
    build += ["--release"] if args.release else []
    log(f"building: {' '.join(build)}")
    subprocess.run(build, cwd=ROOT, check=True)
    binary = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), profile, "examples", "viewsets")

    work = tempfile.mkdtemp(prefix="fleet-")
    procs = []
    try:
        sys.exit(run(args, binary, work, procs, profile))
    finally:
        # SIGTERM first: nginx's master stops its workers then (a SIGKILLed master leaves
        # them running).
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def run(args, binary, work, procs, profile):
    redis_url = start_redis(args.redis, work, procs)
    env = dict(os.environ, BIND="127.0.0.1:0", DATABASE_URL=os.path.join(work, "fleet.sqlite3"),
               REDIS_URL=redis_url, RUST_LOG="error")
    instances = []
    for i in range(args.instances):
        # The first one alone: it creates and seeds the database file.
        proc, port = start_instance(binary, env, procs)
        instances.append((proc, port))
    ports = [port for _, port in instances]
    log(f"{len(ports)} instances ({profile}) on 127.0.0.1:{', '.join(map(str, ports))}, one SQLite file")
    front = start_nginx(work, ports, procs)

    failures = []
    built, statuses, bodies = herd(front, ports)
    log(f"herd: 100 concurrent requests for a cold key through nginx: {built} build(s) across the fleet, statuses {statuses}, {bodies} distinct bodies")
    if built != 1 or statuses != [200] or bodies != 1:
        failures.append(f"herd: {built} builds, statuses {statuses}, {bodies} bodies")

    stats, stop = soak.Stats(), threading.Event()
    threads = [threading.Thread(target=soak.worker, args=(front, stats, stop, i), daemon=True)
               for i in range(args.threads)]
    started = time.time()
    for t in threads:
        t.start()
    last = 0
    while time.time() - started < args.duration:
        time.sleep(5)
        with stats.lock:
            total = stats.requests
            errors = sum(v for k, v in stats.by_status.items() if k == "error" or k >= 500)
        dead = [p for p, _ in instances if p.poll() is not None]
        if dead:
            stats.fail(f"{len(dead)} instance(s) exited")
            break
        log(f"{time.time() - started:5.0f}/{args.duration} s  {total} requests  {(total - last) / 5:.0f} req/s  {errors} errors")
        last = total
    stop.set()
    for t in threads:
        t.join(timeout=15)
    duration = time.time() - started

    errors = sum(v for k, v in stats.by_status.items() if k == "error" or k >= 500)
    per_instance = [builds(p, "challenges") for p in ports]
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(stats.by_status.items(), key=lambda kv: str(kv[0])))
    summary = [
        f"- Command: `python3 benches/fleet_soak.py --duration {args.duration} --threads {args.threads} --instances {args.instances} --redis {args.redis}{' --release' if args.release else ''}` ({profile} build of `examples/viewsets.rs`, {args.instances} instances behind nginx round robin, one SQLite file, Redis {'Cluster (3 masters, 3 replicas)' if args.redis == 'cluster' else 'one server'}, {os.cpu_count()} CPUs shared with the clients)",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; code: `{soak.git_revision()}`",
        f"- Herd on a cold key: 100 concurrent requests through nginx, {built} build across the fleet",
        f"- Requests: {stats.requests} in {duration:.0f} s ({stats.requests / duration:.0f} req/s); by status: {statuses}",
        f"- Errors (5xx or connection): {errors}",
        f"- Max staleness (`Age`): /challenges/active {stats.max_age['/challenges/active']} s (bound {soak.BOUNDS['/challenges/active']} s), /state/summary {stats.max_age['/state/summary']} s (bound {soak.BOUNDS['/state/summary']} s)",
        f"- 304s on a repeated `If-None-Match`: {stats.not_modified}; `If-Match` conflicts answered 412 (no lost update): {stats.conflicts}",
        f"- Read-your-writes across instances: {stats.ryw_reads} reads of `/state/summary` after the thread's own writes ({stats.ryw_checks} write checks), violations: core {stats.ryw_violations['core']}, recent_progress {stats.ryw_violations['recent_progress']}",
        f"- `challenges` builds per instance over the run: {per_instance}",
        f"- Checks failed: {len(stats.failures) + len(failures)}" + ("" if not (stats.failures or failures) else ": " + "; ".join((failures + stats.failures)[:5])),
    ]
    print("\n".join(summary))
    if args.write_doc:
        section = "<!-- soak-fleet:begin -->\n" + "\n".join(summary) + "\n<!-- soak-fleet:end -->"
        with open(args.write_doc) as f:
            text = f.read()
        if "<!-- soak-fleet:begin -->" not in text:
            sys.exit(f"{args.write_doc} has no soak-fleet section")
        text = re.sub(r"<!-- soak-fleet:begin -->.*?<!-- soak-fleet:end -->", lambda _: section, text, flags=re.S)
        with open(args.write_doc, "w") as f:
            f.write(text)
        log(f"wrote the summary to {args.write_doc}")
    if failures or stats.failures or errors or any(stats.ryw_violations.values()):
        log("FAILED")
        return 1
    log("passed")
    return 0


if __name__ == "__main__":
    main()
