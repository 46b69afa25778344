//! Configuration: config/default.toml (built in), an optional file, then EDINODE__* variables.
//! Loading resolves key and certificate files into a
//! [`Directory`](edinode_proto::profile::Directory); every failure names the
//! file, the key and the reason.
//!
//! - this module: [`Settings`] and its node-wide sections, [`load`], [`ConfigError`], the actor
//!   selection;
//! - `keys`: key pairs and certificates read from files, [`Secret`];
//! - `directory`: `[stations]` and `[partners]`, resolved by [`directory()`] with their keys
//!   (`[partners.X.policy]` is read as proto's [`Policy`](edinode_proto::profile::Policy));
//! - `outbound`: `[partners.X.outbound]`, how we send to a partner.

mod directory;
mod keys;
mod outbound;
#[cfg(test)]
mod tests;

pub use directory::{directory, PartnerConfig, S3Config, StationConfig};
pub use keys::{KeyPairConfig, Secret};
pub use outbound::OutboundConfig;

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

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
    let s: Settings = c.try_deserialize().map_err(|e| at_key(&src, e))?;
    Ok((s, src))
}

/// A settings error of the `config` crate as the key it names (`partners.acme.outbound.sign`)
/// and the reason; "(settings)" when it names none.
fn at_key(src: &str, e: config::ConfigError) -> ConfigError {
    let origin = |o: Option<String>| o.map(|o| format!(" (in {o})")).unwrap_or_default();
    match e {
        config::ConfigError::At { error, origin: o, key: Some(key) } => err(src, key, format!("{error}{}", origin(o))),
        config::ConfigError::Type { origin: o, unexpected, expected, key: Some(key) } => err(src, key, format!("invalid type: {unexpected}, expected {expected}{}", origin(o))),
        config::ConfigError::NotFound(key) => err(src, key, "required, and missing"),
        e => err(src, "(settings)", e.to_string()),
    }
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

