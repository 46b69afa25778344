//! Keys and certificates for tests (proto's own, proto/tests, actors and the node's tests):
//! self-signed RSA identities with a fixed validity, so tests never read the clock for them.
//! Not part of the API.

use std::sync::OnceLock;

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::error::ErrorStack;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

/// A private key and its self-signed certificate.
pub type Identity = (PKey<Private>, X509);

/// A self-signed test certificate to make, with a fresh 2048-bit RSA key, signed with
/// SHA-256 ([`crate::profile::self_signed_identity`]). The one builder of test keys and
/// certificates in the workspace.
#[derive(Clone, Debug)]
pub struct TestCert<'a> {
    pub cn: &'a str,
    pub serial: u32,
    /// Validity, in Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// An IP address for the subjectAltName (a TLS server certificate).
    pub ip: Option<&'a str>,
}

impl<'a> TestCert<'a> {
    /// `CN=cn`, valid 2024-01-01 .. 2034-01-01 (so tests never read the clock for it).
    pub fn new(cn: &'a str, serial: u32) -> TestCert<'a> {
        TestCert { cn, serial, not_before: 1_704_067_200, not_after: 2_019_686_400, ip: None }
    }

    /// Valid from `not_before` to `not_after` (Unix seconds): one that expires soon, or has.
    pub fn valid(self, not_before: i64, not_after: i64) -> TestCert<'a> {
        TestCert { not_before, not_after, ..self }
    }

    /// With `ip` as its subjectAltName.
    pub fn ip(self, ip: &'a str) -> TestCert<'a> {
        TestCert { ip: Some(ip), ..self }
    }

    pub fn build(&self) -> Result<Identity, ErrorStack> {
        let serial = BigNum::from_u32(self.serial)?;
        let (not_before, not_after) = (Asn1Time::from_unix(self.not_before)?, Asn1Time::from_unix(self.not_after)?);
        crate::profile::self_signed_identity(self.cn, &serial, &not_before, &not_after, self.ip)
    }
}

/// A fresh 2048-bit RSA key with a self-signed SHA-256 certificate for `CN=cn`, valid
/// 2024-01-01 .. 2034-01-01.
pub fn self_signed(cn: &str, serial: u32) -> Result<Identity, ErrorStack> {
    TestCert::new(cn, serial).build()
}

#[allow(clippy::expect_used)] // test helper: a key that cannot be generated ends the test
fn cached(cell: &'static OnceLock<Identity>, cn: &str, serial: u32) -> &'static Identity {
    cell.get_or_init(|| self_signed(cn, serial).expect("generate a test identity"))
}

/// Our station (signs outbound messages and MDNs in the tests).
pub fn alice() -> &'static Identity {
    static ID: OnceLock<Identity> = OnceLock::new();
    cached(&ID, "alice", 1)
}

/// The partner (decrypts).
pub fn bob() -> &'static Identity {
    static ID: OnceLock<Identity> = OnceLock::new();
    cached(&ID, "bob", 2)
}

/// Someone nobody trusts.
pub fn carol() -> &'static Identity {
    static ID: OnceLock<Identity> = OnceLock::new();
    cached(&ID, "carol", 3)
}

/// A third-party capture from the shared fixtures directory (`EDINODE_FIXTURES`, by default
/// `../shared/fixtures` beside the workspace), e.g. `fixture("as2", "mecas2_signed.as2")`.
/// Panics with a hint when it is missing.
pub fn fixture(kind: &str, name: &str) -> Vec<u8> {
    let dir = std::env::var_os("EDINODE_FIXTURES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures").into());
    let path = dir.join(kind).join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!("fixture {} missing ({e}); set EDINODE_FIXTURES to the shared fixtures directory", path.display())
    })
}
