//! `[stations]` and `[partners]`: what they say, and [`directory`], which loads their keys and
//! certificates into the [`Directory`] the actors use.

use super::keys::{load_cert, load_pair, KeyPairConfig, Secret};
use super::outbound::{outbound_profile, OutboundConfig};
use super::{err, ConfigError, Settings};
use edinode_proto::profile::{Directory, Partner, Policy, Station};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationConfig {
    /// Our AS2 id.
    pub as2_id: String,
    /// Key and certificate we sign MDNs (and messages) with.
    pub signing: KeyPairConfig,
    /// Decryption key pairs; default: the signing pair.
    #[serde(default)]
    pub decryption: Vec<KeyPairConfig>,
    /// The station's own S3 bucket (bring your own bucket).
    pub s3: Option<S3Config>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    #[serde(default = "default_region")]
    pub region: String,
    /// S3-compatible server URL (path-style addressing).
    pub endpoint: Option<String>,
    /// Static credentials; absent: the default AWS credential chain.
    pub access_key: Option<String>,
    pub secret_key: Option<Secret>,
    /// Save received files under as2gateway/<station>/<partner>/inbox/ (default on).
    #[serde(default = "yes")]
    pub inbound: bool,
    /// Pick up files from AS2/send/<station>/<partner>/ (default off).
    #[serde(default)]
    pub outbound: bool,
    /// "subfolder" (inbox/<message>/<file>, default) or "prefix" (inbox/<message>_<file>).
    #[serde(default = "subfolder")]
    pub folder_structure: edinode_actors::FolderStructure,
    /// A file is picked up once its last modification is this old (seconds; default 15).
    #[serde(default = "fifteen")]
    pub pickup_age_secs: f64,
    /// A subdirectory is sent once unchanged this long (seconds; default 120).
    #[serde(default = "one_twenty")]
    pub steady_secs: f64,
    /// Polling interval (seconds; default 5).
    #[serde(default = "five")]
    pub poll_secs: f64,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn yes() -> bool {
    true
}
fn subfolder() -> edinode_actors::FolderStructure {
    edinode_actors::FolderStructure::Subfolder
}
fn fifteen() -> f64 {
    15.0
}
fn one_twenty() -> f64 {
    120.0
}
fn five() -> f64 {
    5.0
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret key.
        f.debug_struct("S3Config").field("bucket", &self.bucket).field("region", &self.region).field("endpoint", &self.endpoint).field("access_key", &self.access_key).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerConfig {
    pub as2_id: String,
    /// Name of the station (a key of [stations]) this partner talks to.
    pub station: String,
    /// Certificates that verify the partner's signatures (several during rollover).
    #[serde(default)]
    pub verify_certs: Vec<PathBuf>,
    pub encryption_cert: Option<PathBuf>,
    pub url: Option<String>,
    /// Where this partner may ask for asynchronous MDNs: URL prefixes (scheme, host, port and
    /// path start). Empty: only the scheme, host and port of `url`. No `url` either: none.
    #[serde(default)]
    pub async_mdn_urls: Vec<String>,
    /// Allow asynchronous MDNs to host names that resolve to loopback, link-local or private
    /// addresses (an IP literal written in `async_mdn_urls` or `url` is allowed as written).
    #[serde(default)]
    pub async_mdn_private: bool,
    #[serde(default)]
    pub test: bool,
    /// What we require of this partner's messages and how we answer.
    #[serde(default)]
    pub policy: Policy,
    /// How we send to this partner.
    #[serde(default)]
    pub outbound: OutboundConfig,
}

/// Resolve stations and partners into a directory of loaded keys.
pub fn directory(s: &Settings, src: &str) -> Result<Directory, ConfigError> {
    let mut d = Directory::default();
    for (name, st) in &s.stations {
        let key = format!("stations.{name}");
        if edinode_proto::headers::parse_as2_name(&st.as2_id).as_deref() != Some(st.as2_id.as_str()) {
            return Err(err(src, format!("{key}.as2_id"), "must be 1 to 128 printable ASCII characters"));
        }
        let (sk, sc) = load_pair(src, &format!("{key}.signing"), &st.signing)?;
        let mut decryption = Vec::new();
        for (i, kp) in st.decryption.iter().enumerate() {
            decryption.push(load_pair(src, &format!("{key}.decryption[{i}]"), kp)?);
        }
        if decryption.is_empty() {
            decryption.push((sk.clone(), sc.clone()));
        }
        d.stations.insert(name.clone(), Station { name: name.clone(), as2_id: st.as2_id.clone(), signing_key: sk, signing_cert: sc, decryption });
    }
    for (name, p) in &s.partners {
        let key = format!("partners.{name}");
        let Some(station) = s.stations.get(&p.station) else {
            return Err(err(src, format!("{key}.station"), format!("no station named {}", p.station)));
        };
        if edinode_proto::headers::parse_as2_name(&p.as2_id).as_deref() != Some(p.as2_id.as_str()) {
            return Err(err(src, format!("{key}.as2_id"), "must be 1 to 128 printable ASCII characters"));
        }
        let mut verify_certs = Vec::new();
        for (i, c) in p.verify_certs.iter().enumerate() {
            verify_certs.push(load_cert(src, &format!("{key}.verify_certs[{i}]"), c)?);
        }
        let encryption_cert = match &p.encryption_cert {
            Some(c) => Some(load_cert(src, &format!("{key}.encryption_cert"), c)?),
            None => None,
        };
        if p.policy.require_signed && verify_certs.is_empty() {
            return Err(err(src, format!("{key}.verify_certs"), "require_signed needs at least one certificate"));
        }
        let outbound = outbound_profile(src, &key, &p.outbound, encryption_cert.is_some(), &s.http.public_url)?;
        for (i, u) in p.async_mdn_urls.iter().enumerate() {
            if !edinode_proto::profile::MdnUrlPolicy::valid_prefix(u) {
                return Err(err(src, format!("{key}.async_mdn_urls[{i}]"), format!("{u} is not an http(s) URL prefix")));
            }
        }
        let partner = Partner {
            name: name.clone(),
            as2_id: p.as2_id.clone(),
            station: p.station.clone(),
            verify_certs,
            encryption_cert,
            mdn_urls: edinode_proto::profile::MdnUrlPolicy::new(&p.async_mdn_urls, p.url.as_deref(), p.async_mdn_private),
            url: p.url.clone(),
            policy: p.policy.clone(),
            test: p.test,
            outbound,
        };
        let k = (station.as2_id.clone(), p.as2_id.clone());
        if d.partners.insert(k, partner).is_some() {
            return Err(err(src, format!("{key}.as2_id"), "another partner has the same AS2 id for this station"));
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3_section(extra: &str) -> Result<S3Config, config::ConfigError> {
        let text = format!("bucket = \"b\"\n{extra}");
        config::Config::builder().add_source(config::File::from_str(&text, config::FileFormat::Toml)).build()?.try_deserialize()
    }

    #[test]
    fn folder_structure_is_one_of_two_words_and_a_typo_is_refused() {
        assert_eq!(s3_section("").unwrap().folder_structure, edinode_actors::FolderStructure::Subfolder);
        assert_eq!(s3_section("folder_structure = \"prefix\"").unwrap().folder_structure, edinode_actors::FolderStructure::Prefix);
        let e = s3_section("folder_structure = \"prefx\"").expect_err("a typo must not mean subfolder").to_string();
        assert!(e.contains("prefx") && e.contains("folder_structure"), "{e}");
    }
}
