#!/usr/bin/env bash
# A newcomer's first hour, checked: a fresh `cargo new` app made from README.md's first screen
# alone (its [dependencies] block, with the crate as a path dependency, and its first Rust
# example as src/main.rs) compiles, serves, and answers with the headers README promises.
#
# Usage: bash .ci/newcomer.sh   (from the repository; .ci/run calls it)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
app="$work/newcomer"
server=""
cleanup() {
    [[ -n $server ]] && kill "$server" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cargo new --quiet --name newcomer "$app"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 - "$root" "$app" "$port" <<'PY'
import pathlib, re, sys
root, app, port = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
readme = (root / "README.md").read_text()
blocks = re.findall(r"```(\S*)\n(.*?)```", readme, re.S)
toml = next(body for lang, body in blocks if lang == "toml")
rust = next(body for lang, body in blocks if lang.startswith("rust"))
deps = []
for line in toml.splitlines():
    if line.startswith("actix-conditional"):
        # The crate as published would be `version = …`; here, this checkout.
        line = 'actix-conditional = { path = "%s" }' % root
    if line.strip() and not line.startswith("["):
        deps.append(line)
manifest = (app / "Cargo.toml").read_text().replace("[dependencies]\n", "[dependencies]\n" + "\n".join(deps) + "\n")
(app / "Cargo.toml").write_text(manifest)
# The one change: a free port instead of 8080, so the check never collides with a server.
main = rust.replace("8080", port)
assert port in main, "README's example no longer binds 127.0.0.1:8080"
(app / "src" / "main.rs").write_text(main)
PY
# The workspace's versions, so its already built dependencies are reused.
cp "$root/Cargo.lock" "$app/Cargo.lock"
export CARGO_TARGET_DIR="$root/target/newcomer"
echo "newcomer: building $app"
(cd "$app" && cargo build --quiet)
"$CARGO_TARGET_DIR/debug/newcomer" &
server=$!
for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/report" && break
    sleep 0.1
done
head=$(curl -s -D - -o /dev/null "http://127.0.0.1:$port/report")
echo "$head" | tr -d '\r' | grep -qi '^etag: "rev-7"$' || { echo "no ETag \"rev-7\": $head" >&2; exit 1; }
echo "$head" | tr -d '\r' | grep -qi '^cache-control: max-age=60, must-revalidate$' ||
    { echo "no Cache-Control: max-age=60, must-revalidate: $head" >&2; exit 1; }
status=$(curl -s -o /dev/null -w '%{http_code}' -H 'If-None-Match: "rev-7"' "http://127.0.0.1:$port/report")
[[ $status == 304 ]] || { echo "If-None-Match: \"rev-7\" got $status, not 304" >&2; exit 1; }
echo "newcomer: README's first screen compiles and serves 200 (ETag \"rev-7\", max-age=60, must-revalidate) then 304"
