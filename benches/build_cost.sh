#!/usr/bin/env bash
# What a cold build costs a user of this repository, before and after a change: README's two
# commands, from an empty target directory, on a base revision and on this tree, interleaved.
#
#   example   cargo build --locked --example viewsets --timings
#             (what `cargo run --example viewsets` compiles before it runs)
#   tests     cargo test --locked --workspace --all-features --no-run --timings
#             (README's test command, compiling only)
#   ui        cargo test --locked --workspace --all-features --test ui
#             right after `tests`, in its target directory: the trybuild cases of
#             macros/tests/ui.rs, which build their own copy of the dependencies (under
#             target/tests/trybuild, with `--cfg trybuild`) when the test runs
#
# Each side is a fresh copy of its tree (`git archive` of the revision; for this tree, the
# files in git's index as they are on disk, uncommitted edits included: `git add` new files)
# in a temporary directory, and
# each measurement starts from a fresh, empty CARGO_TARGET_DIR that is deleted afterwards
# (the test build takes several GB). The crates are downloaded first (`cargo fetch --locked`,
# not timed), so the network is not measured; the registry (CARGO_HOME) is shared.
#
# Results go into BENCHMARKS.md between <!-- build-cost:begin --> and <!-- build-cost:end -->:
# wall seconds per command (median, min and max when ROUNDS > 1), target directory sizes, and
# the five crates that took longest to compile (from cargo's --timings report, last round).
# Progress goes to stderr.
#
# Usage:  bash benches/build_cost.sh                       # about 15 minutes on 2 cores
#         BASE=3b3b355 REV=HEAD ROUNDS=2 bash benches/build_cost.sh
#
# Environment (defaults): BASE=3b3b355 (the revision before issue 16 item 8), REV (unset: this
# working tree; else a revision to measure as "after"), ROUNDS=1, COMMANDS="example tests ui"
# (which to measure), BENCHMARKS_MD=BENCHMARKS.md.
# Run it when nothing else compiles on the machine: wall time is what it measures.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
BASE=${BASE:-3b3b355}
REV=${REV:-}
ROUNDS=${ROUNDS:-1}
# Which of the three to measure (ui needs tests: it runs in the test build's target).
COMMANDS=${COMMANDS:-example tests ui}
BENCHMARKS_MD=${BENCHMARKS_MD:-$root/BENCHMARKS.md}

tag=build-cost
# shellcheck source=benches/common.sh
source "$root/benches/common.sh"
[[ $ROUNDS =~ ^[0-9]+$ ]] && ((ROUNDS >= 1)) || die "ROUNDS must be a positive whole number, got '$ROUNDS'"

base_rev=$(git rev-parse --short "$BASE^{commit}") || die "no revision $BASE"
if [[ -n $REV ]]; then
    head_rev=$(git rev-parse --short "$REV^{commit}") || die "no revision $REV"
    head_label="\`$head_rev\`"
    command_line="BASE=$BASE REV=$REV ROUNDS=$ROUNDS COMMANDS=\"$COMMANDS\" bash benches/build_cost.sh"
else
    head_rev=$(git rev-parse --short HEAD)
    head_label="\`$head_rev\`"
    if git status --porcelain --untracked-files=no | grep -q .; then
        head_label="$head_label with uncommitted changes"
    fi
    command_line="BASE=$BASE ROUNDS=$ROUNDS COMMANDS=\"$COMMANDS\" bash benches/build_cost.sh"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/build-cost.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# The two trees, each a fresh copy with no target directory.
mkdir "$work/base" "$work/head"
git archive "$base_rev" | tar -x -C "$work/base"
if [[ -n $REV ]]; then
    git archive "$head_rev" | tar -x -C "$work/head"
else
    git ls-files -z --cached |
        while IFS= read -r -d '' file; do [[ -e $file ]] && printf '%s\0' "$file"; done |
        tar -c --null -T - | tar -x -C "$work/head"
fi
for side in base head; do
    log "fetching the crates of $side (not timed)"
    (cd "$work/$side" && cargo fetch --locked --quiet) || die "cargo fetch --locked failed in the $side tree"
done

# measure SIDE ROUND TARGET NAME COMMAND...: runs COMMAND in SIDE's tree with CARGO_TARGET_DIR
# TARGET, and appends "ROUND SIDE NAME seconds bytes-of-TARGET-after load-before" to results.
results="$work/results"
: >"$results"
measure() {
    local side=$1 round=$2 target=$3 name=$4
    shift 4
    local load start end
    load=$(cut -d' ' -f1 /proc/loadavg)
    log "round $round/$ROUNDS $side: $name: $* (load average $load)"
    start=$(date +%s.%N)
    (cd "$work/$side" && CARGO_TARGET_DIR="$target" "$@" >"$work/$side-$name.log" 2>&1) ||
        { tail -30 "$work/$side-$name.log" >&2; die "$name failed in the $side tree"; }
    end=$(date +%s.%N)
    local bytes
    bytes=$(du -sb "$target" | cut -f1)
    echo "$round $side $name $(python3 -c "print(f'{$end - $start:.1f}')") $bytes $load" >>"$results"
    log "round $round/$ROUNDS $side: $name: $(tail -1 "$results" | cut -d' ' -f4) s, target $(du -sh "$target" | cut -f1)"
}

# top_crates TARGET FILE: the five crates with the most compile time in TARGET's --timings
# report, one line "name seconds" each, into FILE (left empty if the report cannot be read).
top_crates() {
    python3 - "$1/cargo-timings/cargo-timing.html" >"$2" 2>/dev/null <<'PY' || : >"$2"
import collections, json, re, sys
html = open(sys.argv[1]).read()
units = json.loads(re.search(r"const UNIT_DATA = (\[.*?\n\]);", html, re.S).group(1))
total = collections.Counter()
for unit in units:
    total[unit["name"]] += unit["duration"]
for name, seconds in total.most_common(5):
    print(name, f"{seconds:.1f}")
PY
}

wants() { [[ " $COMMANDS " == *" $1 "* ]]; }
for name in $COMMANDS; do
    [[ $name =~ ^(example|tests|ui)$ ]] || die "COMMANDS: unknown '$name' (example, tests, ui)"
done
if wants ui && ! wants tests; then die "COMMANDS: ui runs in the test build's target: add tests"; fi
for ((round = 1; round <= ROUNDS; round++)); do
    for side in base head; do
        target="$work/target-$side"
        rm -rf "$target"
        if wants example; then
            measure "$side" "$round" "$target" example cargo build --locked --example viewsets --timings
            top_crates "$target" "$work/top-$side-example"
            rm -rf "$target"
        fi
        if wants tests; then
            measure "$side" "$round" "$target" tests cargo test --locked --workspace --all-features --no-run --timings
            top_crates "$target" "$work/top-$side-tests"
        fi
        if wants ui; then
            measure "$side" "$round" "$target" ui cargo test --locked --workspace --all-features --test ui
        fi
        rm -rf "$target"
    done
done

machine="$(nproc) CPUs (nproc), $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(free -g | awk '/^Mem:/ { print $2 }') GB RAM"
section=$(python3 - "$results" "$work" "$ROUNDS" "$base_rev" "$head_label" "$command_line" "$machine" \
    "$(cargo --version)" <<'PY'
import datetime, os, statistics, sys
path, work, rounds, base_rev, head_label, command_line, machine, cargo = sys.argv[1:]
rounds = int(rounds)
data = {}
loads = []
loads_of = {}
for line in open(path):
    r, side, name, seconds, size, load = line.split()
    data.setdefault((side, name), []).append((float(seconds), int(size)))
    loads.append(float(load))
    loads_of.setdefault((side, name), []).append(float(load))

def fmt(xs, unit):
    if len(xs) == 1:
        return f"{xs[0]:.1f} {unit}" if unit == "GB" else f"{xs[0]:.0f} {unit}"
    f = (lambda x: f"{x:.1f}") if unit == "GB" else (lambda x: f"{x:.0f}")
    return f"{f(statistics.median(xs))} {unit} ({f(min(xs))}–{f(max(xs))})"

def row(label, name, index, unit, scale=1.0):
    before = [v[index] / scale for v in data[("base", name)]]
    after = [v[index] / scale for v in data[("head", name)]]
    change = statistics.median(after) / statistics.median(before) - 1
    load = ""
    if unit == "s":
        # What else was running: the 1-minute load average as each build started.
        load = " | " + " / ".join(", ".join(f"{l:.1f}" for l in loads_of[(side, name)]) for side in ("base", "head"))
    else:
        load = " | "
    return f"| {label} | {fmt(before, unit)} | {fmt(after, unit)} | {change:+.0%}{load} |"

gb = 1e9
measured = {name for _, name in data}
rows = [
    row(label, name, index, unit, *scale)
    for label, name, index, unit, *scale in [
        ("`cargo build --locked --example viewsets`", "example", 0, "s"),
        ("`cargo test --locked --workspace --all-features --no-run`", "tests", 0, "s"),
        ("then `cargo test --locked --workspace --all-features --test ui` (trybuild's own build)", "ui", 0, "s"),
        ("target/ after the example build", "example", 1, "GB", gb),
        ("target/ after the test build" if "ui" not in measured else "target/ after the test build and the ui test", "ui" if "ui" in measured else "tests", 1, "GB", gb),
    ]
    if name in measured
]

def top(side, name):
    try:
        lines = [l.split() for l in open(os.path.join(work, f"top-{side}-{name}")) if l.strip()]
    except OSError:
        return "n/a"
    return ", ".join(f"{n} {s} s" for n, s in lines) or "n/a"

spread = " (median, min–max)" if rounds > 1 else ""
now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
load = os.getloadavg()
print(f"""<!-- build-cost:begin -->
## Cold build cost

Written by `benches/build_cost.sh`; rerun it rather than editing this section.

- Date: {now}; machine: {machine}; {cargo}
- Load average (1 min) when each build started: {min(loads):.2f}–{max(loads):.2f}; {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} after
- Command: `{command_line}`
- Before: `{base_rev}`; after: {head_label}. Each build starts from an empty `CARGO_TARGET_DIR` in a fresh copy of its tree, the crates already downloaded (`cargo fetch --locked`, not timed); before and after alternate, {rounds} round{"s" if rounds > 1 else ""}. The first two commands run with `--timings`, which only adds its report.

| command (cold) | before | after | change | load at start, before / after |
| --- | ---: | ---: | ---: | ---: |
""" + "\n".join(rows) + f"""

Longest compile times (sum of a crate's units, `--timings`, last round; the units overlap on the cores):

""" + "\n".join(f"- {name}, {when}: {top(side, name)}" for name in ("example", "tests") if name in measured for side, when in (("base", "before"), ("head", "after"))) + """
<!-- build-cost:end -->""")
PY
)
replace_section "$BENCHMARKS_MD" build-cost "$section"
log "wrote $BENCHMARKS_MD"
printf '%s\n' "$section"
