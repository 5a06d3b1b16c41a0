# Helpers shared by benches/redis_load.sh and benches/peers.sh (sourced, not run).
# The sourcing script sets `tag` (its log prefix) first.

log() { printf '[%s %s] %s\n' "$tag" "$(date +%T)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# apt_install PACKAGE...: Debian packages, with sudo when not root, updating the index once
# if the first try fails.
apt_install() {
    local sudo=()
    ((EUID == 0)) || sudo=(sudo)
    log "installing $* with apt-get"
    "${sudo[@]}" apt-get install -y "$@" >/dev/null ||
        { "${sudo[@]}" apt-get update >/dev/null && "${sudo[@]}" apt-get install -y "$@" >/dev/null; } ||
        die "could not install $*"
}

# free_port: a TCP port on 127.0.0.1 nothing listens on (now).
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# replace_section FILE NAME TEXT: TEXT (which starts with <!-- NAME:begin --> and ends with
# <!-- NAME:end -->) replaces that section of FILE, or is appended when FILE has none.
replace_section() {
    local file=$1 name=$2 text=$3
    if grep -q "<!-- $name:begin -->" "$file"; then
        python3 - "$file" "$name" "$text" <<'PY'
import re, sys
path, name, section = sys.argv[1:4]
text = open(path).read()
pattern = re.compile(rf"<!-- {re.escape(name)}:begin -->.*?<!-- {re.escape(name)}:end -->", re.S)
open(path, "w").write(pattern.sub(lambda _: section, text))
PY
    else
        printf '\n%s\n' "$text" >>"$file"
    fi
}
