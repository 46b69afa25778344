# selftest_lib.sh: sourced by selftest.sh and as4_selftest.sh (the peers' own tests), after
# they set `here` (this directory) and `name` (what their messages start with).
#
# selftest_begin PEER VENV_DIR: checks the argument, runs setup.sh VENV_DIR PEER, sets
#   venv, py (the venv's python) and tmp (a temp dir; on exit it is removed and the server
#   started by selftest_server stopped).
# selftest_keys PREFIX WHO...: a self-signed RSA key and certificate per WHO, valid two days,
#   CN=PREFIX-WHO, in $tmp/WHO.key and $tmp/WHO.crt.
# selftest_server LOG CMD...: starts CMD in the background (it writes its port to $tmp/port),
#   waits up to 10 s for the port and exports it as SELFTEST_PORT; CMD's stderr goes to LOG.

selftest_begin() {
    [ $# -eq 2 ] && [ -n "$2" ] || { echo "usage: $0 VENV_DIR" >&2; exit 2; }
    venv="${2%/}"
    "$here/setup.sh" "$venv" "$1"
    py="$venv/bin/python"
    tmp="$(mktemp -d)"
    server_pid=""
    trap selftest_cleanup EXIT
}

selftest_cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}

selftest_keys() {
    local prefix="$1" who
    shift
    for who in "$@"; do
        openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 -subj "/CN=$prefix-$who" \
            -keyout "$tmp/$who.key" -out "$tmp/$who.crt" >/dev/null 2>&1 </dev/null \
            || { echo "$name: openssl req failed" >&2; exit 1; }
    done
}

selftest_server() {
    local log="$1"
    shift
    "$@" 2>"$log" </dev/null &
    server_pid=$!
    for _ in $(seq 100); do [ -s "$tmp/port" ] && break; sleep 0.1; done
    [ -s "$tmp/port" ] || { cat "$log" >&2; echo "$name: $(basename "$2") did not start" >&2; exit 1; }
    export SELFTEST_PORT="$(cat "$tmp/port")"
}
