//! Stations (our AS2 identities) and partners, with their keys loaded: what the actors consult.

use crate::alg::{ContentCipher, DigestAlg, MicSpelling, SignaturePadding};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use std::collections::HashMap;

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

/// What we require of a partner's messages and how we answer.
#[derive(Debug, Clone)]
pub struct Policy {
    pub require_signed: bool,
    pub require_encrypted: bool,
    /// Digests accepted on signatures (empty: all).
    pub accepted_digests: Vec<DigestAlg>,
    /// Ciphers accepted (informational for inbound: OpenSSL reports none; used outbound).
    pub accepted_ciphers: Vec<ContentCipher>,
    /// Spelling of MIC algorithm names in our MDNs.
    pub mic_spelling: MicSpelling,
    /// Treat every payload as binary when computing an unsigned MIC.
    pub binary_mic: bool,
    /// Sign MDNs with RSASSA-PSS.
    pub mdn_padding: SignaturePadding,
    /// Add the RFC 6211 algorithm-protection attribute to our signatures.
    pub algorithm_protection: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            require_signed: false,
            require_encrypted: false,
            accepted_digests: vec![],
            accepted_ciphers: vec![],
            mic_spelling: MicSpelling::Rfc5751,
            binary_mic: false,
            mdn_padding: SignaturePadding::Pkcs1v15,
            algorithm_protection: false,
        }
    }
}

/// What to do when an asynchronous MDN does not arrive in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnMdnTimeout {
    /// Count the message as failed and report it.
    #[default]
    Fail,
    /// Send it again (same Message-ID, so the partner can recognise the duplicate).
    Resend,
}

/// How we reach a partner over HTTP.
#[derive(Debug, Clone, Default)]
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

/// How we send to a partner.
#[derive(Debug, Clone)]
pub struct OutboundProfile {
    pub options: crate::outbound::OutboundOptions,
    /// The MDN must be signed by one of the partner's certificates.
    pub require_signed_mdn: bool,
    pub http: HttpProfile,
    /// Attempts for transport errors and 5xx before the message fails.
    pub attempts: u32,
    pub retry_base_ms: u64,
    /// How long to wait for an asynchronous MDN.
    pub mdn_deadline_secs: u64,
    pub on_mdn_timeout: OnMdnTimeout,
}

impl Default for OutboundProfile {
    fn default() -> Self {
        OutboundProfile {
            options: crate::outbound::OutboundOptions::default(),
            require_signed_mdn: false,
            http: HttpProfile { timeout_secs: 60, ..Default::default() },
            attempts: 6,
            retry_base_ms: 2000,
            mdn_deadline_secs: 3600,
            on_mdn_timeout: OnMdnTimeout::Fail,
        }
    }
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
    pub policy: Policy,
    pub test: bool,
    pub outbound: OutboundProfile,
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
