#!/usr/bin/env python3
"""as4client.py: a third-party ebMS3 / AS4 test client for edinode's POST /as4 (Pull Send Agent).

Commands (each reads ONE JSON object on stdin and prints ONE JSON line on stdout;
exit 0, or 1 when the line's "error" is not null; logs go to stderr):

  pull      send an ebMS3 PullRequest (SOAP 1.2, optionally WS-Security signed,
            optionally with bundled eb:Receipt signals), parse and verify the answer
  receipt   send an eb:SignalMessage with an eb:Receipt
  raw       POST a body as is (hostile / malformed input tests)
  verify    no HTTP: analyse and verify a saved message (a body plus its Content-Type)

  stub-server CONFIG_JSON PORT_FILE
            a tiny AS4 Pull Send Agent used by as4_selftest.sh only (see class Stub).

Setup and use (VENV is any directory, e.g. target/as4-venv):
  tests/peers/setup.sh VENV as4
  VENV/bin/python tests/peers/as4client.py pull < case.json    # one JSON line out
  tests/peers/as4_selftest.sh VENV                              # tests this file, no edinode

Input fields (unknown fields are ignored):
  all HTTP commands: url (required), http_timeout (s, default 60), tls_ca_pem (https: verify
      with this CA; without it https is unverified), server_cert_pem (optional: the response
      signer's BST certificate must equal it), swa_mode ("spec" default | "raw", see
      swa_digest_input)
  pull:    mpc (null/absent: no mpc attribute = default MPC), message_id (default: generated),
           sign (bool), key_pem, cert_pem, tamper ("none" | "messaging" | "signature"),
           receipts: [RefToMessageId string, or {"ref_to_message_id", "message_id"?,
           "nri_references"?}] bundled as extra eb:SignalMessage/eb:Receipt in the same eb:Messaging
  receipt: ref_to_message_id (required), message_id, sign, key_pem, cert_pem, tamper,
           nri_references: [{"uri", "digest_value", "digest_method"?, "transforms"?}] (ds:Reference
           copies inside ebbp:MessagePartNRInformation; default: one ebbp:MessagePartIdentifier
           holding ref_to_message_id)
  raw:     body (string) or body_b64, content_type (default application/soap+xml; charset=utf-8)
  verify:  path, body or body_b64; content_type (needed for multipart), server_cert_pem, swa_mode

Output (every HTTP command and verify; keys always present):
  sent_message_id (pull/receipt), http_status, content_type, body_length,
  kind: "user_message" | "error" | "receipt" | "other" (empty body, SOAP Fault, not SOAP, ...),
  error_code, severity, ref_to_message_id, description (first eb:Error; ref_to_message_id is the
      error's refToMessageInError or the signal's RefToMessageId; for a user message its
      RefToMessageId), errors: [all eb:Error as {error_code, severity, short_description,
      ref_to_message_id, description}], receipts: [{ref_to_message_id, message_id}],
  pull_request: {message_id, mpc} | null (when the analysed message is itself a PullRequest),
  user_message: null | {message_id, ref_to_message_id, timestamp, mpc (default MPC URI when the
      attribute is absent), mpc_attribute, from_party, to_party, from_role, to_role, service,
      action, conversation_id, agreement_ref, properties {name: value},
      parts: [{href, mime_type (PartProperties MimeType, else the MIME part's type),
               content_type, content_transfer_encoding, properties, content_b64, sha256_hex,
               size, error}], unreferenced_attachments: [content ids]},
  signature_verified: true | false | null (null = no ds:Signature at all),
  attachment_digests_ok: true | false | null (null = unsigned, or no attachment and no cid: reference),
  signer_thumbprint: SHA-1 of the signer certificate's DER, upper-case hex (null if unsigned),
  signature_detail: why verification failed (null when it passed), signature_method,
  references: [{uri, transforms, digest_method, digest_value, ok, detail, raw_ok?, spec_ok?}],
  xmlsec_check: "ok (full)" | "ok (signature value)" | "failed: ..." | null,
  mime_error, error (null, or why the command itself failed: then exit status 1)

Key and certificate fields (key_pem, cert_pem, server_cert_pem) take either PEM text
or a path to a PEM file. The RSA key must be unencrypted.

Signature verification (responses, and requests in the stub) is done here, not by a
library's high-level API: every ds:Reference is recomputed (same-document "#id"
references: the element whose wsu:Id matches, exclusive C14N, digest; "cid:"
references: the attachment's content octets, see swa_digest_input), the SignedInfo
is canonicalised and the RSA PKCS#1 v1.5 signature checked with the certificate from
the wsse:BinarySecurityToken (cryptography), and xmlsec (libxmlsec1) cross-checks:
a full verify when all references are same-document, else its verify_binary of the
SignedInfo. Both must agree. Coverage is required: the header's eb:Messaging, the
soap:Body and every MIME attachment must be referenced.
"""

import base64
import copy
import datetime
import email.message
import email.parser
import email.policy
import hashlib
import http.client
import http.server
import json
import os
import re
import ssl
import sys
import threading
import traceback
import urllib.parse
import uuid

from lxml import etree

try:  # xmlsec is needed to sign; verification still works (without the cross-check) if it is missing
    import xmlsec
except Exception as _exc:  # pragma: no cover
    xmlsec = None
    _XMLSEC_IMPORT_ERROR = str(_exc)
else:
    _XMLSEC_IMPORT_ERROR = None

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

# ----------------------------------------------------------------------------- namespaces

S12 = "http://www.w3.org/2003/05/soap-envelope"
S11 = "http://schemas.xmlsoap.org/soap/envelope/"
EB = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DS = "http://www.w3.org/2000/09/xmldsig#"
EC = "http://www.w3.org/2001/10/xml-exc-c14n#"
EBBP = "http://docs.oasis-open.org/ebxml-bp/ebbp-signals-2.0"
XML_NS = "http://www.w3.org/XML/1998/namespace"

DEFAULT_MPC = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/defaultMPC"
ROLE_INITIATOR = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/initiator"
ROLE_RESPONDER = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/responder"

BST_VALUE_X509V3 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3"
BST_ENCODING_B64 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"

ALG_EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
ALG_EXC_C14N_C = "http://www.w3.org/2001/10/xml-exc-c14n#WithComments"
ALG_C14N = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
ALG_C14N_C = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments"
ALG_ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
ALG_SWA_CONTENT = "http://docs.oasis-open.org/wss/oasis-wss-SwAProfile-1.1#Attachment-Content-Signature-Transform"
ALG_SWA_COMPLETE = "http://docs.oasis-open.org/wss/oasis-wss-SwAProfile-1.1#Attachment-Complete-Signature-Transform"

DIGESTS = {
    "http://www.w3.org/2000/09/xmldsig#sha1": "sha1",
    "http://www.w3.org/2001/04/xmlenc#sha256": "sha256",
    "http://www.w3.org/2001/04/xmldsig-more#sha384": "sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512": "sha512",
}
SIG_METHODS = {
    "http://www.w3.org/2000/09/xmldsig#rsa-sha1": (hashes.SHA1, "TransformRsaSha1"),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256": (hashes.SHA256, "TransformRsaSha256"),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384": (hashes.SHA384, "TransformRsaSha384"),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512": (hashes.SHA512, "TransformRsaSha512"),
}
SHA256_URI = "http://www.w3.org/2001/04/xmlenc#sha256"
RSA_SHA256_URI = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"

MAX_BODY = 200 * 1024 * 1024


def q(ns, local):
    return "{%s}%s" % (ns, local)


def log(*args):
    print("as4client:", *args, file=sys.stderr, flush=True)


def now_ts():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def new_message_id(domain="as4client.test"):
    return f"{uuid.uuid4()}@{domain}"


def load_pem(value, what):
    """PEM text or a path to a PEM file -> bytes."""
    if value is None or value == "":
        raise ValueError(f"{what} is required")
    if isinstance(value, bytes):
        return value
    if "-----BEGIN" in value:
        return value.encode()
    try:
        with open(value, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ValueError(f"{what}: cannot read {value!r}: {exc}") from None


def thumbprint(der):
    """SHA-1 of the DER certificate, upper-case hex (the .NET / AS4.NET convention)."""
    return hashlib.sha1(der).hexdigest().upper()


def b64(data):
    return base64.b64encode(data).decode("ascii")


def b64decode_loose(text):
    return base64.b64decode(re.sub(r"\s+", "", text or ""), validate=True)


# ----------------------------------------------------------------------------- XML helpers

def safe_parser():
    # No DTD loading, no entity expansion, no network: hostile XML stays inert.
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           dtd_validation=False, huge_tree=False, remove_blank_text=False,
                           collect_ids=False)


def parse_xml(data):
    root = etree.fromstring(data, parser=safe_parser())
    doc = root.getroottree()
    if doc.docinfo.doctype or doc.docinfo.internalDTD is not None:
        raise ValueError("XML has a DOCTYPE (not allowed in SOAP)")
    return root


def c14n(node, exclusive=True, with_comments=False, prefixes=None):
    return etree.tostring(node, method="c14n", exclusive=exclusive, with_comments=with_comments,
                          inclusive_ns_prefixes=prefixes or None, with_tail=False)


def text_of(el):
    return None if el is None else (el.text or "").strip()


def soap_parts(env):
    """(soap_ns, header, body) of an Envelope element; raises if not an Envelope."""
    if not isinstance(env.tag, str) or etree.QName(env).localname != "Envelope" \
            or etree.QName(env).namespace not in (S12, S11):
        raise ValueError(f"root element is {env.tag!r}, not a SOAP Envelope")
    ns = etree.QName(env).namespace
    return ns, env.find(q(ns, "Header")), env.find(q(ns, "Body"))


# ----------------------------------------------------------------------------- MIME

class Part:
    def __init__(self, content_id, content_type, cte, content, headers):
        self.content_id = content_id          # without <>
        self.content_type = content_type      # full header value
        self.cte = cte                        # lower-case Content-Transfer-Encoding or None
        self.content = content                # bytes after transfer decoding
        self.headers = headers                # list of (name, value)

    @property
    def mime_type(self):
        return (self.content_type or "application/octet-stream").split(";")[0].strip().lower()


def strip_angle(cid):
    cid = (cid or "").strip()
    if cid.startswith("<") and cid.endswith(">"):
        cid = cid[1:-1]
    return cid.strip()


def content_type_param(ct, name):
    msg = email.message.Message()
    msg["Content-Type"] = ct
    return msg.get_param(name)


def split_body(content_type, body):
    """HTTP body -> (root_xml_bytes, root_part_or_None, [attachment Part], mime_error_or_None).

    multipart/related is parsed with the email package (compat32 policy: the bytes of a
    part's body survive as they are; get_payload(decode=True) undoes base64 /
    quoted-printable and returns 7bit/8bit/binary bodies untouched). The root part is
    the one named by start=, else the first part."""
    ct = content_type or ""
    if not ct.lower().lstrip().startswith("multipart/"):
        return body, None, [], None
    head = b"MIME-Version: 1.0\r\nContent-Type: " + ct.encode("latin-1", "replace") + b"\r\n\r\n"
    msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(head + body)
    if not msg.is_multipart():
        return body, None, [], "multipart Content-Type but the body did not parse as multipart"
    defects = [str(d) for d in msg.defects]
    parts = []
    for sub in msg.get_payload():
        cte = (sub.get("Content-Transfer-Encoding") or "").strip().lower() or None
        content = sub.get_payload(decode=True)
        if content is None:
            content = b""
        parts.append(Part(strip_angle(sub.get("Content-ID")), sub.get("Content-Type"), cte, content,
                          list(sub.items())))
    if not parts:
        return b"", None, [], "multipart body without parts"
    start = content_type_param(ct, "start")
    root = None
    if start:
        want = strip_angle(start)
        for p in parts:
            if p.content_id == want:
                root = p
                break
        if root is None:
            return parts[0].content, parts[0], parts[1:], f"start={start!r} names no part"
    else:
        root = parts[0]
    others = [p for p in parts if p is not root]
    return root.content, root, others, ("; ".join(defects) or None)


def build_multipart(root_xml, attachments, soap_ct="application/soap+xml"):
    """-> (http content type, body bytes). attachments: dicts content_id, mime_type, content (bytes), cte."""
    boundary = "MIMEBoundary_" + uuid.uuid4().hex
    root_cid = f"root.{uuid.uuid4().hex}@as4client.test"
    out = [f"--{boundary}\r\nContent-Type: {soap_ct}; charset=UTF-8\r\n"
           f"Content-Transfer-Encoding: binary\r\nContent-ID: <{root_cid}>\r\n\r\n".encode(), root_xml, b"\r\n"]
    for att in attachments:
        cte = att.get("cte") or "binary"
        data = att["content"]
        if cte == "base64":
            enc = base64.encodebytes(data).replace(b"\n", b"\r\n")
        elif cte == "binary":
            enc = data
        else:
            raise ValueError(f"unsupported cte {cte!r} (binary or base64)")
        out += [f"--{boundary}\r\nContent-Type: {att['mime_type']}\r\n"
                f"Content-Transfer-Encoding: {cte}\r\nContent-ID: <{att['content_id']}>\r\n\r\n".encode(),
                enc, b"\r\n"]
    out.append(f"--{boundary}--\r\n".encode())
    ct = (f'multipart/related; boundary="{boundary}"; type="{soap_ct}"; '
          f'start="<{root_cid}>"; start-info="{soap_ct}"')
    return ct, b"".join(out)


# ----------------------------------------------------------------------------- SwA digest input

XML_MIME = re.compile(r"^(text/xml|application/xml|(application|image)/[^;]*\+xml)$")


def swa_digest_input(part, mode="spec"):
    """The octets an Attachment-Content-Signature-Transform reference digests.

    Always the part body after Content-Transfer-Encoding decoding (binary/8bit/7bit:
    as is). mode "raw": that and nothing else. mode "spec" (default) adds the WSS SwA
    1.1 section 5.4.2 content canonicalisation, keyed on the part's MIME type (what
    WSS4J, i.e. Domibus / Holodeck / phase4, does): XML types (text/xml,
    application/xml, */*+xml) are exclusive-C14N'd without comments; other text/*
    get CRLF line endings; everything else (application/octet-stream,
    application/gzip, ...) is digested raw. For binary payloads both modes agree."""
    data = part.content
    if mode == "raw":
        return data
    mt = part.mime_type
    if XML_MIME.match(mt):
        return c14n(etree.ElementTree(parse_xml(data)), exclusive=True, with_comments=False)
    if mt.startswith("text/"):
        return re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    return data


def cid_uri(content_id):
    return "cid:" + urllib.parse.quote(content_id, safe="@.-_!~*'()+$,;=:&/?")


# ----------------------------------------------------------------------------- signing

def _xmlsec_required():
    if xmlsec is None:
        raise RuntimeError(f"python-xmlsec is not importable: {_XMLSEC_IMPORT_ERROR}")


def ensure_id(el, prefix):
    val = el.get(q(WSU, "Id"))
    if not val:
        val = f"{prefix}-{uuid.uuid4()}"
        el.set(q(WSU, "Id"), val)
    return val


def sign_envelope(env, key_pem, cert_pem, attachments=()):
    """WS-Security sign a SOAP envelope in place (AS4 profile shape, like AS4.NET's):
    wsse:Security (mustUnderstand) first in the Header, wsse:BinarySecurityToken (X509v3,
    base64 DER, wsu:Id), ds:Signature (exc-c14n, RSA-SHA256) with references to the
    header's eb:Messaging and the soap:Body by #wsu:Id (exc-c14n transform, SHA-256),
    KeyInfo/wsse:SecurityTokenReference/wsse:Reference to the BST; then one reference
    per attachment (cid:, SwA Attachment-Content-Signature-Transform, SHA-256 over
    swa_digest_input(part, "spec")).

    xmlsec signs the same-document references; attachment references are added to the
    SignedInfo afterwards and the SignedInfo re-signed with xmlsec's sign_binary over
    its exclusive canonical form (xmlsec cannot resolve cid: URIs or run the SwA
    transform). Returns the ds:Signature element."""
    _xmlsec_required()
    key_pem = load_pem(key_pem, "key_pem")
    cert_pem = load_pem(cert_pem, "cert_pem")
    soap_ns, header, body = soap_parts(env)
    if header is None:
        header = etree.Element(q(soap_ns, "Header"))
        env.insert(0, header)
    messagings = header.findall(q(EB, "Messaging"))
    if len(messagings) != 1:
        raise ValueError("the Header needs exactly one eb:Messaging to sign")
    ids = [ensure_id(messagings[0], "messaging"), ensure_id(body, "body")]
    cert = x509.load_pem_x509_certificate(cert_pem)
    der = cert.public_bytes(serialization.Encoding.DER)

    sec = etree.Element(q(WSSE, "Security"), nsmap={"wsse": WSSE, "wsu": WSU})
    sec.set(q(soap_ns, "mustUnderstand"), "true" if soap_ns == S12 else "1")
    header.insert(0, sec)
    bst_id = f"bst-{uuid.uuid4()}"
    bst = etree.SubElement(sec, q(WSSE, "BinarySecurityToken"),
                           EncodingType=BST_ENCODING_B64, ValueType=BST_VALUE_X509V3)
    bst.set(q(WSU, "Id"), bst_id)
    bst.text = b64(der)

    C = xmlsec.constants
    sig = xmlsec.template.create(env, C.TransformExclC14N, C.TransformRsaSha256, ns="ds")
    sec.append(sig)
    for ref_id in ids:
        ref = xmlsec.template.add_reference(sig, C.TransformSha256, uri="#" + ref_id)
        xmlsec.template.add_transform(ref, C.TransformExclC14N)
    ki = xmlsec.template.ensure_key_info(sig)
    str_el = etree.SubElement(ki, q(WSSE, "SecurityTokenReference"), nsmap={"wsse": WSSE})
    etree.SubElement(str_el, q(WSSE, "Reference"), URI="#" + bst_id, ValueType=BST_VALUE_X509V3)

    ctx = xmlsec.SignatureContext()
    for el in env.iter():
        if isinstance(el.tag, str) and el.get(q(WSU, "Id")):
            ctx.register_id(el, "Id", WSU)
    ctx.key = xmlsec.Key.from_memory(key_pem, xmlsec.KeyFormat.PEM, None)
    ctx.sign(sig)

    if attachments:
        si = sig.find(q(DS, "SignedInfo"))
        for part in attachments:
            ref = etree.SubElement(si, q(DS, "Reference"), URI=cid_uri(part.content_id))
            tr = etree.SubElement(ref, q(DS, "Transforms"))
            etree.SubElement(tr, q(DS, "Transform"), Algorithm=ALG_SWA_CONTENT)
            etree.SubElement(ref, q(DS, "DigestMethod"), Algorithm=SHA256_URI)
            etree.SubElement(ref, q(DS, "DigestValue")).text = b64(
                hashlib.sha256(swa_digest_input(part, "spec")).digest())
        ctx2 = xmlsec.SignatureContext()  # a context signs once
        ctx2.key = xmlsec.Key.from_memory(key_pem, xmlsec.KeyFormat.PEM, None)
        value = ctx2.sign_binary(c14n(si, exclusive=True), C.TransformRsaSha256)
        sig.find(q(DS, "SignatureValue")).text = b64(value)
    return sig


def corrupt_signature_value(env):
    sv = env.find(".//" + q(DS, "SignatureValue"))
    raw = bytearray(b64decode_loose(sv.text))
    raw[len(raw) // 2] ^= 0x01
    sv.text = b64(bytes(raw))


def tamper_messaging(env):
    """Change one character inside eb:Messaging after signing (a digit of the Timestamp,
    so the MessageId the server may echo stays the caller's)."""
    ts = env.find(".//" + q(EB, "Messaging") + "//" + q(EB, "Timestamp"))
    if ts is not None and ts.text and re.search(r"\d", ts.text):
        i = [m.start() for m in re.finditer(r"\d", ts.text)][-1]
        ts.text = ts.text[:i] + str((int(ts.text[i]) + 1) % 10) + ts.text[i + 1:]
        return
    mid = env.find(".//" + q(EB, "Messaging") + "//" + q(EB, "MessageId"))
    mid.text = (mid.text or "") + "x"


# ----------------------------------------------------------------------------- verification

def _find_by_id(root, ident):
    hits = []
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        for attr in (q(WSU, "Id"), "Id", "ID", "id", q(XML_NS, "id")):
            if el.get(attr) == ident:
                hits.append(el)
                break
    return hits


def _transform_prefixes(tr):
    inc = tr.find(q(EC, "InclusiveNamespaces"))
    if inc is None or not inc.get("PrefixList"):
        return None
    return inc.get("PrefixList").split()


def _index_path(ancestor, el):
    path = []
    while el is not ancestor:
        parent = el.getparent()
        path.append(parent.index(el))
        el = parent
    return list(reversed(path))


def _same_doc_octets(target, transforms, sig_el):
    """Apply a same-document reference's transforms; return the octets to digest."""
    node = target
    out = None
    if not transforms:
        return c14n(node, exclusive=False, with_comments=False)
    for tr in transforms:
        alg = tr.get("Algorithm")
        if out is not None:
            raise ValueError(f"transform {alg} after canonicalisation is not supported")
        if alg == ALG_ENVELOPED:
            # drop the ds:Signature being verified from a copy, if it lies inside the node
            path = None
            if any(a is node for a in sig_el.iterancestors()):
                path = [i for i in _index_path(node, sig_el)]
            node = copy.deepcopy(node)
            if path:
                victim = node
                for i in path:
                    victim = victim[i]
                victim.getparent().remove(victim)
        elif alg in (ALG_EXC_C14N, ALG_EXC_C14N_C):
            out = c14n(node, exclusive=True, with_comments=False, prefixes=_transform_prefixes(tr))
        elif alg in (ALG_C14N, ALG_C14N_C):
            out = c14n(node, exclusive=False, with_comments=False)
        else:
            raise ValueError(f"unsupported transform {alg}")
    if out is None:
        out = c14n(node, exclusive=False, with_comments=False)
    return out


def _canon_signed_info(si, alg, c14n_el):
    if alg in (ALG_EXC_C14N, ALG_EXC_C14N_C):
        return c14n(si, exclusive=True, with_comments=(alg == ALG_EXC_C14N_C),
                    prefixes=_transform_prefixes(c14n_el))
    if alg in (ALG_C14N, ALG_C14N_C):
        return c14n(si, exclusive=False, with_comments=(alg == ALG_C14N_C))
    raise ValueError(f"unsupported CanonicalizationMethod {alg}")


def _signer_cert(sig, env):
    """-> (DER bytes, where found). BST via wsse:SecurityTokenReference, or ds:X509Data."""
    ki = sig.find(q(DS, "KeyInfo"))
    if ki is None:
        raise ValueError("ds:Signature has no KeyInfo")
    str_el = ki.find(q(WSSE, "SecurityTokenReference"))
    if str_el is not None:
        ref = str_el.find(q(WSSE, "Reference"))
        if ref is None:
            raise ValueError("SecurityTokenReference without wsse:Reference (KeyIdentifier etc. not supported)")
        uri = ref.get("URI") or ""
        if not uri.startswith("#"):
            raise ValueError(f"SecurityTokenReference URI {uri!r} is not a same-document reference")
        hits = _find_by_id(env, uri[1:])
        if len(hits) != 1:
            raise ValueError(f"SecurityTokenReference {uri} matches {len(hits)} elements")
        bst = hits[0]
        if bst.tag != q(WSSE, "BinarySecurityToken"):
            raise ValueError(f"SecurityTokenReference {uri} points at {bst.tag}, not a BinarySecurityToken")
        vt = bst.get("ValueType")
        if vt and vt != BST_VALUE_X509V3:
            raise ValueError(f"BinarySecurityToken ValueType {vt} is not X509v3")
        return b64decode_loose(bst.text), "bst"
    xc = ki.find(q(DS, "X509Data") + "/" + q(DS, "X509Certificate"))
    if xc is not None:
        return b64decode_loose(xc.text), "x509data"
    raise ValueError("KeyInfo has neither a wsse:SecurityTokenReference nor ds:X509Data/X509Certificate")


def verify_envelope(env, attachments=(), expected_cert_der=None, swa_mode="spec"):
    """Verify the WS-Security signature of a parsed SOAP envelope. Never raises.

    Returns {"signed", "signature_verified" (None if unsigned), "attachment_digests_ok",
    "signer_thumbprint", "signature_detail", "signature_method", "c14n_method",
    "references": [...], "xmlsec_check"}."""
    res = {"signed": False, "signature_verified": None, "attachment_digests_ok": None,
           "signer_thumbprint": None, "signature_detail": None, "signature_method": None,
           "c14n_method": None, "references": [], "xmlsec_check": None}
    problems = []
    try:
        soap_ns, header, body = soap_parts(env)
        all_sigs = list(env.iter(q(DS, "Signature")))
        if not all_sigs:
            return res
        res["signed"] = True
        sec_sigs = []
        if header is not None:
            for sec in header.findall(q(WSSE, "Security")):
                sec_sigs += sec.findall(q(DS, "Signature"))
        if len(sec_sigs) != 1 or len(all_sigs) != 1:
            raise ValueError(f"expected exactly one ds:Signature, in wsse:Security; found {len(all_sigs)} "
                             f"({len(sec_sigs)} in wsse:Security)")
        sig = sec_sigs[0]
        si = sig.find(q(DS, "SignedInfo"))
        if si is None:
            raise ValueError("ds:Signature without SignedInfo")
        cm = si.find(q(DS, "CanonicalizationMethod"))
        sm = si.find(q(DS, "SignatureMethod"))
        res["c14n_method"] = None if cm is None else cm.get("Algorithm")
        res["signature_method"] = None if sm is None else sm.get("Algorithm")
        if res["signature_method"] not in SIG_METHODS:
            raise ValueError(f"unsupported SignatureMethod {res['signature_method']}")

        der, _where = _signer_cert(sig, env)
        res["signer_thumbprint"] = thumbprint(der)
        cert = x509.load_der_x509_certificate(der)
        if expected_cert_der is not None and der != expected_cert_der:
            problems.append(f"signer certificate {res['signer_thumbprint']} is not the expected one "
                            f"{thumbprint(expected_cert_der)}")

        by_cid = {}
        for p in attachments:
            by_cid.setdefault(p.content_id, []).append(p)
        covered_nodes, covered_cids = [], set()
        att_ok = True
        any_cid = False
        for ref in si.findall(q(DS, "Reference")):
            uri = ref.get("URI")
            dm = ref.find(q(DS, "DigestMethod"))
            dv = ref.find(q(DS, "DigestValue"))
            trs = ref.findall(q(DS, "Transforms") + "/" + q(DS, "Transform"))
            info = {"uri": uri, "transforms": [t.get("Algorithm") for t in trs],
                    "digest_method": None if dm is None else dm.get("Algorithm"),
                    "digest_value": text_of(dv), "ok": False, "detail": None}
            res["references"].append(info)
            try:
                algo = DIGESTS.get(info["digest_method"])
                if algo is None:
                    raise ValueError(f"unsupported DigestMethod {info['digest_method']}")
                want = b64decode_loose(info["digest_value"])
                if uri and uri.startswith("#"):
                    hits = _find_by_id(env, uri[1:])
                    if len(hits) != 1:
                        raise ValueError(f"{uri} matches {len(hits)} elements")
                    octets = _same_doc_octets(hits[0], trs, sig)
                    info["ok"] = hashlib.new(algo, octets).digest() == want
                    if info["ok"]:
                        covered_nodes.append(hits[0])
                elif uri and uri.lower().startswith("cid:"):
                    any_cid = True
                    cid = urllib.parse.unquote(uri[4:])
                    parts = by_cid.get(cid, [])
                    if len(parts) != 1:
                        raise ValueError(f"{uri} matches {len(parts)} MIME parts")
                    algs = info["transforms"]
                    if algs != [ALG_SWA_CONTENT]:
                        raise ValueError(f"cid reference transforms {algs} are not exactly "
                                         "[Attachment-Content-Signature-Transform]")
                    got = hashlib.new(algo, swa_digest_input(parts[0], swa_mode)).digest()
                    info["ok"] = got == want
                    info["raw_ok"] = hashlib.new(algo, parts[0].content).digest() == want
                    info["spec_ok"] = hashlib.new(algo, swa_digest_input(parts[0], "spec")).digest() == want
                    if info["ok"]:
                        covered_cids.add(cid)
                else:
                    raise ValueError(f"unsupported reference URI {uri!r}")
                if not info["ok"] and not info["detail"]:
                    info["detail"] = "digest mismatch"
            except Exception as exc:  # one bad reference must not hide the others
                info["detail"] = str(exc)
                info["ok"] = False
            if not info["ok"]:
                problems.append(f"reference {uri}: {info['detail']}")
                if uri and uri.lower().startswith("cid:"):
                    att_ok = False

        # Coverage: the header's eb:Messaging, the Body, every attachment.
        msgs = [] if header is None else header.findall(q(EB, "Messaging"))
        if not msgs:
            problems.append("no eb:Messaging in the SOAP Header")
        for m in msgs:
            if not any(n is m for n in covered_nodes):
                problems.append("eb:Messaging is not covered by a valid reference")
        if body is None or not any(n is body for n in covered_nodes):
            problems.append("soap:Body is not covered by a valid reference")
        for p in attachments:
            if p.content_id not in covered_cids:
                att_ok = False
                problems.append(f"attachment <{p.content_id}> is not covered by a valid cid: reference")
        if attachments or any_cid:
            res["attachment_digests_ok"] = att_ok

        # SignatureValue over the canonical SignedInfo, with the certificate's key.
        si_octets = _canon_signed_info(si, res["c14n_method"], cm)
        sv = b64decode_loose(text_of(sig.find(q(DS, "SignatureValue"))))
        hash_cls, xmlsec_tr = SIG_METHODS[res["signature_method"]]
        pub = cert.public_key()
        if not isinstance(pub, rsa.RSAPublicKey):
            raise ValueError("signer key is not RSA")
        sig_ok = True
        try:
            pub.verify(sv, si_octets, padding.PKCS1v15(), hash_cls())
        except InvalidSignature:
            sig_ok = False
            problems.append("SignatureValue does not verify over the canonical SignedInfo")

        # Independent second opinion from libxmlsec1.
        if xmlsec is None:
            res["xmlsec_check"] = "skipped: xmlsec not importable"
        else:
            try:
                ctx = xmlsec.SignatureContext()
                ctx.key = xmlsec.Key.from_memory(der, xmlsec.KeyFormat.CERT_DER, None)
                if any_cid:
                    ctx.verify_binary(si_octets, getattr(xmlsec.constants, xmlsec_tr), sv)
                    res["xmlsec_check"] = "ok (signature value)"
                else:
                    seen = set()
                    for el in env.iter():
                        if isinstance(el.tag, str) and el.get(q(WSU, "Id")):
                            if el.get(q(WSU, "Id")) in seen:
                                raise ValueError("duplicate wsu:Id")
                            seen.add(el.get(q(WSU, "Id")))
                            ctx.register_id(el, "Id", WSU)
                    ctx.verify(sig)
                    res["xmlsec_check"] = "ok (full)"
            except Exception as exc:
                res["xmlsec_check"] = f"failed: {exc}"
                if sig_ok and not problems:
                    problems.append(f"xmlsec disagrees: {exc}")
        res["signature_verified"] = sig_ok and not problems
    except Exception as exc:
        problems.append(str(exc))
        res["signature_verified"] = False if res["signed"] else None
        if res["signed"] and res["attachment_digests_ok"] is None and attachments:
            res["attachment_digests_ok"] = False
    res["signature_detail"] = "; ".join(problems) or None
    return res


# ----------------------------------------------------------------------------- message building

def new_envelope():
    env = etree.Element(q(S12, "Envelope"), nsmap={"s12": S12})
    header = etree.SubElement(env, q(S12, "Header"))
    messaging = etree.SubElement(header, q(EB, "Messaging"), nsmap={"eb": EB, "wsu": WSU})
    messaging.set(q(S12, "mustUnderstand"), "true")
    ensure_id(messaging, "messaging")
    body = etree.SubElement(env, q(S12, "Body"), nsmap={"wsu": WSU})
    ensure_id(body, "body")
    return env, messaging, body


def add_message_info(parent, message_id, ref_to=None):
    mi = etree.SubElement(parent, q(EB, "MessageInfo"))
    etree.SubElement(mi, q(EB, "Timestamp")).text = now_ts()
    etree.SubElement(mi, q(EB, "MessageId")).text = message_id
    if ref_to:
        etree.SubElement(mi, q(EB, "RefToMessageId")).text = ref_to
    return mi


def add_receipt_signal(messaging, ref_to, message_id=None, nri_references=None):
    sm = etree.SubElement(messaging, q(EB, "SignalMessage"))
    add_message_info(sm, message_id or new_message_id(), ref_to)
    receipt = etree.SubElement(sm, q(EB, "Receipt"))
    nri = etree.SubElement(receipt, q(EBBP, "NonRepudiationInformation"), nsmap={"ebbp": EBBP})
    if nri_references:
        for r in nri_references:
            mp = etree.SubElement(nri, q(EBBP, "MessagePartNRInformation"))
            ref = etree.SubElement(mp, q(DS, "Reference"), nsmap={"ds": DS}, URI=r["uri"])
            if r.get("transforms"):
                trs = etree.SubElement(ref, q(DS, "Transforms"))
                for alg in r["transforms"]:
                    etree.SubElement(trs, q(DS, "Transform"), Algorithm=alg)
            etree.SubElement(ref, q(DS, "DigestMethod"), Algorithm=r.get("digest_method") or SHA256_URI)
            etree.SubElement(ref, q(DS, "DigestValue")).text = r["digest_value"]
    else:
        mp = etree.SubElement(nri, q(EBBP, "MessagePartNRInformation"))
        etree.SubElement(mp, q(EBBP, "MessagePartIdentifier")).text = ref_to
    return sm


def build_pull_request(message_id, mpc=None, receipts=()):
    env, messaging, _body = new_envelope()
    sm = etree.SubElement(messaging, q(EB, "SignalMessage"))
    add_message_info(sm, message_id)
    pr = etree.SubElement(sm, q(EB, "PullRequest"))
    if mpc is not None:
        pr.set("mpc", mpc)
    for r in receipts or ():
        if isinstance(r, str):
            add_receipt_signal(messaging, r)
        else:
            add_receipt_signal(messaging, r["ref_to_message_id"], r.get("message_id"), r.get("nri_references"))
    return env


def build_error_signal(code, severity, short, description, ref_to=None, category="Communication"):
    env, messaging, _body = new_envelope()
    sm = etree.SubElement(messaging, q(EB, "SignalMessage"))
    add_message_info(sm, new_message_id("as4stub.test"), ref_to)
    err = etree.SubElement(sm, q(EB, "Error"), errorCode=code, severity=severity, shortDescription=short,
                           category=category, origin="ebMS")
    if ref_to:
        err.set("refToMessageInError", ref_to)
    d = etree.SubElement(err, q(EB, "Description"))
    d.set(q(XML_NS, "lang"), "en")
    d.text = description
    return env


def build_user_message(spec, mpc, parts):
    env, messaging, _body = new_envelope()
    um = etree.SubElement(messaging, q(EB, "UserMessage"))
    if mpc and mpc != DEFAULT_MPC:
        um.set("mpc", mpc)
    add_message_info(um, spec.get("message_id") or new_message_id("as4stub.test"), spec.get("ref_to_message_id"))
    pi = etree.SubElement(um, q(EB, "PartyInfo"))
    for tag, party, role in (("From", spec.get("from_party", "stub-sender"), ROLE_INITIATOR),
                             ("To", spec.get("to_party", "stub-receiver"), ROLE_RESPONDER)):
        el = etree.SubElement(pi, q(EB, tag))
        etree.SubElement(el, q(EB, "PartyId")).text = party
        etree.SubElement(el, q(EB, "Role")).text = role
    ci = etree.SubElement(um, q(EB, "CollaborationInfo"))
    etree.SubElement(ci, q(EB, "Service")).text = spec.get("service", "urn:as4stub:service")
    etree.SubElement(ci, q(EB, "Action")).text = spec.get("action", "urn:as4stub:action")
    etree.SubElement(ci, q(EB, "ConversationId")).text = spec.get("conversation_id", "conv-1")
    if spec.get("properties"):
        mp = etree.SubElement(um, q(EB, "MessageProperties"))
        for k, v in spec["properties"].items():
            etree.SubElement(mp, q(EB, "Property"), name=k).text = v
    if parts:
        pl = etree.SubElement(um, q(EB, "PayloadInfo"))
        for p in parts:
            pinfo = etree.SubElement(pl, q(EB, "PartInfo"), href="cid:" + p.content_id)
            pp = etree.SubElement(pinfo, q(EB, "PartProperties"))
            etree.SubElement(pp, q(EB, "Property"), name="MimeType").text = p.mime_type
    return env


def serialize(env):
    return etree.tostring(env, xml_declaration=True, encoding="UTF-8")


# ----------------------------------------------------------------------------- response analysis

def _ebms_summary(env, parts, out):
    soap_ns, header, body = soap_parts(env)
    messaging = None if header is None else header.find(q(EB, "Messaging"))
    fault = None if body is None else body.find(q(soap_ns, "Fault"))
    if messaging is None:
        out["kind"] = "other"
        if fault is not None:
            reason = fault.find(".//" + q(soap_ns, "Text")) if soap_ns == S12 else fault.find("faultstring")
            out["description"] = "SOAP Fault: " + (text_of(reason) or "")
        else:
            out["description"] = "no eb:Messaging header"
        return
    ums = messaging.findall(q(EB, "UserMessage"))
    sigs = messaging.findall(q(EB, "SignalMessage"))
    errors = []
    receipts = []
    for sm in sigs:
        ref = text_of(sm.find(q(EB, "MessageInfo") + "/" + q(EB, "RefToMessageId")))
        for e in sm.findall(q(EB, "Error")):
            d = e.find(q(EB, "Description"))
            detail = e.find(q(EB, "ErrorDetail"))
            errors.append({"error_code": e.get("errorCode"), "severity": e.get("severity"),
                           "short_description": e.get("shortDescription"),
                           "ref_to_message_id": e.get("refToMessageInError") or ref,
                           "description": text_of(d) or text_of(detail) or e.get("shortDescription")})
        if sm.find(q(EB, "Receipt")) is not None:
            receipts.append({"ref_to_message_id": ref,
                             "message_id": text_of(sm.find(q(EB, "MessageInfo") + "/" + q(EB, "MessageId")))})
    out["errors"] = errors
    out["receipts"] = receipts
    for sm in sigs:
        pr = sm.find(q(EB, "PullRequest"))
        if pr is not None:
            out["pull_request"] = {"message_id": text_of(sm.find(q(EB, "MessageInfo") + "/" + q(EB, "MessageId"))),
                                   "mpc": pr.get("mpc")}
            break
    if ums:
        out["kind"] = "user_message"
        out["user_message"] = _user_message(ums[0], parts, env)
        out["ref_to_message_id"] = out["user_message"]["ref_to_message_id"]
    elif errors:
        out["kind"] = "error"
        e = errors[0]
        out.update(error_code=e["error_code"], severity=e["severity"], ref_to_message_id=e["ref_to_message_id"],
                   description=e["description"])
    elif receipts:
        out["kind"] = "receipt"
        out["ref_to_message_id"] = receipts[0]["ref_to_message_id"]
    else:
        out["kind"] = "other"
        out["description"] = "eb:Messaging without UserMessage, Error or Receipt" + \
            (" (a PullRequest)" if out.get("pull_request") else "")


def _user_message(um, parts, env):
    def t(path):
        return text_of(um.find(path))
    mi = q(EB, "MessageInfo")
    res = {
        "message_id": t(mi + "/" + q(EB, "MessageId")),
        "ref_to_message_id": t(mi + "/" + q(EB, "RefToMessageId")),
        "timestamp": t(mi + "/" + q(EB, "Timestamp")),
        "mpc": um.get("mpc") or DEFAULT_MPC,
        "mpc_attribute": um.get("mpc"),
        "from_party": t(q(EB, "PartyInfo") + "/" + q(EB, "From") + "/" + q(EB, "PartyId")),
        "to_party": t(q(EB, "PartyInfo") + "/" + q(EB, "To") + "/" + q(EB, "PartyId")),
        "from_role": t(q(EB, "PartyInfo") + "/" + q(EB, "From") + "/" + q(EB, "Role")),
        "to_role": t(q(EB, "PartyInfo") + "/" + q(EB, "To") + "/" + q(EB, "Role")),
        "service": t(q(EB, "CollaborationInfo") + "/" + q(EB, "Service")),
        "action": t(q(EB, "CollaborationInfo") + "/" + q(EB, "Action")),
        "conversation_id": t(q(EB, "CollaborationInfo") + "/" + q(EB, "ConversationId")),
        "agreement_ref": t(q(EB, "CollaborationInfo") + "/" + q(EB, "AgreementRef")),
        "properties": {p.get("name"): (p.text or "")
                       for p in um.findall(q(EB, "MessageProperties") + "/" + q(EB, "Property"))},
        "parts": [],
    }
    by_cid = {p.content_id: p for p in parts}
    used = set()
    for pinfo in um.findall(q(EB, "PayloadInfo") + "/" + q(EB, "PartInfo")):
        href = pinfo.get("href")
        props = {p.get("name"): (p.text or "")
                 for p in pinfo.findall(q(EB, "PartProperties") + "/" + q(EB, "Property"))}
        item = {"href": href, "mime_type": props.get("MimeType"), "content_type": None,
                "content_transfer_encoding": None, "properties": props,
                "content_b64": None, "sha256_hex": None, "size": None, "error": None}
        data = None
        if href and href.lower().startswith("cid:"):
            cid = urllib.parse.unquote(href[4:])
            p = by_cid.get(cid)
            if p is None:
                item["error"] = f"no MIME part with Content-ID <{cid}>"
            else:
                used.add(cid)
                data = p.content
                item["content_type"] = p.content_type
                item["content_transfer_encoding"] = p.cte
                item["mime_type"] = item["mime_type"] or p.mime_type
        else:  # body payload: href absent or "#id"
            body = soap_parts(env)[2]
            target = None
            if href and href.startswith("#"):
                hits = _find_by_id(env, href[1:])
                target = hits[0] if len(hits) == 1 else None
            elif body is not None and len(body):
                target = body[0]
            if target is None:
                item["error"] = f"body payload {href!r} not found"
            else:
                data = etree.tostring(target, with_tail=False)
        if data is not None:
            item["content_b64"] = b64(data)
            item["sha256_hex"] = hashlib.sha256(data).hexdigest()
            item["size"] = len(data)
        res["parts"].append(item)
    res["unreferenced_attachments"] = [p.content_id for p in parts if p.content_id not in used]
    return res


def analyze(status, content_type, body, expected_cert_pem=None, swa_mode="spec"):
    out = {"http_status": status, "content_type": content_type, "body_length": len(body or b""),
           "kind": "other", "error_code": None, "severity": None, "ref_to_message_id": None,
           "description": None, "errors": [], "receipts": [], "pull_request": None, "user_message": None,
           "signature_verified": None, "attachment_digests_ok": None, "signer_thumbprint": None,
           "signature_detail": None, "signature_method": None, "references": [], "xmlsec_check": None,
           "mime_error": None, "error": None}
    if not body:
        out["description"] = "empty body"
        return out
    try:
        expected_der = None
        if expected_cert_pem:
            expected_der = x509.load_pem_x509_certificate(load_pem(expected_cert_pem, "server_cert_pem")) \
                .public_bytes(serialization.Encoding.DER)
        root_xml, _root_part, parts, mime_err = split_body(content_type, body)
        out["mime_error"] = mime_err
        try:
            env = parse_xml(root_xml)
            soap_parts(env)
        except Exception as exc:
            out["description"] = f"response is not a SOAP envelope: {exc}"
            return out
        _ebms_summary(env, parts, out)
        ver = verify_envelope(env, parts, expected_der, swa_mode)
        for k in ("signature_verified", "attachment_digests_ok", "signer_thumbprint", "signature_detail",
                  "signature_method", "references", "xmlsec_check"):
            out[k] = ver[k]
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        log(traceback.format_exc())
    return out


# ----------------------------------------------------------------------------- HTTP

def http_post(url, body, content_type, timeout=60, tls_ca_pem=None, headers=None):
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError(f"url {url!r} is not http(s)://host...")
    path = (u.path or "/") + (("?" + u.query) if u.query else "")
    if u.scheme == "https":
        ctx = ssl.create_default_context(cadata=load_pem(tls_ca_pem, "tls_ca_pem").decode()) if tls_ca_pem \
            else ssl._create_unverified_context()
        conn = http.client.HTTPSConnection(u.hostname, u.port or 443, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
    try:
        hdrs = {"Content-Type": content_type, "Content-Length": str(len(body))}
        hdrs.update(headers or {})
        conn.request("POST", path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read(MAX_BODY + 1)
        if len(data) > MAX_BODY:
            raise ValueError("response body larger than the limit")
        return resp.status, resp.getheader("Content-Type"), data
    finally:
        conn.close()


SOAP12_CT = "application/soap+xml; charset=utf-8"


def _send(case, env, message_id):
    base = {"sent_message_id": message_id}
    status, ct, data = http_post(case["url"], serialize(env), SOAP12_CT, case.get("http_timeout", 60),
                                 case.get("tls_ca_pem"))
    out = analyze(status, ct, data, case.get("server_cert_pem"), case.get("swa_mode", "spec"))
    base.update(out)
    return base


def _sign_and_tamper(case, env):
    tamper = case.get("tamper") or "none"
    if tamper not in ("none", "messaging", "signature"):
        raise ValueError(f"tamper must be none, messaging or signature, not {tamper!r}")
    if case.get("sign"):
        sign_envelope(env, case.get("key_pem"), case.get("cert_pem"))
    elif tamper != "none":
        raise ValueError("tamper needs sign=true")
    if tamper == "messaging":
        tamper_messaging(env)
    elif tamper == "signature":
        corrupt_signature_value(env)


def cmd_pull(case):
    message_id = case.get("message_id") or new_message_id()
    env = build_pull_request(message_id, case.get("mpc"), case.get("receipts") or ())
    _sign_and_tamper(case, env)
    return _send(case, env, message_id)


def cmd_receipt(case):
    message_id = case.get("message_id") or new_message_id()
    if not case.get("ref_to_message_id"):
        raise ValueError("ref_to_message_id is required")
    env, messaging, _body = new_envelope()
    add_receipt_signal(messaging, case["ref_to_message_id"], message_id, case.get("nri_references"))
    _sign_and_tamper(case, env)
    return _send(case, env, message_id)


def cmd_raw(case):
    body = case.get("body")
    if body is None and case.get("body_b64") is not None:
        body = base64.b64decode(case["body_b64"])
    if body is None:
        raise ValueError("body (or body_b64) is required")
    if isinstance(body, str):
        body = body.encode("utf-8")
    status, ct, data = http_post(case["url"], body, case.get("content_type") or SOAP12_CT,
                                 case.get("http_timeout", 60), case.get("tls_ca_pem"))
    return analyze(status, ct, data, case.get("server_cert_pem"), case.get("swa_mode", "spec"))


def cmd_verify(case):
    if case.get("path"):
        with open(case["path"], "rb") as fh:
            body = fh.read()
    elif case.get("body_b64") is not None:
        body = base64.b64decode(case["body_b64"])
    else:
        body = (case.get("body") or "").encode("utf-8")
    return analyze(None, case.get("content_type") or SOAP12_CT, body, case.get("server_cert_pem"),
                   case.get("swa_mode", "spec"))


COMMANDS = {"pull": cmd_pull, "receipt": cmd_receipt, "raw": cmd_raw, "verify": cmd_verify}


# ----------------------------------------------------------------------------- stub server (selftest only)

class Stub:
    """A tiny AS4 Pull Send Agent for the self-test. Config JSON:
      key_pem, cert_pem      its signing key/cert (paths or PEM)
      queue                  {mpc: [message spec, ...]} ("" = default MPC)
      auth_map               [{"mpc", "thumbprint"}]: MPCs named here need a signed PullRequest whose
                             signer thumbprint is listed for that MPC (else EBMS:0004); other MPCs are open
                             (simplification of AS4.NET's map, which closes every MPC once non-empty)
      sign_errors            sign eb:Error answers (default true)
    A message spec: message_id, from_party, to_party, service, action, conversation_id, properties,
      attachments [{content_id, mime_type, content_b64, cte: binary|base64}], sign (default true),
      tamper: none|messaging|signature|attachment (applied after signing).
    Endpoints: POST /as4 (ebMS3), GET /requests (what it received and how its verifier judged it),
      POST /enqueue {"mpc", "message"}."""

    def __init__(self, cfg):
        self.key_pem = load_pem(cfg["key_pem"], "key_pem")
        self.cert_pem = load_pem(cfg["cert_pem"], "cert_pem")
        self.queue = {}
        for mpc, msgs in (cfg.get("queue") or {}).items():
            self.queue.setdefault(mpc or DEFAULT_MPC, []).extend(msgs)
        self.auth = {}
        for e in cfg.get("auth_map") or []:
            self.auth.setdefault(e["mpc"] or DEFAULT_MPC, set()).add(e["thumbprint"].upper())
        self.sign_errors = cfg.get("sign_errors", True)
        self.records = []
        self.lock = threading.Lock()

    def error(self, code, severity, short, desc, ref_to, status):
        env = build_error_signal(code, severity, short, desc, ref_to)
        if self.sign_errors:
            sign_envelope(env, self.key_pem, self.cert_pem)
        return status, SOAP12_CT, serialize(env)

    def handle(self, content_type, body):
        rec = {"content_type": content_type, "kind": None, "message_id": None, "mpc": None,
               "mpc_attribute_present": None, "receipts": [], "verification": None, "answer": None,
               "security_must_understand": None, "messaging_must_understand": None}
        with self.lock:
            self.records.append(rec)
        try:
            root_xml, _rp, parts, _err = split_body(content_type, body)
            env = parse_xml(root_xml)
            soap_ns, header, _body = soap_parts(env)
            messaging = None if header is None else header.find(q(EB, "Messaging"))
            if messaging is None:
                raise ValueError("no eb:Messaging")
        except Exception as exc:
            rec["kind"] = "invalid"
            rec["answer"] = "EBMS:0009"
            return self.error("EBMS:0009", "failure", "InvalidHeader", f"cannot process: {exc}", None, 500)
        sec = header.find(q(WSSE, "Security"))
        rec["security_must_understand"] = None if sec is None else sec.get(q(soap_ns, "mustUnderstand"))
        rec["messaging_must_understand"] = messaging.get(q(soap_ns, "mustUnderstand"))
        ver = verify_envelope(env, parts)
        rec["verification"] = ver
        pull = None
        for sm in messaging.findall(q(EB, "SignalMessage")):
            mid = text_of(sm.find(q(EB, "MessageInfo") + "/" + q(EB, "MessageId")))
            if sm.find(q(EB, "PullRequest")) is not None and pull is None:
                pull = sm
                rec["message_id"] = mid
            if sm.find(q(EB, "Receipt")) is not None:
                rec["receipts"].append(text_of(sm.find(q(EB, "MessageInfo") + "/" + q(EB, "RefToMessageId"))))
        if ver["signed"] and not ver["signature_verified"]:
            rec["kind"] = "pull" if pull is not None else "signal"
            rec["answer"] = "EBMS:0101"
            return self.error("EBMS:0101", "failure", "FailedAuthentication",
                              f"signature check failed: {ver['signature_detail']}", rec["message_id"], 500)
        if pull is None:
            rec["kind"] = "receipt" if rec["receipts"] else "other"
            rec["answer"] = "empty"
            return 200, None, b""
        rec["kind"] = "pull"
        pr = pull.find(q(EB, "PullRequest"))
        rec["mpc_attribute_present"] = pr.get("mpc") is not None
        mpc = pr.get("mpc") or DEFAULT_MPC
        rec["mpc"] = mpc
        allowed = self.auth.get(mpc)
        if allowed is not None and (not ver["signed"] or ver["signer_thumbprint"] not in allowed):
            rec["answer"] = "EBMS:0004"
            return self.error("EBMS:0004", "failure", "Other",
                              f"not authorized to pull from MPC {mpc}", rec["message_id"], 200)
        with self.lock:
            spec = self.queue.get(mpc, []).pop(0) if self.queue.get(mpc) else None
        if spec is None:
            rec["answer"] = "EBMS:0006"
            return self.error("EBMS:0006", "warning", "EmptyMessagePartitionChannel",
                              f"no message in MPC {mpc}", rec["message_id"], 200)
        rec["answer"] = "user_message"
        return self.user_message(spec, mpc, rec["message_id"])

    def user_message(self, spec, mpc, pull_id):
        atts = spec.get("attachments") or []
        parts = [Part(a["content_id"], a.get("mime_type", "application/octet-stream"), a.get("cte", "binary"),
                      base64.b64decode(a["content_b64"]), []) for a in atts]
        env = build_user_message(spec, mpc, parts)
        tamper = spec.get("tamper", "none")
        if spec.get("sign", True):
            sign_envelope(env, self.key_pem, self.cert_pem, parts)
        if tamper == "messaging":
            tamper_messaging(env)
        elif tamper == "signature":
            corrupt_signature_value(env)
        mime = []
        for a, p in zip(atts, parts):
            content = p.content
            if tamper == "attachment" and p is parts[0]:
                content = bytes([content[0] ^ 0x01]) + content[1:]
            mime.append({"content_id": p.content_id, "mime_type": a.get("mime_type", "application/octet-stream"),
                         "content": content, "cte": a.get("cte", "binary")})
        ct, body = build_multipart(serialize(env), mime)
        return 200, ct, body


def stub_main(argv):
    if len(argv) != 2:
        print("usage: as4client.py stub-server CONFIG_JSON PORT_FILE", file=sys.stderr)
        return 2
    with open(argv[0]) as fh:
        stub = Stub(json.load(fh))

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            log("stub:", fmt % args)

        def _reply(self, status, ct, body):
            self.send_response(status)
            if ct:
                self.send_header("Content-Type", ct)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/requests":
                with stub.lock:
                    data = json.dumps(stub.records).encode()
                return self._reply(200, "application/json", data)
            return self._reply(404, "text/plain", b"not found\n")

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            if n > MAX_BODY:
                return self._reply(413, "text/plain", b"too large\n")
            body = self.rfile.read(n)
            try:
                if self.path == "/enqueue":
                    req = json.loads(body)
                    with stub.lock:
                        stub.queue.setdefault(req.get("mpc") or DEFAULT_MPC, []).append(req["message"])
                    return self._reply(200, "application/json", b"{}")
                if self.path != "/as4":
                    return self._reply(404, "text/plain", b"not found\n")
                status, ct, data = stub.handle(self.headers.get("Content-Type"), body)
                return self._reply(status, ct, data)
            except Exception:
                log(traceback.format_exc())
                return self._reply(500, "text/plain", b"stub error\n")

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tmp = argv[1] + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(str(srv.server_address[1]))
    os.replace(tmp, argv[1])
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


# ----------------------------------------------------------------------------- main

def main(argv):
    if len(argv) >= 1 and argv[0] == "stub-server":
        return stub_main(argv[1:])
    if len(argv) != 1 or argv[0] not in COMMANDS:
        print("usage: as4client.py {pull|receipt|raw|verify} < case.json\n"
              "       as4client.py stub-server CONFIG_JSON PORT_FILE", file=sys.stderr)
        return 2
    out = None
    try:
        text = sys.stdin.read()
        case = json.loads(text)
        if not isinstance(case, dict):
            raise ValueError("stdin must hold one JSON object")
        if argv[0] != "verify" and not case.get("url"):
            raise ValueError("url is required")
        if case.get("swa_mode", "spec") not in ("spec", "raw"):
            raise ValueError("swa_mode must be spec or raw")
        out = COMMANDS[argv[0]](case)
    except Exception as exc:
        log(traceback.format_exc())
        out = {"http_status": None, "kind": None, "error_code": None, "severity": None,
               "ref_to_message_id": None, "description": None, "user_message": None,
               "signature_verified": None, "attachment_digests_ok": None, "signer_thumbprint": None,
               "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(out, sort_keys=False), flush=True)
    return 1 if out.get("error") else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
