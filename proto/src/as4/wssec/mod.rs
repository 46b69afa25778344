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

mod sign;
mod verify;

use std::borrow::Cow;

use openssl::hash::{MessageDigest, hash};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use roxmltree::{Document, Node};
use serde::{Deserialize, Serialize};

use super::c14n::{self, ExcC14n};
use super::xml::{self, is, only_child};
use super::{As4Error, Limits, ns};
use crate::alg::DigestAlg;

pub(crate) use sign::{SignPart, envelope, sign_envelope};
pub use verify::verify;
pub(crate) use verify::verify_parsed;

pub(crate) const SWA_CONTENT_TRANSFORM: &str =
    "http://docs.oasis-open.org/wss/oasis-wss-SwAProfile-1.1#Attachment-Content-Signature-Transform";
pub(crate) const SWA_COMPLETE_TRANSFORM: &str =
    "http://docs.oasis-open.org/wss/oasis-wss-SwAProfile-1.1#Attachment-Complete-Signature-Transform";
pub(crate) const X509V3: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3";
pub(crate) const BASE64_BINARY: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary";

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

    pub(crate) fn from_uri(uri: &str) -> Option<SignatureMethod> {
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
pub(crate) fn digest_uri(d: DigestAlg) -> Option<&'static str> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
