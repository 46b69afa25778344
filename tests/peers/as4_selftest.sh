#!/usr/bin/env bash
# as4_selftest.sh VENV_DIR
#
# Tests tests/peers/as4client.py itself (not edinode): runs setup.sh, makes keys
# with the openssl CLI in a temp dir, starts `as4client.py stub-server` (a tiny
# Pull Send Agent that verifies requests with the same verifier and answers with
# signed multipart UserMessages or eb:Error signals) on a free port, then drives
# `pull`, `receipt`, `raw` and `verify`: signer and verifier agree (and libxmlsec1's
# own verify agrees), the AS4.NET fixture PullRequest verifies with thumbprint
# 5E320E3A1DDAC6606E12816B2744AE1EE2EE7BF5, tampering on either side is detected,
# attachments survive MIME parsing byte for byte. Prints
# "as4 selftest: N passed, N failed"; exits non-zero on failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
name="as4 selftest"
. "$here/selftest_lib.sh"
selftest_begin as4 "$@"
# The AS4.NET fixture lives in shared/ beside the main checkout (AS4_FIXTURE overrides).
fixture="${AS4_FIXTURE:-$here/../../../shared/fixtures/as4/as4net_signed_pullrequest.xml}"
[ -f "$fixture" ] || { echo "as4 selftest: fixture $fixture not found (set AS4_FIXTURE)" >&2; exit 1; }

# Keys: the client (puller), the node (stub), a stranger.
selftest_keys as4-selftest client node other
for who in client node other; do
    openssl x509 -in "$tmp/$who.crt" -noout -fingerprint -sha1 </dev/null \
        | sed 's/.*=//; s/://g' >"$tmp/$who.tp"
done

export SELFTEST_TMP="$tmp" SELFTEST_CLIENT="$here/as4client.py" SELFTEST_FIXTURE="$fixture"
"$py" - <<'PY'
import base64, json, os, random
tmp = os.environ["SELFTEST_TMP"]
rnd = random.Random(4)
binary = bytes(rnd.randrange(256) for _ in range(5000)) + b"\r\n--\r\n\r\r\n\n--MIMEBoundary\r\n\r"
xml = b"<?xml version='1.0'?>\n<inv:Invoice xmlns:inv='urn:x' b='2'  a='1'><inv:Line>1</inv:Line>\n<inv:Empty/></inv:Invoice>\n"
text = b"line one\nline two\r\nline three\n"
open(f"{tmp}/binary.bin", "wb").write(binary)
open(f"{tmp}/xml.bin", "wb").write(xml)
open(f"{tmp}/text.bin", "wb").write(text)
def att(cid, mt, data, cte):
    return {"content_id": cid, "mime_type": mt, "content_b64": base64.b64encode(data).decode(), "cte": cte}
full = {"message_id": "um-a-1@stub", "from_party": "org:sender", "to_party": "org:receiver",
        "service": "urn:svc:invoice", "action": "urn:act:submit", "conversation_id": "conv-42",
        "properties": {"originalSender": "urn:oasis:names:tc:ebcore:partyid-type:unregistered:C1",
                       "finalRecipient": "urn:oasis:names:tc:ebcore:partyid-type:unregistered:C4"},
        "attachments": [att("payload-bin@stub", "application/octet-stream", binary, "binary"),
                        att("payload-xml@stub", "application/xml", xml, "base64"),
                        att("payload-txt@stub", "text/plain", text, "binary")]}
one = lambda mid, **kw: dict({"message_id": mid, "attachments": [att(mid + ".att", "application/gzip", binary, "binary")]}, **kw)
cfg = {"key_pem": f"{tmp}/node.key", "cert_pem": f"{tmp}/node.crt",
       "auth_map": [{"mpc": "urn:mpc:restricted", "thumbprint": open(f"{tmp}/client.tp").read().strip()}],
       "queue": {"urn:mpc:a": [full],
                 "": [one("um-default@stub")],
                 "urn:mpc:unsigned": [one("um-unsigned@stub", sign=False)],
                 "urn:mpc:tamper": [one("um-t-att@stub", tamper="attachment"),
                                    one("um-t-msg@stub", tamper="messaging"),
                                    one("um-t-sig@stub", tamper="signature")],
                 "urn:mpc:wrongcert": [one("um-wc@stub")],
                 "urn:mpc:xmlraw": [{"message_id": "um-xr@stub",
                                     "attachments": [att("x@stub", "application/xml", xml, "binary")]}],
                 "urn:mpc:restricted": [one("um-r@stub")]}}
json.dump(cfg, open(f"{tmp}/stub.json", "w"))
PY

selftest_server "$tmp/stub.log" "$py" "$here/as4client.py" stub-server "$tmp/stub.json" "$tmp/port"

"$py" - <<'PY'
import base64, hashlib, json, os, subprocess, sys, urllib.request

tmp, port = os.environ["SELFTEST_TMP"], os.environ["SELFTEST_PORT"]
client, fixture = os.environ["SELFTEST_CLIENT"], os.environ["SELFTEST_FIXTURE"]
url = f"http://127.0.0.1:{port}/as4"
tp = {w: open(f"{tmp}/{w}.tp").read().strip().upper() for w in ("client", "node", "other")}
key = {w: f"{tmp}/{w}.key" for w in tp}
crt = {w: f"{tmp}/{w}.crt" for w in tp}
EXC = "http://www.w3.org/2001/10/xml-exc-c14n#"
SWA = "http://docs.oasis-open.org/wss/oasis-wss-SwAProfile-1.1#Attachment-Content-Signature-Transform"
passed = failed = 0

def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok   {name}", file=sys.stderr)
    else:
        failed += 1
        print(f"FAIL {name}: {str(detail)[:1500]}", file=sys.stderr)

def run(cmd, case):
    p = subprocess.run([sys.executable, client, cmd], input=json.dumps(case), capture_output=True, text=True,
                       timeout=120)
    lines = p.stdout.strip().splitlines()
    if len(lines) != 1:
        return {"error": f"expected one JSON line, got {p.stdout!r}; stderr {p.stderr[-2000:]}", "_rc": p.returncode}
    out = json.loads(lines[0])
    out["_rc"] = p.returncode
    return out

def requests():
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/requests", timeout=30) as r:
        return json.load(r)

def last_request():
    return requests()[-1]

def pull(mid, mpc, who="client", **kw):
    case = {"url": url, "mpc": mpc, "message_id": mid, "sign": True, "key_pem": key[who], "cert_pem": crt[who],
            "tamper": "none", "server_cert_pem": crt["node"]}
    case.update(kw)
    return run("pull", case)

# --- 1. the AS4.NET fixture PullRequest verifies with our verifier (offline and in the stub) ---
v = run("verify", {"path": fixture})
print(f"AS4.NET fixture signer thumbprint: {v.get('signer_thumbprint')}", flush=True)
check("fixture verifies offline", v.get("signature_verified") is True and v.get("_rc") == 0, v)
check("fixture thumbprint", (v.get("signer_thumbprint") or "").upper() == "5E320E3A1DDAC6606E12816B2744AE1EE2EE7BF5", v)
check("fixture cross-checked by libxmlsec1", v.get("xmlsec_check") == "ok (full)", v.get("xmlsec_check"))
check("fixture parsed as PullRequest", (v.get("pull_request") or {}).get("mpc") == "http://example.holodeckb2b.org/mpc/2", v)
fx = open(fixture, encoding="utf-8").read()
r = run("raw", {"url": url, "body": fx, "content_type": "application/soap+xml; charset=utf-8"})
rec = last_request()
check("fixture verified by the stub", rec["verification"]["signature_verified"] is True
      and rec["verification"]["signer_thumbprint"] == "5E320E3A1DDAC6606E12816B2744AE1EE2EE7BF5", rec)
check("fixture pull answered EBMS:0006", r.get("kind") == "error" and r.get("error_code") == "EBMS:0006"
      and r.get("ref_to_message_id") == "5be59681-51f1-4889-86d6-8d38e8294436@10.124.29.152", r)
# tampered copies of the fixture must fail, without exceptions
bad = fx.replace("5be59681-51f1", "5be59681-51f2")
v = run("verify", {"body": bad})
check("fixture with a changed MessageId fails", v.get("signature_verified") is False and v.get("error") is None, v)
bad = fx.replace("BkiKIaJA91zx", "BkiKIaJA91zy")
v = run("verify", {"body": bad})
check("fixture with a changed SignatureValue fails", v.get("signature_verified") is False and v.get("error") is None, v)
# signature wrapping: a second element carrying the Messaging's wsu:Id
wrap = fx.replace("<s12:Body ", '<s12:Body ').replace(
    "</s12:Header>", '<x:Dup xmlns:x="urn:x" xmlns:wsu="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd" '
    'wsu:Id="header-b9d43eff-cc79-4598-9516-4f5ffe7e8851"/></s12:Header>')
v = run("verify", {"body": wrap})
check("fixture with a duplicated wsu:Id fails", v.get("signature_verified") is False, v)
v = run("verify", {"path": fixture, "server_cert_pem": crt["node"]})
check("fixture against a different expected cert fails", v.get("signature_verified") is False
      and "expected" in (v.get("signature_detail") or ""), v)

# --- 2. signed pull, full UserMessage with three attachments ---
r = pull("pr-a-1@client", "urn:mpc:a")
rec = last_request()
ver = rec["verification"]
check("stub verified our signed PullRequest", ver["signature_verified"] is True and ver["signer_thumbprint"] == tp["client"], ver)
check("libxmlsec1 verified our PullRequest too", ver["xmlsec_check"] == "ok (full)", ver["xmlsec_check"])
refs = ver["references"]
check("PullRequest references: Messaging + Body, exc-c14n, SHA-256",
      len(refs) == 2 and refs[0]["uri"].startswith("#messaging-") and refs[1]["uri"].startswith("#body-")
      and all(x["transforms"] == [EXC] and x["digest_method"].endswith("xmlenc#sha256") for x in refs)
      and ver["signature_method"].endswith("rsa-sha256"), refs)
check("PullRequest mustUnderstand on Security and Messaging",
      rec["security_must_understand"] == "true" and rec["messaging_must_understand"] == "true", rec)
check("PullRequest message id and mpc", rec["message_id"] == "pr-a-1@client" and rec["mpc"] == "urn:mpc:a", rec)
check("pull answered a user message", r.get("http_status") == 200 and r.get("kind") == "user_message" and r.get("_rc") == 0, r)
check("user message signature verified", r.get("signature_verified") is True, r.get("signature_detail"))
check("attachment digests ok", r.get("attachment_digests_ok") is True, r.get("references"))
check("signer thumbprint is the node's", r.get("signer_thumbprint") == tp["node"], r.get("signer_thumbprint"))
check("xmlsec checked the SignedInfo", r.get("xmlsec_check") == "ok (signature value)", r.get("xmlsec_check"))
um = r.get("user_message") or {}
check("user message header fields",
      um.get("message_id") == "um-a-1@stub" and um.get("mpc") == "urn:mpc:a" and um.get("from_party") == "org:sender"
      and um.get("to_party") == "org:receiver" and um.get("service") == "urn:svc:invoice"
      and um.get("action") == "urn:act:submit" and um.get("conversation_id") == "conv-42"
      and um.get("properties", {}).get("finalRecipient", "").endswith(":C4"), um)
parts = um.get("parts") or []
want = {"cid:payload-bin@stub": open(f"{tmp}/binary.bin", "rb").read(),
        "cid:payload-xml@stub": open(f"{tmp}/xml.bin", "rb").read(),
        "cid:payload-txt@stub": open(f"{tmp}/text.bin", "rb").read()}
check("three parts, bytes exact after MIME parsing (binary and base64 CTE)",
      len(parts) == 3 and all(base64.b64decode(p["content_b64"]) == want[p["href"]]
                              and p["sha256_hex"] == hashlib.sha256(want[p["href"]]).hexdigest() for p in parts),
      [(p["href"], p["size"], p["mime_type"]) for p in parts])
check("part mime types", [p["mime_type"] for p in parts] == ["application/octet-stream", "application/xml", "text/plain"], parts)
cids = [x for x in r.get("references") or [] if x["uri"].startswith("cid:")]
check("one SwA reference per attachment", len(cids) == 3 and all(x["transforms"] == [SWA] for x in cids), cids)
check("SwA digest modes: xml/text canonicalised (raw digest differs), binary raw",
      [(x["ok"], x["raw_ok"]) for x in cids] == [(True, True), (True, False), (True, False)], cids)
rs = run("pull", {"url": url, "mpc": "urn:mpc:a", "message_id": "pr-a-2@client", "sign": True,
                  "key_pem": key["client"], "cert_pem": crt["client"]})
check("MPC now empty: EBMS:0006 warning", rs.get("kind") == "error" and rs.get("error_code") == "EBMS:0006"
      and rs.get("severity") == "warning" and rs.get("ref_to_message_id") == "pr-a-2@client", rs)
check("signed error verified (no attachments)", rs.get("signature_verified") is True
      and rs.get("attachment_digests_ok") is None and rs.get("xmlsec_check") == "ok (full)", rs)

# --- 3. default MPC, unsigned pull, PEM text instead of paths ---
r = pull("pr-def@client", None, key_pem=open(key["client"]).read(), cert_pem=open(crt["client"]).read())
rec = last_request()
check("mpc null omits the attribute", rec["mpc_attribute_present"] is False, rec)
check("default MPC pull", r.get("kind") == "user_message" and (r.get("user_message") or {}).get("message_id") == "um-default@stub"
      and r["user_message"]["mpc"].endswith("defaultMPC") and r.get("signature_verified") is True, r)
r = pull("pr-uns@client", "urn:mpc:unsigned", sign=False)
rec = last_request()
check("unsigned PullRequest seen unsigned", rec["verification"]["signed"] is False and rec["verification"]["signature_verified"] is None, rec)
check("unsigned user message: signature_verified null", r.get("kind") == "user_message" and r.get("signature_verified") is None
      and r.get("attachment_digests_ok") is None and r.get("signer_thumbprint") is None, r)

# --- 4. tampered PullRequests are rejected by the stub's verifier ---
for mode in ("messaging", "signature"):
    r = pull(f"pr-tamper-{mode}@client", "urn:mpc:a", tamper=mode)
    rec = last_request()
    check(f"tamper={mode} detected by the stub", rec["verification"]["signature_verified"] is False, rec["verification"])
    check(f"tamper={mode} answered EBMS:0101", r.get("error_code") == "EBMS:0101" and r.get("severity") == "failure", r)
check("tamper=messaging names the Messaging reference",
      "#messaging-" in (requests()[-2]["verification"]["signature_detail"] or ""), requests()[-2]["verification"])

# --- 5. tampered / mis-signed user messages are detected by pull ---
r = pull("pr-t1@client", "urn:mpc:tamper")
check("attachment changed after signing", r.get("kind") == "user_message" and r.get("attachment_digests_ok") is False
      and r.get("signature_verified") is False and r.get("error") is None, r)
r = pull("pr-t2@client", "urn:mpc:tamper")
check("Messaging changed after signing", r.get("signature_verified") is False and r.get("attachment_digests_ok") is True
      and "#messaging-" in (r.get("signature_detail") or ""), r)
r = pull("pr-t3@client", "urn:mpc:tamper")
check("SignatureValue corrupted", r.get("signature_verified") is False and r.get("attachment_digests_ok") is True
      and "SignatureValue" in (r.get("signature_detail") or ""), r)
r = pull("pr-wc@client", "urn:mpc:wrongcert", server_cert_pem=crt["other"])
check("signed by another cert than server_cert_pem", r.get("signature_verified") is False
      and r.get("signer_thumbprint") == tp["node"], r)
r = pull("pr-xr@client", "urn:mpc:xmlraw", swa_mode="raw")
check("swa_mode=raw rejects the spec-canonicalised XML attachment digest",
      r.get("attachment_digests_ok") is False and r.get("signature_verified") is False, r)

# --- 6. authorization map (stub): restricted MPC ---
r = pull("pr-r1@other", "urn:mpc:restricted", who="other")
check("restricted MPC, stranger's cert: EBMS:0004", r.get("error_code") == "EBMS:0004", r)
r = pull("pr-r2@client", "urn:mpc:restricted", sign=False)
check("restricted MPC, unsigned: EBMS:0004", r.get("error_code") == "EBMS:0004", r)
r = pull("pr-r3@client", "urn:mpc:restricted")
check("restricted MPC, authorized cert: user message", r.get("kind") == "user_message"
      and r["user_message"]["message_id"] == "um-r@stub", r)

# --- 7. receipts: bundled with a PullRequest, and alone ---
r = pull("pr-rc@client", "urn:mpc:a", receipts=["um-a-1@stub", {"ref_to_message_id": "um-default@stub"}])
rec = last_request()
check("receipts bundled in the same eb:Messaging, signed", rec["receipts"] == ["um-a-1@stub", "um-default@stub"]
      and rec["verification"]["signature_verified"] is True and r.get("error_code") == "EBMS:0006", rec)
r = run("receipt", {"url": url, "ref_to_message_id": "um-r@stub", "message_id": "rc-1@client", "sign": True,
                    "key_pem": key["client"], "cert_pem": crt["client"]})
rec = last_request()
check("receipt signal", r.get("http_status") == 200 and r.get("kind") == "other" and r.get("body_length") == 0
      and rec["kind"] == "receipt" and rec["receipts"] == ["um-r@stub"]
      and rec["verification"]["signature_verified"] is True, (r, rec))
r = run("receipt", {"url": url, "ref_to_message_id": "um-r@stub", "sign": True, "tamper": "signature",
                    "key_pem": key["client"], "cert_pem": crt["client"]})
check("tampered receipt rejected", r.get("error_code") == "EBMS:0101", r)

# --- 8. raw / hostile input, client-side errors ---
bomb = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
        '<s12:Envelope xmlns:s12="http://www.w3.org/2003/05/soap-envelope"><s12:Body>&lol2;</s12:Body></s12:Envelope>')
r = run("raw", {"url": url, "body": bomb, "content_type": "application/soap+xml"})
check("raw DOCTYPE body: error answer parsed", r.get("kind") == "error" and r.get("error_code") == "EBMS:0009"
      and r.get("http_status") == 500, r)
r = run("raw", {"url": url, "body": "not xml at all", "content_type": "text/plain"})
check("raw garbage body", r.get("kind") == "error" and r.get("error_code") == "EBMS:0009", r)
r = run("pull", {"url": "http://127.0.0.1:9/as4", "mpc": "x", "sign": False, "http_timeout": 5})
check("connection refused: error set, exit 1", r.get("error") and r.get("_rc") == 1, r)
r = run("pull", {"url": url, "sign": True, "key_pem": "/nonexistent.key", "cert_pem": crt["client"]})
check("unreadable key: error set", r.get("error") and "nonexistent" in r["error"] and r.get("_rc") == 1, r)
v = run("verify", {"body": "<a/>"})
check("verify of a non-SOAP body: kind other, no exception", v.get("kind") == "other" and v.get("error") is None, v)

print(f"as4 selftest: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
