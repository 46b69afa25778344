//! Enveloped / AuthEnveloped data: decrypt (any key that opens it) and encrypt.

use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::X509;

use super::{ffi, kind, name_to_string, openssl_err, parse, rfc4055, CmsError, CmsKind};
use crate::alg::{ContentCipher, KeyTransport};

/// Decrypts an EnvelopedData (3DES, AES-CBC) or AuthEnvelopedData (AES-GCM), RSA PKCS#1 v1.5
/// or RSA-OAEP key transport, DER or BER. Each key pair is tried in turn; OpenSSL only uses a
/// key for the RecipientInfo that names its certificate (issuer+serial or subject key id).
pub fn decrypt(der: &[u8], keys: &[(PKey<Private>, X509)]) -> Result<Vec<u8>, CmsError> {
    match kind(der)? {
        CmsKind::Enveloped | CmsKind::AuthEnveloped => {}
        other => {
            return Err(CmsError::Unsupported(format!(
                "expected enveloped-data, got {other:?}"
            )));
        }
    }
    if keys.is_empty() {
        return Err(CmsError::Decrypt("no decryption keys configured".into()));
    }
    // RSAES-OAEP without parameters (pyas2lib): the RFC 4055 defaults.
    let fixed = rfc4055::supply_params(der, |_, _| None)?;
    let der = fixed.as_deref().unwrap_or(der);
    // The first parse also reports a broken structure as such.
    let mut first = Some(parse(der)?);
    let mut failures = Vec::new();
    for (key, cert) in keys {
        // A fresh structure per attempt: a failed CMS_decrypt may leave state behind.
        let cms = match first.take() {
            Some(c) => c,
            None => parse(der)?,
        };
        match cms.decrypt(key, cert) {
            Ok(plain) => return Ok(plain),
            Err(e) => failures.push(format!("[{}] {e}", name_to_string(cert.subject_name()))),
        }
    }
    Err(CmsError::Decrypt(failures.join("; ")))
}

/// Like [`decrypt`], taking the DER by value: with one key pair the input is freed as soon as
/// it is parsed, so a large message is not held three times (input, structure, output).
pub(crate) fn decrypt_owned(der: Vec<u8>, keys: &[(PKey<Private>, X509)]) -> Result<Vec<u8>, CmsError> {
    if keys.len() != 1 {
        return decrypt(&der, keys);
    }
    match kind(&der)? {
        CmsKind::Enveloped | CmsKind::AuthEnveloped => {}
        other => return Err(CmsError::Unsupported(format!("expected enveloped-data, got {other:?}"))),
    }
    let der = match rfc4055::supply_params(&der, |_, _| None)? {
        Some(fixed) => fixed,
        None => der,
    };
    let cms = parse(&der)?;
    drop(der);
    let (key, cert) = &keys[0];
    cms.decrypt(key, cert).map_err(|e| CmsError::Decrypt(format!("[{}] {e}", name_to_string(cert.subject_name()))))
}

/// Encrypts `data` for `recipient` into a DER EnvelopedData (CBC ciphers) or AuthEnvelopedData
/// (AES-GCM). The content is taken as binary (no CRLF conversion).
pub fn encrypt(
    data: &[u8],
    recipient: &X509,
    cipher: ContentCipher,
    kt: KeyTransport,
) -> Result<Vec<u8>, CmsError> {
    let c = cipher.cipher();
    match kt {
        KeyTransport::RsaPkcs1v15 => {
            let mut certs = Stack::new().map_err(openssl_err)?;
            certs.push(recipient.clone()).map_err(openssl_err)?;
            let cms = CmsContentInfo::encrypt(&certs, data, c, CMSOptions::BINARY)
                .map_err(openssl_err)?;
            cms.to_der().map_err(openssl_err)
        }
        KeyTransport::RsaOaep => {
            let certs = Stack::new().map_err(openssl_err)?;
            let cms =
                CmsContentInfo::encrypt(&certs, &[], c, CMSOptions::BINARY | CMSOptions::PARTIAL)
                    .map_err(openssl_err)?;
            ffi::add_oaep_recipient(&cms, recipient)?;
            ffi::finalize(&cms, data, ffi::CMS_BINARY)?;
            cms.to_der().map_err(openssl_err)
        }
    }
}

/// [`encrypt`] for content that arrives in pieces: the same structure (for the same key and
/// IV), written as indefinite-length BER with the content in chunks as it is encrypted.
pub(crate) struct Encryptor(super::stream::ContentStream);

impl Encryptor {
    pub fn new(recipient: &X509, cipher: ContentCipher, kt: KeyTransport) -> Result<Encryptor, CmsError> {
        let flags = CMSOptions::BINARY | CMSOptions::PARTIAL | CMSOptions::STREAM;
        let none = Stack::new().map_err(openssl_err)?;
        let cms = CmsContentInfo::encrypt(&none, &[], cipher.cipher(), flags).map_err(openssl_err)?;
        match kt {
            KeyTransport::RsaPkcs1v15 => ffi::add_recipient(&cms, recipient)?,
            KeyTransport::RsaOaep => ffi::add_oaep_recipient(&cms, recipient)?,
        }
        Ok(Encryptor(super::stream::ContentStream::encode(cms)?))
    }

    /// Encrypts a piece; appends the encoding produced so far.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), CmsError> {
        self.0.write(data, out)
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), CmsError> {
        self.0.finish(out)
    }
}
