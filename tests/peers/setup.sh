#!/usr/bin/env bash
# setup.sh VENV_DIR PEER
#
# Creates (or refreshes) the Python venv that runs one of the test peers:
#   as2  tests/peers/as2peer.py (pyas2lib): pip install -r requirements.txt, then
#        patch the venv's oscrypto so it imports with OpenSSL 3.0.x (oscrypto
#        1.3.0's libcrypto version regex wants one digit per component; the
#        upstream fix is unreleased), then check that pyas2lib imports.
#   as4  tests/peers/as4client.py: pip install -r as4_requirements.txt (lxml,
#        xmlsec with libxmlsec1 bundled in its wheel, cryptography; wheels
#        only), then check that xmlsec and lxml import and were built against
#        the same libxml2.
# Idempotent: a marker in the venv holds the sha256 of the peer's requirements
# and this script; when it matches, the script exits at once. Safe to run
# concurrently (flock on VENV_DIR.lock). Needs no stdin. Env: PYTHON (default
# python3).
set -euo pipefail

fail() { echo "setup.sh: error: $*" >&2; exit 1; }

[ $# -eq 2 ] && [ -n "$1" ] || { echo "usage: $0 VENV_DIR as2|as4" >&2; exit 2; }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${1%/}"
peer="$2"
python="${PYTHON:-python3}"
case "$peer" in
    as2) requirements="$here/requirements.txt"; only_binary=() ;;
    as4) requirements="$here/as4_requirements.txt"; only_binary=(--only-binary=lxml,xmlsec,cryptography) ;;
    *) fail "unknown peer $peer (as2 or as4)" ;;
esac
marker="$venv/.$peer-peer-setup"
[ -f "$requirements" ] || fail "$requirements is missing"
want="$(cat "$requirements" "$here/setup.sh" | sha256sum | cut -d' ' -f1)"

is_done() { [ -x "$venv/bin/python" ] && [ "$(cat "$marker" 2>/dev/null || true)" = "$want" ]; }
is_done && exit 0

command -v "$python" >/dev/null 2>&1 || fail "$python not found (set PYTHON)"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 8))' </dev/null \
    || fail "$python is older than 3.8"
mkdir -p "$(dirname "$venv")"

if command -v flock >/dev/null 2>&1; then
    exec 9>"$venv.lock"
    flock 9
    is_done && exit 0   # another process finished it while we waited
else
    echo "setup.sh: warning: flock not found; not safe against concurrent runs" >&2
fi

if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ] && [ -n "$(ls -A "$venv" 2>/dev/null)" ]; then
    fail "$venv exists, is not empty and is not a venv; refusing to touch it"
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT

rm -f "$marker"
"$python" -m venv --clear "$venv" >"$log" 2>&1 </dev/null \
    || { cat "$log" >&2; fail "$python -m venv $venv failed (is python3-venv installed?)"; }

PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    "$venv/bin/python" -m pip install --quiet ${only_binary[@]+"${only_binary[@]}"} -r "$requirements" >"$log" 2>&1 </dev/null \
    || { cat "$log" >&2; fail "pip install -r $requirements failed (PyPI reachable? wheels for this Python/platform?)"; }

if [ "$peer" = as2 ]; then
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
else
"$venv/bin/python" - >"$log" 2>&1 </dev/null <<'PY' || { cat "$log" >&2; fail "the installed lxml/xmlsec/cryptography do not work together in $venv"; }
import sys
import lxml.etree
import xmlsec
import cryptography.x509  # noqa: F401

lx = lxml.etree.LIBXML_VERSION
xs = tuple(xmlsec.get_libxml_version())
if lx != xs:
    sys.exit(f"libxml2 version mismatch: lxml uses {lx}, xmlsec was built with {xs}; "
             "pin lxml/xmlsec versions whose wheels bundle the same libxml2")
print("ok", lx, xmlsec.get_libxmlsec_version())
PY
fi

echo "$want" >"$marker.tmp"
mv "$marker.tmp" "$marker"
