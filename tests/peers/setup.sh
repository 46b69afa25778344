#!/usr/bin/env bash
# setup.sh VENV_DIR
#
# Creates (or refreshes) the Python venv that runs tests/peers/as2peer.py:
# python3 -m venv, pip install -r requirements.txt, then patches the venv's
# oscrypto so it imports with OpenSSL 3.0.x (oscrypto 1.3.0's libcrypto
# version regex wants one digit per component; the upstream fix is unreleased).
# Idempotent: a marker in the venv holds the sha256 of requirements.txt and this
# script; when it matches, the script exits at once. Safe to run concurrently
# (flock on VENV_DIR.lock). Needs no stdin. Env: PYTHON (default python3).
set -euo pipefail

fail() { echo "setup.sh: error: $*" >&2; exit 1; }

[ $# -eq 1 ] && [ -n "$1" ] || { echo "usage: $0 VENV_DIR" >&2; exit 2; }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${1%/}"
python="${PYTHON:-python3}"
marker="$venv/.as2peer-setup"
want="$(cat "$here/requirements.txt" "$here/setup.sh" | sha256sum | cut -d' ' -f1)"

is_done() { [ -x "$venv/bin/python" ] && [ "$(cat "$marker" 2>/dev/null || true)" = "$want" ]; }
is_done && exit 0

command -v "$python" >/dev/null 2>&1 || fail "$python not found (set PYTHON)"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 8))' \
    || fail "$python is older than 3.8"
mkdir -p "$(dirname "$venv")"

if command -v flock >/dev/null 2>&1; then
    exec 9>"$venv.lock"
    flock 9
    is_done && exit 0   # another process finished it while we waited
fi

if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ] && [ -n "$(ls -A "$venv" 2>/dev/null)" ]; then
    fail "$venv exists, is not empty and is not a venv; refusing to touch it"
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT

rm -f "$marker"
"$python" -m venv --clear "$venv" >"$log" 2>&1 </dev/null \
    || { cat "$log" >&2; fail "python3 -m venv $venv failed (is python3-venv installed?)"; }

PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    "$venv/bin/python" -m pip install --quiet -r "$here/requirements.txt" >"$log" 2>&1 </dev/null \
    || { cat "$log" >&2; fail "pip install -r $here/requirements.txt failed"; }

"$venv/bin/python" - >"$log" 2>&1 </dev/null <<'PY' || { cat "$log" >&2; fail "patching oscrypto failed"; }
import importlib.util
import pathlib
import sys

spec = importlib.util.find_spec("oscrypto")  # finds the package without importing it
if spec is None or not spec.submodule_search_locations:
    sys.exit("oscrypto is not installed in the venv")
base = pathlib.Path(list(spec.submodule_search_locations)[0]) / "_openssl"
old = r"\\d\\.\\d\\.\\d[a-z]*"
new = r"\\d+\\.\\d+\\.\\d+[a-z]*"
for name in ("_libcrypto_cffi.py", "_libcrypto_ctypes.py"):
    path = base / name
    text = path.read_text()
    if old in text:
        path.write_text(text.replace(old, new))
        print(f"patched {path}")
    elif new not in text:
        sys.exit(f"{path}: libcrypto version regex not found; oscrypto changed, update setup.sh")
PY

"$venv/bin/python" -c 'import oscrypto.asymmetric, pyas2lib.as2' >"$log" 2>&1 </dev/null \
    || { cat "$log" >&2; fail "pyas2lib does not import in $venv after patching oscrypto"; }

echo "$want" >"$marker.tmp"
mv "$marker.tmp" "$marker"
