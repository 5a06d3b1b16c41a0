#!/usr/bin/env bash
# The benchmark report against peers: actix-conditional, nginx and Django serving the same
# 32 KiB JSON on loopback, measured with wrk in one session, interleaved.
#
#   actix: bare 200        GET /bare/32k on examples/bench_server.rs (no middleware)
#   actix: cg 200          GET /cg/32k (ConditionalGet, XXH3 ETag over the body)
#   actix: cg 304          GET /cg/32k + If-None-Match: <its ETag>
#   actix: 304 before handler   GET /cond/32k + If-None-Match: "v1" (validator, no handler)
#   actix: cache hit       GET /cache/32k (ResponseCache, every request a hit)
#   nginx: static 200      the same bytes as a file, nginx's own ETag (mtime-size), sendfile
#   nginx: static 304      + If-None-Match: <nginx's ETag>
#   django: cg 200         Django's ConditionalGetMiddleware (MD5 ETag) under gunicorn
#   django: cg 304         + If-None-Match: <Django's ETag>
#
# One worker each (bench_server WORKERS=1, nginx worker_processes 1, gunicorn 1 gthread worker
# with 4 threads, so it keeps connections alive), on the same 2 cores as wrk. nginx comes from
# Debian, Django and gunicorn from PyPI into a virtualenv this script makes
# (target/peers-venv). Results: a table between <!-- peers:begin --> and <!-- peers:end --> in
# BENCHMARKS.md, and a bar chart, docs/peers.svg.
#
# Targets: cg 200 >= 20x django cg 200; cache hit >= 1.0x nginx 200; cg 304 and 304 before
# handler >= 1.0x nginx 304.
#
# Usage: bash benches/peers.sh        # about 6 minutes with the defaults
# Environment (defaults): DURATION=10, ROUNDS=3, THREADS=2, CONNECTIONS=32, WARMUP=2,
# BENCHMARKS_MD=BENCHMARKS.md, CHART=docs/peers.svg, STRICT=0 (1: exit 1 if a target fails)
set -euo pipefail

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
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

work=$(mktemp -d)
# nginx's workers drop root for `nobody`: they must be able to read the file.
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

# --- actix ---------------------------------------------------------------------------------
log "building the bench server (release)"
cargo build --release --locked --example bench_server
BIND=127.0.0.1:0 WORKERS=1 "${CARGO_TARGET_DIR:-$root/target}/release/examples/bench_server" >"$work/actix.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    actix=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$work/actix.log" | head -n1 || true)
    [[ -n $actix ]] && break
    sleep 0.1
done
[[ -n ${actix:-} ]] || die "bench_server did not start"
wait_for "$actix/bare/32k"
curl -fsS -o "$work/32k.json" "$actix/bare/32k"
[[ $(stat -c %s "$work/32k.json") == 32768 ]] || die "the body is not 32 KiB"

# --- nginx ---------------------------------------------------------------------------------
nginx_port=$(free_port)
mkdir -p "$work/nginx/logs" "$work/static"
cp "$work/32k.json" "$work/static/32k.json"
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
    server {
        listen 127.0.0.1:$nginx_port;
        location /static/ { alias $work/static/; etag on; }
    }
}
EOF
/usr/sbin/nginx -p "$work/nginx" -e "$work/nginx/logs/error.log" -c "$work/nginx/nginx.conf" &
pids+=($!)
nginx="http://127.0.0.1:$nginx_port"
wait_for "$nginx/static/32k.json"

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
pids+=($!)
django="http://127.0.0.1:$django_port"
wait_for "$django/cg/32k"

# --- checks ----------------------------------------------------------------------------------
etag_of() { curl -sS -D - -o "$work/check.body" "$1" | tr -d '\r' | awk -F': ' 'tolower($1) == "etag" { print $2 }'; }
status_of() { curl -sS -o /dev/null -w '%{http_code}' -H "If-None-Match: $2" "$1"; }
cg_etag=$(etag_of "$actix/cg/32k")
nginx_etag=$(etag_of "$nginx/static/32k.json")
cmp -s "$work/check.body" "$work/32k.json" || die "nginx serves other bytes"
django_etag=$(etag_of "$django/cg/32k")
cmp -s "$work/check.body" "$work/32k.json" || die "Django serves other bytes"
curl -fsS -o /dev/null "$actix/cache/32k"
[[ -n $cg_etag && -n $nginx_etag && -n $django_etag ]] || die "an ETag is missing"
[[ $(status_of "$actix/cg/32k" "$cg_etag") == 304 ]] || die "actix cg: no 304"
[[ $(status_of "$actix/cond/32k" '"v1"') == 304 ]] || die "actix cond: no 304"
[[ $(status_of "$nginx/static/32k.json" "$nginx_etag") == 304 ]] || die "nginx: no 304"
[[ $(status_of "$django/cg/32k" "$django_etag") == 304 ]] || die "Django: no 304"
log "checks passed: the same 32768 bytes everywhere; ETags $cg_etag (actix), $nginx_etag (nginx), $django_etag (Django); each 304s on its own tag"

# --- load --------------------------------------------------------------------------------------
names=("actix: bare 200" "actix: cg 200" "actix: cg 304" "actix: 304 before handler" "actix: cache hit"
    "nginx: static 200" "nginx: static 304" "django: cg 200" "django: cg 304")
urls=("$actix/bare/32k" "$actix/cg/32k" "$actix/cg/32k" "$actix/cond/32k" "$actix/cache/32k"
    "$nginx/static/32k.json" "$nginx/static/32k.json" "$django/cg/32k" "$django/cg/32k")
inm=("" "" "$cg_etag" '"v1"' "" "" "$nginx_etag" "" "$django_etag")
run_wrk() { # INDEX SECONDS -> "rps non2xx3xx"
    local args=(-t"$THREADS" -c"$CONNECTIONS" -d"${2}s")
    [[ -n ${inm[$1]} ]] && args+=(-H "If-None-Match: ${inm[$1]}")
    local out rps
    out=$(wrk "${args[@]}" "${urls[$1]}") || die "wrk failed on ${names[$1]}: $out"
    rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    [[ -n $rps ]] || die "no requests/sec from wrk on ${names[$1]}: $out"
    if grep -q 'Socket errors' <<<"$out"; then
        die "${names[$1]}: $(grep 'Socket errors' <<<"$out")"
    fi
    printf '%s %s\n' "$rps" \
        "$(awk '/Non-2xx or 3xx responses:/ { print $5 }' <<<"$out" | grep . || echo 0)"
}
if ((WARMUP > 0)); then
    for i in "${!urls[@]}"; do
        log "warm-up ${names[$i]} (${WARMUP}s)"
        run_wrk "$i" "$WARMUP" >/dev/null
    done
fi
declare -A results
total=$((ROUNDS * ${#urls[@]}))
n=0
for ((round = 0; round < ROUNDS; round++)); do
    for ((k = 0; k < ${#urls[@]}; k++)); do
        i=$(((round + k) % ${#urls[@]}))
        n=$((n + 1))
        log "run $n/$total: round $((round + 1)) ${names[$i]} (${DURATION}s)"
        read -r rps bad <<<"$(run_wrk "$i" "$DURATION")"
        [[ $bad == 0 ]] || die "${names[$i]}: $bad responses that were neither 2xx nor 3xx"
        log "  $rps req/s"
        results[$i]+="$rps "
    done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
declare -a med
for i in "${!urls[@]}"; do med[$i]=$(median <<<"${results[$i]}"); done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

table=""
for i in "${!urls[@]}"; do
    table+=$(printf '| %s | %.0f | %sx | %sx | %sx | %s |' "${names[$i]}" "${med[$i]}" \
        "$(ratio "${med[$i]}" "${med[0]}")" "$(ratio "${med[$i]}" "${med[5]}")" \
        "$(ratio "${med[$i]}" "${med[7]}")" "$(tr ' ' '\n' <<<"${results[$i]}" | grep . | awk '{ printf "%s%d", s, $1; s = ", " }')")$'\n'
done
verdict() { awk -v m="$1" -v t="$2" 'BEGIN { print (m >= t ? "PASS" : "FAIL") }'; }
cg_vs_django=$(ratio "${med[1]}" "${med[7]}")
hit_vs_nginx=$(ratio "${med[4]}" "${med[5]}")
cg304_vs_nginx=$(ratio "${med[2]}" "${med[6]}")
cond304_vs_nginx=$(ratio "${med[3]}" "${med[6]}")
targets="| ConditionalGet 200 (XXH3) >= 20x Django's ConditionalGetMiddleware 200 | ${cg_vs_django}x | $(verdict "$cg_vs_django" 20) |
| ResponseCache hit >= 1.0x nginx serving the file (200) | ${hit_vs_nginx}x | $(verdict "$hit_vs_nginx" 1) |
| ConditionalGet 304 >= 1.0x nginx 304 | ${cg304_vs_nginx}x | $(verdict "$cg304_vs_nginx" 1) |
| 304 before the handler >= 1.0x nginx 304 | ${cond304_vs_nginx}x | $(verdict "$cond304_vs_nginx" 1) |"

# --- chart -------------------------------------------------------------------------------------
mkdir -p "$(dirname "$CHART")"
python3 - "$CHART" "$(date -u '+%Y-%m-%d')" "${names[@]}" -- "${med[@]}" <<'PY'
import sys
out, date, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
split = rest.index("--")
names, values = rest[:split], [float(v) for v in rest[split + 1:]]
width, bar_h, gap, left, right = 760, 22, 8, 190, 120
top = 46
height = top + len(names) * (bar_h + gap) + 30
scale = (width - left - right) / max(values)
colours = {"actix": "#3b6ea8", "nginx": "#4b9a5a", "django": "#b0563c"}
rows = []
for i, (name, value) in enumerate(zip(names, values)):
    y = top + i * (bar_h + gap)
    colour = colours[name.split(":")[0]]
    w = max(1.0, value * scale)
    rows.append(f'<text x="{left - 8}" y="{y + bar_h * 0.7:.1f}" text-anchor="end">{name}</text>')
    rows.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}"/>')
    rows.append(f'<text x="{left + w + 6:.1f}" y="{y + bar_h * 0.7:.1f}">{value:,.0f} req/s</text>')
svg = f"""<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="13">
<rect width="100%" height="100%" fill="white"/>
<text x="{width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">32 KiB JSON on loopback, one worker each: requests per second (wrk, median)</text>
{chr(10).join(rows)}
<text x="{width - 8}" y="{height - 8}" text-anchor="end" font-size="11" fill="#666">benches/peers.sh, {date}</text>
</svg>
"""
open(out, "w").write(svg)
PY

section=$(
    cat <<EOF
<!-- peers:begin -->
## Against peers: nginx and Django (wrk)

Written by \`benches/peers.sh\`; rerun it rather than editing this section. Chart: [\`docs/peers.svg\`](docs/peers.svg).

- Date: $(date -u '+%Y-%m-%d %H:%M UTC')
- Machine: $(nproc) CPUs (nproc), $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), shared; load average $(cut -d' ' -f1-3 /proc/loadavg) after; wrk and every server on the same cores
- Command: \`$command_line\`
- Servers, one worker each: \`target/release/examples/bench_server\` (WORKERS=1); nginx $(/usr/sbin/nginx -v 2>&1 | grep -o '[0-9][0-9.]*') (Debian, \`worker_processes 1\`, \`sendfile on\`, the same bytes as a file, its own \`ETag\`); Django $django_version with \`ConditionalGetMiddleware\` (MD5 \`ETag\`) under gunicorn $gunicorn_version (1 \`gthread\` worker, 4 threads, \`DEBUG=False\`)
- wrk: \`wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s\` (+ \`If-None-Match\` with each server's own tag for the 304 rows), $ROUNDS interleaved rounds, starting scenario rotated, median; ${WARMUP}s warm-up each
- Checked: the same 32768 bytes from all three; each answers 304 to its own tag; no non-2xx/3xx answer in any run

| scenario | req/s (median) | vs actix bare | vs nginx 200 | vs Django 200 | req/s per round |
| --- | ---: | ---: | ---: | ---: | --- |
${table}
| target | measured | result |
| --- | ---: | --- |
${targets}
<!-- peers:end -->
EOF
)
replace_section "$BENCHMARKS_MD" peers "$section"
log "wrote $BENCHMARKS_MD and $CHART"
printf '%s\n' "$section"
if ((STRICT)) && grep -q FAIL <<<"$targets"; then
    exit 1
fi
