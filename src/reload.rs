//! Configuration reload: stations, partners and their certificates are read again on SIGHUP or
//! when the configuration file changes (checked once a second). The new configuration is
//! loaded and checked in full first (keys, certificates, policies, expired signing keys); a bad
//! one is refused with the reason in the log and the directory in force stays. A good one
//! replaces the directory whole ([`edinode_actors::DirectorySlot`]): work already started
//! (a stage handling an input, an HTTP request being received) finishes with the snapshot it
//! took; the next input sees the new one.
//!
//! Only the directory reloads. Listeners, queues, the state store, S3 integrations and the AS4
//! signing station are set up once at start; changing those still needs a restart (the log
//! says so when a reloaded file changes them).

use crate::certs::{self, CertInfo, Inventory};
use crate::config::{self, Settings};
use edinode_actors::DirectorySlot;
use edinode_proto::profile::Directory;
use std::path::PathBuf;
use std::time::Duration;

/// A directory ready to be put in force, with its certificates and the warnings about them.
pub struct Checked {
    pub directory: Directory,
    pub certs: Vec<CertInfo>,
    pub warnings: Vec<String>,
}

/// Resolve and check the stations and partners of `settings` (the start-up, check-config and
/// reload check): keys load, certificates parse, no station signs with an expired certificate.
pub fn check(settings: &Settings, src: &str) -> Result<Checked, String> {
    let directory = config::directory(settings, src).map_err(|e| e.to_string())?;
    let certs = certs::inventory(&directory, settings);
    let warnings = certs::check(&certs, certs::now()).map_err(|e| format!("{src}: {e}"))?;
    Ok(Checked { directory, certs, warnings })
}

/// Log certificate warnings as the node sees them.
pub fn log_warnings(warnings: &[String]) {
    for w in warnings {
        tracing::warn!(message = "Certificate expires soon.", warning = %w.trim_start_matches("warning: "));
    }
}

/// What a reload replaces.
pub struct Reloader {
    /// The configuration file (None: built-in defaults and the environment only).
    pub file: Option<PathBuf>,
    pub directories: DirectorySlot,
    pub certs: Inventory,
    /// Settings the node started with, to say when a change needs a restart.
    pub started: Settings,
}

impl Reloader {
    /// Load the configuration again and put it in force if it checks out.
    pub fn reload(&self, trigger: &str) -> Result<(), String> {
        let (settings, src) = config::load(self.file.as_deref()).map_err(|e| e.to_string())?;
        let c = check(&settings, &src)?;
        log_warnings(&c.warnings);
        let (stations, partners) = (c.directory.stations.len(), c.directory.partners.len());
        self.directories.replace(std::sync::Arc::new(c.directory));
        self.certs.replace(c.certs);
        tracing::info!(message = "Configuration reloaded.", trigger, stations, partners);
        let restart = restart_needed(&self.started, &settings);
        if !restart.is_empty() {
            tracing::warn!(message = "Some changed settings take effect only after a restart.", sections = %restart.join(", "));
        }
        Ok(())
    }

    /// Reload on SIGHUP and when the file's content changes; runs until the node stops.
    pub async fn run(self) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(error) => {
                tracing::warn!(message = "Cannot listen for SIGHUP; the configuration reloads only when its file changes.", %error);
                None
            }
        };
        let mut seen = self.fingerprint();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let trigger = tokio::select! {
                _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => "SIGHUP",
                _ = tick.tick() => {
                    let now = self.fingerprint();
                    if now == seen { continue }
                    seen = now;
                    "file changed"
                }
            };
            if let Err(reason) = self.reload(trigger) {
                tracing::error!(message = "Configuration reload refused; the configuration in force stays.", trigger, %reason);
            }
        }
    }

    /// A digest of the file's bytes (None when unreadable): a change of content, whatever the
    /// modification time says.
    fn fingerprint(&self) -> Option<[u8; 32]> {
        let f = self.file.as_ref()?;
        std::fs::read(f).ok().map(|b| openssl::sha::sha256(&b))
    }
}

/// Sections whose change a reload does not apply.
fn restart_needed(a: &Settings, b: &Settings) -> Vec<&'static str> {
    let mut out = Vec::new();
    let differ = |x: &dyn std::fmt::Debug, y: &dyn std::fmt::Debug| format!("{x:?}") != format!("{y:?}");
    if differ(&a.http, &b.http) {
        out.push("http");
    }
    if differ(&a.admin, &b.admin) {
        out.push("admin");
    }
    if differ(&a.rabbitmq, &b.rabbitmq) || differ(&a.redis, &b.redis) || differ(&a.node, &b.node) {
        out.push("node/rabbitmq/redis");
    }
    if a.stations.iter().map(|(k, s)| (k, format!("{:?}", s.s3))).ne(b.stations.iter().map(|(k, s)| (k, format!("{:?}", s.s3)))) {
        out.push("stations.*.s3");
    }
    out
}
