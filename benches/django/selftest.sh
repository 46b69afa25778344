#!/usr/bin/env bash
# benches/django/selftest.sh VENV_DIR
#
# Smoke test of the django-pyas2 baseline, without the bench: makes the venv (setup.sh), two
# self-signed RSA 2048 identities, a configured site in a temporary directory, starts gunicorn
# as the bench does, and sends one message with pyas2lib (signed sha256, encrypted aes256-cbc,
# signed sync MDN requested). Passes when the answer is a signed MDN saying "processed".
# Prints "selftest: N passed, N failed"; about 10 s once the venv exists.
set -euo pipefail
venv="${1:?usage: $0 VENV_DIR}"
here="$(dirname "$(readlink -f "$0")")"
"$here/setup.sh" "$venv"

run="$(mktemp -d)"
gunicorn_pid=""
cleanup() {
    [ -n "$gunicorn_pid" ] && kill "$gunicorn_pid" 2>/dev/null && wait "$gunicorn_pid" 2>/dev/null
    rm -rf "$run"
}
trap cleanup EXIT
for cn in edinode bench; do
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 -subj "/CN=$cn" \
        -keyout "$run/$cn.key.pem" -out "$run/$cn.cert.pem" 2>/dev/null
done
export BENCH_DJANGO_DIR="$run" DJANGO_SETTINGS_MODULE=benchsite PYTHONPATH="$here"
cd "$run"
"$venv/bin/python" "$here/configure.py" edinode edinode.key.pem edinode.cert.pem bench bench.cert.pem >/dev/null
"$venv/bin/gunicorn" --workers 2 --no-control-socket --bind 127.0.0.1:0 \
    'django.core.wsgi:get_wsgi_application()' 2>gunicorn.log &
gunicorn_pid=$!
url=""
for _ in $(seq 100); do
    url="$(sed -n 's/.*Listening at: \(http[^ ]*\).*/\1/p' gunicorn.log | head -1)"
    [ -n "$url" ] && break
    sleep 0.1
done
[ -n "$url" ] || { cat gunicorn.log >&2; echo "selftest: 0 passed, 1 failed"; exit 1; }

if "$venv/bin/python" - "$url/pyas2/as2receive" <<'PY'
import sys, time
import requests
from pyas2lib import Message, Mdn, Organization, Partner

def read(p):
    with open(p, "rb") as f:
        return f.read()

me = Organization(as2_name="bench", sign_key=read("bench.key.pem") + read("bench.cert.pem"), sign_key_pass="unused")
peer = Partner(as2_name="edinode", verify_cert=read("edinode.cert.pem"), encrypt_cert=read("edinode.cert.pem"),
               sign=True, digest_alg="sha256", encrypt=True, enc_alg="aes_256_cbc", mdn_mode="SYNC", mdn_digest_alg="sha256")
msg = Message(me, peer)
msg.build(b"ISA*00*selftest~\r\n" * 60, filename="x.edi", content_type="application/edi-x12")
for _ in range(50):  # the workers may still be loading the application
    try:
        r = requests.post(sys.argv[1], data=msg.content, headers=msg.headers, timeout=30)
        break
    except requests.ConnectionError:
        time.sleep(0.2)
raw = b"".join(f"{k}: {v}\r\n".encode() for k, v in r.headers.items()) + b"\r\n" + r.content
status, detail = Mdn().parse(raw, lambda message_id, partner_id: msg)
print(f"HTTP {r.status_code}, MDN {status} {detail or ''}", file=sys.stderr)
sys.exit(0 if r.status_code == 200 and status == "processed" else 1)
PY
then
    echo "selftest: 1 passed, 0 failed"
else
    cat gunicorn.log >&2
    echo "selftest: 0 passed, 1 failed"
    exit 1
fi
