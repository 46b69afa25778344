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
use crate::mdn::{Mic, quote_name};
use crate::mime::MimeLimits;
use crate::unwrap;
use crate::unwrap::mic::{AltMic, UnsignedMessage};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

mod entity;
mod layers;
mod streamed;
mod validate;

pub use streamed::{BuildStep, Piece, StreamBuilder, StreamBuilt, StreamDocument};

use entity::{encode_subject, payload_entity};
use layers::{compressed, enveloped, multipart_signed};
use validate::{check_as2_name, check_line, check_message_id, check_seed, check_url};

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

/// Where compression goes relative to the signature. Read from `none` (or empty), `before` or
/// `after`, in any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum Compression {
    #[default]
    None,
    /// Compress the payload entity, then sign the compressed entity (RFC 5402 preferred order).
    BeforeSigning,
    /// Sign, then compress the multipart/signed entity.
    AfterSigning,
}

from_words!(Compression: "none" | "" => None, "before" => BeforeSigning, "after" => AfterSigning);
from_words!(MdnMode: "none" | "" => None, "sync" => Sync, "async" => Async);

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

/// Which MDN to ask for, as a partner agreement names it: `none` (or empty), `sync` or `async`,
/// in any case. Where an asynchronous one goes and whether it is signed are separate settings
/// (the [`MdnRequest`] it becomes carries them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum MdnMode {
    None,
    Sync,
    Async,
}

impl MdnRequest {
    /// The MIC algorithm of a requested signed receipt, if one is requested.
    pub fn signed(&self) -> Option<DigestAlg> {
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
    let (signing, encryption) = checked(from_as2, to_as2, opts, signer, recipient, ids)?;

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
        let sig = cms::sign_detached(&content, key, cert, digest, &sign_options(opts))?;
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

    let mut headers = http_headers(from_as2, opts, ids, subject, to_as2, &mic)?;
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

/// The HTTP headers of a message before its outermost entity's own (Content-Type and so on).
fn http_headers(
    from_as2: &str,
    opts: &OutboundOptions,
    ids: &OutboundIds<'_>,
    subject: &str,
    to_as2: &str,
    mic: &Mic,
) -> Result<Vec<(String, String)>, OutboundError> {
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
    Ok(headers)
}

type Signing<'k> = Option<(DigestAlg, &'k PKey<Private>, &'k X509)>;
type Encryption<'k> = Option<(ContentCipher, &'k X509)>;

/// The checks every build makes first, and the keys the options call for.
fn checked<'k>(
    from_as2: &str,
    to_as2: &str,
    opts: &OutboundOptions,
    signer: Option<(&'k PKey<Private>, &'k X509)>,
    recipient: Option<&'k X509>,
    ids: &OutboundIds<'_>,
) -> Result<(Signing<'k>, Encryption<'k>), OutboundError> {
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
    Ok((signing, encryption))
}

fn sign_options(opts: &OutboundOptions) -> SignOptions {
    SignOptions {
        padding: if opts.pss { SignaturePadding::Pss } else { SignaturePadding::Pkcs1v15 },
        signed_attributes: true,
        algorithm_protection: opts.algorithm_protection,
        include_cert: true,
    }
}
