#!/usr/bin/env python3
"""smoke_receiver: a minimal AS2 receiver built on pyas2lib, used ONLY by
tests/peers/selftest.sh to test as2peer.py itself (never to judge edinode).

    VENV/bin/python tests/peers/smoke_receiver.py CONFIG.json PORT_FILE

CONFIG.json:
    {"org": {"name": "...", "key_pem": "...", "cert_pem": "..."},
     "partners": [{"name": "...", "cert_pem": "..."}, ...],
     "store_dir": "..."}

Listens on 127.0.0.1 with an OS-chosen port (written to PORT_FILE), parses each
POSTed message with pyas2lib's Message.parse, stores the payload it extracted
in store_dir (named by the sha256 of the Message-ID), answers a sync MDN in the
HTTP response or posts an async MDN to Receipt-Delivery-Option. Test hooks:
header "X-Smoke-Tamper-Mic: 1" makes it report a wrong Received-Content-MIC;
"X-Smoke-Mic-Alg: ALG" (signed, unencrypted, uncompressed messages) makes it
report the MIC in digest ALG instead of the signature's digest.
Duplicates of an already processed Message-ID get processed/warning:
duplicate-document (pyas2lib's behaviour).
"""

import base64
import email
import hashlib
import http.client
import http.server
import json
import logging
import os
import sys
import threading
import traceback
import urllib.parse

from pyas2lib import as2
from pyas2lib.utils import canonicalize

LOG = logging.getLogger("smoke_receiver")


def load_config(path):
    with open(path) as f:
        cfg = json.load(f)
    o = cfg["org"]
    with open(o["key_pem"], "rb") as k, open(o["cert_pem"], "rb") as c:
        key = k.read().rstrip(b"\r\n") + b"\n" + c.read()
    org = as2.Organization(as2_name=o["name"], sign_key=key, decrypt_key=key, domain="smoke.test")
    partners = {}
    for p in cfg["partners"]:
        with open(p["cert_pem"], "rb") as c:
            cert = c.read()
        partners[p["name"]] = as2.Partner(as2_name=p["name"], verify_cert=cert, encrypt_cert=cert)
    return org, partners, cfg["store_dir"]


def flat(headers):
    return [(k, " ".join(s.strip() for s in str(v).splitlines())) for k, v in headers]


def post_async_mdn(url, mdn):
    try:
        u = urllib.parse.urlsplit(url)
        conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=30)
        body = mdn.content
        conn.putrequest("POST", u.path or "/")
        for k, v in flat(mdn.headers.items()):
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        conn.send(body)
        conn.getresponse().read()
        conn.close()
    except Exception:  # noqa: BLE001
        LOG.error("posting async MDN to %s failed:\n%s", url, traceback.format_exc())


def make_handler(org, partners, store_dir):
    seen = set()
    seen_lock = threading.Lock()

    def find_org_partner(org_id, partner_id):
        return (org if org_id == org.as2_name else None), partners.get(partner_id)

    def find_message(message_id, _partner_id):
        with seen_lock:
            return message_id in seen

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            raw = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items()).encode("latin-1") + b"\r\n" + body
            msg = as2.Message()
            status, (exc, _tb), mdn = msg.parse(
                raw, find_org_partner_cb=find_org_partner, find_message_cb=find_message
            )
            if exc is not None:
                LOG.warning("message %s: %s: %s", msg.message_id, status, exc)
            if status == "processed":
                with seen_lock:
                    seen.add(msg.message_id)
                name = hashlib.sha256((msg.message_id or "").encode()).hexdigest()
                content = msg.content if isinstance(msg.content, bytes) else b""
                with open(os.path.join(store_dir, name), "wb") as f:
                    f.write(content)
                if mdn is not None and msg.mic and self._mic_hooks(msg, raw):
                    mdn = as2.Mdn(mdn_mode=mdn.mdn_mode, digest_alg=mdn.digest_alg, mdn_url=mdn.mdn_url)
                    mdn.build(message=msg, status=status)

            if mdn is not None and mdn.mdn_mode == "SYNC":
                out = mdn.content
                self.send_response(200)
                for k, v in flat(mdn.headers.items()):
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)
                return
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            if mdn is not None:
                threading.Thread(target=post_async_mdn, args=(mdn.mdn_url, mdn), daemon=True).start()

        def _mic_hooks(self, msg, raw):
            """Test hooks changing the MIC the MDN reports; True if one applied."""
            if self.headers.get("X-Smoke-Tamper-Mic"):
                msg.mic = b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
                return True
            alg = self.headers.get("X-Smoke-Mic-Alg")
            top = email.message_from_bytes(raw)
            if alg and top.get_content_type() == "multipart/signed":
                # Same bytes pyas2lib hashed (the signed part), another digest.
                signed_part = top.get_payload()[0]
                msg.mic = base64.b64encode(hashlib.new(alg, canonicalize(signed_part)).digest())
                msg.digest_alg = alg
                return True
            return False

        def log_message(self, fmt, *args):
            LOG.debug(fmt, *args)

    return Handler


def main(argv):
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="smoke_receiver %(levelname)s: %(message)s")
    logging.getLogger("pyas2lib").setLevel(logging.CRITICAL)
    if len(argv) != 3:
        sys.stderr.write(f"usage: {argv[0]} CONFIG.json PORT_FILE\n")
        return 2
    org, partners, store_dir = load_config(argv[1])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make_handler(org, partners, store_dir))
    server.daemon_threads = True
    tmp = argv[2] + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(tmp, argv[2])
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
