//! First run: `edinode init [DIR]` writes a working, commented configuration (a station with a
//! fresh key pair and self-signed certificate, and a loopback partner: the node sending to
//! itself, so a first message goes end to end on one machine), and `edinode send` sends
//! documents through a running node's admin API (the intake of `POST /api/send`) and waits for
//! the outcome.

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The demo station's AS2 id; the loopback partner has the same one (the node talks to itself).
pub const DEMO_AS2_ID: &str = "edinode-demo";

/// A new RSA 2048 key and a self-signed certificate for `cn`, valid `days` from now.
fn self_signed(cn: &str, days: u32) -> anyhow::Result<(PKey<Private>, X509)> {
    let mut serial = BigNum::new()?;
    serial.rand(63, MsbOption::MAYBE_ZERO, false)?;
    let (from, to) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(days)?);
    Ok(edinode_proto::profile::self_signed_identity(cn, &serial, &from, &to, None)?)
}

/// What `init` wrote.
pub struct Written {
    pub config: PathBuf,
    pub key: PathBuf,
    pub cert: PathBuf,
    pub inbox: PathBuf,
}

/// Write `dir/edinode.toml` and `dir/keys/`; refuses to overwrite an existing configuration.
pub fn init(dir: &Path, port: u16) -> anyhow::Result<Written> {
    let config = dir.join("edinode.toml");
    if config.exists() {
        anyhow::bail!("{} already exists; init writes a new configuration only where there is none", config.display());
    }
    std::fs::create_dir_all(dir.join("keys"))?;
    let dir = dir.canonicalize()?;
    let (key, cert) = self_signed(DEMO_AS2_ID, 730)?;
    let key_path = dir.join("keys/station.key.pem");
    let cert_path = dir.join("keys/station.cert.pem");
    write_private(&key_path, &key.private_key_to_pem_pkcs8()?)?;
    std::fs::write(&cert_path, cert.to_pem()?)?;
    let mut token = [0u8; 24];
    openssl::rand::rand_bytes(&mut token)?;
    let text = template(&dir, port, &hex::encode(token), &key_path, &cert_path);
    write_private(&config, text.as_bytes())?;
    Ok(Written { config, key: key_path, cert: cert_path, inbox: dir.join("inbox") })
}

/// Key files and the configuration (it holds the admin token) readable by the owner only.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(data)
}

fn template(dir: &Path, port: u16, token: &str, key: &Path, cert: &Path) -> String {
    let d = dir.display();
    let admin = port.wrapping_add(1);
    let (key, cert) = (key.display(), cert.display());
    format!(
        r#"# edinode configuration written by `edinode init`. Run the node with
#     edinode --config {d}/edinode.toml serve
# Every setting not written here has its built-in default (config/default.toml in the sources);
# EDINODE__SECTION__KEY environment variables override both.

[node]
# Working data (spool, blobs, message state): embedded mode, no RabbitMQ or Redis needed.
data_dir = "{d}/var"
# Received documents land in <inbox>/<station>/<partner>/.
inbox = "{d}/inbox"

[http]
# The partner-facing listener: partners POST AS2 messages to http://127.0.0.1:{port}/as2.
listen = "127.0.0.1:{port}"
# Our AS2 URL as partners reach it (for asynchronous MDNs).
public_url = "http://127.0.0.1:{port}/as2"

[admin]
# The admin listener: the web console (http://127.0.0.1:{admin}/console), /metrics, and the
# JSON API under /api. Keep it off the network partners can reach.
listen = "127.0.0.1:{admin}"
# Sign in to the console, and `edinode send`, with this token. Keep it secret.
token = "{token}"

# A station is one of our AS2 identities: its key signs MDNs and messages and decrypts what
# partners encrypt to its certificate. Give partners the certificate (never the key).
[stations.demo]
as2_id = "{DEMO_AS2_ID}"
signing = {{ key = "{key}", cert = "{cert}" }}

# A partner is a trading partner of one station. This one is the node itself (same AS2 id, same
# certificate, URL of our own listener), so a first message goes all the way round on one
# machine:
#     edinode --config {d}/edinode.toml send --partner loopback FILE
# sends FILE signed and encrypted to http://127.0.0.1:{port}/as2, where the node receives it,
# delivers it to {d}/inbox/demo/loopback/ and answers with a signed MDN. For a real partner,
# copy this section with their AS2 id, URL and certificates.
[partners.loopback]
as2_id = "{DEMO_AS2_ID}"
station = "demo"
# Certificates that verify the partner's signatures, and the one we encrypt to.
verify_certs = ["{cert}"]
encryption_cert = "{cert}"
url = "http://127.0.0.1:{port}/as2"

[partners.loopback.policy]
# Refuse messages from this partner that are not signed, or not encrypted.
require_signed = true
require_encrypted = true

[partners.loopback.outbound]
# How we send: sign with SHA-256, encrypt with AES-256-CBC, ask for a signed synchronous MDN.
sign = "sha256"
encrypt = "aes256-cbc"
mdn = "sync"
mdn_signed = true
require_signed_mdn = true
"#
    )
}

/// The admin API's base URL from the settings (admin.listen, else http.listen).
pub fn admin_url(s: &crate::config::Settings) -> String {
    let l = if s.admin.listen.is_empty() { &s.http.listen } else { &s.admin.listen };
    format!("http://{}", l.replace("0.0.0.0", "127.0.0.1"))
}

/// The multipart/form-data body `POST /api/send` takes: the station and partner fields, then a
/// `file` part per document.
pub struct SendForm {
    boundary: String,
    body: Vec<u8>,
}

impl SendForm {
    pub fn new(boundary: &str, station: &str, partner: &str) -> SendForm {
        let mut body = Vec::new();
        for (k, v) in [("station", station), ("partner", partner)] {
            body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").as_bytes());
        }
        SendForm { boundary: boundary.to_string(), body }
    }

    /// Adds a document; `name` goes into the part's filename as it is.
    pub fn file(&mut self, name: &str, content_type: &str, data: &[u8]) {
        let b = &self.boundary;
        self.body.reserve(data.len() + 256);
        self.body.extend_from_slice(format!("--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: {content_type}\r\n\r\n").as_bytes());
        self.body.extend_from_slice(data);
        self.body.extend_from_slice(b"\r\n");
    }

    /// The request's Content-Type.
    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// The body, closed.
    pub fn finish(mut self) -> Vec<u8> {
        self.body.extend_from_slice(format!("--{}--\r\n", self.boundary).as_bytes());
        self.body
    }
}

/// POSTs `form` to `/api/send` of the admin API at `base`: the answer's status and text (empty
/// when it could not be read).
pub async fn post_send(client: &reqwest::Client, base: &str, token: &str, form: SendForm) -> reqwest::Result<(reqwest::StatusCode, String)> {
    let resp = client.post(format!("{base}/api/send")).bearer_auth(token).header("Content-Type", form.content_type()).body(form.finish()).send().await?;
    let status = resp.status();
    Ok((status, resp.text().await.unwrap_or_default()))
}

/// `edinode send`: POST the files to `/api/send` for (station, partner), then follow each
/// message until it is sent or failed (or `wait` passes). Prints as it goes; Ok(true) when every
/// message was sent.
pub async fn send(base: &str, token: &str, station: &str, partner: &str, files: &[PathBuf], wait: Duration) -> anyhow::Result<bool> {
    let mut form = SendForm::new(&format!("edinode-send-{}", crate::storage::now_ms()), station, partner);
    for f in files {
        let data = std::fs::read(f).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?;
        let name = f.file_name().map(|n| n.to_string_lossy().replace(['"', '\r', '\n'], "_")).unwrap_or_else(|| "document".into());
        form.file(&name, content_type(f), &data);
    }
    let c = reqwest::Client::new();
    let (status, text) = post_send(&c, base, token, form)
        .await
        .map_err(|e| anyhow::anyhow!("the node's admin API at {base} is not reachable ({e}); is `edinode serve` running with this configuration?"))?;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("the node refused the message ({status}): {}", v["error"].as_str().unwrap_or("no reason given"));
    }
    let id = v["id"].as_str().unwrap_or_default().to_string();
    println!("queued {} as {} (id {id})", files.len(), v["message_id"].as_str().unwrap_or_default());
    let deadline = Instant::now() + wait;
    let mut last = String::new();
    loop {
        let m: serde_json::Value = serde_json::from_slice(&c.get(format!("{base}/api/messages/{id}")).bearer_auth(token).send().await?.bytes().await?)?;
        let status = m["summary"]["status"].as_str().unwrap_or_default().to_string();
        if status != last {
            let detail = m["history"].as_array().and_then(|h| h.last()).and_then(|h| h["detail"].as_str()).unwrap_or_default();
            println!("{status}: {detail}");
            last = status.clone();
        }
        match status.as_str() {
            "sent" => {
                if let Some(r) = m["summary"]["receipt"].as_str() {
                    println!("the MDN is kept as the blob {r} (edinode messages show {id}, or the console)");
                }
                return Ok(true);
            }
            "failed" | "mdn-refused" => {
                println!("failed: {}", m["summary"]["reason"].as_str().unwrap_or_default());
                return Ok(false);
            }
            _ if Instant::now() > deadline => {
                println!("still {status} after {} s; follow it with `edinode messages show {id}`", wait.as_secs());
                return Ok(false);
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

fn content_type(f: &Path) -> &'static str {
    match f.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("xml") => "application/xml",
        Some("edi") | Some("x12") => "application/edi-x12",
        Some("edifact") | Some("edf") => "application/edifact",
        Some("json") => "application/json",
        Some("txt") | Some("csv") => "text/plain",
        Some("pdf") => "application/pdf",
        _ => "application/octet-stream",
    }
}
