#!/usr/bin/env bash
# selftest.sh VENV_DIR
#
# Tests tests/peers/as2peer.py itself (not edinode): runs setup.sh, makes keys
# with the openssl CLI in a temp dir, starts smoke_receiver.py (pyas2lib as the
# receiving side) on a free port and runs send-batch over a matrix of
# sign x encrypt x compress x MDN mode, plus PSS, OAEP, other digests and
# negative cases (wrong MIC, wrong MDN signer cert, duplicate, unknown partner,
# bad case). Checks the payload the receiver extracted, that `build` output
# decrypts and verifies with the openssl CLI (OpenSSL is what edinode uses),
# and that `check-mdn` judges a saved MDN. Prints "selftest: N passed, N failed".
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
name="selftest"
. "$here/selftest_lib.sh"
selftest_begin as2 "$@"

# Keys: the peer (pyas2lib side), the node (smoke receiver), and a stranger.
selftest_keys as2peer-selftest peer node other
mkdir -p "$tmp/store"
cat >"$tmp/receiver.json" <<EOF
{"org": {"name": "SMOKE NODE", "key_pem": "$tmp/node.key", "cert_pem": "$tmp/node.crt"},
 "partners": [{"name": "as2peer", "cert_pem": "$tmp/peer.crt"}],
 "store_dir": "$tmp/store"}
EOF

selftest_server "$tmp/receiver.log" "$py" "$here/smoke_receiver.py" "$tmp/receiver.json" "$tmp/port"

export SELFTEST_TMP="$tmp" SELFTEST_PEER="$here/as2peer.py"
"$py" - <<'PY'
import hashlib, http.client, itertools, json, os, subprocess, sys, time

tmp, port, peer = os.environ["SELFTEST_TMP"], os.environ["SELFTEST_PORT"], os.environ["SELFTEST_PEER"]
url = f"http://127.0.0.1:{port}/as2"
passed, failed = 0, 0

def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {name}: {detail}", file=sys.stderr)

def run(cmd, cases):
    stdin = "".join(json.dumps(c) + "\n" for c in cases)
    p = subprocess.run([sys.executable, peer, cmd], input=stdin, capture_output=True, text=True, timeout=600)
    if p.stderr.strip():
        print(p.stderr, file=sys.stderr)
    return [json.loads(l) for l in p.stdout.splitlines() if l.strip()], p.returncode

small = os.path.join(tmp, "small.edi")
with open(small, "wb") as f:  # ~1 KiB of X12-like text with CRLF line ends
    f.write(b"".join(b"ST*850*%04d~BEG*00*SA*PO%04d**20260101~PO1*1*10*EA*9.99~\r\n" % (i, i) for i in range(18)))
big = os.path.join(tmp, "big.edi")
with open(big, "wb") as f:  # 10 MiB
    line = b"ST*810*000001~BIG*20260101*INV1~N1*ST*ACME CORP~IT1*1*5*EA*12.5~\r\n"
    f.write((line * (10 * 1024 * 1024 // len(line) + 1))[: 10 * 1024 * 1024])

def case(cid, **kw):
    c = {"id": cid, "url": url, "as2_from": "as2peer", "as2_to": "SMOKE NODE",
         "payload_path": small, "our_key_pem": f"{tmp}/peer.key", "our_cert_pem": f"{tmp}/peer.crt",
         "partner_cert_pem": f"{tmp}/node.crt", "async_timeout": 20}
    c.update(kw)
    return c

# --- positive matrix -------------------------------------------------------
positive = []
for sign, enc, comp, mdn in itertools.product(
        [None, "sha256"], [None, "aes128", "3des"], [None, "before", "after"],
        ["none", "sync-signed", "async-signed"]):
    if comp == "after" and sign is None:
        continue  # nothing to compress "after": same as "before"
    positive.append(case(f"m-{sign}-{enc}-{comp}-{mdn}", sign=sign, encrypt=enc, compress=comp, mdn=mdn))
positive += [
    case("pss", sign="sha256", pss=True, encrypt="aes128", mdn="sync-signed"),
    case("pss-absent-params", sign="sha256", pss=True, pss_params="absent", mdn="sync-signed"),
    case("oaep", sign="sha512", encrypt="aes256", oaep=True, mdn="sync-signed", mdn_digest="sha512"),
    case("pss-oaep-after-async", sign="sha384", pss=True, encrypt="aes192", oaep=True,
         compress="after", mdn="async-signed", mdn_digest="sha384"),
    case("sha1", sign="sha1", encrypt="3des", mdn="sync-signed", mdn_digest="sha1"),
    case("md5-sha224", sign="md5", mdn="sync-signed", mdn_digest="sha224"),
    case("unsigned-mdn", sign="sha256", encrypt="aes128", mdn="sync"),
    case("given-id", sign="sha256", mdn="sync-signed", message_id="selftest-given-id@as2peer.test"),
    case("octet-stream", sign="sha256", encrypt="aes128", mdn="sync-signed",
         content_type="application/octet-stream", filename="data.bin"),
    case("1KiB-timing", sign="sha256", encrypt="aes128", mdn="sync-signed"),
    case("10MiB-timing", sign="sha256", encrypt="aes128", mdn="sync-signed", payload_path=big),
]
# --- negative cases --------------------------------------------------------
negative = [
    case("neg-wrong-mic", sign="sha256", mdn="sync-signed", extra_headers={"X-Smoke-Tamper-Mic": "1"}),
    case("mic-in-other-digest", sign="sha1", mdn="sync-signed", mdn_digest="sha256",
         extra_headers={"X-Smoke-Mic-Alg": "sha256"}),
    case("neg-wrong-mdn-signer", sign="sha256", mdn="sync-signed", partner_cert_pem=f"{tmp}/other.crt"),
    case("neg-dup-1", sign="sha256", mdn="sync-signed", message_id="selftest-dup@as2peer.test"),
    case("neg-dup-2", sign="sha256", mdn="sync-signed", message_id="selftest-dup@as2peer.test"),
    case("neg-unknown-partner", sign="sha256", mdn="sync", as2_from="stranger"),  # pyas2lib cannot sign an MDN for an unknown partner
    case("neg-bad-case", encrypt="rot13"),
    {"id": "neg-missing-fields"},
]

t0 = time.monotonic()
results, rc = run("send-batch", positive + negative)
print(f"send-batch: {len(positive) + len(negative)} cases in {time.monotonic() - t0:.1f}s", file=sys.stderr)
check("send-batch exit code", rc == 0, rc)
by_id = {r["id"]: r for r in results}
check("one result per case", len(results) == len(positive) + len(negative) and len(by_id) == len(results),
      f"{len(results)} results")
src = {c["id"]: c for c in positive}

for c in positive:
    r = by_id.get(c["id"])
    if r is None:
        check(c["id"], False, "no result")
        continue
    problems = []
    if r["error"] is not None: problems.append(f"error={r['error']}")
    if r["http_status"] != 200: problems.append(f"http_status={r['http_status']}")
    if c["mdn"] == "none":
        if r["mdn_status"] is not None: problems.append(f"mdn_status={r['mdn_status']}")
    else:
        if r["mdn_status"] != "processed": problems.append(f"mdn_status={r['mdn_status']}")
        if r["mdn_detail"] is not None: problems.append(f"mdn_detail={r['mdn_detail']}")
        signed_mdn = c["mdn"].endswith("-signed")
        if r["mdn_signed"] != signed_mdn: problems.append(f"mdn_signed={r['mdn_signed']}")
        if signed_mdn and r["mdn_signature_ok"] is not True: problems.append(f"mdn_signature_ok={r['mdn_signature_ok']}")
        want_mic = True if c.get("sign") else None
        if r["mic_ok"] is not want_mic: problems.append(f"mic_ok={r['mic_ok']}")
    # The receiver stored the payload pyas2lib extracted: must be ours, byte for byte.
    stored = os.path.join(tmp, "store", hashlib.sha256((r["message_id"] or "").encode()).hexdigest())
    with open(c["payload_path"], "rb") as f:
        want = f.read()
    if not os.path.exists(stored):
        problems.append("receiver stored nothing")
    else:
        with open(stored, "rb") as f:
            if f.read() != want: problems.append("payload differs at the receiver")
    check(c["id"], not problems, "; ".join(problems) + f"\n  {json.dumps(r)}")

check("given message id used", by_id.get("given-id", {}).get("message_id") == "selftest-given-id@as2peer.test")
r = by_id.get("neg-wrong-mic", {})
check("wrong MIC -> mic_ok false", r.get("mdn_status") == "processed" and r.get("mic_ok") is False
      and r.get("mdn_signature_ok") is True, r)
r = by_id.get("mic-in-other-digest", {})
check("MIC in the MDN's digest compared", r.get("mic_ok") is True and r.get("mic_alg") == "sha256"
      and (r.get("mic_expected") or "").endswith("sha1"), r)
r = by_id.get("neg-wrong-mdn-signer", {})
check("wrong MDN signer -> signature not ok", r.get("mdn_signature_ok") is False and r.get("error"), r)
r = by_id.get("neg-dup-2", {})
check("duplicate -> duplicate-document", by_id.get("neg-dup-1", {}).get("mdn_status") == "processed"
      and (r.get("mdn_status") or "").lower() == "processed/warning" and r.get("mdn_detail") == "duplicate-document", r)
r = by_id.get("neg-unknown-partner", {})
check("unknown partner -> processed/error", (r.get("mdn_status") or "").lower() == "processed/error"
      and r.get("mdn_detail") == "unknown-trading-partner", r)
for cid in ("neg-bad-case", "neg-missing-fields"):
    r = by_id.get(cid, {})
    check(f"{cid} reported, batch went on", bool(r.get("error")) and r.get("http_status") is None, r)
for cid in ("1KiB-timing", "10MiB-timing"):
    print(f"timing: {cid}: {by_id.get(cid, {}).get('elapsed_ms')} ms (build, POST, receiver, MDN check)", file=sys.stderr)

# --- build + openssl CLI -------------------------------------------------------
def openssl(*args, stdin=None):
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True)

builds = [
    case("b-pkcs1-3des", sign="sha384", encrypt="3des", mdn="sync-signed"),
    case("b-pss-oaep", sign="sha256", pss=True, encrypt="aes128", oaep=True, mdn="sync-signed"),
    case("b-after-aes256", sign="sha256", compress="after", encrypt="aes256", mdn="async-signed",
         async_mdn_url="http://127.0.0.1:9/mdn"),
    case("b-signed-only", sign="sha512", mdn="sync"),
]
for b in builds:
    b["out_path"] = os.path.join(tmp, b["id"] + ".http")
out, rc = run("build", builds)
check("build exit code", rc == 0, rc)
built = {o["id"]: o for o in out}
for b in builds:
    o = built.get(b["id"], {})
    if o.get("error") or not o.get("mic"):
        check(b["id"], False, o)
        continue
    with open(b["out_path"], "rb") as f:
        raw = f.read()
    head, body = raw.split(b"\r\n\r\n", 1)
    problems = []
    if f"Message-ID: <{o['message_id']}>".encode() not in head: problems.append("Message-ID header")
    if b["mdn"] == "async-signed" and b"receipt-delivery-option: " + b["async_mdn_url"].encode() not in head:
        problems.append("receipt-delivery-option header")
    inner = raw
    if b.get("encrypt"):
        p = openssl("cms", "-decrypt", "-inform", "DER", "-recip", f"{tmp}/node.crt", "-inkey", f"{tmp}/node.key", stdin=body)
        if p.returncode: problems.append("openssl cms -decrypt: " + p.stderr.decode()[-300:])
        inner = p.stdout
    if b.get("compress") == "after":
        if b"smime-type=\"compressed-data\"" not in inner.split(b"\r\n\r\n", 1)[0]:
            problems.append("decrypted entity is not compressed-data")
        # openssl here has no zlib: check the signed entity inside with pyas2lib.
        from pyas2lib.cms import decompress_message
        inner = decompress_message(inner.split(b"\r\n\r\n", 1)[1])
    elif not problems:
        p = openssl("cms", "-verify", "-noverify", "-certfile", f"{tmp}/peer.crt", stdin=inner)
        if p.returncode: problems.append("openssl cms -verify: " + p.stderr.decode()[-300:])
    if b"multipart/signed" not in inner.split(b"\r\n\r\n", 1)[0]: problems.append("no multipart/signed inside")
    check(b["id"] + " (openssl)", not problems, "; ".join(problems))

# --- check-mdn on an MDN saved from a built message ------------------------------
b = built.get("b-signed-only", {})
if b.get("mic"):
    with open(os.path.join(tmp, "b-signed-only.http"), "rb") as f:
        head, body = f.read().split(b"\r\n\r\n", 1)
    headers = [l.split(": ", 1) for l in head.decode().split("\r\n")]
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
    conn.request("POST", "/as2", body=body, headers=dict(headers))
    resp = conn.getresponse()
    mdn_raw = "".join(f"{k}: {v}\r\n" for k, v in resp.getheaders()).encode() + b"\r\n" + resp.read()
    conn.close()
    with open(os.path.join(tmp, "mdn.http"), "wb") as f:
        f.write(mdn_raw)
    chk = dict(case("check-mdn", mdn="sync"), message_id=b["message_id"], mdn_path=os.path.join(tmp, "mdn.http"),
               mic=b["mic"], mic_alg=b["mic_alg"], mics=b["mics"])
    bad = dict(chk, id="check-mdn-bad-mic", mic="AAAA", mics=None)
    out, _ = run("check-mdn", [chk, bad])
    got = {o["id"]: o for o in out}
    r = got.get("check-mdn", {})
    check("check-mdn", r.get("mdn_status") == "processed" and r.get("mic_ok") is True and r.get("error") is None, r)
    r = got.get("check-mdn-bad-mic", {})
    check("check-mdn wrong MIC", r.get("mic_ok") is False, r)

print(f"selftest: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
