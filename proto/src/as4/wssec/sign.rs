//! Signing: the WS-Security header we put on our own messages (see the [module header](super)).

use base64::Engine;
use openssl::hash::hash;
use openssl::sign::Signer;

use super::{
    AttachmentDigest, BASE64_BINARY, SWA_CONTENT_TRANSFORM, SecurityIds, SignatureMethod, SigningKey, X509V3, digest_uri,
    soap, swa_content,
};
use crate::alg::DigestAlg;
use crate::as4::c14n::{self, EXC_C14N, ExcC14n};
use crate::as4::xml::{self, is};
use crate::as4::{BuildError, Limits, ns};

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
        crate::as4::package::check_content_id("attachment content id", a.content_id)?;
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
