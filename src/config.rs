//! Configuration: config/default.toml (built in), an optional file, then EDINODE__* variables.
//! Loading resolves key and certificate files into a [`Directory`]; every failure names the
//! file, the key and the reason.

use edinode_proto::alg::{ContentCipher, DigestAlg, MicSpelling, SignaturePadding};
use edinode_proto::profile::{Directory, Partner, Policy, Station};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub node: NodeSettings,
    pub http: HttpSettings,
    pub admin: AdminSettings,
    pub rabbitmq: RabbitSettings,
    pub redis: RedisSettings,
    pub limits: LimitSettings,
    pub spool: SpoolSettings,
    pub mdn: MdnSettings,
    pub as4: As4Settings,
    pub blobs: crate::storage::blobs::BlobSettings,
    #[serde(default)]
    pub stations: BTreeMap<String, StationConfig>,
    #[serde(default)]
    pub partners: BTreeMap<String, PartnerConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// Node id; empty means host name and process id.
    pub id: String,
    /// Working data directory.
    pub data_dir: PathBuf,
    /// Inbox root for delivered documents.
    pub inbox: PathBuf,
    /// "all" or a comma-separated list of actor names.
    pub actors: String,
    /// Reporting-UA in MDNs.
    pub reporting_ua: String,
    /// Threads of the CPU pool (decryption, verification, decompression, signing); 0: one per
    /// core.
    pub cpu_workers: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Address of the partner-facing listener.
    pub listen: String,
    /// Our public AS2 URL (for asynchronous MDNs we request).
    pub public_url: String,
    /// Optional HTTPS listener for partners.
    pub tls_listen: String,
    /// Server certificate and key (PEM) of the HTTPS listener.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// When set, partners must present a client certificate issued by this CA (PEM).
    pub tls_client_ca: Option<PathBuf>,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Synchronous MDN timeout.
    pub sync_mdn_timeout_secs: u64,
    /// HTTP worker threads.
    pub workers: usize,
    /// Time a client has to send its request head (method, path, headers) after connecting.
    pub header_timeout_secs: u64,
    /// A request body that delivers no byte for this long is answered 408 and its connection
    /// closed.
    pub body_idle_timeout_secs: u64,
    /// A request body must be complete within this time (408 otherwise), however it trickles.
    pub body_timeout_secs: u64,
    /// Idle time of a kept-alive connection between requests.
    pub keep_alive_secs: u64,
    /// Open connections per worker; beyond it new connections wait in the backlog.
    pub max_connections: usize,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Address of the admin listener; empty serves admin routes on the partner listener.
    pub listen: String,
    /// Bearer token for the tracking API; empty disables it.
    pub token: String,
    /// Largest request body the admin listener accepts (`POST /api/send` carries whole
    /// documents; 413 beyond).
    pub max_send_bytes: usize,
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("AdminSettings").field("listen", &self.listen).field("token", &if self.token.is_empty() { "" } else { "***" }).field("max_send_bytes", &self.max_send_bytes).finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitSettings {
    /// AMQP URL; empty for the embedded mode.
    pub url: String,
    /// Unacknowledged deliveries per actor.
    pub prefetch: u16,
    /// Attempts before dead-lettering.
    pub max_attempts: u32,
    /// First retry delay; doubles each attempt.
    pub retry_base_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// Redis URL; empty for the embedded state.
    pub url: String,
    /// Key prefix.
    pub prefix: String,
}

fn default_stream_threshold() -> usize {
    8 * 1024 * 1024
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub max_header_bytes: usize,
    pub max_mime_depth: u8,
    pub max_decompressed_bytes: usize,
    pub inline_threshold_bytes: usize,
    #[serde(default = "default_stream_threshold")]
    pub stream_threshold_bytes: usize,
    pub duplicate_retention_days: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolSettings {
    /// fsync each spooled message.
    pub fsync: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MdnSettings {
    /// Attempts to POST an asynchronous MDN (queue edinode.mdn_post) before it is dead-lettered.
    pub async_post_attempts: u32,
    /// First delay between asynchronous MDN POST attempts; doubles each attempt (at most 5 min).
    pub async_retry_base_ms: u64,
    /// Asynchronous MDN POSTs in flight at once, per node (separate from synchronous MDNs).
    pub async_post_concurrency: u16,
    /// Time limit of one asynchronous MDN POST (connect and answer).
    pub async_post_timeout_secs: u64,
}

/// The AS4 pull sender: POST /as4 (partners), POST /api/as4/submit and `edinode.as4.submit`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct As4Settings {
    /// Station (a key of [stations]) whose signing key signs pull responses; empty: the only one.
    pub station: String,
    /// The pull authorization map (relative: to the working directory); re-read when it changes.
    pub authorization_map: PathBuf,
    /// A pulled user message not settled by a Receipt or Error within this time is offered again.
    pub receipt_timeout_secs: u64,
    /// Attachment digests of pull responses: "swa-profile" (SwA 1.1) or "raw" (AS4.NET).
    pub attachment_digest: edinode_proto::as4::wssec::AttachmentDigest,
    /// Largest accepted POST /as4 body.
    pub max_request_bytes: usize,
    /// Largest accepted submission (JSON, payloads in base64).
    pub max_submit_bytes: usize,
}

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

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    pub require_signed: bool,
    pub require_encrypted: bool,
    /// Accepted signature digests (any spelling); empty accepts all.
    pub accepted_digests: Vec<String>,
    pub accepted_ciphers: Vec<String>,
    /// rfc5751 (default), compact or hyphenated.
    pub mic_spelling: Option<MicSpelling>,
    /// No effect, accepted so that older configurations load: the MIC of an unsigned message
    /// is over the bytes as received (RFC 4130 section 7.3.1), never canonicalized.
    pub binary_mic: bool,
    /// Sign MDNs with RSASSA-PSS.
    pub pss: bool,
    /// Add the RFC 6211 algorithm-protection attribute (off: IBM Sterling rejects it).
    pub algorithm_protection: bool,
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
    #[serde(default)]
    pub policy: PolicyConfig,
    /// How we send to this partner.
    #[serde(default)]
    pub outbound: OutboundConfig,
}

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

/// A configuration error naming where and why.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {key}: {reason}")]
pub struct ConfigError {
    pub source_name: String,
    pub key: String,
    pub reason: String,
}

fn err(src: &str, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError { source_name: src.to_string(), key: key.into(), reason: reason.into() }
}

/// Load settings from the defaults, an optional file and the environment.
pub fn load(file: Option<&Path>) -> Result<(Settings, String), ConfigError> {
    let src = file.map(|f| f.display().to_string()).unwrap_or_else(|| "built-in defaults".into());
    let mut b = config::Config::builder().add_source(config::File::from_str(DEFAULT_TOML, config::FileFormat::Toml));
    if let Some(f) = file {
        if !f.exists() {
            return Err(err(&src, "--config", "file not found"));
        }
        b = b.add_source(config::File::from(f).format(config::FileFormat::Toml));
    }
    b = b.add_source(config::Environment::with_prefix("EDINODE").separator("__").try_parsing(true));
    let c = b.build().map_err(|e| err(&src, "(syntax)", e.to_string()))?;
    let s: Settings = c.try_deserialize().map_err(|e| err(&src, "(settings)", e.to_string()))?;
    Ok((s, src))
}

fn read(src: &str, key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| err(src, key, format!("cannot read {}: {e}", path.display())))
}

fn load_cert(src: &str, key: &str, path: &Path) -> Result<X509, ConfigError> {
    let b = read(src, key, path)?;
    X509::from_pem(&b).or_else(|_| X509::from_der(&b)).map_err(|e| err(src, key, format!("{} is not a PEM or DER certificate: {e}", path.display())))
}

fn load_pair(src: &str, key: &str, kp: &KeyPairConfig) -> Result<(PKey<Private>, X509), ConfigError> {
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

fn digests(src: &str, key: &str, names: &[String]) -> Result<Vec<DigestAlg>, ConfigError> {
    names.iter().map(|n| DigestAlg::parse(n).ok_or_else(|| err(src, key, format!("unknown digest {n}")))).collect()
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
        let pc = &p.policy;
        let accepted_ciphers = pc
            .accepted_ciphers
            .iter()
            .map(|n| ContentCipher::parse(n).ok_or_else(|| err(src, format!("{key}.policy.accepted_ciphers"), format!("unknown cipher {n}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let policy = Policy {
            require_signed: pc.require_signed,
            require_encrypted: pc.require_encrypted,
            accepted_digests: digests(src, &format!("{key}.policy.accepted_digests"), &pc.accepted_digests)?,
            accepted_ciphers,
            mic_spelling: pc.mic_spelling.unwrap_or_default(),
            mdn_padding: if pc.pss { SignaturePadding::Pss } else { SignaturePadding::Pkcs1v15 },
            algorithm_protection: pc.algorithm_protection,
        };
        if policy.require_signed && verify_certs.is_empty() {
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
            policy,
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

fn outbound_profile(src: &str, key: &str, o: &OutboundConfig, has_enc_cert: bool, public_url: &str) -> Result<edinode_proto::profile::OutboundProfile, ConfigError> {
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

pub const ACTORS: &[&str] = &["http_receiver", "mime_unwrapper", "decryptor", "verifier", "mdn_sender", "mdn_poster", "deliverer", "as2_sender", "outbound_intake", "mdn_monitor", "s3_outbox"];

/// Parse the actor selection.
pub fn actors(spec: &str) -> Result<Vec<String>, String> {
    if spec.trim() == "all" || spec.trim().is_empty() {
        return Ok(ACTORS.iter().map(|s| s.to_string()).collect());
    }
    spec.split(',')
        .map(|a| a.trim().to_string())
        .map(|a| if ACTORS.contains(&a.as_str()) { Ok(a) } else { Err(format!("unknown actor {a} (known: {})", ACTORS.join(", "))) })
        .collect()
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
