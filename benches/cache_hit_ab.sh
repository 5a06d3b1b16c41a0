#!/usr/bin/env bash
# The response-cache hit path before and after a change, in process: runs the criterion bench
# `benches/response_cache.rs` on a base revision (a git worktree) and on this tree, in
# interleaved rounds (base, this, base, this, ...), and compares each side's hit cost as a
# ratio to its own `bare` handler in the same round, so a slower or busier moment moves both.
#
# Each round runs the `bare`, `cache_hit` (ResponseCache::serve), `cache_hit_mw` (the cache as
# middleware) and `cache_304` groups at 1 KiB and 32 KiB. The table keeps the median, min and
# max over the rounds of each ratio; "not slower" holds when the median ratio after is within
# NOISE (default 5%) of the median ratio before.
#
# Wall time on a shared 2-core machine moves by more than a hit costs, so the same scenarios
# are also counted in instructions: `benches/hit_instructions.rs` (copied into the base tree)
# under `valgrind --tool=callgrind`, run with N1 and N2 requests; (I(N2) - I(N1)) / (N2 - N1)
# is the cost of one request, the same on every run.
#
# Results go into BENCHMARKS.md between <!-- cache-ab:begin --> and <!-- cache-ab:end -->.
#
# Usage:  BASE=74d4df6 bash benches/cache_hit_ab.sh      # about 10 minutes with the defaults
#
# Environment (defaults): BASE (required: the revision to compare against), ROUNDS=5,
# MEASURE=2 (s of criterion measurement per benchmark), NOISE=0.05, N1=100, N2=1100,
# BENCHMARKS_MD=BENCHMARKS.md. Needs valgrind (`apt-get install valgrind`).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${BASE:?set BASE to the revision to compare against, e.g. BASE=74d4df6}
ROUNDS=${ROUNDS:-5}
MEASURE=${MEASURE:-2}
NOISE=${NOISE:-0.05}
N1=${N1:-100}
N2=${N2:-1100}
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install valgrind" >&2; exit 1; }
BENCHMARKS_MD=${BENCHMARKS_MD:-BENCHMARKS.md}
((ROUNDS >= 1)) || { echo "ROUNDS must be positive" >&2; exit 1; }

base_rev=$(git rev-parse --short "$BASE")
head_rev=$(git rev-parse --short HEAD)
dirty=$(git status --porcelain --untracked-files=no | grep -q . && echo " (with uncommitted changes)" || true)
work=$(mktemp -d)
base_tree="$work/base"
trap 'git worktree remove --force "$base_tree" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git worktree add --detach "$base_tree" "$base_rev" >/dev/null
# A target directory per tree: cargo leaves a path dependency's location out of its artifact
# names, so two trees in one directory would overwrite each other's binaries. The base one is
# kept under target/ so later runs reuse its dependencies.
head_target="${CARGO_TARGET_DIR:-$PWD/target}"
base_target="$head_target/ab-base"

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

# The benches are targets of the `actix-conditional-benches` member (benches/Cargo.toml) since
# issue 16 item 8; older revisions have them as benches of the root package. Prints the manifest
# that declares them in tree $1.
bench_manifest() { if [[ -f $1/benches/Cargo.toml ]]; then echo "$1/benches/Cargo.toml"; else echo "$1/Cargo.toml"; fi; }
# `cargo bench` arguments selecting the package with the benches in tree $1.
bench_package() { if [[ -f $1/benches/Cargo.toml ]]; then echo "-p actix-conditional-benches"; fi; }

# The instruction-count driver, as it is in this tree, for the base tree too.
cp benches/hit_instructions.rs "$base_tree/benches/"
if ! grep -q 'name = "hit_instructions"' "$(bench_manifest "$base_tree")"; then
    if [[ -f $base_tree/benches/Cargo.toml ]]; then
        printf '\n[[bench]]\nname = "hit_instructions"\npath = "hit_instructions.rs"\nharness = false\n' \
            >>"$base_tree/benches/Cargo.toml"
    else
        printf '\n[[bench]]\nname = "hit_instructions"\nharness = false\n' >>"$base_tree/Cargo.toml"
    fi
fi

log "building the benches on $base_rev and on $head_rev$dirty"
# Prints the path of the hit_instructions binary it built.
build() {
    # shellcheck disable=SC2046 # bench_package prints zero or two words
    (cd "$1" && export CARGO_TARGET_DIR="$2" &&
        cargo bench --locked $(bench_package "$1") --bench response_cache --no-run >/dev/null 2>&1 &&
        cargo bench --locked $(bench_package "$1") --bench hit_instructions --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "hit_instructions":
        print(m["executable"])')
}
base_bin=$(build "$base_tree" "$base_target")
head_bin=$(build "$PWD" "$head_target")
[[ -x $base_bin && -x $head_bin ]] || { echo "could not build hit_instructions" >&2; exit 1; }
# Copies, so the second build cannot replace the first binary under the same name.
cp "$base_bin" "$work/base_bin"
cp "$head_bin" "$work/head_bin"

# One criterion run; prints "group/size median_ns" lines.
run() {
    local dir=$1 target=$2
    # shellcheck disable=SC2046 # bench_package prints zero or two words
    (cd "$dir" && CARGO_TARGET_DIR="$target" cargo bench --locked $(bench_package "$dir") --bench response_cache -- \
        --warm-up-time 1 --measurement-time "$MEASURE" --noplot 2>/dev/null) |
        python3 -c '
import re, sys
units = {"ps": 1e-3, "ns": 1.0, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}
name = None
for line in sys.stdin:
    m = re.match(r"^(\S+/\S+)\s*(time:.*)?$", line.rstrip())
    if m and "/" in m.group(1) and not line.startswith(" "):
        name = m.group(1)
    t = re.search(r"time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", line)
    if t and name:
        print(name, float(t.group(1)) * units[t.group(2)])
        name = None
'
}

results="$work/results"
: >"$results"
for ((round = 1; round <= ROUNDS; round++)); do
    for side in base head; do
        if [[ $side == base ]]; then
            dir=$base_tree target=$base_target
        else
            dir=$PWD target=$head_target
        fi
        while read -r name ns; do
            echo "$round $side $name $ns" >>"$results"
        done < <(run "$dir" "$target")
        log "round $round/$ROUNDS $side: $(grep -c "^$round $side " "$results") benchmarks"
    done
done

# Instructions per request, by callgrind.
instructions="$work/instructions"
: >"$instructions"
count() { # binary scenario size n
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$1" "$2" "$3" "$4" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
for side in base head; do
    for scenario in bare cache_hit cache_hit_mw cache_304; do
        for size in 1024 32768; do
            i1=$(count "$work/${side}_bin" "$scenario" "$size" "$N1")
            i2=$(count "$work/${side}_bin" "$scenario" "$size" "$N2")
            echo "$side $scenario $size $(((i2 - i1) / (N2 - N1)))" >>"$instructions"
            log "callgrind $side $scenario $size: $(((i2 - i1) / (N2 - N1))) instructions per request"
        done
    done
done

python3 - "$results" "$BENCHMARKS_MD" "$base_rev" "$head_rev$dirty" "$ROUNDS" "$MEASURE" "$NOISE" "$instructions" "$N1" "$N2" <<'PY'
import statistics, sys, datetime, os, re
path, md, base_rev, head_rev, rounds, measure, noise, ipath, n1, n2 = sys.argv[1:]
noise = float(noise)
data = {}
for line in open(path):
    r, side, name, ns = line.split()
    data.setdefault((int(r), side), {})[name] = float(ns)
sizes = ["1KiB", "32KiB"]
groups = [("cache_hit", "`ResponseCache::serve`, every request a hit"),
          ("cache_hit_mw", "the same cache as middleware"),
          ("cache_304", "hit + matching `If-None-Match`: 304 from the entry")]
def ratios(side, group, size):
    out = []
    for (r, s), values in sorted(data.items()):
        if s == side and f"{group}/{size}" in values and f"bare/{size}" in values:
            out.append(values[f"{group}/{size}"] / values[f"bare/{size}"])
    return out
def fmt(xs):
    return f"{statistics.median(xs):.2f}x ({min(xs):.2f}–{max(xs):.2f})"
rows, verdicts = [], []
for group, what in groups:
    for size in sizes:
        before, after = ratios("base", group, size), ratios("head", group, size)
        if not before or not after:
            continue
        change = statistics.median(after) / statistics.median(before)
        ok = change <= 1 + noise
        verdicts.append(ok)
        rows.append(f"| `{group}` | {size} | {what} | {fmt(before)} | {fmt(after)} | {change:.2f}x | {'not slower' if ok else 'SLOWER'} |")
bare = []
for size in sizes:
    b = [v[f"bare/{size}"] for (r, s), v in data.items() if s == "base" and f"bare/{size}" in v]
    h = [v[f"bare/{size}"] for (r, s), v in data.items() if s == "head" and f"bare/{size}" in v]
    if b and h:
        bare.append(f"{size}: {statistics.median(b)/1e3:.2f} µs before, {statistics.median(h)/1e3:.2f} µs after")
ins = {}
for line in open(ipath):
    side, scenario, size, n = line.split()
    ins[(side, scenario, size)] = int(n)
irows, iverdicts = [], []
for group, what in [("bare", "the handler, no cache")] + groups:
    for size, label in [("1024", "1KiB"), ("32768", "32KiB")]:
        b, h = ins.get(("base", group, size)), ins.get(("head", group, size))
        if b is None or h is None:
            continue
        bb, hb = ins[("base", "bare", size)], ins[("head", "bare", size)]
        own = "" if group == "bare" else f"{b - bb:+,} → {h - hb:+,}"
        if group != "bare":
            iverdicts.append(h - hb <= (b - bb) + abs(b - bb) * noise)
        irows.append(f"| `{group}` | {label} | {b:,} | {h:,} | {h / b:.3f}x | {own} |")
now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
load = os.getloadavg()
section = f"""<!-- cache-ab:begin -->
## Response cache hit path, before and after (criterion, in process)

Written by `benches/cache_hit_ab.sh`; rerun it rather than editing this section.

- Date: {now}; machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} after
- Command: `BASE={base_rev} ROUNDS={rounds} MEASURE={measure} bash benches/cache_hit_ab.sh`
- Before: `{base_rev}`; after: `{head_rev}`. Each round runs `benches/response_cache.rs` on both trees, one after the other (criterion median per benchmark, {measure} s of measurement each); a ratio is a scenario's time over the same tree's `bare` time in the same round, so machine noise moves both. The columns give the median ratio over {rounds} rounds, with min–max.
- Bare handler (median): {"; ".join(bare)}

Instructions per request (callgrind, `benches/hit_instructions.rs` with {n1} and {n2} requests; the
same on every run, whatever the machine is doing). The last column is what the cache adds to (or, when
negative, saves over) the bare handler, before → after:

| benchmark | body | before | after | after vs before | cache's own cost, before → after |
| --- | --- | ---: | ---: | ---: | ---: |
""" + "\n".join(irows) + f"""

Wall time (criterion):

| benchmark | body | what it runs | before / bare | after / bare | after vs before | verdict (±{noise:.0%}) |
| --- | --- | --- | ---: | ---: | ---: | --- |
""" + "\n".join(rows) + "\n<!-- cache-ab:end -->\n"
text = open(md).read()
if "<!-- cache-ab:begin -->" in text:
    text = re.sub(r"<!-- cache-ab:begin -->.*?<!-- cache-ab:end -->\n?", lambda _: section, text, flags=re.S)
else:
    text = text.rstrip("\n") + "\n\n" + section
open(md, "w").write(text)
print(section)
print("instructions: the cache's own cost not higher" if all(iverdicts) else "instructions: SOME HIGHER")
print("wall time: all not slower" if all(verdicts) else "wall time: SOME SLOWER")
PY
