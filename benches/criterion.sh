#!/usr/bin/env bash
# In-process costs, measured with criterion, written into BENCHMARKS.md's criterion section:
#
#   1. benches/conditional_get.rs: a request through ConditionalGet with each hasher (and a
#      304) against a bare handler, at 1 KiB, 32 KiB and 1 MiB;
#   2. benches/response_cache.rs: a ResponseCache hit (serve and middleware) and a 304 from
#      the entry, against a bare handler, at 1 KiB and 32 KiB;
#   3. the MD5 behind ETagHasher::Md5 against the pure-Rust md-5 (benches/md5.rs) and against
#      OpenSSL's MD5, the one Django's hashlib runs (benches/md5_openssl.py), in ROUNDS
#      interleaved rounds: the target "MD5 at 32 KiB >= OpenSSL" is met only if every round
#      meets it.
#
# Every figure in the section comes from criterion's estimates.json (median) or the Python
# script's output of this run.
#
# Usage: bash benches/criterion.sh      # about 6 minutes
# Environment (defaults): ROUNDS=5, BENCHMARKS_MD=BENCHMARKS.md, STRICT=0 (1: exit 1 when
# the MD5 target fails)
set -euo pipefail

ROUNDS=${ROUNDS:-5}
STRICT=${STRICT:-0}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
BENCHMARKS_MD=${BENCHMARKS_MD:-$root/BENCHMARKS.md}
command_line="ROUNDS=$ROUNDS bash benches/criterion.sh"
tag=criterion
# shellcheck source=benches/common.sh
source "$root/benches/common.sh"
[[ $ROUNDS =~ ^[0-9]+$ ]] && ((ROUNDS > 0)) || die "ROUNDS must be a positive whole number"

# The benches live in their own workspace member when the tree has one.
bench_args=(--locked)
[[ -f $root/benches/Cargo.toml ]] && bench_args+=(-p actix-conditional-benches)
criterion_dir=${CARGO_TARGET_DIR:-$root/target}/criterion
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# median_ns GROUP/ID: criterion's median estimate of the last run, in nanoseconds.
median_ns() {
    local file=$criterion_dir/$1/new/estimates.json
    [[ -f $file ]] || die "no criterion estimate at $file"
    python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["median"]["point_estimate"])' "$file"
}
# human_ns NS: "885 ns", "1.55 µs", "1.80 ms".
human_ns() {
    awk -v n="$1" 'BEGIN {
        if (n >= 1e6) printf "%.2f ms", n / 1e6
        else if (n >= 1e3) printf "%.2f µs", n / 1e3
        else printf "%.0f ns", n
    }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# --- 1. ConditionalGet -------------------------------------------------------------------------
log "cargo bench --bench conditional_get"
cargo bench "${bench_args[@]}" --bench conditional_get >&2
declare -A CG
for group in bare xxh3 md5 sha256 xxh3_304; do
    for size in 1KiB 32KiB 1MiB; do CG[$group/$size]=$(median_ns "$group/$size"); done
done
cg_row() { # GROUP WHAT
    local row="| \`$1\` | $2 |" size
    for size in 1KiB 32KiB 1MiB; do
        row+=" $(human_ns "${CG[$1/$size]}") ($(ratio "${CG[$1/$size]}" "${CG[bare/$size]}")x) |"
    done
    printf '%s\n' "$row"
}
# GB/s of a hasher at 1 MiB: the size over the time it adds to a bare request.
digest_rate() { awk -v t="${CG[$1/1MiB]}" -v b="${CG[bare/1MiB]}" 'BEGIN { printf "%.2f", 1048576 / (t - b) }'; }
fixed_cost=$(awk -v t="${CG[xxh3/1KiB]}" -v b="${CG[bare/1KiB]}" 'BEGIN { printf "%.2f", (t - b) / 1000 }')

# --- 2. ResponseCache ----------------------------------------------------------------------------
log "cargo bench --bench response_cache"
cargo bench "${bench_args[@]}" --bench response_cache >&2
declare -A RC
for group in bare cache_hit cache_hit_mw cache_304; do
    for size in 1KiB 32KiB; do RC[$group/$size]=$(median_ns "$group/$size"); done
done
rc_row() { # GROUP WHAT
    local row="| \`$1\` | $2 |" size
    for size in 1KiB 32KiB; do
        row+=" $(human_ns "${RC[$1/$size]}") ($(ratio "${RC[$1/$size]}" "${RC[bare/$size]}")x) |"
    done
    printf '%s\n' "$row"
}

# --- 3. MD5 against OpenSSL, interleaved ---------------------------------------------------------
md5_rows=""
md5_verdict=PASS
declare -a USED OPENSSL PORTABLE
for ((round = 1; round <= ROUNDS; round++)); do
    log "MD5 round $round/$ROUNDS: criterion (benches/md5.rs), then OpenSSL (benches/md5_openssl.py)"
    cargo bench "${bench_args[@]}" --bench md5 -- --warm-up-time 1 --measurement-time 2 >&2
    openssl_out=$(python3 "$root/benches/md5_openssl.py")
    used=$(awk -v t="$(median_ns md5/used/32KiB)" 'BEGIN { printf "%.0f", 32768 / t * 1e3 }')
    portable=$(awk -v t="$(median_ns md5/md-5/32KiB)" 'BEGIN { printf "%.0f", 32768 / t * 1e3 }')
    openssl=$(awk '$3 == "32KiB:" { print $4 }' <<<"$openssl_out")
    [[ $openssl =~ ^[0-9]+$ ]] || die "no 32 KiB figure from md5_openssl.py: $openssl_out"
    USED+=("$used")
    PORTABLE+=("$portable")
    OPENSSL+=("$openssl")
    verdict=$(awk -v a="$used" -v b="$openssl" 'BEGIN { print (a >= b) ? "yes" : "no" }')
    [[ $verdict == yes ]] || md5_verdict=FAIL
    log "  32 KiB: crate $used MB/s, md-5 $portable MB/s, OpenSSL $openssl MB/s"
    md5_rows+="| $round | $used | $portable | $openssl | $(ratio "$used" "$openssl")x | $verdict |"$'\n'
done
openssl_version=$(python3 -c 'import ssl; print(ssl.OPENSSL_VERSION)')
median_of() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
md5_impl=$([[ $(uname -m) =~ ^(x86_64|i[3-6]86)$ ]] && echo "RustCrypto's \`md5-asm\` (assembly)" || echo "the pure-Rust \`md-5\`")

section=$(
    cat <<EOF
<!-- criterion:begin -->
## In-process cost (criterion)

Written by \`benches/criterion.sh\`; rerun it rather than editing this section.

- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); code: \`$(git rev-parse --short HEAD)\`$(git diff --quiet HEAD -- src benches Cargo.lock || echo ' with uncommitted changes')
- Machine: $(nproc) CPUs (nproc), $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(uname -sr); load average $load_before before, $(cut -d' ' -f1-3 /proc/loadavg) after
- Command: \`$command_line\` (criterion $(awk '/^name = "criterion"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock); each figure is criterion's median)
- Each iteration: build a \`TestRequest\`, \`test::call_service\` on an \`init_service\` app, \`test::read_body\`; the handler returns a cloned \`Bytes\` of deterministic JSON. No socket.

\`benches/conditional_get.rs\`: time per request, and in brackets that time over \`bare\`'s at the same size (lower is better).

| group | what | 1 KiB | 32 KiB | 1 MiB |
| --- | --- | ---: | ---: | ---: |
$(cg_row bare "no middleware")
$(cg_row xxh3 "200, default hasher (XXH3-128)")
$(cg_row md5 "200, \`ETagHasher::Md5\`")
$(cg_row sha256 "200, \`ETagHasher::Sha256\`")
$(cg_row xxh3_304 "304 on a matching \`If-None-Match\`")

What the middleware adds to a 1 KiB request with XXH3: ${fixed_cost} µs. What each hasher adds at 1 MiB, as a rate: XXH3 $(digest_rate xxh3) GB/s, MD5 $(digest_rate md5) GB/s, SHA-256 $(digest_rate sha256) GB/s. \`bare\` grows with size because \`test::read_body\` copies the body; every 200 row pays that copy too, the 304 row does not (it still hashes: in process a 304 saves only the copy, over a socket it saves writing the body).

\`benches/response_cache.rs\`: time per request through \`ResponseCache\`, and in brackets over \`bare\`'s.

| group | what | 1 KiB | 32 KiB |
| --- | --- | ---: | ---: |
$(rc_row bare "the handler, no cache")
$(rc_row cache_hit "\`ResponseCache::serve\`, every request a hit")
$(rc_row cache_hit_mw "the same cache as middleware")
$(rc_row cache_304 "hit + matching \`If-None-Match\`: 304 from the entry")

MD5 at 32 KiB, MB/s (10^6 bytes): \`ETagHasher::Md5\` uses ${md5_impl} here (criterion median of \`benches/md5.rs\`, "crate"), beside the pure-Rust \`md-5\` and OpenSSL's MD5 through Python's \`hashlib\` (${openssl_version}; the median of 11 passes of \`benches/md5_openssl.py\`), run one after the other in each of $ROUNDS rounds. Medians: crate $(median_of "${USED[@]}"), md-5 $(median_of "${PORTABLE[@]}"), OpenSSL $(median_of "${OPENSSL[@]}").

| round | crate | md-5 | OpenSSL | crate / OpenSSL | crate ≥ OpenSSL |
| --- | ---: | ---: | ---: | ---: | --- |
${md5_rows}
| target | result |
| --- | --- |
| MD5 ETag throughput at 32 KiB ≥ OpenSSL's MD5, in every round | $md5_verdict |
<!-- criterion:end -->
EOF
)
replace_section "$BENCHMARKS_MD" criterion "$section"
log "wrote the criterion section of $BENCHMARKS_MD"
printf '%s\n' "$section"
if ((STRICT)) && [[ $md5_verdict == FAIL ]]; then
    exit 1
fi
