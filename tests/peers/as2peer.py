#!/usr/bin/env python3
"""as2peer: drive pyas2lib (a third-party AS2 implementation) as the partner in
edinode's integration tests.

Run with the venv made by tests/peers/setup.sh:

    VENV/bin/python tests/peers/as2peer.py send-batch   < cases.jsonl > results.jsonl
    VENV/bin/python tests/peers/as2peer.py build        < case.json   (writes case["out_path"])
    VENV/bin/python tests/peers/as2peer.py check-mdn    < case.json   (judges a saved MDN)

Every command reads JSON objects, one per line, on stdin ("cases") and writes one
JSON line per case on stdout. Diagnostics go to stderr. The case and result
fields are described in tests/peers/README.md.

pyas2lib builds, signs, compresses (before signing) and encrypts the message and
parses/verifies the MDN. This script only adds what pyas2lib cannot do itself:
compression after signing, RSA-OAEP key transport (pyas2lib 1.4.4's
Message.build ignores Partner.key_enc_alg), and explicit RSASSA-PSS parameters
(pyas2lib writes none, which OpenSSL refuses). Those steps still use pyas2lib's
own CMS helpers.
"""

import base64
import copy
import email
import hashlib
import http.client
import http.server
import json
import logging
import os
import ssl
import sys
import threading
import time
import traceback
import urllib.parse
from email import encoders
from email import message as email_message

from asn1crypto import algos, cms as asn1_cms

from pyas2lib import as2
from pyas2lib import cms as as2cms
from pyas2lib.constants import DIGEST_ALGORITHMS
from pyas2lib.utils import mime_to_bytes

LOG = logging.getLogger("as2peer")

ENC_ALGS = {
    "3des": "tripledes_192_cbc",
    "tripledes": "tripledes_192_cbc",
    "aes128": "aes_128_cbc",
    "aes192": "aes_192_cbc",
    "aes256": "aes_256_cbc",
}
MDN_MODES = ("none", "sync", "sync-signed", "async", "async-signed")
CONTENT_HEADERS = ("content-type", "content-transfer-encoding", "content-disposition", "mime-version")

# pyas2lib's own texts for failures of Mdn.parse (as opposed to a disposition
# the MDN itself carries).
PYAS2LIB_MIC_MISMATCH = "Message Integrity check failed."
PYAS2LIB_FAILURES = (
    "original-message-not-found",
    "mdn-not-found",
    "Expected signed MDN but unsigned MDN returned",
)
PYAS2LIB_PARSE_FAILURE_PREFIX = "Failed to parse received MDN."


class CaseError(Exception):
    """A case that cannot be run as given."""


# --------------------------------------------------------------------------
# MIC capture: pyas2lib hashes canonicalize(payload) for the MIC while it
# signs. Record those bytes (without changing them) so the MIC can also be
# given in other digest algorithms.
_capture = threading.local()
_pyas2lib_canonicalize = as2.canonicalize


def _recording_canonicalize(*args, **kwargs):
    out = _pyas2lib_canonicalize(*args, **kwargs)
    if getattr(_capture, "on", False):
        _capture.last = out
    return out


as2.canonicalize = _recording_canonicalize


def b64_digest(alg, data):
    return base64.b64encode(hashlib.new(alg, data).digest()).decode("ascii")


def norm_digest(name):
    """'SHA-256' -> 'sha256'; None if not a digest pyas2lib knows."""
    if not name:
        return None
    n = name.strip().lower().replace("-", "")
    return n if n in DIGEST_ALGORITHMS else None


def unfold(value):
    """HTTP has no header folding: join folded MIME header lines."""
    return " ".join(part.strip() for part in str(value).splitlines())


def read_file(path, what):
    if not path:
        raise CaseError(f"{what} is required for this case")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CaseError(f"cannot read {what} {path!r}: {e}") from e


# --------------------------------------------------------------------------
# Case handling

class Case:
    """A validated case (see README.md for the fields)."""

    def __init__(self, d):
        if not isinstance(d, dict):
            raise CaseError("a case must be a JSON object")
        self.id = d.get("id")
        self.url = d.get("url")
        self.as2_from = d.get("as2_from")
        self.as2_to = d.get("as2_to")
        self.message_id = d.get("message_id")
        if self.message_id:
            self.message_id = str(self.message_id).strip().lstrip("<").rstrip(">")
        self.payload_path = d.get("payload_path")
        self.content_type = d.get("content_type") or "application/edi-x12"
        self.filename = d.get("filename")
        self.subject = d.get("subject") or "AS2 Message"
        self.domain = d.get("domain") or "as2peer.test"
        self.extra_headers = d.get("extra_headers") or {}
        self.our_key_pem = d.get("our_key_pem")
        self.our_cert_pem = d.get("our_cert_pem")
        self.partner_cert_pem = d.get("partner_cert_pem")
        self.partner_ca_pem = d.get("partner_ca_pem")
        self.validate_certs = bool(d.get("validate_certs", True))

        self.sign = d.get("sign")
        if self.sign is not None and norm_digest(self.sign) is None:
            raise CaseError(f"sign must be null or one of {DIGEST_ALGORITHMS}, got {self.sign!r}")
        self.sign = norm_digest(self.sign)
        self.pss = bool(d.get("pss")) and self.sign is not None
        self.pss_params = d.get("pss_params") or "explicit"
        if self.pss_params not in ("explicit", "absent"):
            raise CaseError("pss_params must be 'explicit' or 'absent'")

        enc = d.get("encrypt")
        if enc is not None:
            enc = ENC_ALGS.get(str(enc).lower(), str(enc).lower())
            if enc not in ENC_ALGS.values():
                raise CaseError(f"encrypt must be null or one of {sorted(ENC_ALGS)}, got {d.get('encrypt')!r}")
        self.encrypt = enc
        self.oaep = bool(d.get("oaep")) and enc is not None
        self.oaep_params = d.get("oaep_params") or "explicit"
        if self.oaep_params not in ("explicit", "absent"):
            raise CaseError("oaep_params must be 'explicit' or 'absent'")

        self.compress = d.get("compress")
        if self.compress not in (None, "before", "after"):
            raise CaseError("compress must be null, 'before' or 'after'")
        if self.compress == "after" and not self.sign:
            # Without a signature "before" and "after" are the same thing.
            self.compress = "before"

        self.mdn = d.get("mdn") or "none"
        if self.mdn not in MDN_MODES:
            raise CaseError(f"mdn must be one of {MDN_MODES}")
        self.mdn_digest = d.get("mdn_digest") or "sha256"
        if norm_digest(self.mdn_digest) is None:
            raise CaseError(f"mdn_digest must be one of {DIGEST_ALGORITHMS}")
        self.mdn_digest = norm_digest(self.mdn_digest)
        self.async_timeout = float(d.get("async_timeout", 30))
        self.async_mdn_url = d.get("async_mdn_url")
        self.http_timeout = float(d.get("http_timeout", 120))
        self.tls_ca_pem = d.get("tls_ca_pem")
        self.out_path = d.get("out_path")

    @property
    def is_async(self):
        return self.mdn.startswith("async")

    @property
    def signed_mdn(self):
        return self.mdn.endswith("-signed")


class Built:
    """An AS2 message pyas2lib built for a case, ready to go over HTTP."""

    def __init__(self, case, message, mic_content):
        self.case = case
        self.message = message
        self.mic_content = mic_content
        self.headers = [(k, unfold(v)) for k, v in message.payload.items()]
        body = message.content  # a property: serialises the MIME tree each time
        self.body = body if isinstance(body, bytes) else b""

    @property
    def message_id(self):
        return self.message.message_id

    @property
    def mic(self):
        m = self.message
        return m.mic.decode("ascii") if m.mic else None

    @property
    def mic_alg(self):
        return self.message.digest_alg if self.message.mic else None

    def mic_in(self, alg):
        """This message's MIC in digest `alg`, over the bytes pyas2lib hashed."""
        if self.mic_content is None or norm_digest(alg) is None:
            return None
        return b64_digest(norm_digest(alg), self.mic_content)

    def raw_request(self):
        head = "".join(f"{k}: {v}\r\n" for k, v in self.headers)
        return head.encode("utf-8") + b"\r\n" + self.body


def make_partner(case, encrypt_by_pyas2lib):
    partner_cert = None
    if case.partner_cert_pem:
        partner_cert = read_file(case.partner_cert_pem, "partner_cert_pem")
    elif case.encrypt or case.signed_mdn:
        raise CaseError("partner_cert_pem is required to encrypt or to verify a signed MDN")
    ca = read_file(case.partner_ca_pem, "partner_ca_pem") if case.partner_ca_pem else None
    mdn_mode = None
    if case.mdn != "none":
        mdn_mode = "ASYNC" if case.is_async else "SYNC"
    return as2.Partner(
        as2_name=case.as2_to,
        verify_cert=partner_cert,
        verify_cert_ca=ca,
        encrypt_cert=partner_cert,
        encrypt_cert_ca=ca,
        validate_certs=case.validate_certs,
        compress=case.compress == "before",
        sign=case.sign is not None,
        digest_alg=case.sign or "sha256",
        sign_alg="rsassa_pss" if case.pss else "rsassa_pkcs1v15",
        encrypt=encrypt_by_pyas2lib,
        enc_alg=case.encrypt or "tripledes_192_cbc",
        key_enc_alg="rsaes_oaep" if case.oaep else "rsaes_pkcs1v15",
        mdn_mode=mdn_mode,
        mdn_digest_alg=case.mdn_digest if case.signed_mdn else None,
    )


def build_message(case, async_url=None):
    """Build the AS2 message for `case` with pyas2lib (plus the extra steps)."""
    if not case.as2_from or not case.as2_to:
        raise CaseError("as2_from and as2_to are required")
    data = read_file(case.payload_path, "payload_path")

    sign_key = None
    if case.sign:
        key = read_file(case.our_key_pem, "our_key_pem")
        cert = read_file(case.our_cert_pem, "our_cert_pem")
        sign_key = key.rstrip(b"\r\n") + b"\n" + cert
    org = as2.Organization(
        as2_name=case.as2_from, sign_key=sign_key, mdn_url=async_url, domain=case.domain
    )

    fix_pss = case.pss and case.pss_params == "explicit"
    # pyas2lib encrypts itself unless a step has to come between signing and
    # encrypting, or OAEP is asked (Message.build always uses PKCS#1 v1.5).
    by_hand = case.encrypt is not None and (case.compress == "after" or case.oaep or fix_pss)
    partner = make_partner(case, encrypt_by_pyas2lib=case.encrypt is not None and not by_hand)

    msg = as2.Message(sender=org, receiver=partner)
    _capture.on, _capture.last = True, None
    try:
        msg.build(
            data,
            filename=case.filename,
            subject=case.subject,
            content_type=case.content_type,
            additional_headers={str(k): str(v) for k, v in case.extra_headers.items()},
            disposition_notification_to=f"as2peer@{case.domain}",
        )
    finally:
        _capture.on = False
    mic_content = _capture.last if msg.mic else None
    if mic_content is not None and b64_digest(msg.digest_alg, mic_content) != msg.mic.decode():
        raise RuntimeError("internal: captured MIC content does not match pyas2lib's MIC")

    if fix_pss or case.compress == "after" or by_hand:
        msg.payload = post_process(msg.payload, case, partner, org, fix_pss, by_hand, mic_content)

    if case.message_id:
        msg.payload.replace_header("Message-ID", f"<{case.message_id}>")
        msg.message_id = case.message_id
    return Built(case, msg, mic_content)


def pkcs7_mime(name, smime_type, der):
    """An application/pkcs7-mime entity (binary) holding `der`."""
    entity = email_message.Message()
    entity.set_type("application/pkcs7-mime")
    entity.set_param("name", name)
    entity.set_param("smime-type", smime_type)
    entity.add_header("Content-Disposition", "attachment", filename=name)
    entity.add_header("Content-Transfer-Encoding", "binary")
    entity.set_payload(der)
    return entity


def post_process(top, case, partner, org, fix_pss, encrypt, mic_content):
    """Steps pyas2lib's Message.build cannot do, applied to its output `top`."""
    as2_headers = [(k, v) for k, v in top.items() if k.lower() not in CONTENT_HEADERS]
    for k, _ in as2_headers:
        del top[k]
    entity = top

    if fix_pss:
        for part in entity.walk():
            if part.get_content_type() == "application/pkcs7-signature":
                der = part.get_payload(decode=True)
                der = explicit_pss_params(der, org.sign_key[1], mic_content)
                del part["Content-Transfer-Encoding"]
                part.set_payload(der)
                encoders.encode_base64(part)

    if case.compress == "after":
        # RFC 5402 / RFC 3274: the whole multipart/signed entity, compressed.
        entity = pkcs7_mime("smime.p7z", "compressed-data", as2cms.compress_message(mime_to_bytes(entity)))

    if encrypt:
        der = as2cms.encrypt_message(
            mime_to_bytes(entity),
            partner.enc_alg,
            partner.load_encrypt_cert(),
            key_enc_alg=partner.key_enc_alg,
        )
        if case.oaep and case.oaep_params == "explicit":
            der = explicit_oaep_params(der)
        entity = pkcs7_mime("smime.p7m", "enveloped-data", der)

    for k, v in as2_headers:
        entity.add_header(k, v)
    return entity


def _mgf1(seed, length, alg):
    out, counter = b"", 0
    while len(out) < length:
        out += hashlib.new(alg, seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:length]


def pss_salt_length(signature, cert, alg):
    """Salt length of an RSASSA-PSS signature (EMSA-PSS decoding with the
    signer's public key, RFC 8017 9.1.2). `cert` is an oscrypto Certificate."""
    rsa = cert.asn1.public_key["public_key"].parsed
    n, e = rsa["modulus"].native, rsa["public_exponent"].native
    em_bits = n.bit_length() - 1
    em_len = (em_bits + 7) // 8
    em = pow(int.from_bytes(signature, "big"), e, n).to_bytes(em_len, "big")
    h_len = hashlib.new(alg).digest_size
    if em[-1] != 0xBC:
        raise RuntimeError("not an RSASSA-PSS signature (trailer)")
    masked_db, h = em[: em_len - h_len - 1], em[em_len - h_len - 1 : -1]
    db = bytearray(a ^ b for a, b in zip(masked_db, _mgf1(h, len(masked_db), alg)))
    db[0] &= 0xFF >> (8 * em_len - em_bits)
    sep = bytes(db).find(b"\x01")
    if sep < 0 or any(db[:sep]):
        raise RuntimeError("not an RSASSA-PSS signature (padding)")
    return len(db) - sep - 1


def explicit_oaep_params(der):
    """pyas2lib writes id-RSAES-OAEP without parameters, which RFC 4055 forbids
    for an encrypted key and OpenSSL refuses. oscrypto's OAEP is SHA-1 with
    MGF1-SHA-1, i.e. the RSAES-OAEP-params defaults: write them (an empty
    SEQUENCE)."""
    ci = asn1_cms.ContentInfo.load(der)
    env = ci["content"]
    untouched_before = env["encrypted_content_info"].dump()
    changed = False
    for ri in env["recipient_infos"]:
        ktri = ri.chosen
        alg = ktri["key_encryption_algorithm"]
        if alg["algorithm"].native != "rsaes_oaep" or alg["parameters"].native is not None:
            continue
        rid_before = ktri["rid"].dump()
        ktri["key_encryption_algorithm"] = asn1_cms.KeyEncryptionAlgorithm(
            {
                # All defaults (SHA-1, MGF1-SHA-1): encodes as an empty SEQUENCE.
                "algorithm": "rsaes_oaep",
                "parameters": algos.RSAESOAEPParams({"hash_algorithm": {"algorithm": "sha1"}}),
            }
        )
        changed = True
    if not changed:
        return der
    out = ci.dump(force=True)
    check = asn1_cms.ContentInfo.load(out)["content"]
    if check["encrypted_content_info"].dump() != untouched_before or (
        check["recipient_infos"][0].chosen["rid"].dump() != rid_before
    ):
        raise RuntimeError("internal: re-encoding the OAEP recipient changed other fields")
    return out


def explicit_pss_params(der, cert, mic_content):
    """Give pyas2lib's RSASSA-PSS SignerInfo the RSASSA-PSS-params (RFC 4056)
    that describe the signature it really made (hash, MGF1 hash, salt)."""
    ci = asn1_cms.ContentInfo.load(der)
    certs_before = [c.dump() for c in ci["content"]["certificates"]]
    changed = False
    for si in ci["content"]["signer_infos"]:
        sig_alg = si["signature_algorithm"]
        if sig_alg["algorithm"].native != "rsassa_pss" or sig_alg["parameters"].native is not None:
            continue
        alg = norm_digest(si["digest_algorithm"]["algorithm"].native)
        salt = pss_salt_length(si["signature"].native, cert, alg)
        si["signature_algorithm"] = algos.SignedDigestAlgorithm(
            {
                "algorithm": "rsassa_pss",
                "parameters": algos.RSASSAPSSParams(
                    {
                        "hash_algorithm": {"algorithm": alg},
                        "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": alg}},
                        "salt_length": salt,
                    }
                ),
            }
        )
        changed = True
    if not changed:
        return der
    out = ci.dump(force=True)
    check = asn1_cms.ContentInfo.load(out)
    if [c.dump() for c in check["content"]["certificates"]] != certs_before:
        raise RuntimeError("internal: re-encoding the PSS signature changed its certificates")
    # The signature must still verify over the same content (pyas2lib's check).
    as2cms.verify_message(mic_content, out, cert)
    return out


# --------------------------------------------------------------------------
# MDN evaluation

def read_disposition(raw):
    """Our own plain reading of an MDN (used to tell pyas2lib's own failures
    apart from what the MDN says, and to report the received MIC)."""
    out = {"signed": False, "type": None, "modifier": None, "mic": None, "mic_alg": None, "orig_mid": None}
    try:
        top = email.message_from_bytes(raw)
    except Exception:  # noqa: BLE001 - report as unreadable below
        return out
    out["signed"] = top.get_content_type() == "multipart/signed"
    for part in top.walk():
        if part.get_content_type() != "message/disposition-notification":
            continue
        blocks = part.get_payload()
        if not isinstance(blocks, list):
            blocks = [email.message_from_string(str(blocks))]
        for block in blocks:
            disp = block.get("Disposition")
            if disp is not None and out["type"] is None:
                what = str(disp).split(";")[-1].strip()
                kind, _, modifier = what.partition(":")
                out["type"] = kind.strip()
                out["modifier"] = modifier.strip() or None
            mic = block.get("Received-Content-MIC")
            if mic is not None and out["mic"] is None:
                value, _, alg = str(mic).partition(",")
                out["mic"], out["mic_alg"] = value.strip(), alg.strip() or None
            omid = block.get("Original-Message-ID")
            if omid is not None and out["orig_mid"] is None:
                out["orig_mid"] = str(omid).strip().lstrip("<").rstrip(">")
        break
    return out


def empty_result(case_id, message_id=None):
    return {
        "id": case_id,
        "message_id": message_id,
        "http_status": None,
        "mdn_status": None,
        "mdn_detail": None,
        "mdn_signed": False,
        "mdn_signature_ok": None,
        "mic_ok": None,
        "error": None,
        "elapsed_ms": None,
        # Details beyond the core schema (always present, may be null):
        "mic_received": None,
        "mic_alg": None,
        "mic_expected": None,
        "mdn_message_id": None,
        "pyas2lib_status": None,
        "pyas2lib_detail": None,
    }


def evaluate_mdn(raw, built):
    """Let pyas2lib's Mdn.parse judge `raw` (headers CRLF body) as the MDN for
    `built`, and turn its answer into result fields."""
    own = read_disposition(raw)
    msg = built.message
    # pyas2lib compares Received-Content-MIC with the MIC it computed when it
    # signed (in the signing digest). If the MDN names another digest, give
    # pyas2lib the MIC of the same bytes in that digest instead.
    orig = copy.copy(msg)
    mdn_alg = norm_digest(own["mic_alg"])
    if msg.mic and mdn_alg and mdn_alg != norm_digest(msg.digest_alg):
        other = built.mic_in(mdn_alg)
        if other:
            orig.mic = other.encode("ascii")

    lookup = {"called": False, "found": False}

    def find_message(message_id, _recipient):
        lookup["called"] = True
        if message_id == msg.message_id:
            lookup["found"] = True
            return orig
        return None

    mdn = as2.Mdn()
    status, detail = mdn.parse(raw, find_message)

    res = {
        "mdn_signed": own["signed"],
        "mdn_signature_ok": None,
        "mic_ok": None,
        "mic_received": own["mic"],
        "mic_alg": own["mic_alg"],
        "mic_expected": f"{msg.mic.decode()}, {msg.digest_alg}" if msg.mic else None,
        "mdn_message_id": mdn.message_id,
        "pyas2lib_status": status,
        "pyas2lib_detail": detail,
        "error": None,
    }
    pyas2lib_failed = status == "failed/Failure" and (
        detail in PYAS2LIB_FAILURES or str(detail or "").startswith(PYAS2LIB_PARSE_FAILURE_PREFIX)
    )
    if own["signed"] and lookup["found"]:
        if mdn.digest_alg:
            res["mdn_signature_ok"] = True
        elif pyas2lib_failed:
            res["mdn_signature_ok"] = False

    mic_mismatch = False
    if pyas2lib_failed:
        res["mdn_status"], res["mdn_detail"] = own["type"], own["modifier"]
        res["error"] = f"pyas2lib rejected the MDN: {detail}"
    elif status == "processed/warning" and detail == PYAS2LIB_MIC_MISMATCH and own["type"] == "processed":
        res["mdn_status"], res["mdn_detail"] = "processed", None
        mic_mismatch = True
    else:
        res["mdn_status"], res["mdn_detail"] = status, (detail or None)

    if msg.mic and not pyas2lib_failed and res["mdn_status"] == "processed":
        if mic_mismatch:
            res["mic_ok"] = False
        elif own["mic"]:
            res["mic_ok"] = True  # pyas2lib compared and found them equal
        elif own["signed"]:
            res["mic_ok"] = False  # a signed receipt must carry the MIC (RFC 4130 7.4.3)
            res["error"] = "signed MDN has no Received-Content-MIC"
    if res["mdn_status"] is None and res["error"] is None:
        res["error"] = "no disposition found in the MDN"
    return res


# --------------------------------------------------------------------------
# HTTP

def post(url, headers, body, timeout, tls_ca=None):
    u = urllib.parse.urlsplit(url)
    if u.scheme == "https":
        ctx = ssl.create_default_context(cafile=tls_ca) if tls_ca else ssl._create_unverified_context()
        conn = http.client.HTTPSConnection(u.hostname, u.port or 443, timeout=timeout, context=ctx)
    elif u.scheme == "http":
        conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
    else:
        raise CaseError(f"unsupported url {url!r}")
    path = u.path or "/"
    if u.query:
        path += "?" + u.query
    try:
        conn.putrequest("POST", path, skip_accept_encoding=True)
        for k, v in headers:
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        conn.send(body)
        resp = conn.getresponse()
        data = resp.read()
        raw_headers = resp.getheaders()
        return resp.status, raw_headers, data
    finally:
        conn.close()


def raw_http(headers, body):
    head = "".join(f"{k}: {v}\r\n" for k, v in headers)
    return head.encode("latin-1", "replace") + b"\r\n" + body


class MdnListener:
    """HTTP server receiving asynchronous MDNs (one per process)."""

    def __init__(self):
        self.lock = threading.Condition()
        self.pending = {}  # message id -> (Built, result dict, start time)
        self.done = {}  # message id -> result dict
        listener = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 - http.server's name
                body = self._read_body()
                raw = raw_http(self.headers.items(), body)
                try:
                    listener.received(raw)
                except Exception:  # noqa: BLE001 - keep serving
                    LOG.error("async MDN handling failed:\n%s", traceback.format_exc())
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _read_body(self):
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            break
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def log_message(self, fmt, *args):
                LOG.debug("mdn listener: " + fmt, *args)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mdn"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def expect(self, built, result, start):
        with self.lock:
            self.pending[built.message_id] = (built, result, start)

    def forget(self, message_id):
        with self.lock:
            self.pending.pop(message_id, None)

    def received(self, raw):
        own = read_disposition(raw)
        mid = own["orig_mid"]
        with self.lock:
            entry = self.pending.get(mid)
        if entry is None:
            LOG.warning("async MDN for unknown or already answered message %r", mid)
            return
        built, result, start = entry
        result.update(evaluate_mdn(raw, built))
        result["elapsed_ms"] = round((time.monotonic() - start) * 1000, 1)
        with self.lock:
            if self.pending.pop(mid, None) is not None:
                self.done[mid] = result
            self.lock.notify_all()

    def wait(self, deadlines):
        """Yield results (message id, result) as they arrive; then the ones
        past their deadline with an error."""
        remaining = dict(deadlines)
        while remaining:
            with self.lock:
                ready = [m for m in remaining if m in self.done]
                if not ready:
                    now = time.monotonic()
                    expired = [m for m, t in remaining.items() if t <= now]
                    if not expired:
                        self.lock.wait(min(remaining.values()) - now)
                        continue
                    for m in expired:
                        _built, result, start = self.pending.pop(m)
                        result["error"] = "timed out waiting for the asynchronous MDN"
                        result["elapsed_ms"] = round((now - start) * 1000, 1)
                        self.done[m] = result
                    ready = expired
            for m in ready:
                del remaining[m]
                yield m, self.done.pop(m)


# --------------------------------------------------------------------------
# Commands

def emit(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=False) + "\n")
    sys.stdout.flush()


def read_cases():
    for lineno, line in enumerate(sys.stdin, 1):
        line = line.strip()
        if not line:
            continue
        try:
            yield json.loads(line)
        except ValueError as e:
            yield {"__bad__": f"line {lineno}: not JSON: {e}"}


def send_one(case, listener_box):
    start = time.monotonic()
    built = None
    result = empty_result(case.id)
    async_url = None
    if case.is_async:
        async_url = case.async_mdn_url
        if not async_url:
            if listener_box[0] is None:
                listener_box[0] = MdnListener()
            async_url = listener_box[0].url
    if not case.url:
        raise CaseError("url is required")
    built = build_message(case, async_url=async_url)
    result["message_id"] = built.message_id
    result["mic_expected"] = f"{built.mic}, {built.mic_alg}" if built.mic else None

    listener = listener_box[0] if case.is_async and not case.async_mdn_url else None
    if listener:
        listener.expect(built, result, start)
    try:
        status, headers, body = post(case.url, built.headers, built.body, case.http_timeout, case.tls_ca_pem)
    except Exception as e:  # noqa: BLE001 - reported with the message id
        if listener:
            listener.forget(built.message_id)
        result["error"] = f"{type(e).__name__}: {e}"
        result["elapsed_ms"] = round((time.monotonic() - start) * 1000, 1)
        return result, None
    result["http_status"] = status
    ok_http = 200 <= status < 300
    if not ok_http:
        excerpt = body[:300].decode("utf-8", "replace")
        result["error"] = f"HTTP {status}: {excerpt}"

    if case.mdn in ("sync", "sync-signed"):
        ctype = next((v for k, v in headers if k.lower() == "content-type"), "").lower()
        looks_like_mdn = ctype.startswith(("multipart/report", "multipart/signed"))
        if body.strip() and (ok_http or looks_like_mdn):
            result.update(evaluate_mdn(raw_http(headers, body), built))
            if not ok_http:
                result["error"] = f"HTTP {status}" + (f"; {result['error']}" if result["error"] else "")
        elif ok_http:
            result["error"] = "no MDN in the HTTP response"
    elif case.is_async and listener:
        if ok_http:
            return result, built.message_id  # completed by the listener
        listener.forget(built.message_id)
    result["elapsed_ms"] = round((time.monotonic() - start) * 1000, 1)
    return result, None


def cmd_send_batch():
    listener_box = [None]
    waiting = []  # (message id, case)
    for d in read_cases():
        start = time.monotonic()
        case_id = d.get("id") if isinstance(d, dict) else None
        try:
            if "__bad__" in d:
                raise CaseError(d["__bad__"])
            case = Case(d)
            result, pending_mid = send_one(case, listener_box)
        except Exception as e:  # noqa: BLE001 - one case never stops the batch
            result, pending_mid = empty_result(case_id), None
            result["error"] = f"{type(e).__name__}: {e}"
            result["elapsed_ms"] = round((time.monotonic() - start) * 1000, 1)
            if not isinstance(e, CaseError):
                LOG.debug("case %r failed:\n%s", case_id, traceback.format_exc())
        if pending_mid:
            waiting.append((pending_mid, case))
        else:
            emit(result)

    if waiting:
        now = time.monotonic()
        deadlines = {mid: now + case.async_timeout for mid, case in waiting}
        for _mid, result in listener_box[0].wait(deadlines):
            emit(result)
    return 0


def each_case(blank, handle):
    """The one-output-per-case loop of `build` and `check-mdn`: `blank(case_id)` is a case's
    output before `handle(case, d, out)` fills it in; an exception becomes its `error` and
    the exit code 1."""
    rc = 0
    for d in read_cases():
        out = blank(d.get("id") if isinstance(d, dict) else None)
        try:
            if "__bad__" in d:
                raise CaseError(d["__bad__"])
            handle(Case(d), d, out)
        except Exception as e:  # noqa: BLE001
            out["error"] = f"{type(e).__name__}: {e}"
            rc = 1
        emit(out)
    return rc


def cmd_build():
    def blank(case_id):
        return {"id": case_id, "message_id": None, "mic": None, "mic_alg": None, "mics": None,
                "out_path": None, "error": None}

    def handle(case, _d, out):
        if not case.out_path:
            raise CaseError("out_path is required for build")
        if case.is_async and not case.async_mdn_url:
            raise CaseError("async_mdn_url is required to build a message asking for an async MDN")
        built = build_message(case, async_url=case.async_mdn_url)
        with open(case.out_path, "wb") as f:
            f.write(built.raw_request())
        out.update(
            message_id=built.message_id,
            mic=built.mic,
            mic_alg=built.mic_alg,
            mics={a: built.mic_in(a) for a in DIGEST_ALGORITHMS} if built.mic else None,
            out_path=case.out_path,
        )

    return each_case(blank, handle)


class _SavedMessage:
    """Stands in for a Built message when judging an MDN to a message made by
    `build` in another process: its MICs come from the build output."""

    def __init__(self, case, d):
        m = as2.Message(receiver=make_partner(case, encrypt_by_pyas2lib=False))
        m.message_id = case.message_id
        self.mics = d.get("mics") or {}
        if d.get("mic"):
            m.mic = str(d["mic"]).encode("ascii")
            m.digest_alg = norm_digest(d.get("mic_alg")) or "sha256"
            self.mics.setdefault(m.digest_alg, d["mic"])
        self.message = m

    def mic_in(self, alg):
        return self.mics.get(norm_digest(alg))


def cmd_check_mdn():
    def handle(case, d, result):
        if not case.message_id:
            raise CaseError("message_id is required for check-mdn")
        result["message_id"] = case.message_id
        raw = read_file(d.get("mdn_path"), "mdn_path")
        result.update(evaluate_mdn(raw, _SavedMessage(case, d)))

    return each_case(empty_result, handle)


def main(argv):
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if os.environ.get("AS2PEER_DEBUG") else logging.WARNING,
        format="as2peer %(levelname)s %(name)s: %(message)s",
    )
    if os.environ.get("AS2PEER_DEBUG") is None:
        # pyas2lib logs every MDN it refuses at ERROR; the result line says it.
        logging.getLogger("pyas2lib").setLevel(logging.CRITICAL)
    commands = {"send-batch": cmd_send_batch, "build": cmd_build, "check-mdn": cmd_check_mdn}
    if len(argv) != 2 or argv[1] not in commands:
        sys.stderr.write(f"usage: {argv[0]} {{{'|'.join(commands)}}} < cases.jsonl\n")
        return 2
    return commands[argv[1]]()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
