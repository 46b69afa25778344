//! Key pairs and certificates named in the configuration, read from their files, and
//! [`Secret`] (a password or key that is never printed).

use super::{err, ConfigError};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A key pair given as PEM files (key and cert may be the same file) or as PKCS#12.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct KeyPairConfig {
    pub key: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub pkcs12: Option<PathBuf>,
    /// Password of the PKCS#12 file or of an encrypted PEM key.
    pub password: Option<Secret>,
}

/// A password or key in the configuration: deserialized as a plain string, never printed.
#[derive(Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

pub(super) fn read(src: &str, key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| err(src, key, format!("cannot read {}: {e}", path.display())))
}

pub(super) fn load_cert(src: &str, key: &str, path: &Path) -> Result<X509, ConfigError> {
    let b = read(src, key, path)?;
    X509::from_pem(&b).or_else(|_| X509::from_der(&b)).map_err(|e| err(src, key, format!("{} is not a PEM or DER certificate: {e}", path.display())))
}

pub(super) fn load_pair(src: &str, key: &str, kp: &KeyPairConfig) -> Result<(PKey<Private>, X509), ConfigError> {
    if let Some(p12) = &kp.pkcs12 {
        let b = read(src, key, p12)?;
        let pass = kp.password.as_ref().map(|p| p.expose().to_string()).unwrap_or_default();
        let parsed = openssl::pkcs12::Pkcs12::from_der(&b)
            .and_then(|p| p.parse2(&pass))
            .map_err(|e| err(src, format!("{key}.pkcs12"), format!("cannot open {}: {e} (wrong password, or RC2 encryption OpenSSL 3 refuses)", p12.display())))?;
        let (Some(k), Some(c)) = (parsed.pkey, parsed.cert) else {
            return Err(err(src, format!("{key}.pkcs12"), "needs both a private key and a certificate"));
        };
        return Ok((k, c));
    }
    let (Some(kpath), Some(cpath)) = (&kp.key, kp.cert.as_ref().or(kp.key.as_ref())) else {
        return Err(err(src, key, "needs `key` and `cert` (PEM) or `pkcs12`"));
    };
    let kb = read(src, &format!("{key}.key"), kpath)?;
    let k = match &kp.password {
        Some(p) => PKey::private_key_from_pem_passphrase(&kb, p.expose().as_bytes()),
        None => PKey::private_key_from_pem(&kb),
    }
    .map_err(|e| err(src, format!("{key}.key"), format!("{} holds no usable private key: {e}", kpath.display())))?;
    let c = load_cert(src, &format!("{key}.cert"), cpath)?;
    if !c.public_key().map(|pk| pk.public_eq(&k)).unwrap_or(false) {
        return Err(err(src, key, "the certificate does not match the private key"));
    }
    Ok((k, c))
}
