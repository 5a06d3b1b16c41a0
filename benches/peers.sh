#!/usr/bin/env bash
# The peer table: actix-conditional against bare actix-web, nginx, Varnish and Django, all
# serving the same 32 KiB JSON on loopback, measured with wrk in one run, interleaved.
#
#   actix: bare 200                 GET /bare/32k on examples/bench_server.rs (no middleware)
#   actix: cg XXH3 200              GET /cg/32k (ConditionalGet, XXH3 ETag over the body)
#   actix: cg XXH3 304              + If-None-Match: <its ETag>
#   actix: cg MD5 200               GET /cg/32k/md5 (ConditionalGet, MD5: Django's own tag)
#   actix: cg MD5 304               + If-None-Match: <its ETag>
#   actix: 304 before handler       GET /cond/32k + If-None-Match: "v1" (validator, no handler)
#   actix: cache hit                GET /cache/32k (ResponseCache, every request a hit)
#   nginx: static 200               the same bytes as a file: sendfile, open_file_cache, ETag
#   nginx: static 304               + If-None-Match: <nginx's ETag>
#   nginx: proxy_cache HIT          nginx proxy_cache in front of /bare/32k, every request a HIT
#   varnish: HIT                    Varnish in front of /bare/32k, every request a hit
#   django: cg MD5 200              Django's ConditionalGetMiddleware (MD5 ETag) under gunicorn
#   django: cg MD5 304              + If-None-Match: <Django's ETag>
#
# Each scenario's req/s comes with the server's CPU per request (user + system time of every
# process of the server, and of the backend behind a proxy, from /proc/<pid>/stat over the
# run, divided by the requests wrk completed) and wrk's own CPU. With THREADS=1 (the default)
# wrk's one thread and a one-worker server each have a core of the two: a row whose wrk
# thread used >= 90% of a core while the server used less is client-bound, and its req/s
# measures wrk, not the server. Its CPU per request still tells the servers apart.
#
# Every run is checked: no socket error, no status outside 2xx/3xx, bytes per response
# (~32 KiB for 200s, < 1 KiB for 304s). Targets are judged round by round (the ratio of two
# scenarios in the same round) and count as met only when every round meets them.
#
# Results: the section between <!-- peers:begin --> and <!-- peers:end --> in BENCHMARKS.md,
# a bar chart, docs/peers.svg, and README.md's paragraph between <!-- peers-headline:begin -->
# and <!-- peers-headline:end -->.
#
# Usage: bash benches/peers.sh        # about 14 minutes with the defaults
# Environment (defaults): DURATION=10, ROUNDS=5, THREADS=1, CONNECTIONS=32, WARMUP=2,
# BENCHMARKS_MD=BENCHMARKS.md, CHART=docs/peers.svg, README_MD=README.md, STRICT=0 (1: exit 1 if a target fails)
set -euo pipefail

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-5}
THREADS=${THREADS:-1}
CONNECTIONS=${CONNECTIONS:-32}
WARMUP=${WARMUP:-2}
STRICT=${STRICT:-0}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
BENCHMARKS_MD=${BENCHMARKS_MD:-$root/BENCHMARKS.md}
CHART=${CHART:-$root/docs/peers.svg}
command_line="DURATION=$DURATION ROUNDS=$ROUNDS THREADS=$THREADS CONNECTIONS=$CONNECTIONS WARMUP=$WARMUP bash benches/peers.sh"

tag=peers
# shellcheck source=benches/common.sh
source "$root/benches/common.sh"
for var in DURATION ROUNDS THREADS CONNECTIONS WARMUP STRICT; do
    [[ ${!var} =~ ^[0-9]+$ ]] || die "$var must be a whole number, got '${!var}'"
done
((DURATION > 0 && ROUNDS > 0 && THREADS > 0 && CONNECTIONS >= THREADS)) || die "bad sizes"

command -v wrk >/dev/null || apt_install wrk
command -v curl >/dev/null || apt_install curl
[[ -x /usr/sbin/nginx ]] || apt_install nginx
[[ -x /usr/sbin/varnishd ]] || apt_install varnish

work=$(mktemp -d)
# nginx's and Varnish's workers drop root: they must be able to read what is in here.
chmod 755 "$work"
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

wait_for() { # URL
    for _ in $(seq 150); do
        curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    die "nothing answered at $1"
}
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# --- actix ---------------------------------------------------------------------------------
log "building the bench server (release)"
cargo build --release --locked --example bench_server
BIND=127.0.0.1:0 WORKERS=1 "${CARGO_TARGET_DIR:-$root/target}/release/examples/bench_server" >"$work/actix.log" 2>&1 &
actix_pid=$!
pids+=("$actix_pid")
for _ in $(seq 100); do
    actix=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$work/actix.log" | head -n1 || true)
    [[ -n $actix ]] && break
    sleep 0.1
done
[[ -n ${actix:-} ]] || die "bench_server did not start"
wait_for "$actix/bare/32k"
actix_port=${actix##*:}
curl -fsS -o "$work/32k.json" "$actix/bare/32k"
[[ $(stat -c %s "$work/32k.json") == 32768 ]] || die "the body is not 32 KiB"

# --- nginx: a static file, and a proxy_cache in front of bare actix ---------------------------
nginx_port=$(free_port)
proxy_port=$(free_port)
mkdir -p "$work/nginx/logs" "$work/static" "$work/nginx/cache"
cp "$work/32k.json" "$work/static/32k.json"
# Tuned as nginx's users tune a static server: sendfile + tcp_nopush, open_file_cache (no
# open/stat per request), long keep-alive. The proxy_cache stores /bare/32k (which sends no
# Cache-Control) for an hour, so after the first request every answer is a HIT.
cat >"$work/nginx/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    types { application/json json; }
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    open_file_cache max=64 inactive=60s;
    open_file_cache_valid 60s;
    proxy_cache_path $work/nginx/cache levels=1:2 keys_zone=bench:1m max_size=64m inactive=1h use_temp_path=off;
    upstream actix { server 127.0.0.1:$actix_port; keepalive 16; }
    server {
        listen 127.0.0.1:$nginx_port;
        location /static/ { alias $work/static/; etag on; }
    }
    server {
        listen 127.0.0.1:$proxy_port;
        location / {
            proxy_pass http://actix;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            add_header X-Proxy-Cache \$upstream_cache_status always;
        }
    }
}
EOF
/usr/sbin/nginx -p "$work/nginx" -e "$work/nginx/logs/error.log" -c "$work/nginx/nginx.conf" &
nginx_pid=$!
pids+=("$nginx_pid")
nginx="http://127.0.0.1:$nginx_port"
proxy="http://127.0.0.1:$proxy_port"
wait_for "$nginx/static/32k.json"
wait_for "$proxy/bare/32k"

# --- Varnish in front of bare actix ------------------------------------------------------------
# Debian's varnishd with its defaults (two thread pools, builtin VCL); -t 3600: /bare/32k sends
# no Cache-Control, so without it every object would live Varnish's default 120 s.
varnish_port=$(free_port)
mkdir -p "$work/varnish"
/usr/sbin/varnishd -F -n "$work/varnish" -a "127.0.0.1:$varnish_port" -b "127.0.0.1:$actix_port" \
    -s malloc,64m -t 3600 >"$work/varnish.log" 2>&1 &
varnish_pid=$!
pids+=("$varnish_pid")
varnish="http://127.0.0.1:$varnish_port"
wait_for "$varnish/bare/32k"
varnish_version=$(/usr/sbin/varnishd -V 2>&1 | grep -o 'varnish-[0-9][0-9.]*' | head -n1)

# --- Django ----------------------------------------------------------------------------------
venv="${CARGO_TARGET_DIR:-$root/target}/peers-venv"
if [[ ! -x $venv/bin/gunicorn ]]; then
    log "making $venv with Django and gunicorn from PyPI"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "django>=5.2,<6" "gunicorn>=23"
fi
django_version=$("$venv/bin/python" -c 'import django; print(django.get_version())')
gunicorn_version=$("$venv/bin/gunicorn" --version | grep -o '[0-9][0-9.]*' | head -n1)
mkdir -p "$work/django"
cat >"$work/django/benchapp.py" <<EOF
# One view returning the 32 KiB body; Django's ConditionalGetMiddleware adds the MD5 ETag
# and answers 304 on a matching If-None-Match.
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.http import HttpResponse
from django.urls import path

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=["django.middleware.http.ConditionalGetMiddleware"],
    SECRET_KEY="bench",
)
BODY = open("$work/32k.json", "rb").read()

def body(request):
    return HttpResponse(BODY, content_type="application/json")

urlpatterns = [path("cg/32k", body)]
application = get_wsgi_application()
EOF
django_port=$(free_port)
(cd "$work/django" && exec "$venv/bin/gunicorn" --workers 1 --worker-class gthread --threads 4 \
    --bind "127.0.0.1:$django_port" --log-level warning benchapp:application) &
django_pid=$!
pids+=("$django_pid")
django="http://127.0.0.1:$django_port"
wait_for "$django/cg/32k"

# --- checks ----------------------------------------------------------------------------------
header_of() { tr -d '\r' <"$work/check.headers" | awk -F': ' -v h="$1" 'tolower($1) == h { print $2 }'; }
fetch() { curl -fsS -D "$work/check.headers" -o "$work/check.body" "$1" || die "curl $1 failed"; }
same_bytes() { cmp -s "$work/check.body" "$work/32k.json" || die "$1 serves other bytes"; }
etag_of() {
    fetch "$1"
    same_bytes "$1"
    header_of etag
}
status_of() { curl -sS -o /dev/null -w '%{http_code}' -H "If-None-Match: $2" "$1"; }
cg_etag=$(etag_of "$actix/cg/32k")
md5_etag=$(etag_of "$actix/cg/32k/md5")
nginx_etag=$(etag_of "$nginx/static/32k.json")
django_etag=$(etag_of "$django/cg/32k")
[[ -n $cg_etag && -n $md5_etag && -n $nginx_etag && -n $django_etag ]] || die "an ETag is missing"
# ETagHasher::Md5 is byte-identical to Django's ConditionalGetMiddleware tag.
[[ $md5_etag == "$django_etag" ]] || die "MD5 tags differ: actix $md5_etag, Django $django_etag"
fetch "$actix/cache/32k"
fetch "$actix/cache/32k"
same_bytes "actix /cache/32k"
[[ $(header_of x-cache) == hit ]] || die "actix /cache/32k is not a hit: X-Cache '$(header_of x-cache)'"
fetch "$proxy/bare/32k"
fetch "$proxy/bare/32k"
same_bytes "nginx proxy_cache"
[[ $(header_of x-proxy-cache) == HIT ]] || die "nginx proxy_cache: '$(header_of x-proxy-cache)', not HIT"
fetch "$varnish/bare/32k"
fetch "$varnish/bare/32k"
same_bytes Varnish
# On a hit Varnish's X-Varnish names two transactions: this one and the one that stored it.
[[ $(header_of x-varnish) =~ ^[0-9]+\ [0-9]+$ ]] || die "Varnish: not a hit (X-Varnish '$(header_of x-varnish)')"
[[ $(status_of "$actix/cg/32k" "$cg_etag") == 304 ]] || die "actix cg XXH3: no 304"
[[ $(status_of "$actix/cg/32k/md5" "$md5_etag") == 304 ]] || die "actix cg MD5: no 304"
[[ $(status_of "$actix/cond/32k" '"v1"') == 304 ]] || die "actix cond: no 304"
[[ $(status_of "$nginx/static/32k.json" "$nginx_etag") == 304 ]] || die "nginx: no 304"
[[ $(status_of "$django/cg/32k" "$django_etag") == 304 ]] || die "Django: no 304"
log "checks passed: the same 32768 bytes from every server; ETags $cg_etag (XXH3), $md5_etag (MD5, equal to Django's), $nginx_etag (nginx); each 304s on its own tag; the cache rows hit"

# --- load --------------------------------------------------------------------------------------
names=("actix: bare 200" "actix: cg XXH3 200" "actix: cg XXH3 304" "actix: cg MD5 200"
    "actix: cg MD5 304" "actix: 304 before handler" "actix: cache hit"
    "nginx: static 200" "nginx: static 304" "nginx: proxy_cache HIT" "varnish: HIT"
    "django: cg MD5 200" "django: cg MD5 304")
urls=("$actix/bare/32k" "$actix/cg/32k" "$actix/cg/32k" "$actix/cg/32k/md5"
    "$actix/cg/32k/md5" "$actix/cond/32k" "$actix/cache/32k"
    "$nginx/static/32k.json" "$nginx/static/32k.json" "$proxy/bare/32k" "$varnish/bare/32k"
    "$django/cg/32k" "$django/cg/32k")
inm=("" "" "$cg_etag" "" "$md5_etag" '"v1"' "" "" "$nginx_etag" "" "" "" "$django_etag")
# The processes whose CPU a row costs: the server, and the backend behind a proxy (which a
# hit should not touch; counted so that a miss would show).
servers=("$actix_pid" "$actix_pid" "$actix_pid" "$actix_pid" "$actix_pid" "$actix_pid" "$actix_pid"
    "$nginx_pid" "$nginx_pid" "$nginx_pid $actix_pid" "$varnish_pid $actix_pid"
    "$django_pid" "$django_pid")
# Index of each row by name, for the targets.
declare -A at
for i in "${!names[@]}"; do at[${names[$i]}]=$i; done

clk_tck=$(getconf CLK_TCK)
# tree_ticks PID...: user + system clock ticks of these processes and all their descendants.
tree_ticks() {
    local all=() queue=("$@") pid children
    while ((${#queue[@]})); do
        pid=${queue[0]}
        queue=("${queue[@]:1}")
        all+=("$pid")
        children=$(cat /proc/"$pid"/task/*/children 2>/dev/null || true)
        # shellcheck disable=SC2206 # word splitting of the pid list is intended
        [[ -n $children ]] && queue+=($children)
    done
    local total=0 t
    for pid in "${all[@]}"; do
        t=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
        total=$((total + t))
    done
    echo "$total"
}
to_bytes() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        m = (u == "KB") ? 1024 : (u == "MB") ? 1048576 : (u == "GB") ? 1073741824 : (u == "TB") ? 1099511627776 : 1
        printf "%.0f", n * m
    }'
}

# run_wrk INDEX SECONDS: runs wrk, checks it, sets RUN_RPS, RUN_CPU (server µs per request),
# RUN_SERVER (server cores used) and RUN_CLIENT (wrk cores used).
run_wrk() {
    local i=$1 seconds=$2 out=$work/wrk.out times=$work/wrk.times args before after
    args=(-t"$THREADS" -c"$CONNECTIONS" -d"${seconds}s")
    [[ -n ${inm[$i]} ]] && args+=(-H "If-None-Match: ${inm[$i]}")
    # shellcheck disable=SC2086 # the pid list splits on purpose
    before=$(tree_ticks ${servers[$i]})
    local TIMEFORMAT='%U %S %R'
    { time wrk "${args[@]}" "${urls[$i]}" >"$out" 2>&1; } 2>"$times" || die "wrk failed on ${names[$i]}: $(cat "$out")"
    # shellcheck disable=SC2086
    after=$(tree_ticks ${servers[$i]})
    grep -q 'Socket errors' "$out" && die "${names[$i]}: $(grep 'Socket errors' "$out" | sed 's/^ *//')"
    grep -q 'Non-2xx or 3xx' "$out" && die "${names[$i]}: $(grep 'Non-2xx or 3xx' "$out" | sed 's/^ *//')"
    RUN_RPS=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
    [[ -n $RUN_RPS ]] || die "no requests/sec from wrk on ${names[$i]}: $(cat "$out")"
    local requests read_bytes per
    requests=$(awk '/requests in/ { print $1 }' "$out")
    read_bytes=$(to_bytes "$(awk '/requests in/ { print ($NF == "read") ? $(NF - 1) : "" }' "$out")")
    ((requests > 0)) || die "${names[$i]}: no requests completed"
    per=$((read_bytes / requests))
    if [[ -n ${inm[$i]} ]]; then
        ((per < 1024)) || die "${names[$i]}: $per bytes per response; these are not 304s"
    else
        # 30000, not 32768: wrk rounds the total it read to two decimals.
        ((per >= 30000 && per < 34816)) || die "${names[$i]}: $per bytes per response; these are not 32 KiB 200s"
    fi
    read -r user sys real <"$times"
    RUN_CPU=$(awk -v t=$((after - before)) -v hz="$clk_tck" -v n="$requests" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }')
    RUN_SERVER=$(awk -v t=$((after - before)) -v hz="$clk_tck" -v r="$real" 'BEGIN { printf "%.2f", t / hz / r }')
    RUN_CLIENT=$(awk -v u="$user" -v s="$sys" -v r="$real" 'BEGIN { printf "%.2f", (u + s) / r }')
}
if ((WARMUP > 0)); then
    for i in "${!urls[@]}"; do
        log "warm-up ${names[$i]} (${WARMUP}s)"
        run_wrk "$i" "$WARMUP"
    done
fi
# RPS[i], CPU[i], SRV[i], CLI[i]: space-separated, one value per round, in round order.
declare -a RPS CPU SRV CLI
n_rows=${#urls[@]}
total=$((ROUNDS * n_rows))
n=0
for ((round = 0; round < ROUNDS; round++)); do
    for ((k = 0; k < n_rows; k++)); do
        i=$(((round + k) % n_rows))
        n=$((n + 1))
        run_wrk "$i" "$DURATION"
        log "run $n/$total: round $((round + 1)) ${names[$i]}: $RUN_RPS req/s, server $RUN_CPU µs/req ($RUN_SERVER cores), wrk $RUN_CLIENT cores"
        RPS[i]+="$RUN_RPS "
        CPU[i]+="$RUN_CPU "
        SRV[i]+="$RUN_SERVER "
        CLI[i]+="$RUN_CLIENT "
    done
done
# Varnish and nginx must still be hitting after the load: a miss in the middle would have
# cost the backend CPU, which the rows count, and the checks below catch the rest.
fetch "$proxy/bare/32k"
[[ $(header_of x-proxy-cache) == HIT ]] || die "nginx proxy_cache: '$(header_of x-proxy-cache)' after the load"
fetch "$varnish/bare/32k"
[[ $(header_of x-varnish) =~ ^[0-9]+\ [0-9]+$ ]] || die "Varnish: not a hit after the load"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report ------------------------------------------------------------------------------------
# stats FORMAT VALUE...: "median min max" of the values, each printed with FORMAT.
stats() {
    local format=$1
    shift
    printf '%s\n' "$@" | sort -g | awk -v f="$format" '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf f " " f " " f "\n", m, v[1], v[NR]
    }'
}
# per_round_ratio A B [cpu]: the ratio A/B of each round (req/s), or B/A of CPU per request
# (so that above 1 is better in both), space-separated.
per_round_ratio() {
    local a b
    if [[ ${3:-} == cpu ]]; then a=${CPU[$2]} b=${CPU[$1]}; else a=${RPS[$1]} b=${RPS[$2]}; fi
    paste -d' ' <(tr ' ' '\n' <<<"$a" | grep .) <(tr ' ' '\n' <<<"$b" | grep .) |
        awk '{ printf "%.2f ", $1 / $2 }'
}
range() { # VALUE... -> "median (min–max)"
    # shellcheck disable=SC2046
    read -r m lo hi <<<"$(stats '%.2f' "$@")"
    printf '%sx (%s–%s)' "$m" "$lo" "$hi"
}
bound_of() { # INDEX -> what limited the row, from the median utilisations
    local s c
    # shellcheck disable=SC2086
    read -r s _ _ <<<"$(stats '%.2f' ${SRV[$1]})"
    # shellcheck disable=SC2086
    read -r c _ _ <<<"$(stats '%.2f' ${CLI[$1]})"
    awk -v s="$s" -v c="$c" -v t="$THREADS" 'BEGIN {
        if (s >= 0.9) print "server"
        else if (c >= 0.9 * t) print "**client**"
        else print "neither"
    }'
}
bare=${at["actix: bare 200"]}
table=""
declare -a MED_RPS MED_CPU
for i in "${!urls[@]}"; do
    # shellcheck disable=SC2086
    read -r med lo hi <<<"$(stats '%.0f' ${RPS[$i]})"
    # shellcheck disable=SC2086
    read -r cpu cpu_lo cpu_hi <<<"$(stats '%.1f' ${CPU[$i]})"
    # shellcheck disable=SC2086
    read -r srv _ _ <<<"$(stats '%.2f' ${SRV[$i]})"
    # shellcheck disable=SC2086
    read -r cli _ _ <<<"$(stats '%.2f' ${CLI[$i]})"
    MED_RPS[i]=$med
    MED_CPU[i]=$cpu
    # shellcheck disable=SC2046
    table+="| ${names[$i]} | $med | $lo–$hi | $(range $(per_round_ratio "$i" "$bare")) | $cpu µs ($cpu_lo–$cpu_hi) | $srv / $cli | $(bound_of "$i") |"$'\n'
done

# target NAME A B MIN: a row of the targets table; sets FAILED=1 when a round misses it.
FAILED=0
targets=""
target() {
    local name=$1 a=${at[$2]} b=${at[$3]} min=$4 rounds cpu_rounds verdict cpu_verdict
    rounds=$(per_round_ratio "$a" "$b")
    cpu_rounds=$(per_round_ratio "$a" "$b" cpu)
    # shellcheck disable=SC2086
    verdict=$(printf '%s\n' $rounds | awk -v t="$min" '$1 < t { f = 1 } END { print f ? "FAIL" : "PASS" }')
    # shellcheck disable=SC2086
    cpu_verdict=$(printf '%s\n' $cpu_rounds | awk -v t="$min" '$1 < t { f = 1 } END { print f ? "no" : "yes" }')
    [[ $verdict == PASS ]] || FAILED=1
    # shellcheck disable=SC2086
    targets+="| $name | $(range $rounds) | $(tr ' ' '\n' <<<"$rounds" | grep . | paste -sd' ' | sed 's/ /, /g') | $verdict | $(range $cpu_rounds) | $cpu_verdict |"$'\n'
}
target "ConditionalGet MD5 200 ≥ 5x Django's ConditionalGetMiddleware 200 (both MD5)" "actix: cg MD5 200" "django: cg MD5 200" 5
target "ConditionalGet XXH3 200 ≥ 20x Django's 200 (MD5: not like for like, the default hashers)" "actix: cg XXH3 200" "django: cg MD5 200" 20
target "ResponseCache hit ≥ 1.0x nginx proxy_cache HIT" "actix: cache hit" "nginx: proxy_cache HIT" 1
target "ResponseCache hit ≥ 1.0x Varnish HIT" "actix: cache hit" "varnish: HIT" 1
target "ConditionalGet XXH3 304 ≥ 1.0x nginx static 304" "actix: cg XXH3 304" "nginx: static 304" 1
target "304 before the handler ≥ 1.0x nginx static 304" "actix: 304 before handler" "nginx: static 304" 1

# --- chart -------------------------------------------------------------------------------------
mkdir -p "$(dirname "$CHART")"
python3 - "$CHART" "$(date -u '+%Y-%m-%d')" "${names[@]}" -- "${MED_RPS[@]}" -- "${MED_CPU[@]}" <<'PY'
import sys
out, date, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
first = rest.index("--")
second = rest.index("--", first + 1)
names = rest[:first]
values = [float(v) for v in rest[first + 1:second]]
cpus = [float(v) for v in rest[second + 1:]]
width, bar_h, gap, left, right = 820, 22, 8, 210, 230
top = 46
height = top + len(names) * (bar_h + gap) + 30
scale = (width - left - right) / max(values)
colours = {"actix": "#3b6ea8", "nginx": "#4b9a5a", "varnish": "#8a6bb0", "django": "#b0563c"}
rows = []
for i, (name, value, cpu) in enumerate(zip(names, values, cpus)):
    y = top + i * (bar_h + gap)
    colour = colours[name.split(":")[0]]
    w = max(1.0, value * scale)
    rows.append(f'<text x="{left - 8}" y="{y + bar_h * 0.7:.1f}" text-anchor="end">{name}</text>')
    rows.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}"/>')
    rows.append(f'<text x="{left + w + 6:.1f}" y="{y + bar_h * 0.7:.1f}">{value:,.0f} req/s, {cpu:.1f} µs CPU/req</text>')
svg = f"""<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="13">
<rect width="100%" height="100%" fill="white"/>
<text x="{width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">32 KiB JSON on loopback, one worker each: requests per second (wrk, median) and server CPU per request</text>
{chr(10).join(rows)}
<text x="{width - 8}" y="{height - 8}" text-anchor="end" font-size="11" fill="#666">benches/peers.sh, {date}</text>
</svg>
"""
open(out, "w").write(svg)
PY

section=$(
    cat <<EOF
<!-- peers:begin -->
## Against peers: nginx, Varnish and Django (wrk)

Written by \`benches/peers.sh\`; rerun it rather than editing this section. Chart: [\`docs/peers.svg\`](docs/peers.svg).

- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); code: \`$(git -C "$root" rev-parse --short HEAD)\`$(git -C "$root" diff --quiet HEAD -- src examples Cargo.lock || echo ' with uncommitted changes')
- Machine: $(nproc) CPUs (nproc), $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(uname -sr); load average $load_before before, $load_after after; wrk and every server on the same cores
- Command: \`$command_line\`
- Servers: \`target/release/examples/bench_server\` (WORKERS=1); nginx $(/usr/sbin/nginx -v 2>&1 | grep -o '[0-9][0-9.]*') (Debian, \`worker_processes 1\`; static: \`sendfile\`, \`tcp_nopush\`, \`open_file_cache\`, its own \`ETag\`; \`proxy_cache\` with upstream keep-alive in front of \`/bare/32k\`, \`proxy_cache_valid 200 1h\`); $varnish_version (Debian, default thread pools and builtin VCL, \`-s malloc,64m -t 3600\`) in front of \`/bare/32k\`; Django $django_version with \`ConditionalGetMiddleware\` (MD5 \`ETag\`) under gunicorn $gunicorn_version (1 \`gthread\` worker, 4 threads, \`DEBUG=False\`)
- wrk: \`wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s\` (+ \`If-None-Match\` with each server's own tag for the 304 rows), $ROUNDS interleaved rounds with the starting scenario rotated; ${WARMUP}s warm-up each
- Server CPU per request: user + system time of the server's processes (and of the backend actix behind nginx and Varnish) over the run, from \`/proc/<pid>/stat\`, divided by the requests wrk completed. "cores" is that CPU time, and wrk's (bash \`time\`), over the run's wall time. A row is **client**-bound when wrk used ≥ 90% of its $THREADS thread(s) while the server used < 0.9 of a core: its req/s measures wrk, so compare such rows by CPU per request
- Checked: the same 32768 bytes from every server; the MD5 tag equal to Django's; each 304s on its own tag; nginx \`X-Proxy-Cache: HIT\` and a Varnish hit before and after the load, \`/cache/32k\` \`X-Cache: hit\`; in every run no socket error, no non-2xx/3xx answer, and ~32 KiB per 200 (< 1 KiB per 304)

| scenario | req/s (median) | req/s min–max | vs actix bare, per round: median (min–max) | server CPU per request: median (min–max) | cores: server / wrk | bound by |
| --- | ---: | ---: | ---: | ---: | ---: | --- |
${table}
Targets, judged round by round: each round's ratio is taken between two runs of the same round, and a target is met only if every round meets it. The CPU columns give the same comparison by server CPU per request (the peer's over ours, so above 1 is better for both).

| target | req/s ratio: median (min–max) | per round | met in every round | CPU per request, peer / ours | met by CPU in every round |
| --- | ---: | --- | --- | ---: | --- |
${targets}<!-- peers:end -->
EOF
)
replace_section "$BENCHMARKS_MD" peers "$section"

# The README's one paragraph on speed: the same run's figures, each naming its hasher.
ratio_range() { range $(per_round_ratio "${at[$1]}" "${at[$2]}" "${3:-}"); }
cpu_of() { printf '%s µs' "${MED_CPU[${at[$1]}]}"; }
headline=$(
    cat <<EOF
<!-- peers-headline:begin -->
Benchmarks ([\`BENCHMARKS.md\`](https://github.com/actix-conditional/actix-conditional/blob/main/BENCHMARKS.md), written with this paragraph by \`bash benches/peers.sh\` on $(date -u '+%Y-%m-%d'): 32 KiB JSON on loopback, one worker each, $ROUNDS interleaved rounds, median with the per-round range): \`ConditionalGet\` with MD5 ETags (Django's own hash) served $(ratio_range "actix: cg MD5 200" "django: cg MD5 200") the requests per second of Django's \`ConditionalGetMiddleware\`, and with its default XXH3 $(ratio_range "actix: cg XXH3 200" "django: cg MD5 200"). A \`ResponseCache\` hit costs $(cpu_of "actix: cache hit") of server CPU per request, against $(cpu_of "nginx: proxy_cache HIT") for an nginx \`proxy_cache\` HIT and $(cpu_of "varnish: HIT") for a Varnish hit; a 304 decided before the handler $(cpu_of "actix: 304 before handler"), against $(cpu_of "nginx: static 304") for nginx's 304 on a static file.
<!-- peers-headline:end -->
EOF
)
README_MD=${README_MD:-$root/README.md}
replace_section "$README_MD" peers-headline "$headline"
log "wrote $BENCHMARKS_MD, $CHART and the peers-headline paragraph of $README_MD"
printf '%s\n' "$section"
if ((STRICT && FAILED)); then
    exit 1
fi
