//! Stations (our AS2 identities) and partners, with their keys loaded: what the actors consult.

use crate::alg::{ContentCipher, DigestAlg, MicSpelling, SignaturePadding};
use openssl::asn1::Asn1TimeRef;
use openssl::bn::BigNumRef;
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509, X509Builder, X509NameBuilder};
use serde::{Deserialize, Deserializer};
use std::collections::HashMap;

/// A fresh 2048-bit RSA key and a self-signed SHA-256 certificate for `CN=cn`: a new
/// station's identity (`edinode init`) and the test identities (`testing::TestCert`). `ip`,
/// when given, is the certificate's subjectAltName (a TLS server's).
pub fn self_signed_identity(
    cn: &str,
    serial: &BigNumRef,
    not_before: &Asn1TimeRef,
    not_after: &Asn1TimeRef,
    ip: Option<&str>,
) -> Result<(PKey<Private>, X509), ErrorStack> {
    let key = PKey::from_rsa(Rsa::generate(2048)?)?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", cn)?;
    let name = name.build();
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let serial = serial.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(&key)?;
    b.set_not_before(not_before)?;
    b.set_not_after(not_after)?;
    if let Some(ip) = ip {
        let san = SubjectAlternativeName::new().ip(ip).build(&b.x509v3_context(None, None))?;
        b.append_extension(san)?;
    }
    b.sign(&key, MessageDigest::sha256())?;
    Ok((key, b.build()))
}

/// One of our AS2 identities.
#[derive(Clone)]
pub struct Station {
    pub name: String,
    pub as2_id: String,
    pub signing_key: PKey<Private>,
    pub signing_cert: X509,
    /// Decryption key pairs, tried in order (rollover).
    pub decryption: Vec<(PKey<Private>, X509)>,
}

/// What we require of a partner's messages and how we answer: `[partners.X.policy]` of the
/// configuration, read as it is (absent keys take [`Policy::default`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub require_signed: bool,
    pub require_encrypted: bool,
    /// Digests accepted on signatures, in any spelling (empty: all).
    pub accepted_digests: Vec<DigestAlg>,
    /// Ciphers accepted (informational for inbound: OpenSSL reports none; used outbound).
    pub accepted_ciphers: Vec<ContentCipher>,
    /// Spelling of MIC algorithm names in our MDNs: rfc5751 (default), compact or hyphenated.
    pub mic_spelling: MicSpelling,
    /// Sign MDNs with RSASSA-PSS: the key `pss` (true or false).
    #[serde(rename = "pss", deserialize_with = "pss_flag")]
    pub mdn_padding: SignaturePadding,
    /// Add the RFC 6211 algorithm-protection attribute to our signatures (off: IBM Sterling
    /// rejects it).
    pub algorithm_protection: bool,
    /// `binary_mic` of older configurations, accepted (true or false) and without effect: the
    /// MIC of an unsigned message is over the bytes as received (RFC 4130 section 7.3.1), never
    /// canonicalized.
    #[serde(rename = "binary_mic", deserialize_with = "ignored_flag")]
    pub binary_mic: (),
}

fn pss_flag<'de, D: Deserializer<'de>>(d: D) -> Result<SignaturePadding, D::Error> {
    Ok(if bool::deserialize(d)? { SignaturePadding::Pss } else { SignaturePadding::Pkcs1v15 })
}

fn ignored_flag<'de, D: Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    bool::deserialize(d).map(drop)
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            require_signed: false,
            require_encrypted: false,
            accepted_digests: vec![],
            accepted_ciphers: vec![],
            mic_spelling: MicSpelling::Rfc5751,
            mdn_padding: SignaturePadding::Pkcs1v15,
            algorithm_protection: false,
            binary_mic: (),
        }
    }
}

/// What to do when an asynchronous MDN does not arrive in time: `fail` or `resend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum OnMdnTimeout {
    /// Count the message as failed and report it.
    #[default]
    Fail,
    /// Send it again (same Message-ID, so the partner can recognise the duplicate).
    Resend,
}

from_words!(OnMdnTimeout: "fail" => Fail, "resend" => Resend);

/// How we reach a partner over HTTP.
#[derive(Clone, Default)]
pub struct HttpProfile {
    pub timeout_secs: u64,
    /// Send with chunked transfer encoding instead of Content-Length (never both).
    pub chunked: bool,
    pub basic_auth: Option<(String, String)>,
    /// Extra CA certificates (PEM) to trust for the partner's HTTPS.
    pub ca_pem: Option<Vec<u8>>,
    /// Our TLS client identity (PEM key + certificate).
    pub client_identity_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for HttpProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The basic-auth password and our TLS client key are never printed.
        f.debug_struct("HttpProfile")
            .field("timeout_secs", &self.timeout_secs)
            .field("chunked", &self.chunked)
            .field("basic_auth_user", &self.basic_auth.as_ref().map(|(u, _)| u))
            .field("ca_pem", &self.ca_pem.is_some())
            .field("client_identity", &self.client_identity_pem.is_some())
            .finish()
    }
}

/// Where a partner may receive asynchronous MDNs from us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MdnUrlPolicy {
    /// Allowed URL prefixes (lower-cased scheme and host); empty: none.
    pub prefixes: Vec<String>,
    /// Host names may resolve to loopback, link-local or private addresses.
    pub private_ok: bool,
}

/// One allowed prefix, parsed: scheme, host and port must equal; the path must start with
/// `path`.
struct UrlPrefix {
    scheme: String,
    host: String,
    /// None: any port (written `host:*`).
    port: Option<u16>,
    path: String,
}

fn parse_prefix(p: &str) -> Option<UrlPrefix> {
    let any_port = p.contains(":*");
    let u = url::Url::parse(&p.replacen(":*", "", 1)).ok()?;
    Some(UrlPrefix {
        scheme: u.scheme().to_string(),
        host: u.host_str()?.to_ascii_lowercase(),
        port: if any_port { None } else { u.port_or_known_default() },
        path: u.path().to_string(),
    })
}

/// Where an asynchronous MDN would go, once its URL passed the partner's allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MdnTarget {
    /// An IP address written in the URL (and so in the allow-list).
    Ip(std::net::IpAddr),
    /// A host name: resolve it, and refuse internal addresses unless `private_ok`.
    Name { host: String, port: u16, private_ok: bool },
}

impl MdnUrlPolicy {
    /// The policy of a partner: explicit prefixes, or the scheme, host and port of its URL.
    pub fn new(prefixes: &[String], partner_url: Option<&str>, private_ok: bool) -> MdnUrlPolicy {
        let prefixes = if prefixes.is_empty() {
            partner_url
                .and_then(|u| url::Url::parse(u).ok())
                .and_then(|u| Some(format!("{}://{}:{}/", u.scheme(), u.host_str()?, u.port_or_known_default()?)))
                .into_iter()
                .collect()
        } else {
            prefixes.to_vec()
        };
        MdnUrlPolicy { prefixes, private_ok }
    }

    /// Whether `prefix` is a usable allow-list entry (for configuration checks).
    pub fn valid_prefix(prefix: &str) -> bool {
        parse_prefix(prefix).is_some_and(|p| p.scheme == "http" || p.scheme == "https")
    }

    /// Check an asynchronous MDN URL (Receipt-Delivery-Option) against the allow-list.
    pub fn check(&self, url: &str) -> Result<MdnTarget, String> {
        let u = url::Url::parse(url.trim()).map_err(|e| format!("not a URL: {e}"))?;
        if u.scheme() != "http" && u.scheme() != "https" {
            return Err("only http and https URLs are supported".into());
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err("credentials in the URL are not accepted".into());
        }
        let host = match u.host() {
            Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => format!("[{a}]"),
            None => return Err("the URL has no host".into()),
        };
        let port = u.port_or_known_default().ok_or("the URL has no port")?;
        let allowed = self.prefixes.iter().filter_map(|p| parse_prefix(p)).any(|p| {
            p.scheme == u.scheme() && p.host == host && p.port.is_none_or(|pp| pp == port) && u.path().starts_with(&p.path)
        });
        if !allowed {
            return Err("the URL is not among the partner's agreed MDN addresses".into());
        }
        Ok(match u.host() {
            Some(url::Host::Ipv4(a)) => MdnTarget::Ip(a.into()),
            Some(url::Host::Ipv6(a)) => MdnTarget::Ip(a.into()),
            _ => MdnTarget::Name { host, port, private_ok: self.private_ok },
        })
    }
}

/// Loopback, private, link-local, shared (CGNAT), unspecified, multicast or broadcast: an
/// address a host name from a partner must not lead us to.
pub fn is_internal(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_multicast()
                || a.is_broadcast()
                || a.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let s = a.segments();
            a.is_loopback() || a.is_unspecified() || a.is_multicast() || (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

/// How we send to a partner (its defaults are those of `[partners.X.outbound]` in the node's
/// configuration).
#[derive(Debug, Clone)]
pub struct OutboundProfile {
    pub options: crate::outbound::OutboundOptions,
    /// The MDN must be signed by one of the partner's certificates.
    pub require_signed_mdn: bool,
    /// Accept only the RFC 4130 MIC for unsigned messages (see `unwrap::mic`).
    pub strict_mic: bool,
    pub http: HttpProfile,
    /// Attempts for transport errors and 5xx before the message fails.
    pub attempts: u32,
    pub retry_base_ms: u64,
    /// How long to wait for an asynchronous MDN.
    pub mdn_deadline_secs: u64,
    pub on_mdn_timeout: OnMdnTimeout,
}

/// A trading partner.
#[derive(Clone)]
pub struct Partner {
    pub name: String,
    pub as2_id: String,
    /// The station name this partner talks to.
    pub station: String,
    /// Certificates that may verify the partner's signatures (several during rollover).
    pub verify_certs: Vec<X509>,
    pub encryption_cert: Option<X509>,
    pub url: Option<String>,
    /// Where asynchronous MDNs for this partner may go.
    pub mdn_urls: MdnUrlPolicy,
    pub policy: Policy,
    pub test: bool,
    pub outbound: OutboundProfile,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mdn_urls_default_to_the_partner_url_host() {
        let p = MdnUrlPolicy::new(&[], Some("https://as2.partner.example:8443/as2/in"), false);
        assert!(matches!(p.check("https://as2.partner.example:8443/mdn?x=1"), Ok(MdnTarget::Name { .. })));
        assert!(p.check("http://as2.partner.example:8443/mdn").is_err(), "scheme must match");
        assert!(p.check("https://as2.partner.example/mdn").is_err(), "port must match");
        assert!(p.check("https://as2.partner.example.evil.org:8443/").is_err(), "host must be equal, not a prefix");
        assert!(p.check("https://user:pw@as2.partner.example:8443/").is_err());
        assert!(MdnUrlPolicy::new(&[], None, false).check("https://x/").is_err(), "no url, no allow-list: nothing");
    }

    #[test]
    fn mdn_url_prefixes_match_paths_and_wildcard_ports() {
        let p = MdnUrlPolicy::new(&["http://127.0.0.1:*/as2/".into(), "https://mdn.example/in".into()], None, false);
        assert_eq!(p.check("http://127.0.0.1:4711/as2/mdn").unwrap(), MdnTarget::Ip("127.0.0.1".parse().unwrap()));
        assert!(p.check("http://127.0.0.1:4711/admin").is_err());
        assert!(p.check("http://127.0.0.2:4711/as2/").is_err());
        assert!(p.check("https://mdn.example/in/x").is_ok());
        assert!(p.check("https://MDN.example:443/in").is_ok());
        assert!(p.check("ftp://mdn.example/in").is_err());
        assert!(MdnUrlPolicy::valid_prefix("http://127.0.0.1:*/"));
        assert!(!MdnUrlPolicy::valid_prefix("mailto:x@y"));
    }

    #[test]
    fn internal_addresses() {
        for a in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1", "fe80::1", "fd00::1", "::ffff:10.0.0.1", "224.0.0.1"] {
            assert!(is_internal(a.parse().unwrap()), "{a}");
        }
        for a in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_internal(a.parse().unwrap()), "{a}");
        }
    }
}

/// All stations and partners, indexed by AS2 id.
#[derive(Clone, Default)]
pub struct Directory {
    pub stations: HashMap<String, Station>,
    /// Keyed by (station AS2 id, partner AS2 id).
    pub partners: HashMap<(String, String), Partner>,
}

impl Directory {
    pub fn station_by_as2(&self, as2_id: &str) -> Option<&Station> {
        self.stations.values().find(|s| s.as2_id == as2_id)
    }

    /// The partner `from` talking to our station `to`.
    pub fn partner(&self, to: &str, from: &str) -> Option<&Partner> {
        self.partners.get(&(to.to_string(), from.to_string()))
    }

    /// A partner by its configuration name, with its station.
    pub fn partner_by_name(&self, name: &str) -> Option<(&Partner, &Station)> {
        let p = self.partners.values().find(|p| p.name == name)?;
        Some((p, self.stations.get(&p.station)?))
    }
}
