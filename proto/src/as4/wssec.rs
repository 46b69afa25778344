//! WS-Security X.509 signatures over AS4 envelopes: verification and signing.
//!
//! Verification ([`verify`], or [`verify_parsed`] on a document the caller already parsed):
//! - exactly one `ds:Signature` inside a `wsse:Security` header block (none: unsigned);
//! - the key from `KeyInfo/wsse:SecurityTokenReference/wsse:Reference` to an X.509v3
//!   `wsse:BinarySecurityToken`, or from `KeyInfo/ds:X509Data/ds:X509Certificate`;
//! - SignedInfo canonicalized with exclusive C14N, RSA PKCS#1 v1.5 with SHA-1/256/384/512;
//! - every Reference checked: `#id` references (exclusive C14N transform) and `cid:` references
//!   (SwA Attachment-Content-Signature-Transform), SHA-1/224/256/384/512 digests;
//! - signature wrapping: every id in the document must be unique, and the references must
//!   resolve to *the* `eb:Messaging` header and *the* `soap:Body` of this envelope (the ones
//!   the signal parser reads), and cover every attachment.
//!
//! Trust is not decided here: the signer is reported as the certificate and its SHA-1
//! thumbprint, which the pull authorization map pins ([`super::authz`]). Certificate validity
//! dates are not checked (that needs the clock, which the caller owns).
//!
//! Signing produces the header we put on our own messages: a BinarySecurityToken, RSA-SHA256,
//! exclusive C14N, SHA-256 digests of eb:Messaging, the Body and every attachment. The
//! builders emit eb:Messaging and the Body already in canonical form, so what is digested is
//! exactly the bytes sent; [`sign_envelope`] re-parses its output and checks that the
//! canonical forms a verifier computes are those bytes before it returns.

use std::borrow::Cow;
use std::collections::HashMap;

use base64::Engine;
use openssl::hash::{MessageDigest, hash};
use openssl::pkey::{PKey, Private};
use openssl::sign::{Signer, Verifier};
use openssl::x509::X509;
use roxmltree::{Document, Node, NodeId};
use serde::{Deserialize, Serialize};

use super::c14n::{self, EXC_C14N, ExcC14n};
use super::package::Attachment;
use super::xml::{self, children, is, only_child};
use super::{As4Error, BuildError, Limits, ns};
use crate::alg::DigestAlg;

pub const SWA_CONTENT_TRANSFORM: &str =
    "http://docs.oasis-open.org/wss/oasis-wss-SwAProfile-1.1#Attachment-Content-Signature-Transform";
pub const SWA_COMPLETE_TRANSFORM: &str =
    "http://docs.oasis-open.org/wss/oasis-wss-SwAProfile-1.1#Attachment-Complete-Signature-Transform";
pub const X509V3: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3";
pub const BASE64_BINARY: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary";

/// How many References a signature may hold besides one per attachment.
const MAX_EXTRA_REFERENCES: usize = 8;

/// Our signing identity: the key and the certificate sent as BinarySecurityToken.
#[derive(Clone)]
pub struct SigningKey {
    pub key: PKey<Private>,
    pub cert: X509,
}

/// The `wsu:Id`s of a signed message (XML NCNames, unique within the message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityIds {
    pub messaging_id: String,
    pub body_id: String,
    pub bst_id: String,
}

/// An XML-DSig RSA signature method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SignatureMethod {
    RsaSha1,
    RsaSha256,
    RsaSha384,
    RsaSha512,
}

impl SignatureMethod {
    pub fn uri(self) -> &'static str {
        match self {
            SignatureMethod::RsaSha1 => "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
            SignatureMethod::RsaSha256 => "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            SignatureMethod::RsaSha384 => "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
            SignatureMethod::RsaSha512 => "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
        }
    }

    pub fn from_uri(uri: &str) -> Option<SignatureMethod> {
        [
            SignatureMethod::RsaSha1,
            SignatureMethod::RsaSha256,
            SignatureMethod::RsaSha384,
            SignatureMethod::RsaSha512,
        ]
        .into_iter()
        .find(|m| m.uri() == uri.trim())
    }

    pub fn digest(self) -> DigestAlg {
        match self {
            SignatureMethod::RsaSha1 => DigestAlg::Sha1,
            SignatureMethod::RsaSha256 => DigestAlg::Sha256,
            SignatureMethod::RsaSha384 => DigestAlg::Sha384,
            SignatureMethod::RsaSha512 => DigestAlg::Sha512,
        }
    }
}

/// The XML-DSig DigestMethod URI of a digest.
pub fn digest_uri(d: DigestAlg) -> Option<&'static str> {
    Some(match d {
        DigestAlg::Sha1 => "http://www.w3.org/2000/09/xmldsig#sha1",
        DigestAlg::Sha224 => "http://www.w3.org/2001/04/xmldsig-more#sha224",
        DigestAlg::Sha256 => "http://www.w3.org/2001/04/xmlenc#sha256",
        DigestAlg::Sha384 => "http://www.w3.org/2001/04/xmldsig-more#sha384",
        DigestAlg::Sha512 => "http://www.w3.org/2001/04/xmlenc#sha512",
        DigestAlg::Md5 => return None,
    })
}

fn digest_from_uri(uri: &str) -> Option<DigestAlg> {
    DigestAlg::ALL.into_iter().find(|d| digest_uri(*d) == Some(uri.trim()))
}

/// Who signed a verified message, and what the signature covered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureInfo {
    /// SHA-1 of the signing certificate's DER, upper-case hex (Windows' "thumbprint").
    pub thumbprint: String,
    #[serde(with = "serde_bytes")]
    pub cert_der: Vec<u8>,
    pub method: SignatureMethod,
    /// The verified references, in SignedInfo order (what an NRR receipt echoes).
    pub references: Vec<VerifiedReference>,
}

/// One verified `ds:Reference`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedReference {
    pub uri: String,
    pub digest_method: String,
    /// Base64, as it appeared in DigestValue (whitespace removed).
    pub digest_value: String,
}

/// SHA-1 thumbprint of a DER certificate, upper-case hex.
pub fn thumbprint(cert_der: &[u8]) -> String {
    match hash(MessageDigest::sha1(), cert_der) {
        Ok(d) => hex::encode_upper(d),
        // SHA-1 is always available in OpenSSL 3's default provider.
        Err(_) => String::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------------

/// The parts of a SOAP 1.2 envelope the AS4 layer works with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Soap<'a, 'i> {
    pub header: Option<Node<'a, 'i>>,
    /// The only `eb:Messaging` child of the Header.
    pub messaging: Option<Node<'a, 'i>>,
    pub body: Node<'a, 'i>,
}

/// Finds Envelope/Header/eb:Messaging and Envelope/Body; SOAP 1.2 only.
pub(crate) fn soap<'a, 'i>(doc: &'a Document<'i>) -> Result<Soap<'a, 'i>, As4Error> {
    let env = doc.root_element();
    if env.tag_name().name() != "Envelope" {
        return Err(As4Error::NotSoap(format!("root element is {}", env.tag_name().name())));
    }
    match env.tag_name().namespace() {
        Some(ns::SOAP12) => {}
        Some(ns::SOAP11) => return Err(As4Error::NotSoap("SOAP 1.1; AS4 requires SOAP 1.2".into())),
        other => return Err(As4Error::NotSoap(format!("envelope namespace {other:?}"))),
    }
    let elems: Vec<Node> = env.children().filter(|n| n.is_element()).collect();
    let (header, body) = match elems.as_slice() {
        [h, b] if is(*h, ns::SOAP12, "Header") && is(*b, ns::SOAP12, "Body") => (Some(*h), *b),
        [b] if is(*b, ns::SOAP12, "Body") => (None, *b),
        _ => return Err(As4Error::NotSoap("expected Header? Body as the envelope's children".into())),
    };
    let messaging = match header {
        Some(h) => only_child(h, ns::EB, "Messaging")?,
        None => None,
    };
    Ok(Soap { header, messaging, body })
}

/// Parses and verifies an envelope. `Ok(None)`: not signed.
pub fn verify(
    envelope: &[u8],
    attachments: &[Attachment],
    limits: &Limits,
) -> Result<Option<SignatureInfo>, As4Error> {
    let doc = xml::parse(envelope, limits)?;
    let s = soap(&doc)?;
    verify_parsed(&doc, &s, attachments)
}

fn fail(msg: impl Into<String>) -> As4Error {
    As4Error::FailedAuthentication(msg.into())
}

fn b64(s: &str) -> Result<Vec<u8>, As4Error> {
    let clean: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean.as_bytes())
        .map_err(|e| fail(format!("bad base64: {e}")))
}

/// Verifies the WS-Security signature of a parsed envelope.
pub(crate) fn verify_parsed(
    doc: &Document,
    soap: &Soap,
    attachments: &[Attachment],
) -> Result<Option<SignatureInfo>, As4Error> {
    let mut sigs = Vec::new();
    if let Some(h) = soap.header {
        for sec in children(h, ns::WSSE, "Security") {
            sigs.extend(children(sec, ns::DS, "Signature"));
        }
    }
    let sig = match sigs.as_slice() {
        [] => return Ok(None),
        [s] => *s,
        _ => return Err(fail("more than one signature in the Security header")),
    };

    // Every id must name one element, so that a reference cannot be steered to a copy.
    let mut index: HashMap<&str, Node> = HashMap::new();
    for n in doc.descendants().filter(|n| n.is_element()) {
        for id in xml::ids(n) {
            if let Some(prev) = index.insert(id, n)
                && prev != n
            {
                return Err(fail(format!("id {id:?} is used by more than one element")));
            }
        }
    }

    let parts: Vec<Node> = sig.children().filter(|n| n.is_element()).collect();
    let (signed_info, sig_value, key_info) = match parts.as_slice() {
        [si, sv, rest @ ..]
            if is(*si, ns::DS, "SignedInfo") && is(*sv, ns::DS, "SignatureValue") =>
        {
            (*si, *sv, rest.first().copied().filter(|k| is(*k, ns::DS, "KeyInfo")))
        }
        _ => return Err(fail("Signature must start with SignedInfo and SignatureValue")),
    };

    // SignedInfo: canonicalization, method, references.
    let si_parts: Vec<Node> = signed_info.children().filter(|n| n.is_element()).collect();
    let (cm, sm, refs) = match si_parts.as_slice() {
        [cm, sm, refs @ ..]
            if is(*cm, ns::DS, "CanonicalizationMethod") && is(*sm, ns::DS, "SignatureMethod") =>
        {
            (*cm, *sm, refs)
        }
        _ => return Err(fail("SignedInfo must start with CanonicalizationMethod, SignatureMethod")),
    };
    let si_c14n = c14n_params(cm)?;
    let method_uri = sm.attribute("Algorithm").unwrap_or_default();
    let method = SignatureMethod::from_uri(method_uri)
        .ok_or_else(|| fail(format!("unsupported signature method {method_uri}")))?;
    if refs.is_empty() || !refs.iter().all(|r| is(*r, ns::DS, "Reference")) {
        return Err(fail("SignedInfo must hold one or more References"));
    }
    // eb:Messaging, the Body and each attachment, with room for a few more (a Timestamp, the
    // token): each Reference canonicalizes and digests its target, so their number must not
    // multiply the cost of a large message.
    // Nor may one target be referenced twice (in another spelling of its cid either).
    if refs.len() > attachments.len() + MAX_EXTRA_REFERENCES {
        return Err(fail(format!("more than {} References", attachments.len() + MAX_EXTRA_REFERENCES)));
    }
    let mut targets: Vec<String> = Vec::with_capacity(refs.len());
    for r in refs {
        let uri = r.attribute("URI").unwrap_or_default();
        let target = match uri.strip_prefix("cid:") {
            Some(cid) => format!("cid:{}", percent_decode(cid)),
            None => uri.to_string(),
        };
        if targets.contains(&target) {
            return Err(fail(format!("more than one Reference to {uri}")));
        }
        targets.push(target);
    }

    let mut covered_nodes: Vec<NodeId> = Vec::new();
    let mut covered_cids: Vec<&str> = Vec::new();
    let mut references = Vec::new();
    for r in refs {
        let (uri, digest_method, digest_value) = check_reference(*r, &index, attachments)?;
        if let Some(id) = uri.strip_prefix('#') {
            if let Some(n) = index.get(id) {
                covered_nodes.push(n.id());
            }
        } else if let Some(a) = uri.strip_prefix("cid:").and_then(|c| find_attachment(attachments, c)) {
            covered_cids.push(a.content_id.as_str());
        }
        references.push(VerifiedReference { uri: uri.to_string(), digest_method, digest_value });
    }

    let messaging = soap.messaging.ok_or_else(|| fail("no eb:Messaging header"))?;
    if !covered_nodes.contains(&messaging.id()) {
        return Err(fail("the signature does not cover eb:Messaging"));
    }
    if !covered_nodes.contains(&soap.body.id()) {
        return Err(fail("the signature does not cover the SOAP Body"));
    }
    if let Some(a) = attachments.iter().find(|a| !covered_cids.contains(&a.content_id.as_str())) {
        return Err(fail(format!("the signature does not cover attachment {}", a.content_id)));
    }

    // The key, then the signature value over canonical SignedInfo.
    let candidates = signer_certificates(key_info, &index)?;
    let mut si_bytes = Vec::new();
    c14n::canonicalize_subtree(signed_info, &si_c14n, &mut si_bytes)?;
    let signature = b64(&xml::text(sig_value))?;
    let mut last = String::from("no certificate");
    for cert in candidates {
        match check_rsa(&cert, method, &si_bytes, &signature) {
            Ok(()) => {
                let der = cert.to_der().map_err(|e| fail(e.to_string()))?;
                return Ok(Some(SignatureInfo { thumbprint: thumbprint(&der), cert_der: der, method, references }));
            }
            Err(e) => last = e,
        }
    }
    Err(fail(last))
}

fn c14n_params(method: Node) -> Result<ExcC14n, As4Error> {
    let alg = method.attribute("Algorithm").unwrap_or_default();
    let prefixes = method
        .children()
        .find(|n| is(*n, EXC_C14N, "InclusiveNamespaces"))
        .and_then(|n| n.attribute("PrefixList"));
    ExcC14n::from_algorithm(alg.trim(), prefixes)
        .ok_or_else(|| fail(format!("unsupported canonicalization {alg}")))
}

fn find_attachment<'a>(attachments: &'a [Attachment], cid_url: &str) -> Option<&'a Attachment> {
    let cid = percent_decode(cid_url);
    attachments.iter().find(|a| a.content_id == cid)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok())
            && let Ok(x) = u8::from_str_radix(v, 16)
        {
            out.push(x);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks one Reference's digest; returns (URI, DigestMethod, DigestValue).
fn check_reference<'a>(
    r: Node<'a, '_>,
    index: &HashMap<&str, Node>,
    attachments: &[Attachment],
) -> Result<(&'a str, String, String), As4Error> {
    let uri = r.attribute("URI").ok_or_else(|| fail("Reference without URI"))?;
    let transforms: Vec<Node> = match only_child(r, ns::DS, "Transforms").map_err(|e| fail(e.to_string()))? {
        Some(t) => t.children().filter(|n| n.is_element()).collect(),
        None => Vec::new(),
    };
    if !transforms.iter().all(|t| is(*t, ns::DS, "Transform")) {
        return Err(fail("unexpected element in Transforms"));
    }
    let dm = only_child(r, ns::DS, "DigestMethod")
        .map_err(|e| fail(e.to_string()))?
        .ok_or_else(|| fail("Reference without DigestMethod"))?;
    let dm_uri = dm.attribute("Algorithm").unwrap_or_default();
    let alg = digest_from_uri(dm_uri).ok_or_else(|| fail(format!("unsupported digest {dm_uri}")))?;
    let dv = only_child(r, ns::DS, "DigestValue")
        .map_err(|e| fail(e.to_string()))?
        .ok_or_else(|| fail("Reference without DigestValue"))?;
    let dv_text: String = xml::text(dv).chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let expected = b64(&dv_text)?;

    let matches = |data: &[u8]| -> Result<bool, As4Error> {
        let d = hash(alg.message_digest(), data).map_err(|e| fail(e.to_string()))?;
        Ok(*d == *expected)
    };

    if let Some(id) = uri.strip_prefix('#') {
        let target = index.get(id).ok_or_else(|| fail(format!("reference to unknown id {id:?}")))?;
        let params = match transforms.as_slice() {
            [t] => c14n_params(*t)?,
            _ => return Err(fail(format!("reference {uri}: expected exactly one exclusive C14N transform"))),
        };
        let mut bytes = Vec::new();
        c14n::canonicalize_subtree(*target, &params, &mut bytes)?;
        if !matches(&bytes)? {
            return Err(fail(format!("digest mismatch for {uri}")));
        }
    } else if let Some(cid) = uri.strip_prefix("cid:") {
        let a = find_attachment(attachments, cid)
            .ok_or_else(|| fail(format!("reference to missing attachment {uri}")))?;
        match transforms.as_slice() {
            [t] if t.attribute("Algorithm").map(str::trim) == Some(SWA_CONTENT_TRANSFORM) => {}
            [t] if t.attribute("Algorithm").map(str::trim) == Some(SWA_COMPLETE_TRANSFORM) => {
                return Err(fail("Attachment-Complete-Signature-Transform is not supported"));
            }
            _ => return Err(fail(format!("reference {uri}: expected the SwA content transform"))),
        }
        // SwA 5.4.2 (XML canonicalized, text CRLF) or, as AS4.NET does, the content as is.
        let swa = swa_content(&a.content_type, &a.bytes, AttachmentDigest::SwaProfile);
        let ok = match swa {
            Ok(c) => matches(&c)? || (*c != *a.bytes && matches(&a.bytes)?),
            Err(_) => matches(&a.bytes)?,
        };
        if !ok {
            return Err(fail(format!("digest mismatch for {uri}")));
        }
    } else {
        return Err(fail(format!("unsupported reference URI {uri:?}")));
    }
    Ok((uri, dm_uri.trim().to_string(), dv_text))
}

/// The certificates KeyInfo points at: a BinarySecurityToken through a SecurityTokenReference,
/// or X509Data certificates.
fn signer_certificates(key_info: Option<Node>, index: &HashMap<&str, Node>) -> Result<Vec<X509>, As4Error> {
    let ki = key_info.ok_or_else(|| fail("Signature without KeyInfo"))?;
    let mut certs = Vec::new();
    for str_ in children(ki, ns::WSSE, "SecurityTokenReference") {
        for r in children(str_, ns::WSSE, "Reference") {
            let uri = r.attribute("URI").unwrap_or_default();
            let id = uri.strip_prefix('#').ok_or_else(|| fail(format!("token reference {uri:?} is not local")))?;
            let bst = index.get(id).ok_or_else(|| fail(format!("token {id:?} not found")))?;
            if !is(*bst, ns::WSSE, "BinarySecurityToken") {
                return Err(fail(format!("{id:?} is not a BinarySecurityToken")));
            }
            let vt = bst.attribute("ValueType").unwrap_or(X509V3).trim();
            if vt != X509V3 {
                return Err(fail(format!("unsupported token type {vt}")));
            }
            let enc = bst.attribute("EncodingType").unwrap_or(BASE64_BINARY).trim();
            if enc != BASE64_BINARY {
                return Err(fail(format!("unsupported token encoding {enc}")));
            }
            let der = b64(&xml::text(*bst))?;
            certs.push(X509::from_der(&der).map_err(|e| fail(format!("bad certificate: {e}")))?);
        }
    }
    for data in children(ki, ns::DS, "X509Data") {
        for c in children(data, ns::DS, "X509Certificate") {
            let der = b64(&xml::text(c))?;
            certs.push(X509::from_der(&der).map_err(|e| fail(format!("bad certificate: {e}")))?);
        }
    }
    if certs.is_empty() {
        return Err(fail("KeyInfo holds no usable certificate reference"));
    }
    Ok(certs)
}

fn check_rsa(cert: &X509, method: SignatureMethod, data: &[u8], sig: &[u8]) -> Result<(), String> {
    let key = cert.public_key().map_err(|e| e.to_string())?;
    let rsa = key.rsa().map_err(|_| "the certificate's key is not RSA".to_string())?;
    if rsa.size() * 8 < 1024 {
        return Err("RSA key shorter than 1024 bits".into());
    }
    let mut v = Verifier::new(method.digest().message_digest(), &key).map_err(|e| e.to_string())?;
    v.update(data).map_err(|e| e.to_string())?;
    match v.verify(sig) {
        Ok(true) => Ok(()),
        _ => Err("signature value does not verify".into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Attachments (SwA profile)
// ---------------------------------------------------------------------------------------------

/// What the digest of an attachment reference covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttachmentDigest {
    /// SwA profile 1.1 section 5.4.2, as WSS4J-based MSHs (Domibus, Holodeck, phase4) compute
    /// it: XML content types (`text/xml`, `application/xml`, `*+xml`) exclusive-canonicalized,
    /// other `text/*` with CRLF line ends, everything else as is.
    #[default]
    SwaProfile,
    /// The content octets as is (AS4.NET).
    Raw,
}

/// The bytes the Attachment-Content-Signature-Transform outputs for this content.
pub(crate) fn swa_content<'a>(
    content_type: &str,
    bytes: &'a [u8],
    mode: AttachmentDigest,
) -> Result<Cow<'a, [u8]>, String> {
    if mode == AttachmentDigest::Raw {
        return Ok(Cow::Borrowed(bytes));
    }
    let mime = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if mime == "text/xml" || mime == "application/xml" || mime.ends_with("+xml") {
        let limits = Limits { max_bytes: bytes.len(), max_depth: 4096, max_nodes: u32::MAX, max_parts: 0 };
        let doc = xml::parse(bytes, &limits).map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(bytes.len());
        c14n::canonicalize_document(&doc, &ExcC14n::default(), &mut out).map_err(|e| e.to_string())?;
        Ok(Cow::Owned(out))
    } else if mime.starts_with("text/") {
        let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 16);
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\r' => {
                    out.extend_from_slice(b"\r\n");
                    if bytes.get(i + 1) == Some(&b'\n') {
                        i += 1;
                    }
                }
                b'\n' => out.extend_from_slice(b"\r\n"),
                c => out.push(c),
            }
            i += 1;
        }
        Ok(Cow::Owned(out))
    } else {
        Ok(Cow::Borrowed(bytes))
    }
}

// ---------------------------------------------------------------------------------------------
// Signing
// ---------------------------------------------------------------------------------------------

/// One attachment to sign.
pub(crate) struct SignPart<'a> {
    pub content_id: &'a str,
    pub content_type: &'a str,
    pub bytes: &'a [u8],
}

const SIGN_METHOD: SignatureMethod = SignatureMethod::RsaSha256;
const SIGN_DIGEST: DigestAlg = DigestAlg::Sha256;

/// `<?xml?><s12:Envelope><s12:Header>{headers}</s12:Header>{body}</s12:Envelope>`.
pub(crate) fn envelope(headers: &[&str], body: &str) -> String {
    let mut s = String::with_capacity(body.len() + headers.iter().map(|h| h.len()).sum::<usize>() + 200);
    s.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    s.push_str("<s12:Envelope xmlns:s12=\"");
    s.push_str(ns::SOAP12);
    s.push_str("\"><s12:Header>");
    for h in headers {
        s.push_str(h);
    }
    s.push_str("</s12:Header>");
    s.push_str(body);
    s.push_str("</s12:Envelope>");
    s
}

fn sha256_b64(data: &[u8]) -> Result<String, BuildError> {
    let d = hash(SIGN_DIGEST.message_digest(), data).map_err(|e| BuildError::Signing(e.to_string()))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(d))
}

fn reference(si: &mut String, uri: &str, transform: &str, digest_b64: &str) {
    si.push_str("<ds:Reference");
    xml::attr(si, "URI", uri);
    si.push_str("><ds:Transforms><ds:Transform");
    xml::attr(si, "Algorithm", transform);
    si.push_str("></ds:Transform></ds:Transforms><ds:DigestMethod");
    xml::attr(si, "Algorithm", digest_uri(SIGN_DIGEST).unwrap_or_default());
    si.push_str("></ds:DigestMethod><ds:DigestValue>");
    si.push_str(digest_b64);
    si.push_str("</ds:DigestValue></ds:Reference>");
}

/// Signs and assembles an envelope. `messaging` and `body` must be the canonical forms of the
/// eb:Messaging and Body elements carrying `wsu:Id`s `ids.messaging_id` and `ids.body_id`.
pub(crate) fn sign_envelope(
    signer: &SigningKey,
    ids: &SecurityIds,
    messaging: &str,
    body: &str,
    attachments: &[SignPart],
    mode: AttachmentDigest,
) -> Result<String, BuildError> {
    xml::check_ncname("messaging id", &ids.messaging_id)?;
    xml::check_ncname("body id", &ids.body_id)?;
    xml::check_ncname("token id", &ids.bst_id)?;
    if ids.messaging_id == ids.body_id || ids.messaging_id == ids.bst_id || ids.body_id == ids.bst_id {
        return Err(BuildError::Invalid { what: "security ids", reason: "ids must differ".into() });
    }

    let mut si = String::new();
    si.push_str("<ds:SignedInfo xmlns:ds=\"");
    si.push_str(ns::DS);
    si.push_str("\"><ds:CanonicalizationMethod");
    xml::attr(&mut si, "Algorithm", EXC_C14N);
    si.push_str("></ds:CanonicalizationMethod><ds:SignatureMethod");
    xml::attr(&mut si, "Algorithm", SIGN_METHOD.uri());
    si.push_str("></ds:SignatureMethod>");
    reference(&mut si, &format!("#{}", ids.messaging_id), EXC_C14N, &sha256_b64(messaging.as_bytes())?);
    reference(&mut si, &format!("#{}", ids.body_id), EXC_C14N, &sha256_b64(body.as_bytes())?);
    for a in attachments {
        super::package::check_content_id("attachment content id", a.content_id)?;
        let content = swa_content(a.content_type, a.bytes, mode).map_err(|reason| {
            BuildError::AttachmentCanonicalization { content_id: a.content_id.to_string(), reason }
        })?;
        reference(&mut si, &format!("cid:{}", a.content_id), SWA_CONTENT_TRANSFORM, &sha256_b64(&content)?);
    }
    si.push_str("</ds:SignedInfo>");

    let mut s = Signer::new(SIGN_METHOD.digest().message_digest(), &signer.key)
        .map_err(|e| BuildError::Signing(e.to_string()))?;
    s.update(si.as_bytes()).map_err(|e| BuildError::Signing(e.to_string()))?;
    let sig = s.sign_to_vec().map_err(|e| BuildError::Signing(e.to_string()))?;
    let cert_der = signer.cert.to_der().map_err(|e| BuildError::Signing(e.to_string()))?;
    let b64e = base64::engine::general_purpose::STANDARD;

    let mut sec = String::with_capacity(si.len() + cert_der.len() * 2 + 1200);
    sec.push_str("<wsse:Security");
    xml::attr(&mut sec, "xmlns:wsse", ns::WSSE);
    xml::attr(&mut sec, "xmlns:wsu", ns::WSU);
    xml::attr(&mut sec, "s12:mustUnderstand", "true");
    sec.push_str("><wsse:BinarySecurityToken");
    xml::attr(&mut sec, "EncodingType", BASE64_BINARY);
    xml::attr(&mut sec, "ValueType", X509V3);
    xml::attr(&mut sec, "wsu:Id", &ids.bst_id);
    sec.push('>');
    sec.push_str(&b64e.encode(&cert_der));
    sec.push_str("</wsse:BinarySecurityToken><ds:Signature");
    xml::attr(&mut sec, "xmlns:ds", ns::DS);
    sec.push('>');
    sec.push_str(&si);
    sec.push_str("<ds:SignatureValue>");
    sec.push_str(&b64e.encode(&sig));
    sec.push_str("</ds:SignatureValue><ds:KeyInfo><wsse:SecurityTokenReference><wsse:Reference");
    xml::attr(&mut sec, "URI", &format!("#{}", ids.bst_id));
    xml::attr(&mut sec, "ValueType", X509V3);
    sec.push_str("></wsse:Reference></wsse:SecurityTokenReference></ds:KeyInfo></ds:Signature></wsse:Security>");

    let env = envelope(&[&sec, messaging], body);
    self_check(&env, ids, &si, messaging, body)?;
    Ok(env)
}

/// Re-parses what we are about to send and checks that a verifier's canonical forms of
/// SignedInfo, eb:Messaging and the Body are the bytes we signed and digested.
fn self_check(env: &str, ids: &SecurityIds, si: &str, messaging: &str, body: &str) -> Result<(), BuildError> {
    let internal = |e: String| BuildError::Internal(format!("self-check: {e}"));
    let limits = Limits { max_bytes: usize::MAX, max_depth: 256, max_nodes: u32::MAX, max_parts: 0 };
    let doc = xml::parse(env.as_bytes(), &limits).map_err(|e| internal(e.to_string()))?;
    let s = soap(&doc).map_err(|e| internal(e.to_string()))?;
    let find_id = |id: &str| doc.descendants().find(|n| n.is_element() && xml::ids(*n).any(|v| v == id));
    let signed_info = doc
        .descendants()
        .find(|n| is(*n, ns::DS, "SignedInfo"))
        .ok_or_else(|| internal("no SignedInfo".into()))?;
    let checks = [
        (Some(signed_info), si, "SignedInfo"),
        (s.messaging.filter(|m| Some(*m) == find_id(&ids.messaging_id)), messaging, "eb:Messaging"),
        (Some(s.body).filter(|b| Some(*b) == find_id(&ids.body_id)), body, "Body"),
    ];
    for (node, expected, what) in checks {
        let node = node.ok_or_else(|| internal(format!("{what} not found by its id")))?;
        let mut out = Vec::new();
        c14n::canonicalize_subtree(node, &ExcC14n::default(), &mut out).map_err(|e| internal(e.to_string()))?;
        if out != expected.as_bytes() {
            return Err(internal(format!("{what} is not in canonical form")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::as4::testutil;

    const FIXTURE: &str = "as4net_signed_pullrequest.xml";
    const FIXTURE_THUMBPRINT: &str = "5E320E3A1DDAC6606E12816B2744AE1EE2EE7BF5";

    #[test]
    #[ignore = "needs ../shared/fixtures (third-party captures); .ci/run runs it when present"]
    fn as4net_pull_request_verifies_and_thumbprint_matches() {
        let bytes = testutil::fixture(FIXTURE);
        let info = verify(&bytes, &[], &Limits::default()).unwrap().expect("signed");
        assert!(info.thumbprint.eq_ignore_ascii_case(FIXTURE_THUMBPRINT));
        assert_eq!(info.thumbprint, FIXTURE_THUMBPRINT);
        assert_eq!(info.method, SignatureMethod::RsaSha256);
        assert_eq!(info.references.len(), 2);
        assert_eq!(thumbprint(&info.cert_der), FIXTURE_THUMBPRINT);
    }

    #[test]
    #[ignore = "needs ../shared/fixtures (third-party captures); .ci/run runs it when present"]
    fn one_changed_character_in_messaging_fails() {
        let bytes = testutil::fixture(FIXTURE);
        let text = String::from_utf8(bytes).unwrap();
        for (from, to) in [
            ("mpc/2\"", "mpc/3\""),
            ("<eb:MessageId>5be", "<eb:MessageId>6be"),
            ("2017-06-12T11", "2017-06-12T12"),
        ] {
            let tampered = text.replacen(from, to, 1);
            assert_ne!(tampered, text);
            let err = verify(tampered.as_bytes(), &[], &Limits::default()).unwrap_err();
            assert!(matches!(err, As4Error::FailedAuthentication(ref m) if m.contains("digest mismatch")), "{err}");
        }
    }

    #[test]
    #[ignore = "needs ../shared/fixtures (third-party captures); .ci/run runs it when present"]
    fn tampered_signature_value_or_body_fails() {
        let text = String::from_utf8(testutil::fixture(FIXTURE)).unwrap();
        let t = text.replacen("<SignatureValue>Bki", "<SignatureValue>Bkj", 1);
        assert!(matches!(verify(t.as_bytes(), &[], &Limits::default()), Err(As4Error::FailedAuthentication(_))));
        let t = text.replacen("p2:Id=\"body-0a3cb8cb-05a2-4bad-89ed-a4316eb66362\"/>", "p2:Id=\"body-0a3cb8cb-05a2-4bad-89ed-a4316eb66362\"><x/></s12:Body>", 1);
        assert!(matches!(verify(t.as_bytes(), &[], &Limits::default()), Err(As4Error::FailedAuthentication(_))));
    }

    #[test]
    #[ignore = "needs ../shared/fixtures (third-party captures); .ci/run runs it when present"]
    fn wrapped_messaging_is_rejected() {
        // Move the signed eb:Messaging into a wrapper header and put a forged one in its place
        // with the same id: the duplicate id is refused.
        let text = String::from_utf8(testutil::fixture(FIXTURE)).unwrap();
        let start = text.find("<eb:Messaging").unwrap();
        let end = text.find("</eb:Messaging>").unwrap() + "</eb:Messaging>".len();
        let original = &text[start..end];
        let forged = original.replace("mpc/2", "mpc/evil");
        let wrapped = format!("<w:Wrapper xmlns:w=\"urn:w\">{original}</w:Wrapper>{forged}");
        let t = format!("{}{}{}", &text[..start], wrapped, &text[end..]);
        let err = verify(t.as_bytes(), &[], &Limits::default()).unwrap_err();
        assert!(matches!(err, As4Error::FailedAuthentication(ref m) if m.contains("more than one")), "{err}");
        // Forged copy without the id: the references resolve to the wrapped original, which is
        // not the eb:Messaging header that would be processed.
        let forged_no_id = forged.replace("wsu:Id=\"header-b9d43eff-cc79-4598-9516-4f5ffe7e8851\"", "");
        let t = format!("{}<w:Wrapper xmlns:w=\"urn:w\">{original}</w:Wrapper>{forged_no_id}{}", &text[..start], &text[end..]);
        let err = verify(t.as_bytes(), &[], &Limits::default()).unwrap_err();
        assert!(matches!(err, As4Error::FailedAuthentication(ref m) if m.contains("does not cover eb:Messaging")), "{err}");
    }

    #[test]
    #[ignore = "needs ../shared/fixtures (third-party captures); .ci/run runs it when present"]
    fn references_are_bounded() {
        // Each Reference canonicalizes its target: more than the message needs are refused
        // before any is computed (a partner's digests cost nothing to forge).
        let text = String::from_utf8(testutil::fixture(FIXTURE)).unwrap();
        let start = text.find("<Reference ").unwrap();
        let end = text.find("</Reference>").unwrap() + "</Reference>".len();
        let many = text[start..end].repeat(MAX_EXTRA_REFERENCES);
        let t = format!("{}{many}{}", &text[..start], &text[start..]);
        let err = verify(t.as_bytes(), &[], &Limits::default()).unwrap_err();
        assert!(matches!(err, As4Error::FailedAuthentication(ref m) if m.contains("more than 8 References")), "{err}");
        let twice = format!("{}{}{}", &text[..start], &text[start..end], &text[start..]);
        let err = verify(twice.as_bytes(), &[], &Limits::default()).unwrap_err();
        assert!(matches!(err, As4Error::FailedAuthentication(ref m) if m.contains("more than one Reference to #header-")), "{err}");
    }

    #[test]
    fn unsigned_envelope_is_none() {
        let env = envelope(&["<eb:Messaging xmlns:eb=\"http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/\"/>"], "<s12:Body/>");
        assert_eq!(verify(env.as_bytes(), &[], &Limits::default()).unwrap(), None);
    }

    #[test]
    fn swa_content_forms() {
        let xml = b"<?xml version=\"1.0\"?>\n<a  b='1'><!-- c --><x/></a>\n";
        let c = swa_content("application/xml; charset=utf-8", xml, AttachmentDigest::SwaProfile).unwrap();
        assert_eq!(&*c, b"<a b=\"1\"><x></x></a>");
        assert_eq!(&*swa_content("text/plain", b"a\nb\r\nc\rd", AttachmentDigest::SwaProfile).unwrap(), b"a\r\nb\r\nc\r\nd");
        assert_eq!(&*swa_content("application/pdf", b"a\nb", AttachmentDigest::SwaProfile).unwrap(), b"a\nb");
        assert_eq!(&*swa_content("application/xml", b"a\nb", AttachmentDigest::Raw).unwrap(), b"a\nb");
        assert!(swa_content("application/xml", b"<!DOCTYPE a><a/>", AttachmentDigest::SwaProfile).is_err());
    }
}
