//! Test harness: generated keys, configs, node processes, the pyas2lib peer, fixtures.
#![allow(dead_code)]

pub mod netns;
pub mod s3server;

pub use edinode::init::SendForm;
pub use edinode_proto::testing::TestCert;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379/";

/// A key pair written as PEM files.
#[derive(Clone)]
pub struct Identity {
    pub key: PKey<Private>,
    pub cert: X509,
    pub key_pem: PathBuf,
    pub cert_pem: PathBuf,
}

pub fn identity(dir: &Path, cn: &str) -> Identity {
    let now = unix_now();
    identity_valid(dir, cn, now, now + 365 * 86_400)
}

/// A key pair whose certificate is valid from `not_before` to `not_after` (Unix seconds; e.g.
/// one that expires soon, or has expired).
pub fn identity_valid(dir: &Path, cn: &str, not_before: i64, not_after: i64) -> Identity {
    identity_of(dir, cn, &TestCert::new(cn, rand_u32()).valid(not_before, not_after))
}

/// A key pair made as `cert` says, written as `dir/<name>.key.pem` and `dir/<name>.cert.pem`.
pub fn identity_of(dir: &Path, name: &str, cert: &TestCert) -> Identity {
    let (key, cert) = cert.build().unwrap();
    let key_pem = dir.join(format!("{name}.key.pem"));
    let cert_pem = dir.join(format!("{name}.cert.pem"));
    std::fs::write(&key_pem, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    std::fs::write(&cert_pem, cert.to_pem().unwrap()).unwrap();
    Identity { key, cert, key_pem, cert_pem }
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A temp folder with the identities (PEM files in it) of our station and of a partner.
pub struct Pair {
    pub dir: tempfile::TempDir,
    pub station: Identity,
    pub partner: Identity,
}

pub fn pair(station_cn: &str, partner_cn: &str) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let station = identity(dir.path(), station_cn);
    let partner = identity(dir.path(), partner_cn);
    Pair { dir, station, partner }
}

impl Pair {
    /// Embedded mode, station `edinode`, partner `acme` with `policy`; written to
    /// `dir/edinode.toml`.
    pub fn config(&self, policy: &str) -> PathBuf {
        self.edinode_and_acme(ConfigBuilder::new(self.dir.path()), policy)
    }

    /// [`Pair::config`] on RabbitMQ and Redis (keys under `prefix`).
    pub fn rabbit_config(&self, prefix: &str, policy: &str) -> PathBuf {
        self.edinode_and_acme(ConfigBuilder::new(self.dir.path()).rabbit(prefix), policy)
    }

    fn edinode_and_acme(&self, config: ConfigBuilder, policy: &str) -> PathBuf {
        config.station("edinode", "edinode", &self.station).partner("acme", "acme", "edinode", &[&self.partner.cert_pem], policy).write(self.dir.path())
    }
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    openssl::rand::rand_bytes(&mut b).unwrap();
    u32::from_le_bytes(b) & 0x7fff_ffff
}

/// A port free on 127.0.0.1 now (for configurations that must name their own URL).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}{:08x}", rand_u32())
}

/// Where the shared fixtures are.
pub fn fixtures() -> PathBuf {
    let p = std::env::var("EDINODE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"));
    assert!(p.join("as2").is_dir(), "fixtures not found at {} (set EDINODE_FIXTURES)", p.display());
    p
}

/// A node process.
pub struct NodeProc {
    pub child: Child,
    pub url: String,
    /// The HTTPS listener, when configured.
    pub tls_url: Option<String>,
    /// The admin listener, when separate.
    pub admin_url: Option<String>,
    pub dir: PathBuf,
    pub log: PathBuf,
}

impl NodeProc {
    pub fn as2_url(&self) -> String {
        format!("{}/as2", self.url)
    }
    /// The partner listener's `host:port`, for raw sockets.
    pub fn addr(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }
    /// Waits until every queue of this node (embedded mode) is empty, dead letters aside:
    /// nothing it accepted is still being worked on, so no further effect can follow.
    pub fn wait_idle(&self) {
        let url = format!("{}/metrics", self.admin_url.as_ref().unwrap_or(&self.url));
        wait_until(30, &format!("the queues of {} to drain", self.url), || {
            let text = reqwest::blocking::get(&url).and_then(|r| r.text()).map_err(|e| e.to_string())?;
            let depths: Vec<&str> = text.lines().filter(|l| l.starts_with("edinode_queue_depth{")).collect();
            let busy: Vec<&&str> = depths.iter().filter(|l| !l.contains("\"edinode.dead\"") && !l.ends_with(" 0")).collect();
            if !depths.is_empty() && busy.is_empty() { Ok(()) } else { Err(format!("{busy:?}")) }
        })
    }
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Start `edinode serve` with a config file; waits until it is ready (its listeners bound).
pub fn start_node(config: &Path, dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> NodeProc {
    start_node_with(Command::new(env!("CARGO_BIN_EXE_edinode")), config, dir, extra, env)
}

/// [`start_node`] with a command that runs the node binary (e.g. `ip netns exec NS edinode`).
pub fn start_node_with(mut cmd: Command, config: &Path, dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> NodeProc {
    let log = dir.join(format!("node-{}.log", rand_u32()));
    let logf = std::fs::File::create(&log).unwrap();
    cmd.arg("--config").arg(config).arg("serve").args(extra).current_dir(dir).stdout(Stdio::piped()).stderr(logf);
    cmd.env("RUST_LOG", "info,actix_server=warn,lapin=warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    // Every process has a listener (a worker without http_receiver: its admin listener).
    let stdout = child.stdout.take().unwrap();
    let mut url = String::new();
    let mut tls_url = None;
    let mut admin_url = None;
    {
        let mut reader = BufReader::new(stdout);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut line = String::new();
        while Instant::now() < deadline {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                let logtext = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("node exited before listening: {logtext}");
            }
            let l = line.trim();
            if let Some(u) = l.strip_prefix("edinode listening on ") {
                url = u.to_string();
            } else if let Some(u) = l.strip_prefix("edinode tls listening on ") {
                tls_url = Some(u.to_string());
            } else if let Some(u) = l.strip_prefix("edinode admin listening on ") {
                admin_url = Some(u.to_string());
            } else if l == "edinode ready" {
                break;
            }
        }
        if url.is_empty() {
            // No partner listener: `url` is the admin listener.
            url = admin_url.clone().unwrap_or_default();
        }
        assert!(!url.is_empty(), "node did not report its address");
        std::thread::spawn(move || for _ in reader.lines() {});
    }
    NodeProc { child, url, tls_url, admin_url, dir: dir.to_path_buf(), log }
}

/// Test partners (pyas2lib, local listeners) receive asynchronous MDNs on 127.0.0.1, any port.
pub const LOOPBACK_MDN_URLS: &str = "async_mdn_urls = [\"http://127.0.0.1:*/\", \"https://127.0.0.1:*/\"]\n";

/// Config of one station and partners, written to `dir/edinode.toml`.
pub struct ConfigBuilder {
    pub text: String,
}

impl ConfigBuilder {
    pub fn new(dir: &Path) -> ConfigBuilder {
        let text = format!(
            "[node]\ndata_dir = \"{d}/var\"\ninbox = \"{d}/inbox\"\n\n[http]\nlisten = \"127.0.0.1:0\"\nsync_mdn_timeout_secs = 60\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[rabbitmq]\nretry_base_ms = 100\n",
            d = dir.display()
        );
        ConfigBuilder { text }
    }
    pub fn rabbit(mut self, prefix: &str) -> ConfigBuilder {
        // A per-test vhost is not available with guest; queues are shared, so tests that use
        // RabbitMQ purge them first (see purge_queues) and run one at a time.
        self.text = self.text.replace("[rabbitmq]\n", &format!("[rabbitmq]\nurl = \"{AMQP_URL}\"\n"));
        self.text.push_str(&format!("\n[redis]\nurl = \"{REDIS_URL}\"\nprefix = \"{prefix}:\"\n"));
        self
    }
    pub fn station(mut self, name: &str, as2_id: &str, id: &Identity) -> ConfigBuilder {
        self.text.push_str(&format!(
            "\n[stations.{name}]\nas2_id = \"{as2_id}\"\nsigning = {{ key = \"{}\", cert = \"{}\" }}\n",
            id.key_pem.display(),
            id.cert_pem.display()
        ));
        self
    }
    pub fn station_paths(mut self, name: &str, as2_id: &str, key: &Path, cert: &Path, password: &str) -> ConfigBuilder {
        self.text.push_str(&format!(
            "\n[stations.{name}]\nas2_id = \"{as2_id}\"\nsigning = {{ key = \"{}\", cert = \"{}\", password = \"{password}\" }}\n",
            key.display(),
            cert.display()
        ));
        self
    }
    pub fn partner(mut self, name: &str, as2_id: &str, station: &str, certs: &[&Path], policy: &str) -> ConfigBuilder {
        let list: Vec<String> = certs.iter().map(|c| format!("\"{}\"", c.display())).collect();
        self.text.push_str(&format!(
            "\n[partners.{name}]\nas2_id = \"{as2_id}\"\nstation = \"{station}\"\nverify_certs = [{}]\n{LOOPBACK_MDN_URLS}[partners.{name}.policy]\n{policy}\n",
            list.join(", ")
        ));
        self
    }
    /// Partner `acme` of station `edinode`, verified with `cert`, that we send to at `url` with
    /// these `[partners.acme.outbound]` lines.
    pub fn acme_at(self, cert: &Path, url: &str, outbound: &str) -> ConfigBuilder {
        self.raw(&format!("\n[partners.acme]\nas2_id = \"acme\"\nstation = \"edinode\"\nverify_certs = [\"{}\"]\nurl = \"{url}\"\n[partners.acme.outbound]\n{outbound}\n", cert.display()))
    }
    pub fn raw(mut self, s: &str) -> ConfigBuilder {
        self.text.push_str(s);
        self
    }
    pub fn write(&self, dir: &Path) -> PathBuf {
        let p = dir.join("edinode.toml");
        std::fs::write(&p, &self.text).unwrap();
        p
    }
}

/// A raw HTTP capture (headers, blank line, body) split into headers and body.
pub fn split_capture(raw: &[u8]) -> (Vec<(String, String)>, Vec<u8>) {
    // Captures end their headers with CRLF CRLF, LF LF, or (Mendelson's, re-saved) LF CRLF.
    let find = |pat: &[u8]| raw.windows(pat.len()).position(|w| w == pat).map(|p| (p, p + pat.len()));
    let pos = [find(b"\r\n\r\n"), find(b"\n\r\n"), find(b"\n\n")].into_iter().flatten().min_by_key(|p| p.0).expect("no header end in capture");
    let head = String::from_utf8_lossy(&raw[..pos.0]).to_string();
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(last) = headers.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    (headers, raw[pos.1..].to_vec())
}

/// POST a capture (skipping hop-by-hop headers), returning status, headers and body.
pub fn post_capture(url: &str, headers: &[(String, String)], body: Vec<u8>) -> (u16, Vec<(String, String)>, Vec<u8>) {
    post_capture_within(url, headers, body, Duration::from_secs(120))
}

/// [`post_capture`] with its own timeout for the whole exchange (large messages).
pub fn post_capture_within(url: &str, headers: &[(String, String)], body: Vec<u8>, timeout: Duration) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let client = reqwest::blocking::Client::builder().timeout(timeout).build().unwrap();
    let mut req = client.post(url);
    for (k, v) in headers {
        let l = k.to_ascii_lowercase();
        if ["content-length", "host", "connection", "expect", "transfer-encoding"].contains(&l.as_str()) {
            continue;
        }
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = req.body(body).send().unwrap();
    let status = resp.status().as_u16();
    let hs = resp.headers().iter().map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).to_string())).collect();
    (status, hs, resp.bytes().unwrap().to_vec())
}

/// Files delivered under `inbox/<station>/<partner>/`.
pub fn delivered(inbox: &Path, station: &str, partner: &str) -> Vec<(String, Vec<u8>)> {
    let dir = inbox.join(station).join(partner);
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if n.contains(".part-") {
                continue;
            }
            out.push((n, std::fs::read(e.path()).unwrap()));
        }
    }
    out.sort();
    out
}

/// How often the `wait_*` helpers look again.
const POLL: Duration = Duration::from_millis(50);

/// Polls `f` until it returns Ok; after `secs` seconds panics naming `what` and the last Err
/// `f` returned (what it saw instead). The one way tests wait for something to happen.
pub fn wait_until<T>(secs: u64, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let seen = match f() {
            Ok(v) => return v,
            Err(seen) => seen,
        };
        timed_out(deadline, secs, what, &seen);
        std::thread::sleep(POLL);
    }
}

/// [`wait_until`] for a condition with nothing to report while it does not hold.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    wait_until(secs, what, || f().ok_or_else(String::new))
}

/// [`wait_for`] in async code: `f` makes a future per look.
pub async fn wait_for_async<T, F: std::future::Future<Output = Option<T>>>(secs: u64, what: &str, mut f: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        timed_out(deadline, secs, what, "");
        tokio::time::sleep(POLL).await;
    }
}

fn timed_out(deadline: Instant, secs: u64, what: &str, seen: &str) {
    if Instant::now() > deadline {
        let seen = if seen.is_empty() { String::new() } else { format!("; last seen: {seen}") };
        panic!("timed out after {secs} s waiting for {what}{seen}");
    }
}

/// Waits until RabbitMQ holds nothing more for edinode to do: every `edinode.*` queue that has
/// a consumer, and every delay queue, is empty (ready and unacknowledged). What a test waits for
/// before it counts effects that must not repeat (a redelivery would still be in a queue).
pub fn wait_rabbit_idle() {
    wait_until(60, "edinode's RabbitMQ queues to drain", || {
        let busy: Vec<String> = rabbit_queues()?
            .into_iter()
            .filter(|q| q.name.starts_with("edinode.") && q.messages > 0 && (q.consumers > 0 || q.name.starts_with("edinode.delay.")))
            .map(|q| format!("{}: {}", q.name, q.messages))
            .collect();
        if busy.is_empty() { Ok(()) } else { Err(format!("{busy:?}")) }
    })
}

/// Waits until RabbitMQ counts `n` consumers on `queue` (e.g. it noticed a killed worker).
pub fn wait_rabbit_consumers(queue: &str, n: u64) {
    wait_until(60, &format!("{n} consumers on {queue}"), || {
        let q = rabbit_queues()?.into_iter().find(|q| q.name == queue).ok_or("no such queue")?;
        if q.consumers == n { Ok(()) } else { Err(format!("{} consumers", q.consumers)) }
    })
}

/// A queue as `rabbitmqctl list_queues` shows it.
pub struct RabbitQueue {
    pub name: String,
    /// Ready and unacknowledged.
    pub messages: u64,
    pub consumers: u64,
}

pub fn rabbit_queues() -> Result<Vec<RabbitQueue>, String> {
    let out = Command::new("rabbitmqctl").args(["list_queues", "-q", "--no-table-headers", "name", "messages", "consumers"]).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [name, messages, consumers] => Some(RabbitQueue { name: name.to_string(), messages: messages.parse().ok()?, consumers: consumers.parse().ok()? }),
            _ => None,
        })
        .collect())
}

/// The Python venv with pyas2lib.
pub fn python() -> PathBuf {
    peer_python("as2")
}

/// The python of the venv for a test peer (`as2`: pyas2lib, `as4`: the AS4 client), created
/// once per target directory by tests/peers/setup.sh (it locks and is idempotent, so
/// concurrent test processes are fine).
pub fn peer_python(peer: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{peer}-venv"));
    let st = Command::new("bash").arg(root.join("tests/peers/setup.sh")).arg(&venv).arg(peer).stdin(Stdio::null()).status().unwrap();
    assert!(st.success(), "tests/peers/setup.sh {} {peer} failed", venv.display());
    venv.join("bin/python")
}

/// Count status records "decrypted by <node>" per node in Redis.
pub fn work_by_node(prefix: &str) -> std::collections::HashMap<String, usize> {
    let client = redis::Client::open(REDIS_URL).unwrap();
    let mut con = client.get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:status:*")).query(&mut con).unwrap();
    let mut by = std::collections::HashMap::new();
    for k in keys {
        let items: Vec<String> = redis::cmd("LRANGE").arg(&k).arg(0).arg(-1).query(&mut con).unwrap();
        for it in items {
            let v: serde_json::Value = serde_json::from_str(&it).unwrap();
            if v["status"] == "decrypted" {
                let d = v["detail"].as_str().unwrap().trim_start_matches("by ").to_string();
                *by.entry(d).or_insert(0) += 1;
            }
        }
    }
    by
}

/// A connection to the machine's RabbitMQ and a channel on it.
pub async fn amqp_channel() -> (lapin::Connection, lapin::Channel) {
    let conn = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    (conn, ch)
}

/// An enterprise consumer's queue `name`, bound to the topic `exchange` for everything (`#`):
/// exclusive to this connection, or `durable` (it survives a broker restart; delete it at the
/// end).
pub async fn bound_queue(exchange: &str, name: &str, durable: bool) -> (lapin::Connection, lapin::Channel) {
    use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
    let (conn, ch) = amqp_channel().await;
    ch.exchange_declare(exchange.into(), lapin::ExchangeKind::Topic, ExchangeDeclareOptions { durable: true, ..Default::default() }, Default::default()).await.unwrap();
    let options = if durable { QueueDeclareOptions { durable: true, ..Default::default() } } else { QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() } };
    ch.queue_declare(name.into(), options, Default::default()).await.unwrap();
    ch.queue_bind(name.into(), exchange.into(), "#".into(), Default::default(), Default::default()).await.unwrap();
    (conn, ch)
}

/// The next message on `queue` (taken, no acknowledgement due), waiting up to `secs` for one.
pub async fn next_message(ch: &lapin::Channel, queue: &str, secs: u64) -> lapin::message::BasicGetMessage {
    let get = move || async move { ch.basic_get(queue.into(), lapin::options::BasicGetOptions { no_ack: true }).await.unwrap() };
    wait_for_async(secs, &format!("a message on {queue}"), get).await
}

/// A string header of an AMQP message; panics naming it when it is missing or not a string.
pub fn amqp_header(d: &lapin::message::BasicGetMessage, k: &str) -> String {
    match d.delivery.properties.headers().as_ref().and_then(|h| h.inner().get(k)) {
        Some(lapin::types::AMQPValue::LongString(v)) => String::from_utf8_lossy(v.as_bytes()).to_string(),
        other => panic!("header {k}: {other:?}"),
    }
}

/// Purge edinode's work queues so a RabbitMQ test starts clean.
pub fn purge_queues() {
    for q in ["edinode.mime_unwrapper", "edinode.decryptor", "edinode.verifier", "edinode.mdn_sender", "edinode.mdn_post", "edinode.deliverer", "edinode.dead"] {
        let _ = Command::new("rabbitmqctl").args(["purge_queue", q]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

/// Client-side AS2 message building for tests that need to craft or damage messages.
pub mod build {
    use edinode_proto::alg::{ContentCipher, DigestAlg, KeyTransport};
    use edinode_proto::cms;
    use openssl::pkey::{PKey, Private};
    use openssl::x509::X509;

    pub fn b64(data: &[u8]) -> Vec<u8> {
        edinode_proto::mdn::base64_lines(data)
    }

    /// A payload entity.
    pub fn entity(content_type: &str, filename: &str, body: &[u8]) -> Vec<u8> {
        let mut e = format!("Content-Type: {content_type}\r\nContent-Transfer-Encoding: binary\r\nContent-Disposition: attachment; filename=\"{filename}\"\r\n\r\n").into_bytes();
        e.extend_from_slice(body);
        e
    }

    pub fn signed(inner: &[u8], key: &PKey<Private>, cert: &X509, digest: DigestAlg) -> Vec<u8> {
        let sig = cms::sign_detached(inner, key, cert, digest, &cms::SignOptions::default()).unwrap();
        let b = "----=_sig_boundary_1";
        let mut out = format!(
            "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg={}; boundary=\"{b}\"\r\n\r\n--{b}\r\n",
            digest.name(edinode_proto::alg::MicSpelling::Rfc5751)
        )
        .into_bytes();
        out.extend_from_slice(inner);
        out.extend_from_slice(format!("\r\n--{b}\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\nContent-Transfer-Encoding: base64\r\n\r\n").as_bytes());
        out.extend_from_slice(&b64(&sig));
        out.extend_from_slice(format!("--{b}--\r\n").as_bytes());
        out
    }

    pub fn compressed(inner: &[u8]) -> Vec<u8> {
        let der = cms::compress(inner).unwrap();
        let mut out = b"Content-Type: application/pkcs7-mime; smime-type=compressed-data; name=smime.p7z\r\nContent-Transfer-Encoding: binary\r\n\r\n".to_vec();
        out.extend_from_slice(&der);
        out
    }

    pub fn encrypted(inner: &[u8], to: &X509) -> Vec<u8> {
        let der = cms::encrypt(inner, to, ContentCipher::Aes128Cbc, KeyTransport::RsaPkcs1v15).unwrap();
        let mut out = b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\nContent-Transfer-Encoding: binary\r\n\r\n".to_vec();
        out.extend_from_slice(&der);
        out
    }

    /// Split an entity into (its Content-Type etc. as HTTP headers, its body).
    pub fn to_http(entity: &[u8]) -> (Vec<(String, String)>, Vec<u8>) {
        super::split_capture(entity)
    }

    /// AS2 headers plus the entity's headers, ready for post_capture.
    pub fn request(from: &str, to: &str, message_id: &str, mdn: Option<&str>, entity: &[u8]) -> (Vec<(String, String)>, Vec<u8>) {
        let (mut hs, body) = to_http(entity);
        hs.push(("AS2-Version".into(), "1.2".into()));
        hs.push(("AS2-From".into(), from.into()));
        hs.push(("AS2-To".into(), to.into()));
        hs.push(("Message-ID".into(), message_id.into()));
        if let Some(m) = mdn {
            hs.push(("Disposition-Notification-To".into(), "mailto:test@example.com".into()));
            if m == "signed" {
                hs.push(("Disposition-Notification-Options".into(), "signed-receipt-protocol=optional, pkcs7-signature; signed-receipt-micalg=optional, sha-256".into()));
            }
        }
        (hs, body)
    }
}

/// A request as a [`listen`]er received it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// An answer: status, headers (Content-Length is added), body.
pub type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// A throwaway HTTP/1.1 server on 127.0.0.1 (a partner, an MDN endpoint, an OTLP receiver).
pub struct Listener {
    /// `http://127.0.0.1:<port>`
    pub base: String,
    /// Every request so far, in the order they came.
    pub requests: Arc<Mutex<Vec<Request>>>,
}

impl Listener {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// Starts a [`Listener`] that records every request (Content-Length bodies, keep-alive
/// connections served one thread each) and answers it with `answer(request, n)`, n being how
/// many requests came before it.
pub fn listen(answer: impl Fn(&Request, usize) -> Answer + Send + Sync + 'static) -> Listener {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
    let (answer, recorded) = (Arc::new(answer), requests.clone());
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let (answer, recorded) = (answer.clone(), recorded.clone());
            std::thread::spawn(move || serve(conn, &*answer, &recorded));
        }
    });
    Listener { base, requests }
}

fn serve(mut conn: std::net::TcpStream, answer: &dyn Fn(&Request, usize) -> Answer, recorded: &Mutex<Vec<Request>>) {
    use std::io::Write;
    let mut r = BufReader::new(conn.try_clone().unwrap());
    while let Some(req) = read_request(&mut r) {
        let n = {
            let mut g = recorded.lock().unwrap();
            g.push(req.clone());
            g.len() - 1
        };
        let (st, hs, b) = answer(&req, n);
        let mut out = format!("HTTP/1.1 {st} X\r\nContent-Length: {}\r\n", b.len());
        for (k, v) in hs {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        if conn.write_all(out.as_bytes()).and_then(|_| conn.write_all(&b)).is_err() {
            return;
        }
    }
    fn read_request(r: &mut impl BufRead) -> Option<Request> {
        let mut line = String::new();
        r.read_line(&mut line).ok().filter(|n| *n > 0)?;
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).ok()? == 0 || h == "\r\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let mut req = Request { method, target, headers, body: Vec::new() };
        req.body = vec![0; req.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0)];
        r.read_exact(&mut req.body).ok()?;
        Some(req)
    }
}

/// A [`listen`]er answering `answer(headers, body)`; returns its `/as2` URL.
pub fn http_listener(answer: impl Fn(&[(String, String)], &[u8]) -> Answer + Send + Sync + 'static) -> String {
    listen(move |r, _| answer(&r.headers, &r.body)).url("/as2")
}

/// POST /api/send on a node's admin API with documents (file name, content type, bytes);
/// returns (id, Message-ID).
pub fn admin_send(admin: &str, token: &str, station: &str, partner: &str, docs: &[(&str, &str, Vec<u8>)]) -> (String, String) {
    let mut form = SendForm::new("form-boundary-7", station, partner);
    for (name, ct, data) in docs {
        form.file(name, ct, data);
    }
    let (st, text) = post_send_form(admin, token, form);
    assert_eq!(st, 202, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    (v["id"].as_str().unwrap().to_string(), v["message_id"].as_str().unwrap().to_string())
}

/// POST /api/send on a node's admin API with `form`, as `edinode send` posts it: (status,
/// answer text).
pub fn post_send_form(admin: &str, token: &str, form: SendForm) -> (u16, String) {
    // Documents of a GiB take minutes to store in a debug build on a busy machine.
    let client = reqwest::Client::builder().timeout(Duration::from_secs(1800)).build().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (st, text) = rt.block_on(edinode::init::post_send(&client, admin, token, form)).unwrap();
    (st.as_u16(), text)
}

/// GET /api/messages/{id}: `{"summary": {...}, "history": [{"status", "detail"}, ...]}`.
pub fn admin_message(admin: &str, token: &str, id: &str) -> serde_json::Value {
    let resp = reqwest::blocking::Client::new().get(format!("{admin}/api/messages/{id}")).bearer_auth(token).send().unwrap();
    serde_json::from_str(&resp.text().unwrap()).unwrap()
}

/// The (status, detail) records of a message's history, oldest first.
pub fn history(message: &serde_json::Value) -> Vec<(String, String)> {
    message["history"].as_array().unwrap().iter().map(|h| (h["status"].as_str().unwrap_or_default().to_string(), h["detail"].as_str().unwrap_or_default().to_string())).collect()
}

/// An MDN from the partner `from` to our station `to` answering `original`, as HTTP headers
/// and body; signed by `signer` when given.
pub fn build_mdn(from: &str, to: &str, original: &str, disposition: &edinode_proto::error::Disposition, mic: Option<&edinode_proto::mdn::Mic>, signer: Option<&Identity>) -> (Vec<(String, String)>, Vec<u8>) {
    use edinode_proto::alg::DigestAlg;
    use edinode_proto::mdn::{build, MdnContent, MdnIds, MdnSigner};
    let content = MdnContent { reporting_ua: "test", station: from, partner: to, original_message_id: original, mic, disposition, text: "test MDN", spelling: Default::default() };
    let mid = format!("<{}@{from}>", unique("mdn-"));
    let ids = MdnIds { message_id: &mid, report_boundary: "R1", signed_boundary: "S1", date: "Sat, 21 Nov 2026 00:00:00 GMT" };
    let signer = signer.map(|s| MdnSigner { key: &s.key, cert: &s.cert, digest: DigestAlg::Sha256, opts: Default::default() });
    let built = build(&content, &ids, signer.as_ref()).unwrap();
    (built.headers, built.body)
}
