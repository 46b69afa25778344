//! Building an outbound AS2 message (RFC 4130): the payload entity, then the layers in the order
//! receivers expect (compress, sign, compress, encrypt), the HTTP headers, and the MIC the
//! partner's MDN has to return.
//!
//! Sans-IO: the Message-ID, the MIME boundaries (derived from a seed) and the date come in as
//! arguments, so the same inputs always build the same bytes (except for the CMS layers, where
//! OpenSSL draws the content-encryption key and the signing time itself).
//!
//! Every entity is written once, with CRLF header lines that are never folded, and the bytes
//! that get signed or hashed are exactly the bytes that get sent: nothing is re-serialized.
//!
//! # The MIC
//! It is computed by the rules of [`crate::unwrap::mic`] (RFC 4130 section 7.3.1), the ones
//! edinode's receiving side follows:
//! - signed: over the signed entity (headers and body, exactly as signed; with compression
//!   before signing that is the compressed entity) with the signing digest. We advertise that
//!   same digest as `signed-receipt-micalg`, so that a receiver that honours the request
//!   (edinode) and one that always uses the signature's digest (pyas2lib) agree.
//! - unsigned and encrypted: over the entity we encrypted (compressed: the compressed entity);
//!   unsigned and not encrypted: over the body we send. The algorithm is the requested
//!   `signed-receipt-micalg` when a signed MDN is asked for, else `mic_alg_when_unsigned`.
//!   Because receivers differ here, [`Built::mic_alternatives`] holds the MICs of the other
//!   bases products return, for the As2Sender to accept with a note unless the partner
//!   agreement is strict.

use crate::alg::{ContentCipher, DigestAlg, KeyTransport, MicSpelling, SignaturePadding};
use crate::cms::{self, CmsError, SignOptions};
use crate::mdn::{Mic, base64_lines, quote_name};
use crate::mime::{self, ContentType, MimeLimits};
use crate::unwrap;
use crate::unwrap::mic::{AltMic, UnsignedMessage};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

/// One document to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Sent in Content-Disposition; empty means no filename.
    pub filename: String,
    /// The document's MIME type, parameters allowed (`application/edi-x12`,
    /// `text/plain; charset=utf-8`).
    pub content_type: String,
    pub data: Vec<u8>,
}

/// Where compression goes relative to the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    /// Compress the payload entity, then sign the compressed entity (RFC 5402 preferred order).
    BeforeSigning,
    /// Sign, then compress the multipart/signed entity.
    AfterSigning,
}

/// The MDN to ask the partner for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MdnRequest {
    #[default]
    None,
    /// In the HTTP response. `signed`: ask for a signed receipt with this MIC algorithm.
    Sync { signed: Option<DigestAlg> },
    /// Posted later to `url` (Receipt-Delivery-Option).
    Async {
        url: String,
        signed: Option<DigestAlg>,
    },
}

impl MdnRequest {
    fn signed(&self) -> Option<DigestAlg> {
        match self {
            MdnRequest::None => None,
            MdnRequest::Sync { signed } | MdnRequest::Async { signed, .. } => *signed,
        }
    }
}

/// How to build one message (from the partner agreement).
#[derive(Debug, Clone)]
pub struct OutboundOptions {
    /// Sign with this digest.
    pub sign: Option<DigestAlg>,
    /// RSASSA-PSS instead of PKCS#1 v1.5.
    pub pss: bool,
    /// The RFC 6211 algorithm-protection signed attribute. Off by default: IBM Sterling B2Bi
    /// rejects signatures that carry it.
    pub algorithm_protection: bool,
    /// Encrypt for the partner with this cipher.
    pub encrypt: Option<ContentCipher>,
    pub key_transport: KeyTransport,
    pub compression: Compression,
    pub mdn: MdnRequest,
    /// The MIC algorithm of an unsigned message when no signed MDN (and so no
    /// signed-receipt-micalg) is requested. The receiver has to guess it: edinode's own inbound
    /// side (actors/mime_unwrapper.rs) uses sha1 then, pyas2lib returns no MIC at all.
    pub mic_alg_when_unsigned: DigestAlg,
    /// The Disposition-Notification-To value; None means our AS2 id.
    pub disposition_notification_to: Option<String>,
}

impl Default for OutboundOptions {
    fn default() -> Self {
        OutboundOptions {
            sign: None,
            pss: false,
            algorithm_protection: false,
            encrypt: None,
            key_transport: KeyTransport::default(),
            compression: Compression::None,
            mdn: MdnRequest::None,
            mic_alg_when_unsigned: DigestAlg::Sha1,
            disposition_notification_to: None,
        }
    }
}

/// The per-message values that would otherwise be random or read from the clock.
#[derive(Debug, Clone, Copy)]
pub struct OutboundIds<'a> {
    /// Our Message-ID, with angle brackets.
    pub message_id: &'a str,
    /// Every MIME boundary is derived from it (1 to 50 of `A-Za-z0-9'()+_,-./:=?`).
    pub boundary_seed: &'a str,
    /// RFC 2822 date.
    pub date: &'a str,
}

/// A message ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// Every HTTP header to send, Content-Type included; never Content-Length (the HTTP client
    /// sets it). Values are single lines.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// What the partner's MDN must return in Received-Content-MIC.
    pub mic: Mic,
    /// For an unsigned message, the MICs over the other bases receivers return (empty for a
    /// signed one).
    pub mic_alternatives: Vec<AltMic>,
    /// Our Message-ID, with angle brackets (what the MDN's Original-Message-ID refers to).
    pub message_id: String,
}

/// Why a message could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("no documents to send")]
    NoDocuments,
    #[error("signing is configured but no signing key and certificate were given")]
    MissingSigner,
    #[error("encryption is configured but no recipient certificate was given")]
    MissingRecipient,
    #[error("CMS: {0}")]
    Cms(#[from] CmsError),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> OutboundError {
    OutboundError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// A MIME entity we write: header fields in order, then the body.
struct Entity {
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Entity {
    fn to_bytes(&self) -> Vec<u8> {
        let head: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 4)
            .sum();
        let mut out = Vec::with_capacity(head + 2 + self.body.len());
        for (n, v) in &self.headers {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

const SPELLING: MicSpelling = MicSpelling::Rfc5751;

/// Build one AS2 message from `from_as2` (our station) to `to_as2` (the partner).
///
/// `signer` is needed when `opts.sign` is set, `recipient` (the partner's encryption
/// certificate) when `opts.encrypt` is set; otherwise they are ignored.
#[allow(clippy::too_many_arguments)]
pub fn build(
    from_as2: &str,
    to_as2: &str,
    docs: &[Document],
    opts: &OutboundOptions,
    signer: Option<(&PKey<Private>, &X509)>,
    recipient: Option<&X509>,
    ids: &OutboundIds<'_>,
    subject: &str,
) -> Result<Built, OutboundError> {
    check_as2_name("AS2-From", from_as2)?;
    check_as2_name("AS2-To", to_as2)?;
    check_message_id(ids.message_id)?;
    check_line("date", ids.date, false)?;
    check_seed(ids.boundary_seed)?;
    let signing = match opts.sign {
        None => None,
        Some(digest) => {
            let (key, cert) = signer.ok_or(OutboundError::MissingSigner)?;
            Some((digest, key, cert))
        }
    };
    let encryption = match opts.encrypt {
        None => None,
        Some(cipher) => Some((cipher, recipient.ok_or(OutboundError::MissingRecipient)?)),
    };

    let payload = payload_entity(docs, ids.boundary_seed)?;
    let payload_bytes = payload.to_bytes();
    let mut current = payload;
    let mut signed_mic = None;

    if opts.compression == Compression::BeforeSigning {
        current = compressed(&current.to_bytes())?;
    }
    if let Some((digest, key, cert)) = signing {
        let content = current.to_bytes();
        signed_mic = Some(unwrap::compute_mic(&content, digest));
        let sign_opts = SignOptions {
            padding: if opts.pss {
                SignaturePadding::Pss
            } else {
                SignaturePadding::Pkcs1v15
            },
            signed_attributes: true,
            algorithm_protection: opts.algorithm_protection,
            include_cert: true,
        };
        let sig = cms::sign_detached(&content, key, cert, digest, &sign_opts)?;
        current = multipart_signed(&content, &sig, digest, ids.boundary_seed)?;
    }
    if opts.compression == Compression::AfterSigning {
        current = compressed(&current.to_bytes())?;
    }
    // The entity we encrypt is what an unsigned message's MIC covers: kept until it is computed.
    let mut encrypted_entity = None;
    if let Some((cipher, cert)) = encryption {
        let inner = current.to_bytes();
        current = enveloped(&inner, cert, cipher, opts.key_transport)?;
        if signed_mic.is_none() {
            encrypted_entity = Some(inner);
        }
    }

    // The MIC algorithm and the signed-receipt-micalg we ask for are one and the same.
    let (mic, mic_alternatives) = match signed_mic {
        Some(m) => (m, Vec::new()),
        None => {
            let requested = opts.mdn.signed();
            // Generous limits: our own entity, parsed only to read its Content-Type.
            let limits = MimeLimits {
                max_header_bytes: usize::MAX,
                max_headers: usize::MAX,
                max_parts: usize::MAX,
            };
            let sent = if encrypted_entity.is_none() {
                current.to_bytes()
            } else {
                Vec::new()
            };
            let message = UnsignedMessage {
                payload: &payload_bytes,
                document: (docs.len() == 1).then(|| docs[0].data.as_slice()),
                encrypted: encrypted_entity.as_deref(),
                sent: &sent,
                sent_body: sent.len().saturating_sub(current.body.len()),
            };
            unwrap::mic::expected_unsigned(
                &message,
                requested.unwrap_or(opts.mic_alg_when_unsigned),
                requested.is_some(),
                &limits,
            )
        }
    };
    drop(encrypted_entity);

    let mut headers: Vec<(String, String)> = vec![
        ("AS2-Version".into(), "1.2".into()),
        ("AS2-From".into(), quote_name(from_as2)),
        ("AS2-To".into(), quote_name(to_as2)),
        ("Message-ID".into(), ids.message_id.to_string()),
    ];
    let subject = encode_subject(subject);
    if !subject.is_empty() {
        headers.push(("Subject".into(), subject));
    }
    headers.push(("Date".into(), ids.date.to_string()));
    headers.push(("MIME-Version".into(), "1.0".into()));
    // What we support: edinode unpacks multipart/related payloads on the way in.
    headers.push(("EDIINT-Features".into(), "multiple-attachments".into()));
    if opts.mdn != MdnRequest::None {
        let dnt = opts
            .disposition_notification_to
            .as_deref()
            .unwrap_or(from_as2);
        check_line("Disposition-Notification-To", dnt, false)?;
        headers.push(("Disposition-Notification-To".into(), dnt.to_string()));
        if opts.mdn.signed().is_some() {
            headers.push((
                "Disposition-Notification-Options".into(),
                format!(
                    "signed-receipt-protocol=optional, pkcs7-signature; signed-receipt-micalg=optional, {}",
                    mic.alg.name(SPELLING)
                ),
            ));
        }
        if let MdnRequest::Async { url, .. } = &opts.mdn {
            check_url(url)?;
            headers.push(("Receipt-Delivery-Option".into(), url.clone()));
        }
    }
    for (n, v) in current.headers {
        headers.push((n.to_string(), v));
    }
    Ok(Built {
        headers,
        body: current.body,
        mic,
        mic_alternatives,
        message_id: ids.message_id.to_string(),
    })
}

/// One document as its own entity, or several as a multipart/related.
fn payload_entity(docs: &[Document], seed: &str) -> Result<Entity, OutboundError> {
    let first = docs.first().ok_or(OutboundError::NoDocuments)?;
    if docs.len() == 1 {
        return document_entity(first);
    }
    let parts: Vec<Vec<u8>> = docs
        .iter()
        .map(|d| document_entity(d).map(|e| e.to_bytes()))
        .collect::<Result<_, _>>()?;
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    let b = boundary("Rel", seed, &refs)?;
    let mut body = Vec::with_capacity(
        parts.iter().map(|p| p.len() + b.len() + 8).sum::<usize>() + b.len() + 8,
    );
    for p in &parts {
        body.extend_from_slice(format!("--{b}\r\n").as_bytes());
        body.extend_from_slice(p);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{b}--\r\n").as_bytes());
    let root_type = ContentType::parse(&first.content_type).mime;
    Ok(Entity {
        headers: vec![(
            "Content-Type",
            format!("multipart/related; boundary=\"{b}\"; type=\"{root_type}\""),
        )],
        body,
    })
}

fn document_entity(doc: &Document) -> Result<Entity, OutboundError> {
    check_line("document content type", &doc.content_type, false)?;
    let ct = ContentType::parse(&doc.content_type);
    let well_formed = ct.mime.split_once('/').is_some_and(|(t, s)| {
        let token = |x: &str| {
            !x.is_empty()
                && x.bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
        };
        token(t) && token(s)
    });
    if !well_formed {
        return Err(invalid(
            "document content type",
            format!("{:.60} is not a type/subtype", doc.content_type),
        ));
    }
    // The receiver would take these for a MIME structure or a security layer, not a document.
    if ct.mime.starts_with("multipart/")
        || ct.mime.ends_with("pkcs7-mime")
        || ct.mime.ends_with("pkcs7-signature")
    {
        return Err(invalid(
            "document content type",
            format!("{} cannot be sent as a document", ct.mime),
        ));
    }
    let mut headers = vec![
        ("Content-Type", doc.content_type.trim().to_string()),
        ("Content-Transfer-Encoding", "binary".to_string()),
    ];
    if !doc.filename.is_empty() {
        headers.push((
            "Content-Disposition",
            format!("attachment; {}", filename_param(&doc.filename)?),
        ));
    }
    Ok(Entity {
        headers,
        body: doc.data.clone(),
    })
}

/// `filename="name"` for plain printable ASCII, else RFC 2231 `filename*=utf-8''name`.
fn filename_param(name: &str) -> Result<String, OutboundError> {
    if name.chars().any(char::is_control) || name.len() > 255 {
        return Err(invalid(
            "document filename",
            "control characters or longer than 255 bytes",
        ));
    }
    if name
        .bytes()
        .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\')
    {
        return Ok(format!("filename=\"{name}\""));
    }
    let mut enc = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(format!("filename*=utf-8''{enc}"))
}

fn compressed(entity: &[u8]) -> Result<Entity, OutboundError> {
    Ok(Entity {
        headers: vec![
            (
                "Content-Type",
                "application/pkcs7-mime; smime-type=compressed-data; name=smime.p7z".into(),
            ),
            ("Content-Transfer-Encoding", "binary".into()),
            (
                "Content-Disposition",
                "attachment; filename=\"smime.p7z\"".into(),
            ),
        ],
        body: cms::compress(entity)?,
    })
}

fn multipart_signed(
    content: &[u8],
    sig: &[u8],
    digest: DigestAlg,
    seed: &str,
) -> Result<Entity, OutboundError> {
    let b = boundary("Sig", seed, &[content])?;
    let sig_b64 = base64_lines(sig);
    let mut body = Vec::with_capacity(content.len() + sig_b64.len() + 3 * b.len() + 256);
    body.extend_from_slice(format!("--{b}\r\n").as_bytes());
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{b}\r\n").as_bytes());
    body.extend_from_slice(
        b"Content-Type: application/pkcs7-signature; name=smime.p7s; smime-type=signed-data\r\n\
          Content-Transfer-Encoding: base64\r\n\
          Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n",
    );
    // base64_lines ends with CRLF: that line break belongs to the closing delimiter.
    body.extend_from_slice(&sig_b64);
    body.extend_from_slice(format!("--{b}--\r\n").as_bytes());
    Ok(Entity {
        headers: vec![(
            "Content-Type",
            format!(
                "multipart/signed; protocol=\"application/pkcs7-signature\"; micalg={}; boundary=\"{b}\"",
                digest.name(SPELLING)
            ),
        )],
        body,
    })
}

fn enveloped(
    entity: &[u8],
    recipient: &X509,
    cipher: ContentCipher,
    kt: KeyTransport,
) -> Result<Entity, OutboundError> {
    // AES-GCM makes an AuthEnvelopedData, named as RFC 8551 names it.
    let smime_type = match cipher {
        ContentCipher::Aes128Gcm | ContentCipher::Aes256Gcm => "authEnveloped-data",
        _ => "enveloped-data",
    };
    Ok(Entity {
        headers: vec![
            (
                "Content-Type",
                format!("application/pkcs7-mime; smime-type={smime_type}; name=smime.p7m"),
            ),
            ("Content-Transfer-Encoding", "binary".into()),
            (
                "Content-Disposition",
                "attachment; filename=\"smime.p7m\"".into(),
            ),
        ],
        body: cms::encrypt(entity, recipient, cipher, kt)?,
    })
}

/// A boundary derived from the seed that occurs nowhere in `contents` (so it cannot be
/// mistaken for a delimiter line); `.1`, `.2`, ... are appended until that holds.
pub(crate) fn boundary(
    kind: &str,
    seed: &str,
    contents: &[&[u8]],
) -> Result<String, OutboundError> {
    let base = format!("----=_{kind}_{seed}");
    for n in 0..1000u32 {
        let b = if n == 0 {
            base.clone()
        } else {
            format!("{base}.{n}")
        };
        let delim = format!("--{b}");
        if contents
            .iter()
            .all(|c| mime::find(c, delim.as_bytes()).is_none())
        {
            return Ok(b);
        }
    }
    Err(invalid(
        "boundary_seed",
        "every boundary derived from it occurs in the content",
    ))
}

fn check_seed(seed: &str) -> Result<(), OutboundError> {
    let ok = (1..=50).contains(&seed.len())
        && seed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"'()+_,-./:=?".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "boundary_seed",
            "must be 1 to 50 of A-Z a-z 0-9 '()+_,-./:=?",
        ))
    }
}

fn check_as2_name(field: &'static str, name: &str) -> Result<(), OutboundError> {
    let n = name.chars().count();
    if (1..=128).contains(&n) && name.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        Ok(())
    } else {
        Err(invalid(
            field,
            "must be 1 to 128 printable ASCII characters",
        ))
    }
}

fn check_message_id(id: &str) -> Result<(), OutboundError> {
    let ok = id.len() > 2
        && id.len() <= 998
        && id.starts_with('<')
        && id.ends_with('>')
        && id.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "Message-ID",
            "must be <...> of printable ASCII without spaces",
        ))
    }
}

/// A header value: one line of printable ASCII (empty allowed or not).
fn check_line(field: &'static str, v: &str, empty_ok: bool) -> Result<(), OutboundError> {
    if (!empty_ok && v.trim().is_empty())
        || v.len() > 998
        || !v.bytes().all(|b| (0x20..=0x7e).contains(&b))
    {
        return Err(invalid(
            field,
            format!(
                "{:.60} is not one line of printable ASCII",
                v.escape_debug()
            ),
        ));
    }
    Ok(())
}

fn check_url(url: &str) -> Result<(), OutboundError> {
    let l = url.to_ascii_lowercase();
    if !(l.starts_with("http://") || l.starts_with("https://"))
        || !url.bytes().all(|b| b.is_ascii_graphic())
        || url.len() > 2000
    {
        return Err(invalid(
            "Receipt-Delivery-Option",
            format!("{:.80} is not an http(s) URL", url.escape_debug()),
        ));
    }
    Ok(())
}

/// Control characters become spaces; non-ASCII text goes into RFC 2047 encoded words on the
/// same line (we never fold).
fn encode_subject(subject: &str) -> String {
    let clean: String = subject
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let clean = clean.trim();
    if clean.is_ascii() {
        return clean.to_string();
    }
    use base64::Engine;
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in clean.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(chunk);
    }
    words
        .iter()
        .map(|w| {
            format!(
                "=?utf-8?B?{}?=",
                base64::engine::general_purpose::STANDARD.encode(w.as_bytes())
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::headers::As2Request;
    use crate::unwrap::Step;
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::rsa::Rsa;
    use openssl::x509::{X509Builder, X509NameBuilder};
    use std::sync::OnceLock;

    pub(crate) type Identity = (PKey<Private>, X509);

    fn make_identity(cn: &str, serial: u32) -> Identity {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        let name = name.build();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&BigNum::from_u32(serial).unwrap().to_asn1_integer().unwrap())
            .unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        // Fixed validity (2024-01-01 .. 2034-01-01): tests do not read the clock either.
        b.set_not_before(&Asn1Time::from_unix(1_704_067_200).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::from_unix(2_019_686_400).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        (key, b.build())
    }

    /// Our station (signs outbound messages, signs MDNs in the MDN tests).
    pub(crate) fn alice() -> &'static Identity {
        static ID: OnceLock<Identity> = OnceLock::new();
        ID.get_or_init(|| make_identity("alice", 1))
    }
    /// The partner (decrypts).
    pub(crate) fn bob() -> &'static Identity {
        static ID: OnceLock<Identity> = OnceLock::new();
        ID.get_or_init(|| make_identity("bob", 2))
    }
    /// Someone nobody trusts.
    pub(crate) fn carol() -> &'static Identity {
        static ID: OnceLock<Identity> = OnceLock::new();
        ID.get_or_init(|| make_identity("carol", 3))
    }

    const IDS: OutboundIds<'static> = OutboundIds {
        message_id: "<20260101.1@edinode>",
        boundary_seed: "seed42",
        date: "Thu, 01 Jan 2026 00:00:00 +0000",
    };

    fn one_doc() -> Vec<Document> {
        vec![Document {
            filename: "order 1.edi".into(),
            content_type: "application/edi-x12".into(),
            data:
                b"ISA*00*          *00*          *ZZ*SENDER~\r\nGS*PO*S*R~\r\nIEA*1*000000001~\r\n"
                    .to_vec(),
        }]
    }

    fn three_docs() -> Vec<Document> {
        // Binary bytes, including a line that looks like our own first-choice boundary.
        let mut bin: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        bin.extend_from_slice(b"\r\n------=_Rel_seed42\r\n------=_Sig_seed42--\r\n\n\r");
        vec![
            Document {
                filename: "a.edi".into(),
                content_type: "application/EDIFACT".into(),
                data: b"UNA:+.? 'UNB+UNOC:3+X+Y'\nUNZ+1+5'\n".to_vec(),
            },
            Document {
                filename: "notes \u{fc}.txt".into(),
                content_type: "text/plain; charset=utf-8".into(),
                data: "line one\nline two \u{fc}\n".as_bytes().to_vec(),
            },
            Document {
                filename: "image.bin".into(),
                content_type: "application/octet-stream".into(),
                data: bin,
            },
        ]
    }

    fn http_headers(built: &Built) -> Vec<mime::Header> {
        built
            .headers
            .iter()
            .map(|(n, v)| mime::Header {
                name: n.clone(),
                value: v.clone(),
            })
            .collect()
    }

    /// What edinode's inbound side makes of a built message: the loop of
    /// actors/src/mime_unwrapper.rs (and the Verifier / Decryptor it routes to), with the MIC
    /// rule of the actors (`Security`). `unsigned_default` stands in for the actor's fallback
    /// algorithm.
    pub(crate) struct Received {
        pub docs: Vec<unwrap::Document>,
        pub mic: Mic,
        pub steps: Vec<Step>,
    }

    pub(crate) fn receive(
        built: &Built,
        keys: &[(PKey<Private>, X509)],
        trusted: &[X509],
        unsigned_default: DigestAlg,
    ) -> Received {
        let limits = MimeLimits::default();
        let headers = http_headers(built);
        let request = As2Request::from_headers(&headers).expect("valid AS2 headers");
        let requested = request.mdn.as_ref().and_then(|m| m.preferred_micalg());
        let unsigned_alg = requested.unwrap_or(unsigned_default);
        let mut entity = unwrap::entity_from_http(&headers, &built.body);
        let mut security = crate::envelope::Security::default();
        let mut steps = Vec::new();
        for _ in 0..10 {
            let step = unwrap::classify(&entity, &limits).unwrap();
            steps.push(step.clone());
            let mic_due = security.unsigned_mic_due().then_some(unsigned_alg);
            match step {
                Step::Decrypt => {
                    let d = unwrap::decrypt_layer(entity, keys, mic_due, &limits).unwrap();
                    security.mic = d.mic.or(security.mic);
                    entity = d.entity;
                }
                Step::Verify => {
                    let v = unwrap::verify(&entity, trusted, requested, &limits).unwrap();
                    security.signed_by(v.signer_thumbprint.clone(), v.mic.clone());
                    entity = v.inner;
                }
                Step::Decompress => {
                    let mic = mic_due.map(|a| unwrap::mic::content_mic(&entity, a, &limits));
                    security.mic = mic.or(security.mic);
                    entity = unwrap::decompress(&entity, 1 << 24, &limits).unwrap();
                }
                Step::Payload => {
                    let mic = mic_due.map(|a| unwrap::mic::content_mic(&entity, a, &limits));
                    security.mic = mic.or(security.mic);
                    break;
                }
            }
            security.depth += 1;
        }
        assert_eq!(steps.last(), Some(&Step::Payload), "unwrapped to a payload");
        Received {
            docs: unwrap::documents(&entity, &limits).unwrap(),
            mic: security.mic.expect("the outermost layer sets the MIC"),
            steps,
        }
    }

    fn header<'a>(built: &'a Built, name: &str) -> Option<&'a str> {
        built
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn outbound_every_combination_unwraps_to_the_documents_and_the_mic() {
        let (akey, acert) = alice();
        let (bkey, bcert) = bob();
        let keys = [(bkey.clone(), bcert.clone())];
        let trusted = [acert.clone()];
        let signs = [
            None,
            Some(DigestAlg::Sha1),
            Some(DigestAlg::Sha256),
            Some(DigestAlg::Sha512),
        ];
        let ciphers = [
            None,
            Some(ContentCipher::Des3),
            Some(ContentCipher::Aes128Cbc),
            Some(ContentCipher::Aes256Cbc),
            Some(ContentCipher::Aes256Gcm),
        ];
        let compressions = [
            Compression::None,
            Compression::BeforeSigning,
            Compression::AfterSigning,
        ];
        let mdns = [
            MdnRequest::None,
            MdnRequest::Sync { signed: None },
            MdnRequest::Sync {
                signed: Some(DigestAlg::Sha256),
            },
            MdnRequest::Async {
                url: "https://edinode.example/as2/mdn".into(),
                signed: Some(DigestAlg::Sha384),
            },
        ];
        let doc_sets = [one_doc(), three_docs()];
        let mut n = 0;
        for sign in signs {
            for cipher in ciphers {
                for compression in compressions {
                    for docs in &doc_sets {
                        let mdn = mdns[n % mdns.len()].clone();
                        n += 1;
                        let opts = OutboundOptions {
                            sign,
                            encrypt: cipher,
                            compression,
                            mdn: mdn.clone(),
                            // The MIC algorithm edinode's inbound actor falls back to.
                            mic_alg_when_unsigned: DigestAlg::Sha1,
                            ..Default::default()
                        };
                        let case = format!(
                            "sign {sign:?} encrypt {cipher:?} {compression:?} {} docs {mdn:?}",
                            docs.len()
                        );
                        let built = build(
                            "edinode",
                            "Acme Corp",
                            docs,
                            &opts,
                            Some((akey, acert)),
                            Some(bcert),
                            &IDS,
                            "Purchase order",
                        )
                        .unwrap();
                        assert!(
                            built
                                .headers
                                .iter()
                                .all(|(n, v)| !n.eq_ignore_ascii_case("content-length")
                                    && !v.contains(['\r', '\n'])),
                            "{case}"
                        );
                        let got = receive(&built, &keys, &trusted, DigestAlg::Sha1);
                        assert_eq!(got.docs.len(), docs.len(), "{case}");
                        for (d, r) in docs.iter().zip(&got.docs) {
                            assert_eq!(r.data, d.data, "{case}: {}", d.filename);
                            assert_eq!(r.filename.as_deref(), Some(d.filename.as_str()), "{case}");
                            assert_eq!(
                                r.content_type,
                                ContentType::parse(&d.content_type).mime,
                                "{case}"
                            );
                        }
                        assert_eq!(got.mic, built.mic, "{case}");
                        let expected_alg = sign.or(mdn.signed()).unwrap_or(DigestAlg::Sha1);
                        assert_eq!(built.mic.alg, expected_alg, "{case}");
                        let layers = got.steps.len() - 1;
                        let want = sign.is_some() as usize
                            + cipher.is_some() as usize
                            + (compression != Compression::None) as usize;
                        assert_eq!(layers, want, "{case}: {:?}", got.steps);
                    }
                }
            }
        }
        assert_eq!(n, 4 * 5 * 3 * 2);
    }

    #[test]
    fn outbound_layer_order_and_headers() {
        let (akey, acert) = alice();
        let (_, bcert) = bob();
        let opts = OutboundOptions {
            sign: Some(DigestAlg::Sha256),
            encrypt: Some(ContentCipher::Aes128Cbc),
            compression: Compression::BeforeSigning,
            mdn: MdnRequest::Async {
                url: "https://edinode.example/mdn".into(),
                signed: Some(DigestAlg::Sha256),
            },
            disposition_notification_to: Some("mailto:as2@edinode.example".into()),
            ..Default::default()
        };
        let built = build(
            "edinode",
            "Acme Corp",
            &three_docs(),
            &opts,
            Some((akey, acert)),
            Some(bcert),
            &IDS,
            "Bestellung f\u{fc}r M\u{fc}nchen",
        )
        .unwrap();
        assert_eq!(header(&built, "AS2-From"), Some("edinode"));
        assert_eq!(header(&built, "AS2-To"), Some("\"Acme Corp\""));
        assert_eq!(header(&built, "AS2-Version"), Some("1.2"));
        assert_eq!(header(&built, "Message-ID"), Some(IDS.message_id));
        assert_eq!(header(&built, "Date"), Some(IDS.date));
        assert_eq!(header(&built, "MIME-Version"), Some("1.0"));
        assert_eq!(
            header(&built, "EDIINT-Features"),
            Some("multiple-attachments")
        );
        assert_eq!(
            header(&built, "Disposition-Notification-To"),
            Some("mailto:as2@edinode.example")
        );
        assert_eq!(
            header(&built, "Disposition-Notification-Options"),
            Some(
                "signed-receipt-protocol=optional, pkcs7-signature; signed-receipt-micalg=optional, sha-256"
            )
        );
        assert_eq!(
            header(&built, "Receipt-Delivery-Option"),
            Some("https://edinode.example/mdn")
        );
        assert_eq!(
            header(&built, "Content-Type"),
            Some("application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m")
        );
        assert_eq!(header(&built, "Content-Transfer-Encoding"), Some("binary"));
        let subject = header(&built, "Subject").unwrap();
        assert!(
            subject.starts_with("=?utf-8?B?") && subject.is_ascii(),
            "{subject}"
        );
        assert_eq!(built.message_id, IDS.message_id);
        assert_eq!(cms::kind(&built.body).unwrap(), cms::CmsKind::Enveloped);

        // The headers parse as an AS2 request asking for a signed async MDN with sha-256.
        let req = As2Request::from_headers(&http_headers(&built)).unwrap();
        assert_eq!(req.as2_to, "Acme Corp");
        let mdn = req.mdn.unwrap();
        assert!(mdn.signed);
        assert_eq!(mdn.preferred_micalg(), Some(DigestAlg::Sha256));
        assert_eq!(
            mdn.async_url.as_deref(),
            Some("https://edinode.example/mdn")
        );

        // Inside: encrypted > signed > compressed > multipart/related.
        let (bkey, bcert) = bob();
        let got = receive(
            &built,
            &[(bkey.clone(), bcert.clone())],
            std::slice::from_ref(acert),
            DigestAlg::Sha1,
        );
        assert_eq!(
            got.steps,
            vec![Step::Decrypt, Step::Verify, Step::Decompress, Step::Payload]
        );
        assert_eq!(got.mic, built.mic);
    }

    #[test]
    fn outbound_unsigned_single_document_travels_in_the_http_headers() {
        let opts = OutboundOptions {
            mdn: MdnRequest::Sync { signed: None },
            ..Default::default()
        };
        let built = build("edinode", "acme", &one_doc(), &opts, None, None, &IDS, "").unwrap();
        assert_eq!(header(&built, "Content-Type"), Some("application/edi-x12"));
        assert_eq!(header(&built, "Content-Transfer-Encoding"), Some("binary"));
        assert_eq!(
            header(&built, "Content-Disposition"),
            Some("attachment; filename=\"order 1.edi\"")
        );
        assert_eq!(
            header(&built, "Disposition-Notification-To"),
            Some("edinode")
        );
        assert_eq!(header(&built, "Disposition-Notification-Options"), None);
        assert_eq!(header(&built, "Subject"), None);
        assert_eq!(built.body, one_doc()[0].data);
        // No micalg requested: the configured algorithm (default sha1, what edinode's inbound
        // side uses when none is named), over the content without headers (RFC 4130 7.3.1).
        assert_eq!(built.mic, unwrap::compute_mic(&one_doc()[0].data, DigestAlg::Sha1));
        let got = receive(&built, &[], &[], DigestAlg::Sha1);
        assert_eq!(got.mic, built.mic);
        // Another configured algorithm; the receiver chose: the RFC basis in sha1 is standard.
        let opts = OutboundOptions {
            mic_alg_when_unsigned: DigestAlg::Sha256,
            ..opts
        };
        let built = build("edinode", "acme", &one_doc(), &opts, None, None, &IDS, "").unwrap();
        assert_eq!(built.mic, unwrap::compute_mic(&one_doc()[0].data, DigestAlg::Sha256));
        let sha1 = unwrap::compute_mic(&one_doc()[0].data, DigestAlg::Sha1);
        assert!(built.mic_alternatives.iter().any(|a| a.standard && a.mic == sha1));
    }

    /// RFC 4130 section 7.3.1 for every unsigned shape, with the requested algorithm; the
    /// non-RFC bases are alternatives; edinode's receiving side computes the same MIC.
    #[test]
    fn outbound_unsigned_mic_follows_rfc4130() {
        use crate::unwrap::mic::MicBasis;
        let docs = vec![Document {
            filename: "x.txt".into(),
            content_type: "text/plain".into(),
            data: b"a\nb\n".to_vec(),
        }];
        let payload = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: binary\r\nContent-Disposition: attachment; filename=\"x.txt\"\r\n\r\na\nb\n";
        let (bkey, bcert) = bob();
        let keys = [(bkey.clone(), bcert.clone())];
        for encrypt in [None, Some(ContentCipher::Aes256Cbc)] {
            for compression in [Compression::None, Compression::BeforeSigning] {
                let case = format!("encrypt {encrypt:?} {compression:?}");
                let opts = OutboundOptions {
                    encrypt,
                    compression,
                    mdn: MdnRequest::Sync {
                        signed: Some(DigestAlg::Sha384),
                    },
                    ..Default::default()
                };
                let built =
                    build("edinode", "acme", &docs, &opts, None, Some(bcert), &IDS, "x").unwrap();
                let rfc_bytes = match encrypt {
                    // The decrypted entity as decrypted: compressed, the compressed entity.
                    Some(_) => cms::decrypt(&built.body, &keys).unwrap(),
                    // The content without headers: the body as sent.
                    None => built.body.clone(),
                };
                if encrypt.is_some() && compression == Compression::None {
                    assert_eq!(rfc_bytes, payload, "{case}");
                }
                if compression != Compression::None {
                    let compressed = match encrypt {
                        Some(_) => unwrap::classify(&rfc_bytes, &MimeLimits::default()).unwrap() == Step::Decompress,
                        None => cms::kind(&rfc_bytes).unwrap() == cms::CmsKind::Compressed,
                    };
                    assert!(compressed, "{case}: the compressed data, not its output");
                }
                // The requested algorithm (bullet 2), over the RFC bytes.
                assert_eq!(
                    built.mic,
                    unwrap::compute_mic(&rfc_bytes, DigestAlg::Sha384),
                    "{case}"
                );
                assert_eq!(receive(&built, &keys, &[], DigestAlg::Sha1).mic, built.mic, "{case}");
                assert_eq!(receive(&built, &keys, &[], DigestAlg::Sha1).docs[0].data, b"a\nb\n");
                // The bases other products return are known, in the usual algorithms.
                let alt = |basis: MicBasis, bytes: &[u8], alg: DigestAlg| {
                    built.mic_alternatives.iter().any(|a| {
                        a.basis == basis && !a.standard && a.mic == unwrap::compute_mic(bytes, alg)
                    })
                };
                if compression != Compression::None || encrypt.is_none() {
                    assert!(alt(MicBasis::PayloadEntity, payload, DigestAlg::Sha1), "{case}");
                }
                assert!(alt(MicBasis::PayloadEntityCrlf, &mime::canonicalize_crlf(payload), DigestAlg::Sha384), "{case}");
                assert!(alt(MicBasis::Rfc4130, &rfc_bytes, DigestAlg::Sha256), "{case}");
                if compression != Compression::None {
                    assert!(alt(MicBasis::Document, b"a\nb\n", DigestAlg::Sha256), "{case}");
                }
            }
        }
    }

    #[test]
    fn outbound_signed_mic_uses_the_signing_digest_and_advertises_it() {
        let (akey, acert) = alice();
        // Asked for sha512 receipts but signing with sha1: we ask for sha1, the digest pyas2lib
        // and Mendelson will use whatever we ask.
        let opts = OutboundOptions {
            sign: Some(DigestAlg::Sha1),
            mdn: MdnRequest::Sync {
                signed: Some(DigestAlg::Sha512),
            },
            ..Default::default()
        };
        let built = build(
            "edinode",
            "acme",
            &one_doc(),
            &opts,
            Some((akey, acert)),
            None,
            &IDS,
            "x",
        )
        .unwrap();
        assert_eq!(built.mic.alg, DigestAlg::Sha1);
        assert!(
            header(&built, "Disposition-Notification-Options")
                .unwrap()
                .ends_with("signed-receipt-micalg=optional, sha1")
        );
        assert!(
            header(&built, "Content-Type")
                .unwrap()
                .contains("micalg=sha1;")
        );
        // The MIC is over the signed entity: the first part, exactly.
        let ct = ContentType::parse(header(&built, "Content-Type").unwrap());
        let parts = mime::split_multipart(
            &built.body,
            ct.param("boundary").unwrap(),
            &MimeLimits::default(),
        )
        .unwrap();
        assert_eq!(built.mic, unwrap::compute_mic(parts[0], DigestAlg::Sha1));
        let doc = &one_doc()[0];
        let mut entity = b"Content-Type: application/edi-x12\r\nContent-Transfer-Encoding: binary\r\nContent-Disposition: attachment; filename=\"order 1.edi\"\r\n\r\n".to_vec();
        entity.extend_from_slice(&doc.data);
        assert_eq!(parts[0], &entity[..]);
        assert_eq!(
            receive(
                &built,
                &[],
                std::slice::from_ref(acert),
                DigestAlg::Sha1,
            )
            .mic,
            built.mic
        );
    }

    #[test]
    fn outbound_pss_protection_and_oaep_unwrap() {
        let (akey, acert) = alice();
        let (bkey, bcert) = bob();
        let opts = OutboundOptions {
            sign: Some(DigestAlg::Sha256),
            pss: true,
            algorithm_protection: true,
            encrypt: Some(ContentCipher::Aes128Gcm),
            key_transport: KeyTransport::RsaOaep,
            compression: Compression::AfterSigning,
            mdn: MdnRequest::Sync {
                signed: Some(DigestAlg::Sha256),
            },
            ..Default::default()
        };
        let built = build(
            "edinode",
            "acme",
            &three_docs(),
            &opts,
            Some((akey, acert)),
            Some(bcert),
            &IDS,
            "x",
        )
        .unwrap();
        assert_eq!(
            header(&built, "Content-Type"),
            Some("application/pkcs7-mime; smime-type=authEnveloped-data; name=smime.p7m")
        );
        let got = receive(
            &built,
            &[(bkey.clone(), bcert.clone())],
            std::slice::from_ref(acert),
            DigestAlg::Sha1,
        );
        assert_eq!(
            got.steps,
            vec![Step::Decrypt, Step::Decompress, Step::Verify, Step::Payload]
        );
        assert_eq!(got.mic, built.mic);
        assert_eq!(got.docs.len(), 3);
    }

    #[test]
    fn outbound_is_reproducible_without_cms() {
        let opts = OutboundOptions {
            compression: Compression::BeforeSigning,
            ..Default::default()
        };
        let a = build(
            "edinode",
            "acme",
            &three_docs(),
            &opts,
            None,
            None,
            &IDS,
            "x",
        )
        .unwrap();
        let b = build(
            "edinode",
            "acme",
            &three_docs(),
            &opts,
            None,
            None,
            &IDS,
            "x",
        )
        .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn outbound_boundaries_avoid_the_content() {
        let docs = three_docs();
        let built = build(
            "edinode",
            "acme",
            &docs,
            &OutboundOptions::default(),
            None,
            None,
            &IDS,
            "x",
        )
        .unwrap();
        let ct = ContentType::parse(header(&built, "Content-Type").unwrap());
        assert_eq!(ct.mime, "multipart/related");
        // The binary document contains "--" + the first choice, so the second one is used.
        assert_eq!(ct.param("boundary"), Some("----=_Rel_seed42.1"));
        assert_eq!(ct.param("type"), Some("application/edifact"));
        assert_eq!(boundary("Rel", "s", &[b"--x"]).unwrap(), "----=_Rel_s");
        assert_eq!(
            boundary("Rel", "s", &[b"a\r\n------=_Rel_s\r\n------=_Rel_s.1"]).unwrap(),
            "----=_Rel_s.2"
        );
    }

    #[test]
    fn outbound_rejects_bad_input() {
        let (akey, acert) = alice();
        let opts = OutboundOptions::default();
        let doc = one_doc();
        fn b(
            from: &str,
            to: &str,
            docs: &[Document],
            opts: &OutboundOptions,
            ids: &OutboundIds<'_>,
            signer: Option<(&PKey<Private>, &X509)>,
        ) -> Result<Built, OutboundError> {
            build(from, to, docs, opts, signer, None, ids, "s")
        }
        assert!(matches!(
            b("edinode", "acme", &[], &opts, &IDS, None),
            Err(OutboundError::NoDocuments)
        ));
        assert!(matches!(
            b("", "acme", &doc, &opts, &IDS, None),
            Err(OutboundError::Invalid {
                field: "AS2-From",
                ..
            })
        ));
        assert!(matches!(
            b("edinode", "ac\r\nme", &doc, &opts, &IDS, None),
            Err(OutboundError::Invalid {
                field: "AS2-To",
                ..
            })
        ));
        let bad_id = OutboundIds {
            message_id: "no-brackets@x",
            ..IDS
        };
        assert!(matches!(
            b("edinode", "acme", &doc, &opts, &bad_id, None),
            Err(OutboundError::Invalid {
                field: "Message-ID",
                ..
            })
        ));
        let bad_seed = OutboundIds {
            boundary_seed: "a b",
            ..IDS
        };
        assert!(matches!(
            b("edinode", "acme", &doc, &opts, &bad_seed, None),
            Err(OutboundError::Invalid {
                field: "boundary_seed",
                ..
            })
        ));
        let bad_date = OutboundIds {
            date: "Thu\r\nX: y",
            ..IDS
        };
        assert!(b("edinode", "acme", &doc, &opts, &bad_date, None).is_err());
        let signing = OutboundOptions {
            sign: Some(DigestAlg::Sha256),
            ..Default::default()
        };
        assert!(matches!(
            b("edinode", "acme", &doc, &signing, &IDS, None),
            Err(OutboundError::MissingSigner)
        ));
        let encrypting = OutboundOptions {
            encrypt: Some(ContentCipher::Aes128Cbc),
            ..Default::default()
        };
        assert!(matches!(
            b(
                "edinode",
                "acme",
                &doc,
                &encrypting,
                &IDS,
                Some((akey, acert))
            ),
            Err(OutboundError::MissingRecipient)
        ));
        for ct in [
            "multipart/related; boundary=x",
            "application/pkcs7-mime",
            "edi",
            "text/plain\r\nX: y",
            "",
        ] {
            let d = vec![Document {
                filename: "a".into(),
                content_type: ct.into(),
                data: vec![],
            }];
            assert!(
                b("edinode", "acme", &d, &opts, &IDS, None).is_err(),
                "{ct:?}"
            );
        }
        let d = vec![Document {
            filename: "a\nb".into(),
            content_type: "text/plain".into(),
            data: vec![],
        }];
        assert!(b("edinode", "acme", &d, &opts, &IDS, None).is_err());
        let bad_url = OutboundOptions {
            mdn: MdnRequest::Async {
                url: "ftp://x".into(),
                signed: None,
            },
            ..Default::default()
        };
        assert!(matches!(
            b("edinode", "acme", &doc, &bad_url, &IDS, None),
            Err(OutboundError::Invalid {
                field: "Receipt-Delivery-Option",
                ..
            })
        ));
    }

    #[test]
    fn outbound_filenames_and_subjects_are_encoded() {
        assert_eq!(filename_param("a b.edi").unwrap(), "filename=\"a b.edi\"");
        assert_eq!(
            filename_param("x\"y.edi").unwrap(),
            "filename*=utf-8''x%22y.edi"
        );
        assert_eq!(
            filename_param("\u{fc}.txt").unwrap(),
            "filename*=utf-8''%C3%BC.txt"
        );
        assert_eq!(encode_subject(" plain\r\nsubject "), "plain  subject");
        let long = "\u{e9}".repeat(60);
        let enc = encode_subject(&long);
        assert!(
            enc.split(' ')
                .all(|w| w.len() <= 75 && w.starts_with("=?utf-8?B?")),
            "{enc}"
        );
    }
}
