//! `[partners.X.outbound]`: how we send to a partner, checked and turned into its
//! [`OutboundProfile`](edinode_proto::profile::OutboundProfile).

use super::keys::{read, Secret};
use super::{err, ConfigError};
use edinode_proto::alg::{ContentCipher, DigestAlg};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// Signing digest ("sha256", ...; "none" to send unsigned).
    pub sign: String,
    /// RSASSA-PSS signatures (opt-in).
    pub pss: bool,
    /// RFC 6211 algorithm-protection attribute (off: IBM Sterling and DataPower reject it).
    pub algorithm_protection: bool,
    /// Content cipher ("3des", "aes128-cbc", "aes192-cbc", "aes256-cbc", "aes128-gcm",
    /// "aes256-gcm"; "none"). Default: aes256-cbc when the partner has an encryption certificate.
    pub encrypt: Option<String>,
    /// RSA-OAEP key transport (opt-in).
    pub oaep: bool,
    /// "none", "before" (compress, then sign) or "after" (sign, then compress).
    pub compress: String,
    /// "none", "sync" or "async".
    pub mdn: String,
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
    pub on_mdn_timeout: String,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            sign: "sha256".into(),
            pss: false,
            algorithm_protection: false,
            encrypt: None,
            oaep: false,
            compress: "none".into(),
            mdn: "sync".into(),
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
            on_mdn_timeout: "fail".into(),
        }
    }
}

pub(super) fn outbound_profile(src: &str, key: &str, o: &OutboundConfig, has_enc_cert: bool, public_url: &str) -> Result<edinode_proto::profile::OutboundProfile, ConfigError> {
    use edinode_proto::alg::KeyTransport;
    use edinode_proto::outbound::{Compression, MdnRequest, OutboundOptions};
    use edinode_proto::profile::{HttpProfile, OnMdnTimeout, OutboundProfile};
    let k = |f: &str| format!("{key}.outbound.{f}");
    let off = |v: &str| v.is_empty() || v.eq_ignore_ascii_case("none");
    let sign = if off(&o.sign) { None } else { Some(DigestAlg::parse(&o.sign).ok_or_else(|| err(src, k("sign"), format!("unknown digest {}", o.sign)))?) };
    let encrypt = match &o.encrypt {
        None if has_enc_cert => Some(ContentCipher::Aes256Cbc),
        None => None,
        Some(v) if off(v) => None,
        Some(v) => Some(ContentCipher::parse(v).ok_or_else(|| err(src, k("encrypt"), format!("unknown cipher {v}")))?),
    };
    if encrypt.is_some() && !has_enc_cert {
        return Err(err(src, k("encrypt"), "encryption needs the partner's encryption_cert"));
    }
    let compression = match o.compress.to_ascii_lowercase().as_str() {
        "" | "none" => Compression::None,
        "before" => Compression::BeforeSigning,
        "after" => Compression::AfterSigning,
        v => return Err(err(src, k("compress"), format!("{v}: expected none, before or after"))),
    };
    let micalg = if o.mdn_signed { Some(sign.unwrap_or(DigestAlg::Sha256)) } else { None };
    let mdn = match o.mdn.to_ascii_lowercase().as_str() {
        "" | "none" => MdnRequest::None,
        "sync" => MdnRequest::Sync { signed: micalg },
        "async" => {
            let url = o.async_mdn_url.clone().unwrap_or_else(|| public_url.to_string());
            if url.is_empty() {
                return Err(err(src, k("async_mdn_url"), "an asynchronous MDN needs our public URL (here or http.public_url)"));
            }
            MdnRequest::Async { url, signed: micalg }
        }
        v => return Err(err(src, k("mdn"), format!("{v}: expected none, sync or async"))),
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
    let on_mdn_timeout = match o.on_mdn_timeout.as_str() {
        "fail" => OnMdnTimeout::Fail,
        "resend" => OnMdnTimeout::Resend,
        v => return Err(err(src, k("on_mdn_timeout"), format!("{v}: expected fail or resend"))),
    };
    Ok(OutboundProfile {
        options: OutboundOptions {
            sign,
            pss: o.pss,
            algorithm_protection: o.algorithm_protection,
            encrypt,
            key_transport: if o.oaep { KeyTransport::RsaOaep } else { KeyTransport::RsaPkcs1v15 },
            compression,
            mdn,
            ..OutboundOptions::default()
        },
        require_signed_mdn: o.require_signed_mdn,
        strict_mic: o.strict_mic,
        http: HttpProfile { timeout_secs: o.timeout_secs.max(1), chunked: o.chunked, basic_auth, ca_pem, client_identity_pem },
        attempts: o.attempts.max(1),
        retry_base_ms: o.retry_base_ms,
        mdn_deadline_secs: o.mdn_deadline_secs,
        on_mdn_timeout,
    })
}
