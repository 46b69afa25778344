#!/usr/bin/env bash
# as4_setup.sh VENV_DIR
#
# Creates (or refreshes) the Python venv that runs tests/peers/as4client.py:
# python3 -m venv, then pip install -r as4_requirements.txt (lxml, xmlsec with
# libxmlsec1 bundled in its wheel, cryptography), then checks that xmlsec and lxml
# import and were built against the same libxml2.
# Idempotent: a marker in the venv holds the sha256 of as4_requirements.txt and
# this script; when it matches, the script exits at once. Safe to run concurrently
# (flock on VENV_DIR.lock). Needs no stdin. Env: PYTHON (default python3).
set -euo pipefail

fail() { echo "as4_setup.sh: error: $*" >&2; exit 1; }

[ $# -eq 1 ] && [ -n "$1" ] || { echo "usage: $0 VENV_DIR" >&2; exit 2; }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${1%/}"
python="${PYTHON:-python3}"
marker="$venv/.as4client-setup"
[ -f "$here/as4_requirements.txt" ] || fail "$here/as4_requirements.txt is missing"
want="$(cat "$here/as4_requirements.txt" "$here/as4_setup.sh" | sha256sum | cut -d' ' -f1)"

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
    echo "as4_setup.sh: warning: flock not found; not safe against concurrent runs" >&2
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
    "$venv/bin/python" -m pip install --quiet --only-binary=lxml,xmlsec,cryptography \
    -r "$here/as4_requirements.txt" >"$log" 2>&1 </dev/null \
    || { cat "$log" >&2; fail "pip install -r $here/as4_requirements.txt failed (PyPI reachable? wheels for this Python/platform?)"; }

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

echo "$want" >"$marker.tmp"
mv "$marker.tmp" "$marker"
