#!/usr/bin/env bash
# Load test of the Redis tier: a ResponseCache hit from process memory (L1) against one
# answered by Redis (L2), with bare actix-web and the local-only cache, in the same run.
#
# Starts its own redis-server on a free 127.0.0.1 port, builds examples/bench_server.rs in
# release with `--features redis`, starts it with REDIS_URL and one worker, checks every
# route with curl (which also fills the caches), then runs wrk --latency on four scenarios in
# interleaved rounds (the starting scenario rotates each round) and keeps each one's medians:
#
#   bare        GET /bare/32k    no cache
#   local hit   GET /cache/32k   ResponseCache without Redis (memory only)
#   L1 hit      GET /l1/32k      ResponseCache on Redis: hits from this process's memory,
#                                each after the counter read of read-your-writes (shared by
#                                concurrent requests)
#   L1 hit, no read-your-writes
#               GET /l1-lazy/32k the same with read_your_writes(false): no Redis call at all
#   L2 hit      GET /l2/32k      ResponseCache on Redis, memory_tier(false): every hit is a
#                                Redis GET + PTTL of the 32 KiB entry and its decoding
#   L1 hit, cluster / L2 hit, cluster
#               the same two on a second server whose Redis is a Redis Cluster (three
#                                masters on 127.0.0.1, REDIS_URL=cluster:...): the cluster
#                                client, hash-tagged keys, sharded pub/sub
#
# After the runs each server's /stats must show every L2 answer read from Redis, no L1 answer
# read from it, and one build per cache. Results go into BENCHMARKS.md between
# <!-- redis:begin --> and <!-- redis:end -->.
#
# Usage:  bash benches/redis_load.sh            # about 5 minutes with the defaults
#
# Environment (defaults): DURATION=10 (s per wrk run), ROUNDS=5, THREADS=2, CONNECTIONS=32,
# WARMUP=2 (s per scenario before round 1), WORKERS=1, BENCHMARKS_MD=BENCHMARKS.md
set -euo pipefail

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-5}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
WARMUP=${WARMUP:-2}
WORKERS=${WORKERS:-1}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
BENCHMARKS_MD=${BENCHMARKS_MD:-$root/BENCHMARKS.md}
command_line="DURATION=$DURATION ROUNDS=$ROUNDS THREADS=$THREADS CONNECTIONS=$CONNECTIONS WARMUP=$WARMUP WORKERS=$WORKERS bash benches/redis_load.sh"

tag=redis_load
# shellcheck source=benches/common.sh
source "$root/benches/common.sh"
for var in DURATION ROUNDS THREADS CONNECTIONS WARMUP WORKERS; do
    [[ ${!var} =~ ^[0-9]+$ ]] || die "$var must be a whole number, got '${!var}'"
done
((DURATION > 0 && ROUNDS > 0 && THREADS > 0 && CONNECTIONS >= THREADS && WORKERS > 0)) ||
    die "DURATION, ROUNDS, THREADS, WORKERS must be positive, CONNECTIONS >= THREADS"

command -v wrk >/dev/null || apt_install wrk
command -v curl >/dev/null || apt_install curl
command -v redis-server >/dev/null || apt_install redis-server
command -v redis-cli >/dev/null || apt_install redis-tools

log "building the bench server (release, --features redis)"
cargo build --release --locked --features redis --example bench_server
server_bin="${CARGO_TARGET_DIR:-$root/target}/release/examples/bench_server"

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --loglevel warning >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    [[ $(redis-cli -p "$redis_port" ping 2>/dev/null) == PONG ]] && break
    sleep 0.1
done
[[ $(redis-cli -p "$redis_port" ping 2>/dev/null) == PONG ]] || die "redis-server did not start"
log "redis-server $(redis-server --version | grep -o 'v=[0-9.]*') on 127.0.0.1:$redis_port"

# A Redis Cluster of three masters (no replicas: nothing fails here), on ports whose cluster
# bus port (+10000) is free too.
cluster_ports=()
while ((${#cluster_ports[@]} < 3)); do
    port=$(free_port)
    ((port + 10000 < 65536)) || continue
    python3 -c 'import socket, sys; s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1])))' \
        "$((port + 10000))" 2>/dev/null || continue
    mkdir -p "$work/cluster-$port"
    (cd "$work/cluster-$port" && exec redis-server --port "$port" --bind 127.0.0.1 --save '' \
        --appendonly no --cluster-enabled yes --cluster-node-timeout 1000 --loglevel warning \
        >"$work/cluster-$port.log" 2>&1) &
    pids+=($!)
    cluster_ports+=("$port")
done
for port in "${cluster_ports[@]}"; do
    for _ in $(seq 100); do
        [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]] && break
        sleep 0.1
    done
done
redis-cli --cluster create "${cluster_ports[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes \
    >"$work/cluster-create.log" 2>&1 || die "redis-cli --cluster create: $(cat "$work/cluster-create.log")"
# Every node, not just one: right after the create they take a moment to agree.
cluster_ok() {
    local port
    for port in "${cluster_ports[@]}"; do
        redis-cli -p "$port" cluster info | grep -q cluster_state:ok || return 1
    done
}
for _ in $(seq 100); do
    cluster_ok && break
    sleep 0.1
done
cluster_ok || die "the cluster is not ok"
cluster_url="cluster:$(printf 'redis://127.0.0.1:%s/,' "${cluster_ports[@]}")"
cluster_url=${cluster_url%,}
log "redis cluster (3 masters) on 127.0.0.1:${cluster_ports[*]}"

# start_server LOG REDIS_URL: starts the bench server (a child of this shell, for the cleanup);
# wait_server LOG: its base URL once it answers.
start_server() {
    BIND=127.0.0.1:0 WORKERS=$WORKERS REDIS_URL="$2" "$server_bin" >"$work/$1" 2>&1 &
    pids+=($!)
}
wait_server() {
    local found=
    for _ in $(seq 100); do
        found=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$work/$1" | head -n1 || true)
        [[ -n $found ]] && curl -fsS -o /dev/null --max-time 1 "$found/bare/32k" 2>/dev/null && break
        found=
        sleep 0.1
    done
    [[ -n $found ]] || die "server did not answer: $(cat "$work/$1")"
    printf '%s\n' "$found"
}
start_server server.log "redis://127.0.0.1:$redis_port/"
start_server server-cluster.log "$cluster_url"
base=$(wait_server server.log)
log "server up at $base"
base_cluster=$(wait_server server-cluster.log)
log "server on the cluster up at $base_cluster"

# --- checks, which also fill the caches ----------------------------------------------------
# probe PATH: prints "<status> <bytes> <x-cache>"; the body is kept in $work/body.
probe() {
    curl -sS --max-time 5 -D "$work/headers" -o "$work/body" -w '%{http_code} %{size_download}' "${2:-$base}$1" ||
        die "curl $1 failed"
    printf ' %s\n' "$(tr -d '\r' <"$work/headers" | awk -F': ' 'tolower($1) == "x-cache" { print $2 }')"
}
curl -sS -o "$work/bare" "$base/bare/32k"
for path in /cache/32k /l1/32k /l1-lazy/32k /l2/32k; do
    read -r status size label <<<"$(probe "$path")"
    [[ $status == 200 && $size == 32768 && $label == miss ]] || die "$path fill: $status $size $label"
    read -r status size label <<<"$(probe "$path")"
    [[ $status == 200 && $size == 32768 && $label == hit ]] || die "$path hit: $status $size $label"
    cmp -s "$work/body" "$work/bare" || die "$path: body differs from /bare/32k"
done
for path in /l1/32k /l2/32k; do
    read -r status size label <<<"$(probe "$path" "$base_cluster")"
    [[ $status == 200 && $size == 32768 && $label == miss ]] || die "$path fill (cluster): $status $size $label"
    # The store goes out after the response, and its first call to a node opens the
    # connection to it: give it a moment before the hit is required.
    for _ in $(seq 20); do
        read -r status size label <<<"$(probe "$path" "$base_cluster")"
        [[ $label == hit ]] && break
        sleep 0.1
    done
    [[ $status == 200 && $size == 32768 && $label == hit ]] || die "$path hit (cluster): $status $size $label"
    cmp -s "$work/body" "$work/bare" || die "$path (cluster): body differs from /bare/32k"
done
stat_of() { # CACHE FIELD [BASE]
    curl -sS "${3:-$base}/stats" | python3 -c "import json, sys; print(json.load(sys.stdin)['$1']['$2'])"
}
[[ $(stat_of bench-l2 redis_hits) -ge 1 ]] || die "/l2/32k hits do not come from Redis"
[[ $(stat_of bench-l2 redis_hits "$base_cluster") -ge 1 ]] || die "/l2/32k hits (cluster) do not come from Redis"
[[ $(stat_of bench-l1 redis_hits) == 0 && $(stat_of bench-l1-lazy redis_hits) == 0 ]] ||
    die "/l1/32k hits should come from memory"
[[ $(stat_of bench-l1 redis_hits "$base_cluster") == 0 ]] || die "/l1/32k hits (cluster) should come from memory"
[[ $(redis-cli -p "$redis_port" --scan --pattern 'bench:bench-l2:e:*' | wc -l) == 1 ]] ||
    die "no /l2/32k entry in Redis"
# On the cluster the entry's key carries a hash tag: bench:bench-l2:e:{<xxh3>}.
for port in "${cluster_ports[@]}"; do
    redis-cli -p "$port" --scan --pattern 'bench:bench-l2:e:{*}'
done >"$work/cluster-keys"
[[ $(wc -l <"$work/cluster-keys") == 1 ]] || die "no /l2/32k entry in the cluster"
log "checks passed: every cache filled by one miss, then hits with /bare/32k's bytes; L2 hits read Redis"

# --- load ------------------------------------------------------------------------------------
names=("bare" "local hit" "L1 hit" "L1 hit, no read-your-writes" "L2 hit" "L1 hit, cluster" "L2 hit, cluster")
paths=(/bare/32k /cache/32k /l1/32k /l1-lazy/32k /l2/32k /l1/32k /l2/32k)
bases=("$base" "$base" "$base" "$base" "$base" "$base_cluster" "$base_cluster")
# to_us VALUE: wrk's "585.00us" / "4.23ms" / "1.02s" in microseconds.
to_us() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1000000; else print n }'; }
run_wrk() { # INDEX SECONDS -> "rps p50_us p99_us non2xx"
    local out rps p50 p99 bad
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${2}s" --latency "${bases[$1]}${paths[$1]}")
    # A run with socket errors (connect, read, write, timeout) measured something else: stop.
    if grep -q 'Socket errors' <<<"$out"; then
        die "${names[$1]}: $(grep 'Socket errors' <<<"$out" | sed 's/^ *//')"
    fi
    # Bytes per response: every path answers the full 32 KiB body (30000: wrk rounds its total).
    local requests read
    requests=$(awk '/requests in/ { print $1 }' <<<"$out")
    read=$(awk '/requests in/ { print $(NF - 1) }' <<<"$out")
    awk -v r="$requests" -v b="$read" 'BEGIN {
        n = b + 0; if (b ~ /KB$/) n *= 1024; else if (b ~ /MB$/) n *= 1048576; else if (b ~ /GB$/) n *= 1073741824
        exit !(r > 0 && n / r >= 30000) }' || die "${names[$1]}: $read in $requests responses: not full 32 KiB bodies"
    rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    p50=$(to_us "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
    p99=$(to_us "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
    bad=$(awk '/Non-2xx or 3xx responses:/ { print $5 }' <<<"$out")
    printf '%s %s %s %s\n' "$rps" "$p50" "$p99" "${bad:-0}"
}
if ((WARMUP > 0)); then
    for i in "${!paths[@]}"; do
        log "warm-up ${names[$i]} (${WARMUP}s)"
        run_wrk "$i" "$WARMUP" >/dev/null
    done
fi
declare -A results
total=$((ROUNDS * ${#paths[@]}))
done_runs=0
for ((round = 0; round < ROUNDS; round++)); do
    for ((k = 0; k < ${#paths[@]}; k++)); do
        i=$(((round + k) % ${#paths[@]}))
        done_runs=$((done_runs + 1))
        log "run $done_runs/$total: round $((round + 1)) ${names[$i]} (${DURATION}s)"
        read -r rps p50 p99 bad <<<"$(run_wrk "$i" "$DURATION")"
        [[ $bad == 0 ]] || die "${names[$i]}: $bad non-2xx/3xx responses"
        log "  ${rps} req/s, p50 ${p50} µs, p99 ${p99} µs"
        results[$i]+="$rps $p50 $p99;"
    done
done
for cache in bench-l1 bench-l1-lazy bench-l2; do
    [[ $(stat_of "$cache" builds) == 1 ]] || die "$cache rebuilt during the load"
done
for cache in bench-l1 bench-l2; do
    [[ $(stat_of "$cache" builds "$base_cluster") == 1 ]] || die "$cache (cluster) rebuilt during the load"
done
[[ $(stat_of bench-l1 redis_hits) == 0 && $(stat_of bench-l1-lazy redis_hits) == 0 &&
    $(stat_of bench-l1 redis_hits "$base_cluster") == 0 ]] ||
    die "L1 hits went to Redis"
l2_cluster_reads=$(stat_of bench-l2 redis_hits "$base_cluster")
l2_reads=$(stat_of bench-l2 redis_hits)
log "after the load: one build per cache, $l2_reads L2 answers read from Redis ($l2_cluster_reads on the cluster), none for L1"

median() { tr ';' '\n' | awk -v f="$1" 'NF { print $f }' | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
fmt_us() { awk -v u="$1" 'BEGIN { if (u >= 1000) printf "%.2f ms", u / 1000; else printf "%.0f µs", u }'; }
bare_rps=$(median 1 <<<"${results[0]}")
l1_p50=$(median 2 <<<"${results[2]}")
l1_p99=$(median 3 <<<"${results[2]}")
table=""
for i in "${!paths[@]}"; do
    rps=$(median 1 <<<"${results[$i]}")
    p50=$(median 2 <<<"${results[$i]}")
    p99=$(median 3 <<<"${results[$i]}")
    per_round=$(tr ';' '\n' <<<"${results[$i]}" | awk 'NF { printf "%s%d", sep, $1; sep = ", " }')
    table+=$(printf '| %s | `%s` | %.0f | %.2fx | %s | %s | %.2fx | %.2fx | %s |' \
        "${names[$i]}" "${paths[$i]}" "$rps" "$(awk -v a="$rps" -v b="$bare_rps" 'BEGIN { print a / b }')" \
        "$(fmt_us "$p50")" "$(fmt_us "$p99")" \
        "$(awk -v a="$p50" -v b="$l1_p50" 'BEGIN { print a / b }')" \
        "$(awk -v a="$p99" -v b="$l1_p99" 'BEGIN { print a / b }')" "$per_round")$'\n'
done
cluster_vs_single=$(awk -v a="$(median 1 <<<"${results[6]}")" -v b="$(median 1 <<<"${results[4]}")" 'BEGIN { printf "%.2f", a / b }')
l2_vs_l1=$(awk -v a="$(median 1 <<<"${results[4]}")" -v b="$(median 1 <<<"${results[2]}")" 'BEGIN { printf "%.2f", a / b }')
ryw=$(awk -v a="$(median 1 <<<"${results[2]}")" -v b="$(median 1 <<<"${results[3]}")" 'BEGIN { printf "%.2f", a / b }')

section=$(
    cat <<EOF
<!-- redis:begin -->
## Redis tier: L2 hits against L1 hits (wrk)

Written by \`benches/redis_load.sh\`; rerun it rather than editing this section.

- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); code: \`$(git -C "$root" rev-parse --short HEAD)\`$(git -C "$root" diff --quiet HEAD -- src examples Cargo.lock || echo ' with uncommitted changes')
- Machine: $(nproc) CPUs (nproc), $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), shared; load average $(cut -d' ' -f1-3 /proc/loadavg) after
- Command: \`$command_line\`
- Server: \`target/release/examples/bench_server\` (\`cargo build --release --locked --features redis --example bench_server\`), WORKERS=$WORKERS, one 32 KiB JSON body; \`redis-server\` $(redis-server --version | grep -o 'v=[0-9.]*' | cut -c3-) on 127.0.0.1 (no persistence), and for the cluster rows a second server (the same binary) whose \`REDIS_URL\` is a Redis Cluster of three masters on 127.0.0.1 (\`cluster:redis://…\`, no replicas); wrk, the servers and Redis all on this machine
- wrk: \`wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency\`, $ROUNDS interleaved rounds with the starting scenario rotated, median per scenario; ${WARMUP}s unrecorded warm-up each
- Checked: each cache filled by one miss, then \`X-Cache: hit\` with the bytes of \`/bare/32k\`; no non-2xx/3xx answer in any run; after the load one build per cache, no L1 answer read from Redis and $l2_reads L2 answers read from it ($l2_cluster_reads from the cluster) (\`/stats\`)

| scenario | path | req/s (median) | vs bare | p50 | p99 | p50 vs L1 hit | p99 vs L1 hit | req/s per round |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |
${table}
An L2 hit serves ${l2_vs_l1}x the requests per second of an L1 hit here: it adds a Redis round trip (\`GET\` + \`PTTL\` in one pipeline, through the backend's own thread), copying 32 KiB out of Redis and decoding the entry, on the same two cores that run wrk and Redis. An L2 hit happens once per key and instance (the entry then lives in memory) unless \`memory_tier(false)\`. The L1 hit with read-your-writes (the default) serves ${ryw}x the requests of one without it: the price of seeing every invalidation of every instance on the next request is one counter read shared by the requests in flight. On the cluster an L2 hit serves ${cluster_vs_single}x the requests of one on a single server (the cluster client routes each call to the slot's master; the entry and its lease share a hash tag).
<!-- redis:end -->
EOF
)
replace_section "$BENCHMARKS_MD" redis "$section"
log "wrote the table to $BENCHMARKS_MD"
printf '%s\n' "$section"
