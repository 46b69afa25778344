//! Certificates of the configuration: one inventory (every station's signing and decryption
//! certificates, every partner's verification and encryption certificates, the HTTPS listener's
//! certificate) that feeds the start-up and check-config warnings, the refusal of expired
//! signing keys, the `edinode_certificate_expiry_seconds{kind,owner}` metric and the console.

use crate::config::Settings;
use edinode_proto::profile::Directory;
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::x509::X509;
use std::sync::{Arc, RwLock};

/// Certificates expiring within this many days are called out.
pub const WARN_DAYS: i64 = 30;

/// One certificate of the configuration.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// station_signing, station_decryption, partner_verify, partner_encryption, tls_server.
    pub kind: &'static str,
    /// Station or partner name (`http` for the listener).
    pub owner: String,
    /// Where it is configured (`stations.acme.signing`).
    pub key: String,
    pub subject: String,
    /// SHA-256 of the DER, colon-separated upper-case hex.
    pub fingerprint: String,
    /// notAfter, Unix seconds.
    pub not_after: i64,
}

impl CertInfo {
    fn of(kind: &'static str, owner: &str, key: String, c: &X509) -> CertInfo {
        let subject = c.subject_name().entries().filter_map(|e| Some(format!("{}={}", e.object().nid().short_name().ok()?, e.data().to_string().ok()?))).collect::<Vec<_>>().join(", ");
        let fingerprint = c.digest(MessageDigest::sha256()).map(|d| d.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")).unwrap_or_default();
        CertInfo { kind, owner: owner.to_string(), key, subject, fingerprint, not_after: unix(c.not_after()) }
    }
    /// Seconds until it expires (negative once expired).
    pub fn expires_in(&self, now: i64) -> i64 {
        self.not_after - now
    }
    /// Expired, or expiring within [`WARN_DAYS`].
    pub fn expiring(&self, now: i64) -> bool {
        self.expires_in(now) < WARN_DAYS * 86_400
    }
    /// notAfter as `YYYY-MM-DD HH:MM UTC`.
    pub fn expiry_date(&self) -> String {
        crate::console::fmt_time(self.not_after * 1000)
    }
}

fn unix(t: &openssl::asn1::Asn1TimeRef) -> i64 {
    match Asn1Time::from_unix(0).ok().and_then(|epoch| epoch.diff(t).ok()) {
        Some(d) => i64::from(d.days) * 86_400 + i64::from(d.secs),
        None => 0,
    }
}

/// Now, Unix seconds.
pub fn now() -> i64 {
    crate::storage::now_ms() / 1000
}

/// Every certificate of the loaded directory, and the HTTPS listener's when configured.
pub fn inventory(d: &Directory, settings: &Settings) -> Vec<CertInfo> {
    let mut out = Vec::new();
    for (name, st) in &d.stations {
        out.push(CertInfo::of("station_signing", name, format!("stations.{name}.signing"), &st.signing_cert));
        for (i, (_, c)) in st.decryption.iter().enumerate() {
            // The default decryption pair is the signing pair: listed once.
            if c.to_der().ok() != st.signing_cert.to_der().ok() {
                out.push(CertInfo::of("station_decryption", name, format!("stations.{name}.decryption[{i}]"), c));
            }
        }
    }
    for p in d.partners.values() {
        for (i, c) in p.verify_certs.iter().enumerate() {
            out.push(CertInfo::of("partner_verify", &p.name, format!("partners.{}.verify_certs[{i}]", p.name), c));
        }
        if let Some(c) = &p.encryption_cert {
            out.push(CertInfo::of("partner_encryption", &p.name, format!("partners.{}.encryption_cert", p.name), c));
        }
    }
    if let Some(c) = settings.http.tls_cert.as_ref().and_then(|p| std::fs::read(p).ok()).and_then(|b| X509::from_pem(&b).ok()) {
        out.push(CertInfo::of("tls_server", "http", "http.tls_cert".into(), &c));
    }
    out
}

/// Warnings for certificates expiring within [`WARN_DAYS`] (or expired); an error naming the
/// station when a signing certificate has expired: a station cannot sign with it.
pub fn check(certs: &[CertInfo], now: i64) -> Result<Vec<String>, String> {
    if let Some(c) = certs.iter().find(|c| c.kind == "station_signing" && c.expires_in(now) <= 0) {
        return Err(format!(
            "{}: the signing certificate ({}, SHA-256 {}) expired on {}; the station cannot sign MDNs or messages with it. Put a renewed key and certificate in place (edinode init writes a fresh pair) and point {} at them",
            c.key,
            c.subject,
            c.fingerprint,
            c.expiry_date(),
            c.key
        ));
    }
    Ok(certs
        .iter()
        .filter(|c| c.expiring(now))
        .map(|c| {
            let days = c.expires_in(now).div_euclid(86_400);
            let when = if days < 0 { "expired".to_string() } else { format!("expires in {days} day(s)") };
            format!("warning: {}: certificate {} {when}, on {}", c.key, c.subject, c.expiry_date())
        })
        .collect())
}

/// The inventory in force, replaced by a configuration reload.
#[derive(Clone, Default)]
pub struct Inventory(Arc<RwLock<Arc<Vec<CertInfo>>>>);

impl Inventory {
    pub fn new(certs: Vec<CertInfo>) -> Inventory {
        Inventory(Arc::new(RwLock::new(Arc::new(certs))))
    }
    pub fn current(&self) -> Arc<Vec<CertInfo>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub fn replace(&self, certs: Vec<CertInfo>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(certs);
    }

    /// `edinode_certificate_expiry_seconds{kind,owner}` in the Prometheus text format, computed
    /// at scrape time (the value falls as time passes). Several certificates of one kind and
    /// owner (a rollover): the one that expires first.
    pub fn render_metric(&self, now: i64) -> String {
        let g = prometheus::IntGaugeVec::new(prometheus::Opts::new("edinode_certificate_expiry_seconds", "Seconds until a configured certificate expires (negative: expired)"), &["kind", "owner"]);
        let Ok(g) = g else { return String::new() };
        let mut first: std::collections::BTreeMap<(&str, &str), i64> = Default::default();
        let certs = self.current();
        for c in certs.iter() {
            let v = first.entry((c.kind, c.owner.as_str())).or_insert(i64::MAX);
            *v = (*v).min(c.expires_in(now));
        }
        for ((kind, owner), v) in first {
            g.with_label_values(&[kind, owner]).set(v);
        }
        let mut buf = String::new();
        let _ = prometheus::TextEncoder::new().encode_utf8(&prometheus::core::Collector::collect(&g), &mut buf);
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(kind: &'static str, not_after: i64) -> CertInfo {
        CertInfo { kind, owner: "o".into(), key: format!("{kind}.key"), subject: "CN=x".into(), fingerprint: "AA".into(), not_after }
    }

    #[test]
    fn warnings_and_refusals() {
        let now = 1_800_000_000;
        let day = 86_400;
        assert_eq!(check(&[cert("station_signing", now + 31 * day), cert("partner_verify", now + 400 * day)], now), Ok(vec![]));
        let w = check(&[cert("partner_verify", now + 29 * day + 10)], now).unwrap();
        assert_eq!(w.len(), 1);
        assert!(w[0].starts_with("warning: partner_verify.key: certificate CN=x expires in 29 day(s), on "), "{}", w[0]);
        // An expired verification certificate is a warning; an expired signing one, a refusal.
        assert!(check(&[cert("partner_verify", now - day)], now).unwrap()[0].contains("expired"));
        let e = check(&[cert("station_signing", now - 1)], now).unwrap_err();
        assert!(e.starts_with("station_signing.key: the signing certificate (CN=x, SHA-256 AA) expired on "), "{e}");
        assert!(check(&[cert("station_signing", now + 1)], now).unwrap()[0].contains("expires in 0 day(s)"));
    }

    #[test]
    fn the_metric_keeps_the_earliest_per_kind_and_owner() {
        let inv = Inventory::new(vec![cert("partner_verify", 5_000), cert("partner_verify", 2_000), cert("station_signing", 900)]);
        let text = inv.render_metric(1_000);
        assert!(text.contains("edinode_certificate_expiry_seconds{kind=\"partner_verify\",owner=\"o\"} 1000\n"), "{text}");
        assert!(text.contains("edinode_certificate_expiry_seconds{kind=\"station_signing\",owner=\"o\"} -100\n"), "{text}");
    }
}
