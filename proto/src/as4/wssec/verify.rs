//! Verification of a WS-Security signature: the checks listed in the [module header](super).

use std::collections::HashMap;

use base64::Engine;
use openssl::hash::hash;
use openssl::sign::Verifier;
use openssl::x509::X509;
use roxmltree::{Document, Node, NodeId};

use super::{
    AttachmentDigest, BASE64_BINARY, SWA_COMPLETE_TRANSFORM, SWA_CONTENT_TRANSFORM, SignatureInfo, SignatureMethod, Soap,
    VerifiedReference, X509V3, digest_from_uri, soap, swa_content, thumbprint,
};
use crate::as4::c14n::{self, EXC_C14N, ExcC14n};
use crate::as4::package::Attachment;
use crate::as4::xml::{self, children, is, only_child};
use crate::as4::{As4Error, Limits, ns};

/// How many References a signature may hold besides one per attachment.
const MAX_EXTRA_REFERENCES: usize = 8;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::as4::testutil;
    use crate::as4::wssec::envelope;

    const FIXTURE: &str = "as4net_signed_pullrequest.xml";
    const FIXTURE_THUMBPRINT: &str = "5E320E3A1DDAC6606E12816B2744AE1EE2EE7BF5";

    fn fixture_text() -> String {
        String::from_utf8(testutil::fixture(FIXTURE)).unwrap()
    }

    /// Where the first element opened by `open` and closed by `close` starts and ends in `text`.
    fn element(text: &str, open: &str, close: &str) -> (usize, usize) {
        (text.find(open).unwrap(), text.find(close).unwrap() + close.len())
    }

    /// `envelope` fails authentication, with a message containing `why`.
    fn refused(envelope: &str, why: &str) {
        let err = verify(envelope.as_bytes(), &[], &Limits::default()).unwrap_err();
        assert!(matches!(err, As4Error::FailedAuthentication(ref m) if m.contains(why)), "{err}");
    }

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
            refused(&tampered, "digest mismatch");
        }
    }

    #[test]
    #[ignore = "needs ../shared/fixtures (third-party captures); .ci/run runs it when present"]
    fn tampered_signature_value_or_body_fails() {
        let text = fixture_text();
        let t = text.replacen("<SignatureValue>Bki", "<SignatureValue>Bkj", 1);
        refused(&t, "");
        let t = text.replacen("p2:Id=\"body-0a3cb8cb-05a2-4bad-89ed-a4316eb66362\"/>", "p2:Id=\"body-0a3cb8cb-05a2-4bad-89ed-a4316eb66362\"><x/></s12:Body>", 1);
        refused(&t, "");
    }

    #[test]
    #[ignore = "needs ../shared/fixtures (third-party captures); .ci/run runs it when present"]
    fn wrapped_messaging_is_rejected() {
        // Move the signed eb:Messaging into a wrapper header and put a forged one in its place
        // with the same id: the duplicate id is refused.
        let text = fixture_text();
        let (start, end) = element(&text, "<eb:Messaging", "</eb:Messaging>");
        let original = &text[start..end];
        let forged = original.replace("mpc/2", "mpc/evil");
        let wrapped = format!("<w:Wrapper xmlns:w=\"urn:w\">{original}</w:Wrapper>{forged}");
        let t = format!("{}{}{}", &text[..start], wrapped, &text[end..]);
        refused(&t, "more than one");
        // Forged copy without the id: the references resolve to the wrapped original, which is
        // not the eb:Messaging header that would be processed.
        let forged_no_id = forged.replace("wsu:Id=\"header-b9d43eff-cc79-4598-9516-4f5ffe7e8851\"", "");
        let t = format!("{}<w:Wrapper xmlns:w=\"urn:w\">{original}</w:Wrapper>{forged_no_id}{}", &text[..start], &text[end..]);
        refused(&t, "does not cover eb:Messaging");
    }

    #[test]
    #[ignore = "needs ../shared/fixtures (third-party captures); .ci/run runs it when present"]
    fn references_are_bounded() {
        // Each Reference canonicalizes its target: more than the message needs are refused
        // before any is computed (a partner's digests cost nothing to forge).
        let text = fixture_text();
        let (start, end) = element(&text, "<Reference ", "</Reference>");
        let many = text[start..end].repeat(MAX_EXTRA_REFERENCES);
        let t = format!("{}{many}{}", &text[..start], &text[start..]);
        refused(&t, "more than 8 References");
        let twice = format!("{}{}{}", &text[..start], &text[start..end], &text[start..]);
        refused(&twice, "more than one Reference to #header-");
    }

    #[test]
    fn unsigned_envelope_is_none() {
        let env = envelope(&["<eb:Messaging xmlns:eb=\"http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/\"/>"], "<s12:Body/>");
        assert_eq!(verify(env.as_bytes(), &[], &Limits::default()).unwrap(), None);
    }
}
