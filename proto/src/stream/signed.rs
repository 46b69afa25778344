//! multipart/signed as it streams: the first part (the signed entity, headers included, as
//! received) is hashed and passed on as the next entity; the second (the signature) is kept, bounded. The check
//! itself is [`crate::cms::verify_detached_digests`], once the body has ended.

use super::entity::{AsEntity, BodyReader};
use super::multipart::{Event, Splitter};
use super::Codec;
use crate::alg::DigestAlg;
use crate::error::ProcessingError;
use crate::mime::{ContentType, Entity, MimeLimits};
use crate::mdn::Mic;
use openssl::hash::Hasher;
use openssl::x509::X509;

/// The most the signature part may take.
pub(crate) const MAX_SIGNATURE_PART: usize = 1 << 20;

fn auth(m: impl Into<String>) -> ProcessingError {
    ProcessingError::Authentication(m.into())
}

pub struct SignedSplit {
    limits: MimeLimits,
    head: BodyReader,
    splitter: Option<Splitter>,
    /// Digests of the first part, in each algorithm asked for.
    hashers: Vec<(DigestAlg, Hasher)>,
    signature: Vec<u8>,
    parts: usize,
    body: Vec<u8>,
    /// The signed part made the next entity (bare signed content gets a header block).
    wrap: AsEntity,
}

/// What the split found once the body ended.
pub struct SignedParts {
    /// The signature part: an entity (headers and body).
    pub signature_entity: Vec<u8>,
    pub digests: Vec<(DigestAlg, Vec<u8>)>,
}

impl SignedSplit {
    /// `algs`: the digests to take of the signed part (the micalg the sender declared, the MIC
    /// the MDN request asks for).
    pub fn new(algs: &[DigestAlg], limits: MimeLimits) -> Result<SignedSplit, ProcessingError> {
        let mut hashers = Vec::new();
        for a in algs {
            if !hashers.iter().any(|(b, _)| b == a) {
                hashers.push((*a, Hasher::new(a.message_digest()).map_err(|e| auth(e.to_string()))?));
            }
        }
        Ok(SignedSplit { limits, head: BodyReader::new(limits), splitter: None, hashers, signature: Vec::new(), parts: 0, body: Vec::new(), wrap: AsEntity::new(limits) })
    }

    /// The micalg parameter of a multipart/signed content type, when it names a digest we know.
    pub fn declared_alg(ct: &ContentType) -> Option<DigestAlg> {
        ct.param("micalg").and_then(|m| m.split(',').find_map(|a| DigestAlg::parse(a.trim())))
    }

    fn split(&mut self, body: &[u8], end: bool, out: &mut Vec<u8>) -> Result<(), ProcessingError> {
        let Some(splitter) = self.splitter.as_mut() else { return Ok(()) };
        let (hashers, signature, parts, wrap) = (&mut self.hashers, &mut self.signature, &mut self.parts, &mut self.wrap);
        let mut on = |ev: Event<'_>| -> Result<(), ProcessingError> {
            match ev {
                Event::Data(0, d) => {
                    for (_, h) in hashers.iter_mut() {
                        h.update(d).map_err(|e| auth(e.to_string()))?;
                    }
                    wrap.push(d, out)?;
                }
                Event::Data(1, d) => {
                    if signature.len() + d.len() > MAX_SIGNATURE_PART {
                        return Err(auth(format!("signature part over {MAX_SIGNATURE_PART} bytes")));
                    }
                    signature.extend_from_slice(d);
                }
                Event::Data(..) => return Err(auth("multipart/signed with more than 2 parts")),
                Event::End(n) => *parts = n + 1,
            }
            Ok(())
        };
        let r = if end { splitter.finish(&mut on) } else { splitter.push(body, &mut on) };
        r.map_err(|e| match e {
            ProcessingError::Unexpected(m) => auth(format!("unreadable multipart/signed: {m}")),
            other => other,
        })
    }
}

impl Codec for SignedSplit {
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), ProcessingError> {
        let mut body = std::mem::take(&mut self.body);
        body.clear();
        self.head.push(input, &mut body)?;
        if self.splitter.is_none() {
            let Some(ct) = self.head.content_type() else {
                self.body = body;
                return Ok(());
            };
            if !ct.is("multipart/signed") {
                return Err(auth(format!("expected multipart/signed, got {}", ct.mime)));
            }
            let boundary = ct.param("boundary").unwrap_or("");
            self.splitter = Some(Splitter::new(boundary, &self.limits).map_err(|e| auth(format!("unreadable multipart/signed: {e}")))?);
        }
        let r = self.split(&body, false, out);
        self.body = body;
        r
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), ProcessingError> {
        let mut body = Vec::new();
        self.head.finish(&mut body)?;
        if self.splitter.is_none() {
            return Err(auth("the message ended in its header block"));
        }
        self.split(&body, false, out)?;
        self.split(&[], true, out)?;
        self.wrap.finish(out)?;
        if self.parts != 2 {
            return Err(auth(format!("multipart/signed with {} parts instead of 2", self.parts)));
        }
        Ok(())
    }
}

impl SignedSplit {
    /// After `finish`: the signature and the digests.
    pub fn into_parts(mut self) -> Result<SignedParts, ProcessingError> {
        let mut digests = Vec::new();
        for (a, h) in self.hashers.iter_mut() {
            digests.push((*a, h.finish().map_err(|e| auth(e.to_string()))?.to_vec()));
        }
        Ok(SignedParts { signature_entity: std::mem::take(&mut self.signature), digests })
    }
}

impl SignedParts {
    /// The DER signature, from the signature part.
    pub fn signature(&self, limits: &MimeLimits) -> Result<Vec<u8>, ProcessingError> {
        let e = Entity::parse(&self.signature_entity, limits)?;
        let ct = e.content_type();
        if !(ct.is("application/pkcs7-signature") || ct.is("application/x-pkcs7-signature")) {
            return Err(auth(format!("unsupported signature type {}", ct.mime)));
        }
        e.decoded_body().map_err(|err| auth(err.to_string()))
    }
}

impl SignedParts {
    /// The signature's digest algorithms the signed part was not hashed with as it streamed
    /// (the node reads the part again for them, then calls [`SignedParts::add_digest`]).
    pub fn missing(&self, signature: &[u8]) -> Result<Vec<DigestAlg>, ProcessingError> {
        let algs = crate::cms::signer_digests(signature).map_err(|e| auth(format!("unreadable signature: {e}")))?;
        Ok(algs.into_iter().filter(|a| !self.digests.iter().any(|(b, _)| b == a)).collect())
    }

    pub fn add_digest(&mut self, alg: DigestAlg, digest: Vec<u8>) {
        self.digests.push((alg, digest));
    }

    /// Check the signature against `trusted`; the result carries the MIC over the signed part
    /// in `mic_alg` (None: the signature's digest), as [`crate::unwrap::verify`] does.
    pub fn verify(&self, signature: &[u8], trusted: &[X509], mic_alg: Option<DigestAlg>) -> Result<StreamVerified, ProcessingError> {
        use base64::Engine;
        if trusted.is_empty() {
            return Err(auth("no verification certificate configured for this partner"));
        }
        let v = crate::cms::verify_detached_digests(signature, &self.digests, trusted).map_err(crate::unwrap::cms_to_processing)?;
        let alg = mic_alg.unwrap_or(v.digest);
        let digest = self.digests.iter().find(|(a, _)| *a == alg).map(|(_, d)| d).ok_or_else(|| auth(format!("the signed part was not hashed with {alg:?}")))?;
        let thumb = v.signer.digest(openssl::hash::MessageDigest::sha1()).map(hex::encode).unwrap_or_default();
        Ok(StreamVerified {
            digest: v.digest,
            pss: v.padding == crate::alg::SignaturePadding::Pss,
            signer_thumbprint: thumb,
            mic: Mic { digest: base64::engine::general_purpose::STANDARD.encode(digest), alg },
        })
    }
}

/// [`crate::unwrap::VerifiedEntity`] without the content (it streamed to the next blob).
#[derive(Debug, Clone)]
pub struct StreamVerified {
    pub digest: DigestAlg,
    pub pss: bool,
    pub signer_thumbprint: String,
    pub mic: Mic,
}
