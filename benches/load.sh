#!/usr/bin/env bash
# Load test: ConditionalGet against bare actix-web over real sockets, with wrk.
#
# Builds examples/bench_server.rs in release, starts it on a free 127.0.0.1 port with one
# worker, checks each scenario with curl, then runs wrk on four scenarios in interleaved
# rounds (the starting scenario rotates each round, so slow phases of a shared machine hit
# every scenario alike) and keeps each scenario's median requests/sec:
#
#   bare 200   GET /bare/32k                        (no middleware)
#   cg 200     GET /cg/32k                          (ConditionalGet hashes the 32 KiB body)
#   cg 304     GET /cg/32k + If-None-Match: <etag>  (same hashing, no body sent)
#   304 before handler
#              GET /cond/32k + If-None-Match: "v1"  (HandlerPolicy::respond: a constant
#                                                   validator, the handler never runs)
#
# Results go into BENCHMARKS.md between <!-- load:begin --> and <!-- load:end -->.
# Targets: cg 200 >= 0.90x bare 200, cg 304 >= 1.20x bare 200.
#
# Usage:  bash benches/load.sh                  # about 2 minutes with the defaults
#         DURATION=5 ROUNDS=5 STRICT=1 bash benches/load.sh
#
# Environment (defaults):
#   DURATION=10      seconds per wrk run
#   ROUNDS=3         interleaved rounds; the table holds the median
#   THREADS=2        wrk threads
#   CONNECTIONS=32   wrk connections
#   WARMUP=2         seconds of unrecorded load per scenario before round 1 (0: none)
#   WORKERS=1        server workers
#   STRICT=0         1: exit 1 when a target fails (a failed check always exits non-zero)
#   BENCHMARKS_MD=BENCHMARKS.md   the file to update
set -euo pipefail

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
WARMUP=${WARMUP:-2}
WORKERS=${WORKERS:-1}
STRICT=${STRICT:-0}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
BENCHMARKS_MD=${BENCHMARKS_MD:-$root/BENCHMARKS.md}
command_line="DURATION=$DURATION ROUNDS=$ROUNDS THREADS=$THREADS CONNECTIONS=$CONNECTIONS WARMUP=$WARMUP WORKERS=$WORKERS bash benches/load.sh"

log() { printf '%s\n' "$*" >&2; }
die() {
    log "load.sh: error: $*"
    exit 1
}

for var in DURATION ROUNDS THREADS CONNECTIONS WARMUP WORKERS; do
    [[ ${!var} =~ ^[0-9]+$ ]] || die "$var must be a whole number, got '${!var}'"
done
((DURATION > 0 && ROUNDS > 0 && THREADS > 0 && CONNECTIONS >= THREADS && WORKERS > 0)) ||
    die "DURATION, ROUNDS, THREADS and WORKERS must be positive, CONNECTIONS >= THREADS"

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
BIND=127.0.0.1:0 WORKERS=$WORKERS "$server_bin" >"$work/server.log" 2>&1 &
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

# --- load --------------------------------------------------------------------------------
SCENARIOS=("bare 200" "cg 200" "cg 304" "304 before handler")
declare -A PATH_OF=(["bare 200"]=/bare/32k ["cg 200"]=/cg/32k ["cg 304"]=/cg/32k
    ["304 before handler"]=/cond/32k)
# The If-None-Match each 304 scenario sends ($ETAG is known only after the checks above).
declare -A IF_NONE_MATCH=(["cg 304"]=$ETAG ["304 before handler"]='"v1"')
declare -A RPS TRANSFER

# to_bytes "1.18GB" -> bytes (wrk prints binary units).
to_bytes() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        m = (u == "KB") ? 1024 : (u == "MB") ? 1048576 : (u == "GB") ? 1073741824 : (u == "TB") ? 1099511627776 : 1
        printf "%.0f", n * m
    }'
}

# run_wrk SCENARIO SECONDS OUT: runs wrk and checks its output.
run_wrk() {
    local scenario=$1 seconds=$2 out=$3 header=()
    [[ -n ${IF_NONE_MATCH[$scenario]:-} ]] && header=(-H "If-None-Match: ${IF_NONE_MATCH[$scenario]}")
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${seconds}s" "${header[@]}" "$base${PATH_OF[$scenario]}" >"$out" 2>&1 ||
        die "wrk failed for $scenario: $(cat "$out")"
    kill -0 "$server_pid" 2>/dev/null || die "server died during $scenario"

    local non_ok requests read_bytes
    non_ok=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    # wrk counts statuses >= 400 here; any at all means the scenario measured errors.
    [[ -z $non_ok ]] || die "$scenario: wrk saw $non_ok non-2xx/3xx responses"
    grep -q '^Requests/sec:' "$out" || die "$scenario: no Requests/sec in wrk output: $(cat "$out")"
    if grep -q 'Socket errors' "$out"; then
        log "warning: $scenario: $(grep 'Socket errors' "$out" | sed 's/^ *//')"
    fi
    # Bytes per response tell a 304 (a few hundred header bytes) from a 200 (32 KiB + headers),
    # without the cost of a Lua response hook in wrk.
    requests=$(awk '/requests in/ { print $1 }' "$out")
    read_bytes=$(to_bytes "$(awk '/requests in/ { print ($NF == "read") ? $(NF - 1) : "" }' "$out")")
    ((requests > 0)) || die "$scenario: no requests completed"
    local per=$((read_bytes / requests))
    case $scenario in
    "cg 304" | "304 before handler")
        ((per < 1024)) || die "$scenario: $per bytes per response; these are not 304s"
        ;;
    # 30000, not 32768: wrk rounds the total it read to two decimals.
    *) ((per >= 30000)) || die "$scenario: $per bytes per response; these are not full 200s" ;;
    esac
}

median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR % 2) printf "%.0f", v[(NR + 1) / 2]; else printf "%.0f", (v[NR / 2] + v[NR / 2 + 1]) / 2
    }'
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
if ((WARMUP > 0)); then
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
        RPS[$scenario]+="$rps "
        TRANSFER[$scenario]+="$transfer "
        log "[round $round/$ROUNDS] $scenario: $rps req/s"
    done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report ------------------------------------------------------------------------------
declare -A MED MED_TRANSFER
for scenario in "${SCENARIOS[@]}"; do
    # shellcheck disable=SC2086 # word splitting of the space-separated lists is intended
    MED[$scenario]=$(median ${RPS[$scenario]})
    # shellcheck disable=SC2086
    MED_TRANSFER[$scenario]=$(median ${TRANSFER[$scenario]})
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

bare=${MED["bare 200"]}
ratio_200=$(ratio "${MED["cg 200"]}" "$bare")
ratio_304=$(ratio "${MED["cg 304"]}" "$bare")
verdict_200=$(verdict "$ratio_200" 0.90)
verdict_304=$(verdict "$ratio_304" 1.20)

cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
section=$work/section.md
{
    echo "<!-- load:begin -->"
    echo "## Load test (wrk)"
    echo
    echo "Written by \`benches/load.sh\`; rerun it rather than editing this section."
    echo
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- Machine: $(nproc) CPUs (nproc), ${cpu_model:-unknown CPU}, $(uname -sr); load average ${load_before} before, ${load_after} after"
    echo "- Command: \`$command_line\`"
    echo "- Server: \`target/release/examples/bench_server\` (\`cargo build --release --locked --example bench_server\`), WORKERS=$WORKERS, a 32 KiB JSON body from one \`Bytes\`; client and server share the machine"
    echo "- wrk: \`wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s http://127.0.0.1:<port>/<path>\` (+ \`-H 'If-None-Match: $ETAG'\` for cg 304, \`-H 'If-None-Match: \"v1\"'\` for 304 before handler, whose handler is wrapped by \`HandlerPolicy::respond\` with that constant validator), $ROUNDS interleaved rounds with the starting scenario rotated, median per scenario; ${WARMUP}s unrecorded warm-up per scenario"
    echo "- Checked: curl before the load (200s with 32768-byte bodies and an ETag, 304 with none), no non-2xx/3xx responses in any wrk run, bytes per response in every wrk run (about 32 KiB for the 200s, < 1 KiB for the 304s)"
    echo
    echo "| scenario | path | req/s (median) | ratio vs bare 200 | transfer/s | req/s per round |"
    echo "| --- | --- | ---: | ---: | ---: | --- |"
    for scenario in "${SCENARIOS[@]}"; do
        path=${PATH_OF[$scenario]}
        [[ -n ${IF_NONE_MATCH[$scenario]:-} ]] && path="$path + If-None-Match"
        rounds=$(echo "${RPS[$scenario]}" | xargs | sed 's/ /, /g')
        echo "| $scenario | \`$path\` | ${MED[$scenario]} | $(ratio "${MED[$scenario]}" "$bare")x | $(human_rate "${MED_TRANSFER[$scenario]}") | $rounds |"
    done
    echo
    echo "| target | measured | result |"
    echo "| --- | ---: | --- |"
    echo "| ConditionalGet 200 ≥ 0.90x bare 200 | ${ratio_200}x | $verdict_200 |"
    echo "| ConditionalGet 304 ≥ 1.20x bare 200 | ${ratio_304}x | $verdict_304 |"
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

printf '\n%-18s %12s %8s %14s\n' scenario "req/s" ratio transfer/s
for scenario in "${SCENARIOS[@]}"; do
    printf '%-18s %12s %7sx %14s\n' "$scenario" "${MED[$scenario]}" \
        "$(ratio "${MED[$scenario]}" "$bare")" "$(human_rate "${MED_TRANSFER[$scenario]}")"
done
printf 'targets: cg 200 %sx (>= 0.90) %s, cg 304 %sx (>= 1.20) %s\n' \
    "$ratio_200" "$verdict_200" "$ratio_304" "$verdict_304"

if [[ $STRICT == 1 && ($verdict_200 == FAIL || $verdict_304 == FAIL) ]]; then
    die "a target failed (STRICT=1)"
fi
