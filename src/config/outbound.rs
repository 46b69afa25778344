//! `[partners.X.outbound]`: how we send to a partner, checked and turned into its
//! [`OutboundProfile`](edinode_proto::profile::OutboundProfile).
//!
//! The table is flat while the profile is nested (build options, HTTP, retries), and several keys
//! are not the profile's values yet: file names (`ca_cert`, `client_cert`, `client_key`), keys
//! that only mean something together (`mdn` with `mdn_signed`, `async_mdn_url` and `sign`; the
//! basic-auth pair) and defaults taken from elsewhere (the cipher when the partner has an
//! encryption certificate, http.public_url). So it is read into [`OutboundConfig`], whose keys
//! already have proto's types, and [`outbound_profile`] resolves the rest.

use super::keys::{read, Secret};
use super::{err, ConfigError};
use edinode_proto::alg::{ContentCipher, DigestAlg, KeyTransport};
use edinode_proto::outbound::{Compression, MdnMode, MdnRequest, OutboundOptions};
use edinode_proto::profile::{HttpProfile, OnMdnTimeout, OutboundProfile};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// Signing digest ("sha256", ..., any spelling; "none" to send unsigned).
    #[serde(deserialize_with = "off_or")]
    pub sign: Option<DigestAlg>,
    /// RSASSA-PSS signatures (opt-in).
    pub pss: bool,
    /// RFC 6211 algorithm-protection attribute (off: IBM Sterling and DataPower reject it).
    pub algorithm_protection: bool,
    /// Content cipher ("3des", "aes128-cbc", "aes192-cbc", "aes256-cbc", "aes128-gcm",
    /// "aes256-gcm"; "none"). Absent: aes256-cbc when the partner has an encryption certificate.
    #[serde(deserialize_with = "present_off_or")]
    pub encrypt: Option<Option<ContentCipher>>,
    /// RSA-OAEP key transport (opt-in).
    pub oaep: bool,
    /// "none", "before" (compress, then sign) or "after" (sign, then compress).
    pub compress: Compression,
    /// "none", "sync" or "async".
    pub mdn: MdnMode,
    /// Ask for a signed MDN.
    pub mdn_signed: bool,
    /// Where asynchronous MDNs should be sent (our public /as2 URL); default http.public_url.
    pub async_mdn_url: Option<String>,
    /// Refuse unsigned MDNs.
    pub require_signed_mdn: bool,
    /// For unsigned messages, accept only the Received-Content-MIC of RFC 4130 section 7.3.1.
    /// Off: the bases other products use (the payload entity with its headers, decompressed,
    /// the document alone, another algorithm than asked) are accepted with a note in the status.
    pub strict_mic: bool,
    pub timeout_secs: u64,
    /// Chunked transfer encoding instead of Content-Length.
    pub chunked: bool,
    pub basic_auth_user: Option<String>,
    pub basic_auth_password: Option<Secret>,
    /// Extra CA certificate (PEM) for the partner's HTTPS.
    pub ca_cert: Option<PathBuf>,
    /// Our TLS client certificate and key (PEM).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Attempts for transport errors and 5xx.
    pub attempts: u32,
    pub retry_base_ms: u64,
    /// Deadline for an asynchronous MDN.
    pub mdn_deadline_secs: u64,
    /// "fail" or "resend" when the asynchronous MDN is late.
    pub on_mdn_timeout: OnMdnTimeout,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            sign: Some(DigestAlg::Sha256),
            pss: false,
            algorithm_protection: false,
            encrypt: None,
            oaep: false,
            compress: Compression::None,
            mdn: MdnMode::Sync,
            mdn_signed: true,
            async_mdn_url: None,
            require_signed_mdn: false,
            strict_mic: false,
            timeout_secs: 60,
            chunked: false,
            basic_auth_user: None,
            basic_auth_password: None,
            ca_cert: None,
            client_cert: None,
            client_key: None,
            attempts: 6,
            retry_base_ms: 2000,
            mdn_deadline_secs: 3600,
            on_mdn_timeout: OnMdnTimeout::Fail,
        }
    }
}

/// "none" (or empty, in any case) for off, else what `T` reads from the name.
fn off_or<'de, D: Deserializer<'de>, T: TryFrom<String, Error = String>>(d: D) -> Result<Option<T>, D::Error> {
    let v = String::deserialize(d)?;
    if v.is_empty() || v.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    T::try_from(v).map(Some).map_err(|e| D::Error::custom(format!("{e}, or none")))
}

/// [`off_or`] for a key whose absence means something else than "none".
fn present_off_or<'de, D: Deserializer<'de>, T: TryFrom<String, Error = String>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    off_or(d).map(Some)
}

pub(super) fn outbound_profile(src: &str, key: &str, o: &OutboundConfig, has_enc_cert: bool, public_url: &str) -> Result<OutboundProfile, ConfigError> {
    let k = |f: &str| format!("{key}.outbound.{f}");
    let encrypt = o.encrypt.unwrap_or(has_enc_cert.then_some(ContentCipher::Aes256Cbc));
    if encrypt.is_some() && !has_enc_cert {
        return Err(err(src, k("encrypt"), "encryption needs the partner's encryption_cert"));
    }
    let micalg = if o.mdn_signed { Some(o.sign.unwrap_or(DigestAlg::Sha256)) } else { None };
    let mdn = match o.mdn {
        MdnMode::None => MdnRequest::None,
        MdnMode::Sync => MdnRequest::Sync { signed: micalg },
        MdnMode::Async => {
            let url = o.async_mdn_url.clone().unwrap_or_else(|| public_url.to_string());
            if url.is_empty() {
                return Err(err(src, k("async_mdn_url"), "an asynchronous MDN needs our public URL (here or http.public_url)"));
            }
            MdnRequest::Async { url, signed: micalg }
        }
    };
    let read_opt = |f: &str, p: &Option<PathBuf>| -> Result<Option<Vec<u8>>, ConfigError> { p.as_ref().map(|p| read(src, &k(f), p)).transpose() };
    let ca_pem = read_opt("ca_cert", &o.ca_cert)?;
    let client_identity_pem = match (read_opt("client_key", &o.client_key)?, read_opt("client_cert", &o.client_cert)?) {
        (Some(mut key), Some(cert)) => {
            key.extend_from_slice(b"\n");
            key.extend_from_slice(&cert);
            Some(key)
        }
        (None, None) => None,
        _ => return Err(err(src, k("client_cert"), "client_cert and client_key go together")),
    };
    let basic_auth = match (&o.basic_auth_user, &o.basic_auth_password) {
        (Some(u), p) => Some((u.clone(), p.as_ref().map(|p| p.expose().to_string()).unwrap_or_default())),
        (None, None) => None,
        (None, Some(_)) => return Err(err(src, k("basic_auth_user"), "basic_auth_password without a user")),
    };
    Ok(OutboundProfile {
        options: OutboundOptions {
            sign: o.sign,
            pss: o.pss,
            algorithm_protection: o.algorithm_protection,
            encrypt,
            key_transport: if o.oaep { KeyTransport::RsaOaep } else { KeyTransport::RsaPkcs1v15 },
            compression: o.compress,
            mdn,
            ..OutboundOptions::default()
        },
        require_signed_mdn: o.require_signed_mdn,
        strict_mic: o.strict_mic,
        http: HttpProfile { timeout_secs: o.timeout_secs.max(1), chunked: o.chunked, basic_auth, ca_pem, client_identity_pem },
        attempts: o.attempts.max(1),
        retry_base_ms: o.retry_base_ms,
        mdn_deadline_secs: o.mdn_deadline_secs,
        on_mdn_timeout: o.on_mdn_timeout,
    })
}
