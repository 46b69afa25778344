//! The MIC (RFC 4130 section 7.3.1): which bytes are hashed, on both sides of a message.
//!
//! | message | the MIC is over |
//! |---|---|
//! | signed | the signed entity, headers and content, as signed ([`super::verify`]) |
//! | encrypted, unsigned | the decrypted MIME entity, headers and content, exactly as decrypted; when it is compressed, the compressed entity, not what decompression gives ([`super::decrypt_layer`]) |
//! | unsigned, unencrypted | the content without MIME or other headers: the HTTP body as received; compressed, the compressed data ([`content_mic`]) |
//!
//! The algorithm is the first supported `signed-receipt-micalg` the sender asked for; without
//! one, the signature's digest (signed) or sha1 (unsigned).
//!
//! Receivers of unsigned messages do not all follow the table. When we send one, we also
//! compute the MICs over the other bases products are known to return ([`MicBasis`]), in the
//! usual algorithms ([`expected_unsigned`]), so that an MDN returning one of them can be
//! accepted with a note in the message's status, unless the partner agreement is strict.

use super::compute_mic;
use crate::alg::DigestAlg;
use crate::mdn::Mic;
use crate::mime::{self, Entity, MimeLimits};
use serde::{Deserialize, Serialize};

/// What a MIC is computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MicBasis {
    /// What RFC 4130 section 7.3.1 says (the module's table).
    Rfc4130,
    /// The payload entity, headers and content (for a compressed message: what decompression
    /// gives).
    PayloadEntity,
    /// The payload entity with text canonicalized to CRLF line ends.
    PayloadEntityCrlf,
    /// The document alone, without its MIME headers.
    Document,
    /// The top-level entity as sent: its MIME headers (Content-Type, Content-Transfer-Encoding,
    /// Content-Disposition, as in the HTTP request) and the body.
    SentEntity,
}

impl MicBasis {
    pub fn describe(self) -> &'static str {
        match self {
            MicBasis::Rfc4130 => "the bytes RFC 4130 section 7.3.1 names",
            MicBasis::PayloadEntity => "the payload entity with its headers (decompressed)",
            MicBasis::PayloadEntityCrlf => "the payload entity with its headers, text in CRLF",
            MicBasis::Document => "the document without headers",
            MicBasis::SentEntity => "the sent entity with its MIME headers",
        }
    }
}

/// A MIC an MDN may return for an unsigned message besides the one we expect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AltMic {
    pub basis: MicBasis,
    pub mic: Mic,
    /// Acceptable whatever the agreement: the RFC 4130 basis in an algorithm the receiver was
    /// free to choose (we sent no `signed-receipt-micalg`).
    #[serde(default)]
    pub standard: bool,
}

impl AltMic {
    /// What the message's status tells when an MDN's MIC is this one (None: nothing to tell).
    pub fn note(&self, expected: &Mic) -> Option<String> {
        use crate::alg::MicSpelling;
        let alg = |m: &Mic| m.alg.name(MicSpelling::Rfc5751);
        match (self.standard, self.basis) {
            (true, _) => None,
            (false, MicBasis::Rfc4130) => Some(format!("the partner's MIC is in {} instead of the {} asked for", alg(&self.mic), alg(expected))),
            (false, basis) => Some(format!("the partner's MIC is over {} in {}, not as RFC 4130 section 7.3.1 says", basis.describe(), alg(&self.mic))),
        }
    }
}

/// The MIC of an unsigned, unencrypted message as received: over the body of the first entity
/// (the HTTP body; for a compressed message, the compressed data).
pub fn content_mic(entity: &[u8], alg: DigestAlg, limits: &MimeLimits) -> Mic {
    match Entity::parse(entity, limits) {
        Ok(e) => compute_mic(e.body, alg),
        Err(_) => compute_mic(entity, alg),
    }
}

/// What an unsigned message we send is made of.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UnsignedMessage<'a> {
    /// The payload entity as built (one document, or the multipart/related of several).
    pub payload: &'a [u8],
    /// The document, when there is only one.
    pub document: Option<&'a [u8]>,
    /// The entity that was encrypted; None when the message is not encrypted.
    pub encrypted: Option<&'a [u8]>,
    /// The top-level entity as sent (its headers go in the HTTP request) and where its body
    /// starts.
    pub sent: &'a [u8],
    pub sent_body: usize,
}

/// The MIC an RFC 4130 receiver returns for an unsigned message (in `alg`), and the others a
/// receiver may return: every other basis in `alg`, sha1 and sha256, and the RFC basis in sha1
/// and sha256 (`standard` when `alg_requested` is false: the receiver then chooses).
pub(crate) fn expected_unsigned(m: &UnsignedMessage<'_>, alg: DigestAlg, alg_requested: bool, limits: &MimeLimits) -> (Mic, Vec<AltMic>) {
    use std::borrow::Cow;
    let rfc: &[u8] = m.encrypted.unwrap_or(&m.sent[m.sent_body.min(m.sent.len())..]);
    let mut bases: Vec<(MicBasis, Cow<'_, [u8]>)> = vec![(MicBasis::Rfc4130, Cow::Borrowed(rfc)), (MicBasis::PayloadEntity, Cow::Borrowed(m.payload))];
    let is_text = Entity::parse(m.payload, limits).map(|e| e.content_type().mime.starts_with("text/")).unwrap_or(false);
    if is_text {
        bases.push((MicBasis::PayloadEntityCrlf, Cow::Owned(mime::canonicalize_crlf(m.payload))));
    }
    if let Some(d) = m.document {
        bases.push((MicBasis::Document, Cow::Borrowed(d)));
    }
    if m.encrypted.is_none() {
        bases.push((MicBasis::SentEntity, Cow::Borrowed(m.sent)));
    }
    let mut algs = vec![alg];
    for a in [DigestAlg::Sha1, DigestAlg::Sha256] {
        if !algs.contains(&a) {
            algs.push(a);
        }
    }
    let expected = compute_mic(rfc, alg);
    let mut alternatives = Vec::new();
    for (i, (basis, bytes)) in bases.iter().enumerate() {
        // Two bases over the same bytes are one (a single uncompressed document sent plain is
        // both the RFC basis and the document).
        if bases[..i].iter().any(|(_, b)| b == bytes) {
            continue;
        }
        for &a in &algs {
            if *basis == MicBasis::Rfc4130 && a == alg {
                continue;
            }
            let standard = *basis == MicBasis::Rfc4130 && !alg_requested;
            alternatives.push(AltMic { basis: *basis, mic: compute_mic(bytes, a), standard });
        }
    }
    (expected, alternatives)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &[u8] = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: binary\r\n\r\nline\n";

    fn sent(payload: &[u8]) -> UnsignedMessage<'_> {
        UnsignedMessage { payload, document: Some(b"line\n"), encrypted: None, sent: payload, sent_body: payload.len() - 5 }
    }

    #[test]
    fn mic_content_of_an_unsigned_message_is_its_body() {
        let l = MimeLimits::default();
        assert_eq!(content_mic(PAYLOAD, DigestAlg::Sha1, &l), compute_mic(b"line\n", DigestAlg::Sha1));
        // Without headers the whole entity is the body.
        assert_eq!(content_mic(b"\r\nbody", DigestAlg::Sha256, &l), compute_mic(b"body", DigestAlg::Sha256));
    }

    #[test]
    fn mic_unsigned_plain_expects_the_content_and_knows_the_other_bases() {
        let l = MimeLimits::default();
        let (mic, alts) = expected_unsigned(&sent(PAYLOAD), DigestAlg::Sha256, true, &l);
        assert_eq!(mic, compute_mic(b"line\n", DigestAlg::Sha256));
        let find = |b: MicBasis, a: DigestAlg| alts.iter().find(|x| x.basis == b && x.mic.alg == a).map(|x| x.mic.clone());
        assert_eq!(find(MicBasis::PayloadEntity, DigestAlg::Sha1), Some(compute_mic(PAYLOAD, DigestAlg::Sha1)));
        assert_eq!(find(MicBasis::PayloadEntityCrlf, DigestAlg::Sha256), Some(compute_mic(&mime::canonicalize_crlf(PAYLOAD), DigestAlg::Sha256)));
        assert_eq!(find(MicBasis::Rfc4130, DigestAlg::Sha1), Some(compute_mic(b"line\n", DigestAlg::Sha1)));
        // The document is the RFC basis here, the sent entity is the payload entity: not twice.
        assert_eq!(find(MicBasis::Document, DigestAlg::Sha1), None);
        assert_eq!(find(MicBasis::SentEntity, DigestAlg::Sha1), None);
        assert_eq!(find(MicBasis::Rfc4130, DigestAlg::Sha256), None, "the expected MIC is not an alternative");
        // sha256 was asked for: the RFC basis in sha1 is not standard, and says so.
        let other_alg = alts.iter().find(|x| x.basis == MicBasis::Rfc4130).unwrap();
        assert!(!other_alg.standard);
        assert!(other_alg.note(&mic).unwrap().contains("sha1 instead of the sha-256"));
        let entity = alts.iter().find(|x| x.basis == MicBasis::PayloadEntity).unwrap();
        assert!(entity.note(&mic).unwrap().contains("payload entity"));
    }

    #[test]
    fn mic_unsigned_without_a_requested_algorithm_lets_the_receiver_choose() {
        let (mic, alts) = expected_unsigned(&sent(PAYLOAD), DigestAlg::Sha1, false, &MimeLimits::default());
        assert_eq!(mic.alg, DigestAlg::Sha1);
        let rfc256 = alts.iter().find(|x| x.basis == MicBasis::Rfc4130 && x.mic.alg == DigestAlg::Sha256).unwrap();
        assert!(rfc256.standard);
        assert_eq!(rfc256.note(&mic), None);
    }

    #[test]
    fn mic_unsigned_encrypted_expects_the_encrypted_entity() {
        let l = MimeLimits::default();
        let compressed = b"Content-Type: application/pkcs7-mime; smime-type=compressed-data\r\n\r\n\x30\x80zz";
        let m = UnsignedMessage { payload: PAYLOAD, document: Some(b"line\n"), encrypted: Some(compressed), sent: b"irrelevant", sent_body: 0 };
        let (mic, alts) = expected_unsigned(&m, DigestAlg::Sha384, true, &l);
        assert_eq!(mic, compute_mic(compressed, DigestAlg::Sha384), "the compressed entity, not the decompressed one");
        // The decompressed entity and the document are alternatives; the sent entity is not.
        assert!(alts.iter().any(|x| x.basis == MicBasis::PayloadEntity && x.mic == compute_mic(PAYLOAD, DigestAlg::Sha384)));
        assert!(alts.iter().any(|x| x.basis == MicBasis::Document && x.mic == compute_mic(b"line\n", DigestAlg::Sha1)));
        assert!(!alts.iter().any(|x| x.basis == MicBasis::SentEntity));
        assert_eq!(alts.len(), 2 + 3 * 3, "the RFC basis in 2 more algorithms, 3 other bases in 3");
    }
}
