#!/usr/bin/env bash
# benches/django/setup.sh VENV_DIR
#
# The venv of the django-pyas2 baseline (benches/throughput, BENCH_MODES=django): django-pyas2,
# Django and gunicorn from requirements.txt, with oscrypto's libcrypto version check loosened so
# it loads OpenSSL 3.0.x (the same fix tests/peers/setup.sh makes; oscrypto 1.3.0 expects one
# digit per version component). Done once: a stamp in the venv records the sha256 of
# requirements.txt and this script, and a matching stamp returns at once. Concurrent callers
# wait on VENV_DIR.lock. Env: PYTHON (default python3).
set -euo pipefail

venv="${1:?usage: $0 VENV_DIR}"
venv="${venv%/}"
dir="$(dirname "$(readlink -f "$0")")"
die() { echo "benches/django/setup.sh: $*" >&2; exit 1; }
stamp="$venv/.edinode-django-bench"
sum="$(cat "$dir/requirements.txt" "$dir/setup.sh" | sha256sum | cut -d' ' -f1)"
ready() { [ -x "$venv/bin/gunicorn" ] && [ "$(cat "$stamp" 2>/dev/null || true)" = "$sum" ]; }
py="${PYTHON:-python3}"

ready && exit 0
mkdir -p "$(dirname "$venv")"
exec 8>"$venv.lock"
flock 8
ready && exit 0

out="$(mktemp)"
trap 'rm -f "$out"' EXIT
step() { # step WHAT CMD...: run CMD quietly, print its output and fail with WHAT if it fails
    local what="$1"; shift
    "$@" >"$out" 2>&1 </dev/null || { cat "$out" >&2; die "$what failed"; }
}

rm -f "$stamp"
step "creating the venv with $py" "$py" -m venv --clear "$venv"
step "pip install -r requirements.txt" env PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    "$venv/bin/python" -m pip install --quiet -r "$dir/requirements.txt"
step "loosening oscrypto's libcrypto version check" "$venv/bin/python" -c '
import pathlib, importlib.util, sys
root = pathlib.Path(importlib.util.find_spec("oscrypto").submodule_search_locations[0]) / "_openssl"
strict, loose = r"\\d\\.\\d\\.\\d[a-z]*", r"\\d+\\.\\d+\\.\\d+[a-z]*"
for f in ("_libcrypto_cffi.py", "_libcrypto_ctypes.py"):
    p = root / f
    s = p.read_text()
    if strict in s:
        p.write_text(s.replace(strict, loose))
    elif loose not in s:
        sys.exit(f"{p}: version pattern not found")
'
step "importing pyas2 and gunicorn" "$venv/bin/python" -c 'import oscrypto.asymmetric, pyas2lib.as2, django, gunicorn'

echo "$sum" >"$stamp"
