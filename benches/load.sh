#!/usr/bin/env bash
# Load test: ConditionalGet and ResponseCache against bare actix-web over real sockets, with
# wrk.
#
# Builds examples/bench_server.rs in release, starts it on a free 127.0.0.1 port with one
# worker, checks each scenario with curl (which also fills the response caches), then runs
# wrk --latency on six scenarios in interleaved rounds (the starting scenario rotates each
# round, so slow phases of a shared machine hit every scenario alike) and keeps each
# scenario's median requests/sec and median latency percentiles:
#
#   bare 200   GET /bare/32k                        (no middleware)
#   cg 200     GET /cg/32k                          (ConditionalGet hashes the 32 KiB body)
#   cg 304     GET /cg/32k + If-None-Match: <etag>  (same hashing, no body sent)
#   304 before handler
#              GET /cond/32k + If-None-Match: "v1"  (HandlerPolicy::respond: a constant
#                                                   validator, the handler never runs)
#   cache hit  GET /cache/32k                       (ResponseCache::serve, TTL 1 h: all hits)
#   cache refresh
#              GET /refresh/32k                     (ResponseCache::serve, TTL REFRESH_TTL_MS,
#                                                   a build that sleeps REFRESH_BUILD_MS: a
#                                                   background refresh runs while readers get
#                                                   the stale bytes)
#
# After every cache run the server's /stats tell whether the hit runs were all hits and how
# many refreshes and stale answers the refresh runs saw.
#
# Results go into BENCHMARKS.md between <!-- load:begin --> and <!-- load:end -->.
# Targets: cg 200 >= 0.90x bare 200, cg 304 >= 1.20x bare 200, cache hit >= 0.90x bare 200,
# p99 latency of cache refresh <= 2.0x p99 of cache hit.
#
# Usage:  bash benches/load.sh                  # about 7 minutes with the defaults
#         DURATION=5 ROUNDS=5 STRICT=1 bash benches/load.sh
#
# Environment (defaults):
#   DURATION=10      seconds per wrk run
#   ROUNDS=5         interleaved rounds; the table holds the median, min and max
#   THREADS=2        wrk threads
#   CONNECTIONS=32   wrk connections
#   WARMUP=2         seconds of unrecorded load per scenario before round 1 (0: none)
#   WORKERS=1        server workers
#   REFRESH_TTL_MS=1000   TTL of /refresh/32k's cache
#   REFRESH_BUILD_MS=200  how long a /refresh/32k build sleeps
#   STRICT=0         1: exit 1 when a target fails (a failed check always exits non-zero)
#   BENCHMARKS_MD=BENCHMARKS.md   the file to update
set -euo pipefail

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-5}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
WARMUP=${WARMUP:-2}
WORKERS=${WORKERS:-1}
STRICT=${STRICT:-0}
REFRESH_TTL_MS=${REFRESH_TTL_MS:-1000}
REFRESH_BUILD_MS=${REFRESH_BUILD_MS:-200}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
BENCHMARKS_MD=${BENCHMARKS_MD:-$root/BENCHMARKS.md}
command_line="DURATION=$DURATION ROUNDS=$ROUNDS THREADS=$THREADS CONNECTIONS=$CONNECTIONS WARMUP=$WARMUP WORKERS=$WORKERS REFRESH_TTL_MS=$REFRESH_TTL_MS REFRESH_BUILD_MS=$REFRESH_BUILD_MS bash benches/load.sh"

log() { printf '%s\n' "$*" >&2; }
die() {
    log "load.sh: error: $*"
    exit 1
}

for var in DURATION ROUNDS THREADS CONNECTIONS WARMUP WORKERS REFRESH_TTL_MS REFRESH_BUILD_MS; do
    [[ ${!var} =~ ^[0-9]+$ ]] || die "$var must be a whole number, got '${!var}'"
done
((DURATION > 0 && ROUNDS > 0 && THREADS > 0 && CONNECTIONS >= THREADS && WORKERS > 0)) ||
    die "DURATION, ROUNDS, THREADS and WORKERS must be positive, CONNECTIONS >= THREADS"
((REFRESH_TTL_MS > 0 && REFRESH_BUILD_MS > 0)) || die "REFRESH_TTL_MS and REFRESH_BUILD_MS must be positive"

# --- tools -------------------------------------------------------------------------------
apt_install() {
    local sudo=()
    ((EUID == 0)) || sudo=(sudo)
    log "installing $* with apt-get"
    "${sudo[@]}" apt-get install -y "$@" >/dev/null ||
        { "${sudo[@]}" apt-get update >/dev/null && "${sudo[@]}" apt-get install -y "$@" >/dev/null; } ||
        die "could not install $*"
}
command -v wrk >/dev/null || apt_install wrk
command -v curl >/dev/null || apt_install curl

# --- server ------------------------------------------------------------------------------
log "building the bench server (release)"
cargo build --release --locked --example bench_server
server_bin="${CARGO_TARGET_DIR:-$root/target}/release/examples/bench_server"
[[ -x $server_bin ]] || die "no binary at $server_bin"

work=$(mktemp -d)
server_pid=
cleanup() {
    if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Port 0: the OS picks a free port and the server prints the one it got.
BIND=127.0.0.1:0 WORKERS=$WORKERS REFRESH_TTL_MS=$REFRESH_TTL_MS REFRESH_BUILD_MS=$REFRESH_BUILD_MS \
    "$server_bin" >"$work/server.log" 2>&1 &
server_pid=$!

base=
for _ in $(seq 100); do
    kill -0 "$server_pid" 2>/dev/null || die "server exited: $(cat "$work/server.log")"
    base=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$work/server.log" | head -n1 || true)
    if [[ -n $base ]] && curl -fsS -o /dev/null --max-time 1 "$base/bare/32k" 2>/dev/null; then
        break
    fi
    base=
    sleep 0.1
done
[[ -n $base ]] || die "server did not answer within 10 s: $(cat "$work/server.log")"
log "server up at $base (pid $server_pid, workers $WORKERS)"

# --- correctness checks, before any load -------------------------------------------------
# probe PATH [HEADER]: prints "<status> <body bytes> <etag>".
probe() {
    local path=$1 headers=$work/probe.headers extra=()
    [[ $# -gt 1 ]] && extra=(-H "$2")
    local out
    out=$(curl -sS --max-time 5 "${extra[@]}" -D "$headers" -o "$work/probe.body" \
        -w '%{http_code} %{size_download}' "$base$path") || die "curl $path failed"
    local etag
    etag=$(tr -d '\r' <"$headers" | awk -F': ' 'tolower($1) == "etag" { print $2 }')
    printf '%s %s\n' "$out" "${etag:--}"
}

read -r status size etag <<<"$(probe /bare/32k)"
[[ $status == 200 && $size == 32768 ]] || die "bare 200: got status $status, $size bytes"
read -r status size etag <<<"$(probe /cg/32k)"
[[ $status == 200 && $size == 32768 ]] || die "cg 200: got status $status, $size bytes"
[[ $etag =~ ^\"[0-9a-f]+\"$ ]] || die "cg 200: expected a strong ETag, got '$etag'"
ETAG=$etag
read -r status size _ <<<"$(probe /cg/32k "If-None-Match: $ETAG")"
[[ $status == 304 && $size == 0 ]] || die "cg 304: got status $status, $size bytes"
read -r status _ _ <<<"$(probe /cg/32k 'If-None-Match: "stale"')"
[[ $status == 200 ]] || die "cg with a stale If-None-Match: got status $status, not 200"
read -r status size etag <<<"$(probe /cond/32k)"
[[ $status == 200 && $size == 32768 ]] || die "cond 200: got status $status, $size bytes"
[[ $etag == '"v1"' ]] || die "cond 200: expected the handler's ETag \"v1\", got '$etag'"
read -r status size _ <<<"$(probe /cond/32k 'If-None-Match: "v1"')"
[[ $status == 304 && $size == 0 ]] || die "304 before handler: got status $status, $size bytes"
log "checks passed: bare 200, cg 200 with ETag $ETAG, cg 304 on a match, 200 on a mismatch," \
    "cond 200 with ETag \"v1\" and 304 before the handler"

# probe_cache PATH: prints "<status> <body bytes> <X-Cache> <seconds>"; the body is kept in
# $work/probe.body and the headers in $work/probe.headers.
probe_cache() {
    local path=$1 headers=$work/probe.headers out label status size seconds
    out=$(curl -sS --max-time 5 -D "$headers" -o "$work/probe.body" \
        -w '%{http_code} %{size_download} %{time_total}' "$base$path") || die "curl $path failed"
    label=$(tr -d '\r' <"$headers" | awk -F': ' 'tolower($1) == "x-cache" { print $2 }')
    read -r status size seconds <<<"$out"
    printf '%s %s %s %s\n' "$status" "$size" "${label:--}" "$seconds"
}
header_of() { tr -d '\r' <"$work/probe.headers" | awk -F': ' -v h="$1" 'tolower($1) == h { print $2 }'; }
curl -sS --max-time 5 -o "$work/bare.body" "$base/bare/32k" || die "curl /bare/32k failed"
bare_type=$(curl -sS --max-time 5 -o /dev/null -w '%{content_type}' "$base/bare/32k")

# Fill the caches: the first request of each is a miss (the refresh one sleeps its build).
log "filling the caches: GET /cache/32k, GET /refresh/32k"
read -r status size label _ <<<"$(probe_cache /cache/32k)"
[[ $status == 200 && $size == 32768 && $label == miss ]] ||
    die "cache fill: got status $status, $size bytes, X-Cache $label (expected 200, 32768, miss)"
read -r status size label _ <<<"$(probe_cache /refresh/32k)"
[[ $status == 200 && $size == 32768 && $label == miss ]] ||
    die "refresh fill: got status $status, $size bytes, X-Cache $label (expected 200, 32768, miss)"

read -r status size label _ <<<"$(probe_cache /cache/32k)"
[[ $status == 200 && $size == 32768 && $label == hit ]] ||
    die "cache hit: got status $status, $size bytes, X-Cache $label (expected 200, 32768, hit)"
cmp -s "$work/probe.body" "$work/bare.body" || die "cache hit: body differs from /bare/32k"
[[ $(header_of content-type) == "$bare_type" ]] ||
    die "cache hit: content-type '$(header_of content-type)', /bare/32k has '$bare_type'"
cache_etag=$(header_of etag)
[[ $cache_etag =~ ^\"[0-9a-f]+\"$ ]] || die "cache hit: expected a strong ETag, got '$cache_etag'"

# The refresh cycle: hit, then stale at once past the TTL (the build runs in the background),
# then hit again once the build is done.
read -r status size label _ <<<"$(probe_cache /refresh/32k)"
[[ $status == 200 && $size == 32768 && $label == hit ]] ||
    die "refresh: got status $status, $size bytes, X-Cache $label (expected 200, 32768, hit)"
sleep "$(awk -v ms="$REFRESH_TTL_MS" 'BEGIN { printf "%.3f", ms / 1000 + 0.05 }')"
read -r status size label seconds <<<"$(probe_cache /refresh/32k)"
[[ $status == 200 && $size == 32768 && $label == stale ]] ||
    die "refresh past the TTL: got status $status, $size bytes, X-Cache $label (expected 200, 32768, stale)"
cmp -s "$work/probe.body" "$work/bare.body" || die "refresh stale: body differs from /bare/32k"
awk -v s="$seconds" -v ms="$REFRESH_BUILD_MS" 'BEGIN { exit !(s * 1000 < ms / 2) }' ||
    die "refresh past the TTL: the stale answer took ${seconds}s; it should not wait for the ${REFRESH_BUILD_MS} ms build"
stale_ms=$(awk -v s="$seconds" 'BEGIN { printf "%.1f", s * 1000 }')
sleep "$(awk -v ms="$REFRESH_BUILD_MS" 'BEGIN { printf "%.3f", ms / 1000 + 0.1 }')"
read -r status size label _ <<<"$(probe_cache /refresh/32k)"
[[ $status == 200 && $size == 32768 && $label == hit ]] ||
    die "refresh after the build: got status $status, $size bytes, X-Cache $label (expected 200, 32768, hit)"
log "checks passed: /cache/32k miss then hit (same bytes and content-type as /bare/32k, ETag $cache_etag)," \
    "/refresh/32k hit, stale in ${stale_ms} ms past the ${REFRESH_TTL_MS} ms TTL, hit after the ${REFRESH_BUILD_MS} ms build"

# counter JSON CACHE FIELD: one counter of one cache from a /stats answer.
stats_now() { curl -sS --max-time 5 "$base/stats" || die "curl /stats failed"; }
counter() {
    local json=$1 cache=$2 field=$3 value
    value=$(printf '%s' "$json" | sed -E "s/.*\"$cache\":\{([^}]*)\}.*/\1/" |
        tr ',' '\n' | awk -F: -v f="\"$field\"" '$1 == f { print $2 }')
    [[ $value =~ ^[0-9]+$ ]] || die "/stats: no $cache.$field in $json"
    printf '%s' "$value"
}

# --- load --------------------------------------------------------------------------------
SCENARIOS=("bare 200" "cg 200" "cg 304" "304 before handler" "cache hit" "cache refresh")
declare -A PATH_OF=(["bare 200"]=/bare/32k ["cg 200"]=/cg/32k ["cg 304"]=/cg/32k
    ["304 before handler"]=/cond/32k ["cache hit"]=/cache/32k ["cache refresh"]=/refresh/32k)
# The cache (its /stats name) behind each cache scenario.
declare -A CACHE_OF=(["cache hit"]=bench ["cache refresh"]=bench-refresh)
# The If-None-Match each 304 scenario sends ($ETAG is known only after the checks above).
declare -A IF_NONE_MATCH=(["cg 304"]=$ETAG ["304 before handler"]='"v1"')
declare -A RPS TRANSFER P50 P99 MAX REFRESHES STALE_SHARE CPU

# Server CPU time (user + system, all threads) in clock ticks: a per-request cost that a
# noisy neighbour disturbs far less than it disturbs requests/sec.
clk_tck=$(getconf CLK_TCK)
server_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$server_pid/stat"; }

# to_bytes "1.18GB" -> bytes (wrk prints binary units).
to_bytes() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        m = (u == "KB") ? 1024 : (u == "MB") ? 1048576 : (u == "GB") ? 1073741824 : (u == "TB") ? 1099511627776 : 1
        printf "%.0f", n * m
    }'
}

# to_us "1.23ms" -> microseconds (wrk prints us, ms, s, m).
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        m = (u == "us") ? 1 : (u == "ms") ? 1000 : (u == "s") ? 1000000 : (u == "m") ? 60000000 : -1
        if (m < 0) exit 1
        printf "%.0f", n * m
    }' || die "cannot read the latency '$1'"
}

# run_wrk SCENARIO SECONDS OUT: runs wrk and checks its output; for a cache scenario, also
# checks the cache's counters over the run and sets RUN_REFRESHES and RUN_STALE_SHARE.
run_wrk() {
    local scenario=$1 seconds=$2 out=$3 header=() cache=${CACHE_OF[$1]:-} before=
    [[ -n ${IF_NONE_MATCH[$scenario]:-} ]] && header=(-H "If-None-Match: ${IF_NONE_MATCH[$scenario]}")
    [[ -n $cache ]] && before=$(stats_now)
    local ticks_before
    ticks_before=$(server_ticks)
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${seconds}s" --latency "${header[@]}" "$base${PATH_OF[$scenario]}" >"$out" 2>&1 ||
        die "wrk failed for $scenario: $(cat "$out")"
    kill -0 "$server_pid" 2>/dev/null || die "server died during $scenario"
    local ticks_after
    ticks_after=$(server_ticks)

    local non_ok requests read_bytes
    non_ok=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    # wrk counts statuses >= 400 here; any at all means the scenario measured errors.
    [[ -z $non_ok ]] || die "$scenario: wrk saw $non_ok non-2xx/3xx responses"
    grep -q '^Requests/sec:' "$out" || die "$scenario: no Requests/sec in wrk output: $(cat "$out")"
    # A run with socket errors (connect, read, write, timeout) measured something else: stop.
    if grep -q 'Socket errors' "$out"; then
        die "$scenario: $(grep 'Socket errors' "$out" | sed 's/^ *//')"
    fi
    # Bytes per response tell a 304 (a few hundred header bytes) from a 200 (32 KiB + headers),
    # without the cost of a Lua response hook in wrk.
    requests=$(awk '/requests in/ { print $1 }' "$out")
    read_bytes=$(to_bytes "$(awk '/requests in/ { print ($NF == "read") ? $(NF - 1) : "" }' "$out")")
    ((requests > 0)) || die "$scenario: no requests completed"
    # Server CPU microseconds per request, to a tenth.
    RUN_CPU=$(awk -v t=$((ticks_after - ticks_before)) -v hz="$clk_tck" -v n="$requests" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }')
    local per=$((read_bytes / requests))
    case $scenario in
    "cg 304" | "304 before handler")
        ((per < 1024)) || die "$scenario: $per bytes per response; these are not 304s"
        ;;
    # 30000, not 32768: wrk rounds the total it read to two decimals.
    *) ((per >= 30000)) || die "$scenario: $per bytes per response; these are not full 200s" ;;
    esac
    grep -q '^ *99% ' "$out" || die "$scenario: no latency distribution in wrk output: $(cat "$out")"

    [[ -n $cache ]] || return 0
    local after field
    after=$(stats_now)
    declare -A delta
    for field in builds hits misses stale_served coalesced bypasses refresh_failures; do
        delta[$field]=$(($(counter "$after" "$cache" "$field") - $(counter "$before" "$cache" "$field")))
    done
    local answered=$((delta[hits] + delta[stale_served] + delta[misses] + delta[coalesced] + delta[bypasses]))
    ((answered >= requests)) || die "$scenario: the cache answered $answered requests, wrk completed $requests"
    ((delta[misses] == 0 && delta[refresh_failures] == 0 && delta[bypasses] == 0 && delta[coalesced] == 0)) ||
        die "$scenario: misses ${delta[misses]}, refresh failures ${delta[refresh_failures]}, bypasses ${delta[bypasses]}, coalesced ${delta[coalesced]}"
    case $scenario in
    "cache hit")
        ((delta[stale_served] == 0 && delta[builds] == 0)) ||
            die "$scenario: not all hits: ${delta[stale_served]} stale, ${delta[builds]} builds"
        ;;
    "cache refresh")
        # A run shorter than the TTL may see no refresh at all; any longer one must.
        ((delta[builds] > 0 || seconds * 1000 <= REFRESH_TTL_MS + REFRESH_BUILD_MS)) ||
            die "$scenario: no refresh ran in ${seconds}s (TTL $REFRESH_TTL_MS ms)"
        ;;
    esac
    RUN_REFRESHES=${delta[builds]}
    RUN_STALE_SHARE=$(awk -v s="${delta[stale_served]}" -v a="$answered" 'BEGIN { printf "%.1f", 100 * s / a }')
}

# median_fmt FORMAT VALUE...: the median, printed with an awk format.
median_fmt() {
    local format=$1
    shift
    printf '%s\n' "$@" | sort -g | awk -v f="$format" '{ v[NR] = $1 } END {
        if (NR % 2) printf f, v[(NR + 1) / 2]; else printf f, (v[NR / 2] + v[NR / 2 + 1]) / 2
    }'
}
median() { median_fmt '%.0f' "$@"; }
median1() { median_fmt '%.1f' "$@"; }

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
if ((WARMUP > 0)); then
    # The caches were filled by the checks; one more GET each keeps that true whatever ran
    # since (a hit on /cache/32k, a hit or stale answer on /refresh/32k).
    for scenario in "cache hit" "cache refresh"; do
        read -r status _ label _ <<<"$(probe_cache "${PATH_OF[$scenario]}")"
        [[ $status == 200 && $label =~ ^(hit|stale)$ ]] || die "$scenario: before the warm-up got $status, X-Cache $label"
    done
    for scenario in "${SCENARIOS[@]}"; do
        log "[warm-up] $scenario: ${WARMUP}s"
        run_wrk "$scenario" "$WARMUP" "$work/warmup.out"
    done
fi

n=${#SCENARIOS[@]}
for ((round = 1; round <= ROUNDS; round++)); do
    for ((k = 0; k < n; k++)); do
        scenario=${SCENARIOS[(round - 1 + k) % n]}
        out="$work/round$round.${scenario// /_}.out"
        run_wrk "$scenario" "$DURATION" "$out"
        rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
        transfer=$(to_bytes "$(awk '/^Transfer\/sec:/ { print $2 }' "$out")")
        p50=$(to_us "$(awk '$1 == "50%" { print $2; exit }' "$out")")
        p99=$(to_us "$(awk '$1 == "99%" { print $2; exit }' "$out")")
        max=$(to_us "$(awk '$1 == "Latency" { print $4; exit }' "$out")")
        RPS[$scenario]+="$rps "
        CPU[$scenario]+="$RUN_CPU "
        TRANSFER[$scenario]+="$transfer "
        P50[$scenario]+="$p50 "
        P99[$scenario]+="$p99 "
        MAX[$scenario]+="$max "
        note=
        if [[ -n ${CACHE_OF[$scenario]:-} ]]; then
            REFRESHES[$scenario]+="$RUN_REFRESHES "
            STALE_SHARE[$scenario]+="$RUN_STALE_SHARE "
            note=", $RUN_REFRESHES refreshes, $RUN_STALE_SHARE% stale"
        fi
        log "[round $round/$ROUNDS] $scenario: $rps req/s, p50 ${p50} us, p99 ${p99} us, server CPU ${RUN_CPU} us/req$note"
    done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report ------------------------------------------------------------------------------
declare -A MED MED_TRANSFER MED_P50 MED_P99 MED_MAX MED_CPU
for scenario in "${SCENARIOS[@]}"; do
    # shellcheck disable=SC2086 # word splitting of the space-separated lists is intended
    MED[$scenario]=$(median ${RPS[$scenario]})
    # shellcheck disable=SC2086
    MED_TRANSFER[$scenario]=$(median ${TRANSFER[$scenario]})
    # shellcheck disable=SC2086
    MED_CPU[$scenario]=$(median1 ${CPU[$scenario]})
    # shellcheck disable=SC2086
    MED_P50[$scenario]=$(median ${P50[$scenario]})
    # shellcheck disable=SC2086
    MED_P99[$scenario]=$(median ${P99[$scenario]})
    # shellcheck disable=SC2086
    MED_MAX[$scenario]=$(median ${MAX[$scenario]})
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
human_rate() {
    awk -v b="$1" 'BEGIN {
        if (b >= 1073741824) printf "%.2f GiB/s", b / 1073741824
        else if (b >= 1048576) printf "%.1f MiB/s", b / 1048576
        else printf "%.1f KiB/s", b / 1024
    }'
}
verdict() { awk -v r="$1" -v t="$2" 'BEGIN { print (r >= t) ? "PASS" : "FAIL" }'; }
verdict_at_most() { awk -v r="$1" -v t="$2" 'BEGIN { print (r <= t) ? "PASS" : "FAIL" }'; }
# human_us 1234 -> "1.23 ms"
human_us() { awk -v u="$1" 'BEGIN { if (u >= 1000) printf "%.2f ms", u / 1000; else printf "%d µs", u }'; }
list() { echo "$1" | xargs | sed 's/ /, /g'; }

bare=${MED["bare 200"]}
# per_round LIST_A LIST_B: the ratio A/B of each round (the two runs of one round), in order.
per_round() {
    paste -d' ' <(tr ' ' '\n' <<<"$1" | grep .) <(tr ' ' '\n' <<<"$2" | grep .) |
        awk '{ printf "%.2f ", $1 / $2 }'
}
# summary RATIOS: "median (min–max)" of per-round ratios.
summary() {
    # shellcheck disable=SC2086 # word splitting of the list is intended
    printf '%s\n' $1 | sort -g | awk '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.2fx (%.2f–%.2f)", m, v[1], v[NR]
    }'
}
# A target is met only when every round meets it: judged on the worst round.
worst_at_least() {
    # shellcheck disable=SC2086
    printf '%s\n' $1 | awk -v t="$2" '$1 < t { f = 1 } END { print f ? "FAIL" : "PASS" }'
}
worst_at_most() {
    # shellcheck disable=SC2086
    printf '%s\n' $1 | awk -v t="$2" '$1 > t { f = 1 } END { print f ? "FAIL" : "PASS" }'
}
rounds_200=$(per_round "${RPS["cg 200"]}" "${RPS["bare 200"]}")
rounds_304=$(per_round "${RPS["cg 304"]}" "${RPS["bare 200"]}")
rounds_hit=$(per_round "${RPS["cache hit"]}" "${RPS["bare 200"]}")
rounds_p99=$(per_round "${P99["cache refresh"]}" "${P99["cache hit"]}")
ratio_200=$(summary "$rounds_200")
ratio_304=$(summary "$rounds_304")
ratio_hit=$(summary "$rounds_hit")
ratio_p99=$(summary "$rounds_p99")
verdict_200=$(worst_at_least "$rounds_200" 0.90)
verdict_304=$(worst_at_least "$rounds_304" 1.20)
verdict_hit=$(worst_at_least "$rounds_hit" 0.90)
verdict_p99=$(worst_at_most "$rounds_p99" 2.0)
# shellcheck disable=SC2086
med_refreshes=$(median ${REFRESHES["cache refresh"]})
# shellcheck disable=SC2086
med_stale=$(median1 ${STALE_SHARE["cache refresh"]})

cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
section=$work/section.md
{
    echo "<!-- load:begin -->"
    echo "## Load test (wrk)"
    echo
    echo "Written by \`benches/load.sh\`; rerun it rather than editing this section. \`ConditionalGet\` and \`ResponseCache\` hits against bare actix-web serving the same bytes, in the same run."
    echo
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); code: \`$(git -C "$root" rev-parse --short HEAD)\`$(git -C "$root" diff --quiet HEAD -- src examples Cargo.lock || echo ' with uncommitted changes')"
    echo "- Machine: $(nproc) CPUs (nproc), ${cpu_model:-unknown CPU}, $(uname -sr); load average ${load_before} before, ${load_after} after"
    echo "- Command: \`$command_line\`"
    echo "- Server: \`target/release/examples/bench_server\` (\`cargo build --release --locked --example bench_server\`), WORKERS=$WORKERS, a 32 KiB JSON body from one \`Bytes\`; client and server share the machine. \`/cache/32k\` is \`ResponseCache::ttl(\"bench\", 3600 s)\` + \`serve\` around the \`/bare/32k\` handler; \`/refresh/32k\` the same with a ${REFRESH_TTL_MS} ms TTL and a build that sleeps ${REFRESH_BUILD_MS} ms (\`actix_rt::time::sleep\`) before answering the same bytes, so a background refresh is in progress about ${REFRESH_BUILD_MS}/(${REFRESH_TTL_MS}+${REFRESH_BUILD_MS}) of the time while readers get the stale bytes; both caches built once before \`HttpServer::new\`"
    echo "- wrk: \`wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency http://127.0.0.1:<port>/<path>\` (+ \`-H 'If-None-Match: $ETAG'\` for cg 304, \`-H 'If-None-Match: \"v1\"'\` for 304 before handler, whose handler is wrapped by \`HandlerPolicy::respond\` with that constant validator), $ROUNDS interleaved rounds with the starting scenario rotated, median per scenario; ${WARMUP}s unrecorded warm-up per scenario"
    echo "- Server CPU per request: the server process's user + system time over the run (\`/proc/<pid>/stat\`, all threads) divided by the requests wrk completed; a noisy neighbour moves it much less than req/s, so it is the better measure of what a scenario costs (the ratio in brackets is against bare 200)"
    echo "- Checked: curl before the load (200s with 32768-byte bodies and an ETag, 304 with none; \`/cache/32k\` filled by a first GET (\`X-Cache: miss\`), then \`X-Cache: hit\` with the body and content-type of \`/bare/32k\`; \`/refresh/32k\` \`hit\`, then \`stale\` in ${stale_ms} ms just past the TTL, then \`hit\` once the build is done), no non-2xx/3xx responses in any wrk run, bytes per response in every wrk run (about 32 KiB for the 200s, < 1 KiB for the 304s), and the caches' counters (\`/stats\`) over every cache run: cache hit runs all hits (no miss, stale answer or build), refresh runs without failures, bypasses or coalesced waits"
    echo
    echo "| scenario | path | req/s (median) | vs bare 200, per round: median (min–max) | transfer/s | server CPU per request (median) | req/s per round |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | --- |"
    for scenario in "${SCENARIOS[@]}"; do
        path=${PATH_OF[$scenario]}
        [[ -n ${IF_NONE_MATCH[$scenario]:-} ]] && path="$path + If-None-Match"
        echo "| $scenario | \`$path\` | ${MED[$scenario]} | $(summary "$(per_round "${RPS[$scenario]}" "${RPS["bare 200"]}")") | $(human_rate "${MED_TRANSFER[$scenario]}") | ${MED_CPU[$scenario]} µs ($(ratio "${MED_CPU[$scenario]}" "${MED_CPU["bare 200"]}")x) | $(list "${RPS[$scenario]}") |"
    done
    echo
    echo "Latency of the same runs (wrk \`--latency\`, closed loop: $CONNECTIONS connections always busy, so these are mostly queueing on the one worker). The refresh runs saw a median of $med_refreshes refreshes of ${REFRESH_BUILD_MS} ms each and ${med_stale}% of answers stale, i.e. given while a refresh was in progress (per round: $(list "${REFRESHES["cache refresh"]}") refreshes; $(list "${STALE_SHARE["cache refresh"]}")% stale)."
    echo
    echo "| scenario | p50 (median) | p99 (median) | p99 vs cache hit | max (median) | p99 per round (µs) |"
    echo "| --- | ---: | ---: | ---: | ---: | --- |"
    for scenario in "bare 200" "cache hit" "cache refresh"; do
        echo "| $scenario | $(human_us "${MED_P50[$scenario]}") | $(human_us "${MED_P99[$scenario]}") | $(ratio "${MED_P99[$scenario]}" "${MED_P99["cache hit"]}")x | $(human_us "${MED_MAX[$scenario]}") | $(list "${P99[$scenario]}") |"
    done
    echo
    echo "Targets are judged round by round: each ratio is between two runs of the same round, and a target is met only if every round meets it."
    echo
    echo "| target | per-round ratio: median (min–max) | per round | met in every round |"
    echo "| --- | ---: | --- | --- |"
    echo "| ConditionalGet 200 ≥ 0.90x bare 200 | $ratio_200 | $(list "$rounds_200") | $verdict_200 |"
    echo "| ConditionalGet 304 ≥ 1.20x bare 200 | $ratio_304 | $(list "$rounds_304") | $verdict_304 |"
    echo "| ResponseCache hit ≥ 0.90x bare 200 | $ratio_hit | $(list "$rounds_hit") | $verdict_hit |"
    echo "| p99 of readers during ${REFRESH_BUILD_MS} ms refreshes ≤ 2.0x p99 of plain hits | $ratio_p99 | $(list "$rounds_p99") | $verdict_p99 |"
    echo "<!-- load:end -->"
} >"$section"

if [[ ! -f $BENCHMARKS_MD ]]; then
    cat >"$BENCHMARKS_MD" <<'EOF'
# Benchmarks

How `ConditionalGet` compares with bare actix-web. Each section between `<!-- …:begin -->`
and `<!-- …:end -->` markers is written by the tool it names; rerun the tool to refresh it.
EOF
fi
if grep -q '^<!-- load:begin -->' "$BENCHMARKS_MD"; then
    awk -v section="$section" '
        /^<!-- load:begin -->/ { while ((getline line < section) > 0) print line; skip = 1; next }
        /^<!-- load:end -->/ { skip = 0; next }
        !skip { print }
    ' "$BENCHMARKS_MD" >"$work/benchmarks.md"
    cat "$work/benchmarks.md" >"$BENCHMARKS_MD"
else
    { echo; cat "$section"; } >>"$BENCHMARKS_MD"
fi
log "wrote the load section of $BENCHMARKS_MD"

printf '\n%-18s %12s %8s %14s %12s %10s %10s\n' scenario "req/s" ratio transfer/s "CPU us/req" "p50 us" "p99 us"
for scenario in "${SCENARIOS[@]}"; do
    printf '%-18s %12s %7sx %14s %12s %10s %10s\n' "$scenario" "${MED[$scenario]}" \
        "$(ratio "${MED[$scenario]}" "$bare")" "$(human_rate "${MED_TRANSFER[$scenario]}")" \
        "${MED_CPU[$scenario]}" "${MED_P50[$scenario]}" "${MED_P99[$scenario]}"
done
printf 'targets (every round): cg 200 %s (>= 0.90) %s, cg 304 %s (>= 1.20) %s, cache hit %s (>= 0.90) %s, refresh p99 %s hit p99 (<= 2.0) %s\n' \
    "$ratio_200" "$verdict_200" "$ratio_304" "$verdict_304" "$ratio_hit" "$verdict_hit" "$ratio_p99" "$verdict_p99"

if [[ $STRICT == 1 && ($verdict_200 == FAIL || $verdict_304 == FAIL || $verdict_hit == FAIL || $verdict_p99 == FAIL) ]]; then
    die "a target failed (STRICT=1)"
fi
