//! CMS (RFC 5652) for AS2: enveloped / auth-enveloped data, detached and embedded signed data,
//! and RFC 3274 compressed data.
//!
//! Encryption and signatures go through OpenSSL (the `openssl` crate, plus a handful of
//! `extern "C"` declarations in the private [`ffi`] module for what the crate does not wrap:
//! RSA-OAEP key transport, an explicit signing digest, RSASSA-PSS, attribute editing).
//! Compressed data ([`compressed`]): OpenSSL reads the CompressedData structure (DER, or the BER
//! with indefinite lengths and chunked OCTET STRINGs that BouncyCastle-based partners such as
//! Mendelson send), but Debian's OpenSSL has no zlib for CMS: the inflate is ours, bounded, and
//! the structure we send is written with the small DER writer below.
//!
//! Modules: [`enveloped`], [`signed`], [`compressed`], [`ffi`] (raw OpenSSL calls), [`ber`] (a
//! bounded BER reader for the checks made before OpenSSL reads a structure), [`rfc4055`].
//!
//! RSASSA-PSS and RSAES-OAEP identifiers written without their parameters get them supplied
//! first ([`rfc4055`]).
//!
//! Everything that reads input is written for an attacker's bytes: no panics, bounded nesting,
//! no length trusted beyond the input, and a hard output limit on decompression.

use openssl::cms::CmsContentInfo;
use openssl::error::ErrorStack;
use openssl::x509::X509NameRef;

pub use compressed::{compress, decompress};
pub(crate) use compressed::compressed_prefix;
pub use enveloped::{decrypt, encrypt};
pub(crate) use enveloped::{decrypt_owned, Encryptor};
pub use signed::{sign_detached, SignOptions, Verified};
pub(crate) use signed::{signer_digests, verify_detached, verify_detached_digests, verify_embedded, DetachedSigner};

pub(crate) mod ber;
mod compressed;
mod enveloped;
mod ffi;
mod rfc4055;
mod signed;
mod stream;
#[cfg(test)]
mod tests;

/// Why a CMS operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CmsError {
    /// Not parseable CMS / BER.
    #[error("malformed CMS: {0}")]
    Malformed(String),
    /// No key opens it, or the content decryption failed.
    #[error("decryption failed: {0}")]
    Decrypt(String),
    /// Bad signature.
    #[error("signature invalid: {0}")]
    SignatureInvalid(String),
    /// The signature over the signed attributes holds, but their messageDigest does not match
    /// the content: the content was altered on the way (an integrity failure, not an
    /// authentication one).
    #[error("signature invalid: {0}")]
    ContentAltered(String),
    /// Signed by a certificate not in the trusted list.
    #[error("unknown signer: {0}")]
    UnknownSigner(String),
    /// Bad zlib data or unsupported compression algorithm.
    #[error("decompression failed: {0}")]
    Decompress(String),
    /// Decompressed output over the limit.
    #[error("decompressed data exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Other failure while building.
    #[error("openssl: {0}")]
    Openssl(String),
}

/// The outer ContentInfo's contentType.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmsKind {
    Enveloped,
    AuthEnveloped,
    Signed,
    Compressed,
    Data,
    /// Any other content type, as a dotted OID.
    Other(String),
}

// OIDs (dotted, and DER content bytes where we write them).
const OID_DATA: &str = "1.2.840.113549.1.7.1";
const OID_SIGNED: &str = "1.2.840.113549.1.7.2";
const OID_ENVELOPED: &str = "1.2.840.113549.1.7.3";
const OID_AUTH_ENVELOPED: &str = "1.2.840.113549.1.9.16.1.23";
const OID_COMPRESSED: &str = "1.2.840.113549.1.9.16.1.9";
const OID_RSASSA_PSS: &str = "1.2.840.113549.1.1.10";
const OID_PKCS1_PREFIX: &str = "1.2.840.113549.1.1.";
/// RFC 6211 id-aa-CMSAlgorithmProtection.
const OID_ALG_PROTECTION: &str = "1.2.840.113549.1.9.52";

const DER_OID_DATA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x01];
const DER_OID_COMPRESSED: &[u8] = &[
    0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x10, 0x01, 0x09,
];
const DER_OID_ZLIB: &[u8] = &[
    0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x10, 0x03, 0x08,
];

/// Reads the outer ContentInfo's contentType. Accepts DER and BER (indefinite lengths); only
/// the outer header and the OID are read.
pub fn kind(der: &[u8]) -> Result<CmsKind, CmsError> {
    // Only a prefix may be at hand (the head of a large stored entity): the outer length is not
    // checked against it.
    let outer = ber::read_header_prefix(der)
        .map_err(CmsError::Malformed)?
        .ok_or_else(|| CmsError::Malformed("truncated ContentInfo".into()))?;
    if !outer.is_universal(true, ber::TAG_SEQUENCE) {
        return Err(CmsError::Malformed("ContentInfo is not a SEQUENCE".into()));
    }
    let body = &der[outer.header_len..];
    let (oid, _) = ber::read(body, 1).map_err(CmsError::Malformed)?;
    if !oid.is_universal(false, ber::TAG_OID) {
        return Err(CmsError::Malformed(
            "ContentInfo.contentType is not an OID".into(),
        ));
    }
    let oid = ber::oid_to_string(oid.content).map_err(CmsError::Malformed)?;
    Ok(match oid.as_str() {
        OID_ENVELOPED => CmsKind::Enveloped,
        OID_AUTH_ENVELOPED => CmsKind::AuthEnveloped,
        OID_SIGNED => CmsKind::Signed,
        OID_COMPRESSED => CmsKind::Compressed,
        OID_DATA => CmsKind::Data,
        _ => CmsKind::Other(oid),
    })
}


// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

fn parse(der: &[u8]) -> Result<CmsContentInfo, CmsError> {
    CmsContentInfo::from_der(der).map_err(|e| CmsError::Malformed(e.to_string()))
}

fn openssl_err(e: ErrorStack) -> CmsError {
    CmsError::Openssl(e.to_string())
}

/// The OpenSSL errors queued by a failed raw call (drains the thread's queue).
fn last_openssl_error(what: &str) -> CmsError {
    CmsError::Openssl(format!("{what}: {}", ErrorStack::get()))
}

fn name_to_string(name: &X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().unwrap_or_else(|_| "?".to_string());
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Minimal DER writer (definite lengths) for the structures we build ourselves.
mod der {
    pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = header(tag, content.len() as u64);
        out.extend_from_slice(content);
        out
    }

    /// A definite-length header for `len` content octets.
    pub fn header(tag: u8, len: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(10);
        out.push(tag);
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            let significant = &bytes[skip..];
            out.push(0x80 | significant.len() as u8);
            out.extend_from_slice(significant);
        }
        out
    }
}

/// A certificate's subject, for messages.
pub(crate) fn subject_string(cert: &openssl::x509::X509) -> String {
    name_to_string(cert.subject_name())
}
