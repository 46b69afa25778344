//! One unwrapping step at a time: classify the current MIME entity and open its layer.
//!
//! A sender may nest encryption, signing and compression in any order; each step takes the
//! current entity (headers + body, as received or as produced by the previous step) and returns
//! the next one. The actors decide where each step runs; this module only computes. Which bytes
//! the MIC covers, on both sides, is [`mic`].

use crate::alg::DigestAlg;
use crate::cms::{self, CmsError, CmsKind};
use crate::error::ProcessingError;
use crate::mdn::Mic;
use crate::mime::{self, Entity, MimeLimits};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

pub mod mic;

/// What the current entity is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// EnvelopedData or AuthEnvelopedData: decrypt it.
    Decrypt,
    /// multipart/signed, or opaque signed-data: verify it.
    Verify,
    /// CompressedData: decompress it.
    Decompress,
    /// No security layer left: this is the payload entity.
    Payload,
}

fn is_pkcs7_mime(ct: &mime::ContentType) -> bool {
    ct.is("application/pkcs7-mime") || ct.is("application/x-pkcs7-mime")
}

/// Classify an entity.
pub fn classify(raw: &[u8], limits: &MimeLimits) -> Result<Step, ProcessingError> {
    let e = Entity::parse(raw, limits)?;
    let ct = e.content_type();
    if ct.is("multipart/signed") {
        return Ok(Step::Verify);
    }
    if is_pkcs7_mime(&ct) {
        let smime = ct.param("smime-type").map(|s| s.to_ascii_lowercase());
        match smime.as_deref() {
            Some("enveloped-data") | Some("authenveloped-data") => return Ok(Step::Decrypt),
            Some("compressed-data") => return Ok(Step::Decompress),
            Some("signed-data") => return Ok(Step::Verify),
            _ => {}
        }
        // No (or an unknown) smime-type: look at the CMS content type itself.
        let der = e.decoded_body_ref()?;
        return match cms::kind(&der) {
            Ok(CmsKind::Enveloped | CmsKind::AuthEnveloped) => Ok(Step::Decrypt),
            Ok(CmsKind::Compressed) => Ok(Step::Decompress),
            Ok(CmsKind::Signed) => Ok(Step::Verify),
            Ok(other) => Err(ProcessingError::Unexpected(format!("unsupported CMS content {other:?}"))),
            Err(err) => Err(ProcessingError::Unexpected(format!("a pkcs7-mime body that is not CMS: {err}"))),
        };
    }
    if ct.mime.starts_with("multipart/") {
        return Ok(Step::Payload);
    }
    // No label says this is a layer; make sure it is not one all the same. A CMS structure (an
    // octet-stream around enveloped or signed data, a decryption that produced bare CMS) is
    // opened as its label would have said; a signed or encrypted entity inside a payload is
    // refused. Neither is ever delivered as a document.
    let head = decoded_prefix(&e, limits.max_header_bytes)?;
    match cms::kind(&head) {
        Ok(CmsKind::Enveloped | CmsKind::AuthEnveloped) => return Ok(Step::Decrypt),
        Ok(CmsKind::Compressed) => return Ok(Step::Decompress),
        Ok(CmsKind::Signed) => return Ok(Step::Verify),
        _ => {}
    }
    if let Some(end) = mime::header_block_end(&head, limits) {
        let inner = mime::parse_header_block(&head[..end], limits)?;
        let inner_ct = mime::ContentType::parse(mime::get(&inner, "content-type").unwrap_or(""));
        if inner_ct.is("multipart/signed") || inner_ct.mime.contains("pkcs7") {
            return Err(ProcessingError::Unexpected(format!("a {} entity inside a {} payload", inner_ct.mime, ct.mime)));
        }
    }
    Ok(Step::Payload)
}

/// The first `n` bytes or so of the body with its transfer encoding removed (base64 is decoded
/// from its start only: a large payload is not decoded twice).
fn decoded_prefix<'a>(e: &Entity<'a>, n: usize) -> Result<std::borrow::Cow<'a, [u8]>, ProcessingError> {
    use std::borrow::Cow;
    match e.transfer_encoding().as_str() {
        "base64" => {
            let chars: Vec<u8> = e.body.iter().copied().filter(|b| !b.is_ascii_whitespace()).take(n / 3 * 4).collect();
            let whole = chars.len() / 4 * 4;
            Ok(Cow::Owned(mime::decode_transfer(&chars[..whole], "base64")?))
        }
        "binary" | "8bit" | "7bit" | "" => Ok(Cow::Borrowed(&e.body[..e.body.len().min(n)])),
        other => Ok(Cow::Owned(mime::decode_transfer(e.body, other)?)),
    }
}

/// Turn decrypted (or decompressed) content into the next entity. Some senders (Mendelson for
/// unsigned messages) encrypt the bare payload rather than a MIME entity; that is wrapped in a
/// minimal entity so the next steps see one shape.
pub fn as_entity(content: Vec<u8>, limits: &MimeLimits) -> Vec<u8> {
    if looks_like_entity(&content, limits) {
        return content;
    }
    let mut out = b"Content-Type: application/octet-stream\r\n\r\n".to_vec();
    out.extend_from_slice(&content);
    out
}

/// Content that starts with a header block (any field, by syntax) is a MIME entity.
fn looks_like_entity(content: &[u8], limits: &MimeLimits) -> bool {
    mime::header_block_end(content, limits).is_some() && Entity::parse(content, limits).is_ok()
}

/// Decrypt an enveloped entity.
pub fn decrypt(raw: &[u8], keys: &[(PKey<Private>, X509)], limits: &MimeLimits) -> Result<Vec<u8>, ProcessingError> {
    let e = Entity::parse(raw, limits)?;
    let der = e.decoded_body_ref().map_err(|err| ProcessingError::Decryption(err.to_string()))?;
    if keys.is_empty() {
        return Err(ProcessingError::Decryption("no decryption key configured for this station".into()));
    }
    let plain = cms::decrypt(&der, keys).map_err(|err| ProcessingError::Decryption(err.to_string()))?;
    Ok(as_entity(plain, limits))
}

/// [`decrypt`] taking the entity by value, so a large one is not held alongside its parsed
/// form and its plaintext.
pub(crate) fn decrypt_owned(raw: Vec<u8>, keys: &[(PKey<Private>, X509)], limits: &MimeLimits) -> Result<Vec<u8>, ProcessingError> {
    decrypt_layer(raw, keys, None, limits).map(|d| d.entity)
}

/// A decrypted layer.
#[derive(Debug, Clone)]
pub struct Decrypted {
    /// The next entity.
    pub entity: Vec<u8>,
    /// The MIC over the content exactly as decrypted (before a bare content is given a header),
    /// when asked for: the MIC of an encrypted, unsigned message (RFC 4130 section 7.3.1).
    pub mic: Option<Mic>,
}

/// [`decrypt_owned`], with the MIC over the decrypted content in `mic_alg` when given.
pub fn decrypt_layer(mut raw: Vec<u8>, keys: &[(PKey<Private>, X509)], mic_alg: Option<DigestAlg>, limits: &MimeLimits) -> Result<Decrypted, ProcessingError> {
    if keys.is_empty() {
        return Err(ProcessingError::Decryption("no decryption key configured for this station".into()));
    }
    let (offset, cte) = {
        let e = Entity::parse(&raw, limits)?;
        (raw.len() - e.body.len(), e.transfer_encoding())
    };
    let der = match cte.as_str() {
        "binary" | "8bit" | "7bit" | "" => {
            raw.drain(..offset);
            raw
        }
        other => {
            let d = mime::decode_transfer(&raw[offset..], other).map_err(|err| ProcessingError::Decryption(err.to_string()))?;
            drop(raw);
            d
        }
    };
    let plain = cms::decrypt_owned(der, keys).map_err(|err| ProcessingError::Decryption(err.to_string()))?;
    let mic = mic_alg.map(|alg| compute_mic(&plain, alg));
    Ok(Decrypted { entity: as_entity(plain, limits), mic })
}

/// [`decompress`] in memory up to `cap` bytes of output: Ok(None) when there is more (the node
/// then streams it to the blob store instead).
pub fn decompress_within(raw: &[u8], cap: usize, limits: &MimeLimits) -> Result<Option<Vec<u8>>, ProcessingError> {
    let e = Entity::parse(raw, limits)?;
    let der = e.decoded_body_ref().map_err(|err| ProcessingError::Decompression(err.to_string()))?;
    match cms::decompress(&der, cap) {
        Ok(plain) => Ok(Some(as_entity(plain, limits))),
        Err(CmsError::TooLarge { .. }) => Ok(None),
        Err(err) => Err(ProcessingError::Decompression(err.to_string())),
    }
}

/// Decompress a compressed entity; the output may not exceed `max_output` bytes.
pub fn decompress(raw: &[u8], max_output: usize, limits: &MimeLimits) -> Result<Vec<u8>, ProcessingError> {
    let e = Entity::parse(raw, limits)?;
    let der = e.decoded_body_ref().map_err(|err| ProcessingError::Decompression(err.to_string()))?;
    let plain = cms::decompress(&der, max_output).map_err(|err| ProcessingError::Decompression(err.to_string()))?;
    Ok(as_entity(plain, limits))
}

/// The result of a signature check.
#[derive(Debug, Clone)]
pub struct VerifiedEntity {
    /// The signed content: the next entity.
    pub inner: Vec<u8>,
    pub digest: DigestAlg,
    pub pss: bool,
    /// SHA-1 thumbprint (hex) of the certificate that signed.
    pub signer_thumbprint: String,
    /// The MIC over the signed content with the requested algorithm (or the signature's).
    pub mic: Mic,
}

pub(crate) fn cms_to_processing(err: CmsError) -> ProcessingError {
    match err {
        CmsError::ContentAltered(m) => ProcessingError::Integrity(m),
        CmsError::SignatureInvalid(m) | CmsError::UnknownSigner(m) => ProcessingError::Authentication(m),
        CmsError::Malformed(m) => ProcessingError::Authentication(format!("unreadable signature: {m}")),
        other => ProcessingError::Authentication(other.to_string()),
    }
}

/// Verify a signed entity against the partner's certificates and compute the MIC over the
/// signed content as received (RFC 4130 7.3.1). `mic_alg` is the algorithm the MDN request
/// asked for; None means the signature's own digest.
pub fn verify(raw: &[u8], trusted: &[X509], mic_alg: Option<DigestAlg>, limits: &MimeLimits) -> Result<VerifiedEntity, ProcessingError> {
    let e = Entity::parse(raw, limits)?;
    let ct = e.content_type();
    if trusted.is_empty() {
        return Err(ProcessingError::Authentication("no verification certificate configured for this partner".into()));
    }
    let (inner, verified) = if ct.is("multipart/signed") {
        let boundary = ct.param("boundary").unwrap_or("");
        let parts = mime::split_multipart(e.body, boundary, limits)
            .map_err(|err| ProcessingError::Authentication(format!("unreadable multipart/signed: {err}")))?;
        if parts.len() != 2 {
            return Err(ProcessingError::Authentication(format!("multipart/signed with {} parts instead of 2", parts.len())));
        }
        let sig_entity = Entity::parse(parts[1], limits)?;
        let sig_ct = sig_entity.content_type();
        if !(sig_ct.is("application/pkcs7-signature") || sig_ct.is("application/x-pkcs7-signature")) {
            return Err(ProcessingError::Authentication(format!("unsupported signature type {}", sig_ct.mime)));
        }
        let sig = sig_entity.decoded_body().map_err(|err| ProcessingError::Authentication(err.to_string()))?;
        verify_detached_entity(&sig, parts[0], trusted, limits).map_err(cms_to_processing)?
    } else {
        let der = e.decoded_body_ref().map_err(|err| ProcessingError::Authentication(err.to_string()))?;
        let (content, v) = cms::verify_embedded(&der, trusted).map_err(cms_to_processing)?;
        (content, v)
    };
    let alg = mic_alg.unwrap_or(verified.digest);
    let mic = compute_mic(&inner, alg);
    let thumb = verified.signer.digest(openssl::hash::MessageDigest::sha1()).map(hex::encode).unwrap_or_default();
    Ok(VerifiedEntity {
        inner: as_entity(inner, limits),
        digest: verified.digest,
        pss: verified.padding == crate::alg::SignaturePadding::Pss,
        signer_thumbprint: thumb,
        mic,
    })
}

/// Verifies a detached signature over `signed` (a MIME entity, headers included) as received;
/// when that fails on a bad signature or an altered content and the entity has bare LFs, tries
/// the two forms a store-and-forward hop may have turned CRLF into LF in: headers restored to
/// CRLF (what the sender signs for a binary part), then everything in CRLF. Returns the bytes
/// that verified, so the MIC is taken over them. The one signature check for messages and MDNs.
pub(crate) fn verify_detached_entity(sig: &[u8], signed: &[u8], trusted: &[X509], limits: &MimeLimits) -> Result<(Vec<u8>, cms::Verified), CmsError> {
    let first = match cms::verify_detached(sig, signed, trusted) {
        Ok(v) => return Ok((signed.to_vec(), v)),
        Err(e) => e,
    };
    let digest_only = matches!(&first, CmsError::SignatureInvalid(_) | CmsError::ContentAltered(_));
    let has_bare_lf = signed.first() == Some(&b'\n') || signed.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r');
    if digest_only && has_bare_lf {
        let mut candidates = Vec::with_capacity(2);
        if let Ok(e) = Entity::parse(signed, limits) {
            let head_len = signed.len() - e.body.len();
            let mut c = mime::canonicalize_crlf(&signed[..head_len]);
            c.extend_from_slice(e.body);
            candidates.push(c);
        }
        candidates.push(mime::canonicalize_crlf(signed));
        for c in candidates {
            if let Ok(v) = cms::verify_detached(sig, &c, trusted) {
                return Ok((c, v));
            }
        }
    }
    Err(first)
}

/// A MIC over exactly these bytes.
pub fn compute_mic(bytes: &[u8], alg: DigestAlg) -> Mic {
    use base64::Engine;
    let digest = openssl::hash::hash(alg.message_digest(), bytes)
        .map(|d| base64::engine::general_purpose::STANDARD.encode(d))
        .unwrap_or_default();
    Mic { digest, alg }
}

/// One delivered document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub filename: Option<String>,
    pub content_type: String,
    pub data: Vec<u8>,
}

/// Split the payload entity into documents: one, or each part of a multipart/related.
pub fn documents(raw: &[u8], limits: &MimeLimits) -> Result<Vec<Document>, ProcessingError> {
    let e = Entity::parse(raw, limits)?;
    let ct = e.content_type();
    if ct.is("multipart/related") || ct.is("multipart/mixed") {
        let parts = mime::split_multipart(e.body, ct.param("boundary").unwrap_or(""), limits)?;
        let mut docs = Vec::with_capacity(parts.len());
        for p in parts {
            let pe = Entity::parse(p, limits)?;
            let pct = pe.content_type();
            if pct.mime.starts_with("multipart/") {
                return Err(ProcessingError::Unexpected("nested multipart inside multipart/related".into()));
            }
            if pct.mime.contains("pkcs7") {
                return Err(ProcessingError::Unexpected(format!("a {} part inside multipart/related", pct.mime)));
            }
            docs.push(Document { filename: pe.filename(), content_type: pe.content_type().mime, data: pe.decoded_body()? });
        }
        if docs.is_empty() {
            return Err(ProcessingError::Unexpected("multipart/related without documents".into()));
        }
        return Ok(docs);
    }
    if ct.mime.starts_with("multipart/") && !ct.is("multipart/report") {
        return Err(ProcessingError::Unexpected(format!("unsupported payload type {}", ct.mime)));
    }
    Ok(vec![Document { filename: e.filename(), content_type: ct.mime.clone(), data: e.decoded_body()? }])
}

/// Build the first entity from the HTTP request: its content headers, in a fixed order and
/// spelling (HTTP servers hand headers over lower-cased and unordered), then the body as
/// received. The MIC of an unsigned, unencrypted message is over the body alone
/// ([`mic::content_mic`]).
pub fn entity_from_http(headers: &[mime::Header], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 256);
    for name in ["Content-Type", "Content-Transfer-Encoding", "Content-Disposition"] {
        if let Some(v) = mime::get(headers, name) {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_layers_by_content_type() {
        let l = MimeLimits::default();
        assert_eq!(classify(b"Content-Type: multipart/signed; boundary=x\r\n\r\n", &l).unwrap(), Step::Verify);
        assert_eq!(classify(b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\nx", &l).unwrap(), Step::Decrypt);
        assert_eq!(classify(b"Content-Type: application/x-pkcs7-mime; smime-type=compressed-data\r\n\r\nx", &l).unwrap(), Step::Decompress);
        assert_eq!(classify(b"Content-Type: application/edi-x12\r\n\r\nISA", &l).unwrap(), Step::Payload);
        // pkcs7-mime without smime-type and garbage inside: an error, never a payload.
        assert!(classify(b"Content-Type: application/pkcs7-mime\r\n\r\ngarbage", &l).is_err());
    }

    #[test]
    fn bare_content_is_wrapped() {
        let l = MimeLimits::default();
        let e = as_entity(b"UNA:+.? 'UNB+UNOC".to_vec(), &l);
        assert!(e.starts_with(b"Content-Type: application/octet-stream\r\n\r\nUNA"));
        let e2 = as_entity(b"Content-Type: text/plain\r\n\r\nhi".to_vec(), &l);
        assert_eq!(e2, b"Content-Type: text/plain\r\n\r\nhi");
    }

    #[test]
    fn content_starting_with_any_header_is_an_entity() {
        let l = MimeLimits::default();
        for raw in [
            &b"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nContent-Type: text/plain\r\n\r\nhi"[..],
            b"MIME-Version: 1.0\nContent-Type: text/plain\n\nhi",
            b"Message-ID: <x@y>\r\n\r\nno Content-Type: text/plain by default",
        ] {
            assert_eq!(as_entity(raw.to_vec(), &l), raw, "{}", String::from_utf8_lossy(raw));
        }
        // EDIFACT with colons on every line and a blank line is still a bare document.
        let edifact = b"UNB+UNOA:2+S:14+R:14+140407:0910+5'\nUNH+1+ORDERS:D:96A:UN'\n\n";
        assert!(as_entity(edifact.to_vec(), &l).starts_with(b"Content-Type: application/octet-stream\r\n\r\nUNB"));
    }

    /// A signed+encrypted message whose signed entity starts with `Date:` (as a TypeScript
    /// library on pkijs sends it): decrypted, verified, then delivered as the inner document.
    #[test]
    fn signed_encrypted_with_a_date_first_inner_entity_is_verified() {
        use crate::alg::{ContentCipher, KeyTransport};
        use crate::testing::{alice, bob};
        let l = MimeLimits::default();
        let (akey, acert) = alice();
        let (bkey, bcert) = bob();
        let payload = b"Content-Type: application/edi-x12\r\nContent-Disposition: attachment; filename=\"po.edi\"\r\n\r\nISA*00*DATE-FIRST~\r\n";
        let sig = cms::sign_detached(payload, akey, acert, DigestAlg::Sha256, &cms::SignOptions::default()).unwrap();
        let mut signed = b"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"S\"\r\n\r\n--S\r\n".to_vec();
        signed.extend_from_slice(payload);
        signed.extend_from_slice(b"\r\n--S\r\nContent-Type: application/pkcs7-signature\r\nContent-Transfer-Encoding: base64\r\n\r\n");
        signed.extend_from_slice(&crate::mdn::base64_lines(&sig));
        signed.extend_from_slice(b"--S--\r\n");
        let der = cms::encrypt(&signed, bcert, ContentCipher::Aes128Cbc, KeyTransport::RsaPkcs1v15).unwrap();
        let mut entity = b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\n".to_vec();
        entity.extend_from_slice(&der);

        assert_eq!(classify(&entity, &l).unwrap(), Step::Decrypt);
        let inner = decrypt(&entity, &[(bkey.clone(), bcert.clone())], &l).unwrap();
        assert_eq!(inner, signed, "the decrypted entity is kept as is");
        assert_eq!(classify(&inner, &l).unwrap(), Step::Verify);
        let v = verify(&inner, std::slice::from_ref(acert), None, &l).unwrap();
        assert_eq!(v.mic, compute_mic(payload, DigestAlg::Sha256));
        assert_eq!(classify(&v.inner, &l).unwrap(), Step::Payload);
        let docs = documents(&v.inner, &l).unwrap();
        assert_eq!(docs, vec![Document { filename: Some("po.edi".into()), content_type: "application/edi-x12".into(), data: b"ISA*00*DATE-FIRST~\r\n".to_vec() }]);
    }

    #[test]
    fn layers_are_never_payloads() {
        use crate::testing::bob;
        let l = MimeLimits::default();
        let (_, bcert) = bob();
        let der = cms::encrypt(b"x", bcert, crate::alg::ContentCipher::Aes128Cbc, crate::alg::KeyTransport::RsaPkcs1v15).unwrap();
        // An octet-stream (or a decryption's bare output) around CMS is opened as that layer.
        let mut e = b"Content-Type: application/octet-stream\r\n\r\n".to_vec();
        e.extend_from_slice(&der);
        assert_eq!(classify(&e, &l).unwrap(), Step::Decrypt);
        let mut e = b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
        e.extend_from_slice(&crate::mdn::base64_lines(&der));
        assert_eq!(classify(&e, &l).unwrap(), Step::Decrypt);
        let z = cms::compress(b"Content-Type: text/plain\r\n\r\nhi").unwrap();
        assert_eq!(classify(&as_entity(z, &l), &l).unwrap(), Step::Decompress);
        // A signed or encrypted entity inside a payload is refused.
        for inner in ["multipart/signed; boundary=x", "application/pkcs7-mime; smime-type=signed-data"] {
            let raw = format!("Content-Type: application/octet-stream\r\n\r\nContent-Type: {inner}\r\n\r\n--x\r\n");
            assert!(matches!(classify(raw.as_bytes(), &l), Err(ProcessingError::Unexpected(_))), "{inner}");
        }
        // So is a CMS part of a multipart/related.
        let related = b"Content-Type: multipart/related; boundary=B\r\n\r\n--B\r\nContent-Type: application/pkcs7-mime\r\n\r\nx\r\n--B--\r\n";
        assert!(documents(related, &l).is_err());
        // A binary document that merely starts like DER is a payload.
        assert_eq!(classify(b"Content-Type: application/octet-stream\r\n\r\n\x30\x03\x02\x01\x05", &l).unwrap(), Step::Payload);
    }

    #[test]
    fn multiple_attachments_become_documents() {
        let raw = b"Content-Type: multipart/related; boundary=\"B\"; type=\"application/edi-x12\"\r\n\r\n--B\r\nContent-Type: application/edi-x12\r\nContent-Disposition: attachment; filename=\"a.edi\"\r\n\r\nAAA\r\n--B\r\nContent-Type: application/xml\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=b.xml\r\n\r\nPHg+PC94Pg==\r\n--B--\r\n";
        let docs = documents(raw, &MimeLimits::default()).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].filename.as_deref(), Some("a.edi"));
        assert_eq!(docs[0].data, b"AAA");
        assert_eq!(docs[1].filename.as_deref(), Some("b.xml"));
        assert_eq!(docs[1].data, b"<x></x>");
    }
}
