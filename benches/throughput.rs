//! End-to-end throughput of the node: `cargo bench --bench throughput`.
//!
//! Starts the release `edinode` binary with a generated station/partner configuration and posts
//! one pre-built AS2 message (signed sha-256, encrypted aes128-cbc for RSA 2048, signed
//! synchronous MDN requested) over and over from 16 concurrent senders, with a fresh Message-ID
//! per request. The client does no per-request crypto: every request reuses the same body.
//!
//! Measured, each mode repeated and the median run (by messages/s) reported:
//! - embedded mode (local spool and state),
//! - RabbitMQ + Redis mode (amqp://guest:guest@127.0.0.1:5672/%2f, redis://127.0.0.1:6379/).
//!
//! Then one large message (100 MiB of random bytes, same security) through embedded mode, for
//! the node's peak RSS (VmHWM).
//!
//! Then sending (two embedded nodes, A = station "alpha" whose partner is B = station "beta" at
//! B's /as2; sign sha256, encrypt aes128-cbc, signed synchronous MDN required):
//! - outbound: 1 KiB documents submitted to A's POST /api/send from the concurrent senders,
//!   timed from the first submit to the last `sent` record on A (median of the runs);
//! - s3: A's station has an S3 outbox on an in-process s3s-fs server (tests/common/s3server.rs,
//!   and the same file system behind a listener with TCP_NODELAY) with pickup_age_secs = 0 and
//!   poll_secs = 0.2; files are dropped under AS2/send/alpha/beta/ at once and timed from each
//!   file's write to its queueing and to its `sent` record.
//!
//! Then AS4 pulling (pulls): one embedded node answers signed PullRequests (signed by the bench
//! before the clock starts) with queued 10 KiB user messages it signs; pulls/s and CPU per pull.
//!
//! Environment knobs (defaults in brackets):
//! - BENCH_MESSAGES [3000] measured messages per run, BENCH_WARMUP [200],
//!   BENCH_CONCURRENCY [16], BENCH_REPEATS [3], BENCH_PAYLOAD_BYTES [1024];
//! - BENCH_LARGE_MIB [100] (0 skips the large message);
//! - BENCH_OUTBOUND_MESSAGES [1000] measured documents per outbound run (after
//!   BENCH_OUTBOUND_WARMUP [50]), BENCH_S3_FILES [200] files per s3 run, BENCH_S3_SERVERS
//!   [tests,nodelay] which S3 servers the s3 mode runs against;
//! - BENCH_PULLS [2000] measured PullRequests per pulls run (after BENCH_WARMUP),
//!   BENCH_PULL_PAYLOAD_BYTES [10240];
//! - BENCH_MODES [proto,embedded,rabbitmq,large,outbound,s3,pulls]; "proto" is the single-thread cost of the
//!   edinode_proto steps for the same message, the floor under the node's CPU per message;
//! - BENCH_MAX_SECS [60]: a measured phase stops issuing requests after this long and reports
//!   what it got (warm-up gets a third of it);
//! - EDINODE_BIN: the node binary (default: the one cargo built for this bench);
//! - BENCH_NODE_LOG: print the node's log after the large message;
//! - TMPDIR: where node data goes (spool, blobs, inbox); `TMPDIR=/dev/shm` measures the node
//!   without the disk's file system.
//!
//! The node's own log level follows RUST_LOG when set (node default otherwise); its log is kept
//! in the run's temporary directory and failures print its warnings.

use edinode_proto::alg::{ContentCipher, DigestAlg, KeyTransport};
use edinode_proto::cms::{self, SignOptions};
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::{X509, X509Builder, X509NameBuilder};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "../tests/common/s3server.rs"]
mod s3server;

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const REDIS_URL: &str = "redis://127.0.0.1:6379/";
const QUEUES: [&str; 5] = ["edinode.mime_unwrapper", "edinode.decryptor", "edinode.verifier", "edinode.mdn_sender", "edinode.deliverer"];
const DN_OPTIONS: &str = "signed-receipt-protocol=optional, pkcs7-signature; signed-receipt-micalg=optional, sha-256";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    openssl::rand::rand_bytes(&mut b).expect("rand");
    u32::from_le_bytes(b) & 0x7fff_ffff
}

// ---------------------------------------------------------------------------------------------
// Keys and configuration
// ---------------------------------------------------------------------------------------------

struct Identity {
    key: PKey<Private>,
    cert: X509,
    key_pem: PathBuf,
    cert_pem: PathBuf,
}

fn identity(dir: &Path, cn: &str) -> Identity {
    let key = PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("pkey");
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", cn).expect("cn");
    let name = name.build();
    let mut b = X509Builder::new().expect("x509");
    b.set_version(2).expect("version");
    let serial = BigNum::from_u32(rand_u32()).and_then(|n| n.to_asn1_integer()).expect("serial");
    b.set_serial_number(&serial).expect("serial");
    b.set_subject_name(&name).expect("subject");
    b.set_issuer_name(&name).expect("issuer");
    b.set_pubkey(&key).expect("pubkey");
    b.set_not_before(&Asn1Time::days_from_now(0).expect("time")).expect("nb");
    b.set_not_after(&Asn1Time::days_from_now(365).expect("time")).expect("na");
    b.sign(&key, MessageDigest::sha256()).expect("sign");
    let cert = b.build();
    let key_pem = dir.join(format!("{cn}.key.pem"));
    let cert_pem = dir.join(format!("{cn}.cert.pem"));
    std::fs::write(&key_pem, key.private_key_to_pem_pkcs8().expect("pem")).expect("write key");
    std::fs::write(&cert_pem, cert.to_pem().expect("pem")).expect("write cert");
    Identity { key, cert, key_pem, cert_pem }
}

struct Keys {
    station: Identity,
    client: Identity,
}

/// Node configuration for one run; `rabbit` carries the Redis prefix.
fn write_config(dir: &Path, keys: &Keys, rabbit: Option<&str>, sync_timeout: u64) -> PathBuf {
    let mut t = format!(
        "[node]\ndata_dir = \"{d}/var\"\ninbox = \"{d}/inbox\"\n\n[http]\nlisten = \"127.0.0.1:0\"\nworkers = 2\nsync_mdn_timeout_secs = {sync_timeout}\n\n",
        d = dir.display()
    );
    if let Some(prefix) = rabbit {
        t.push_str(&format!("[rabbitmq]\nurl = \"{AMQP_URL}\"\n\n[redis]\nurl = \"{REDIS_URL}\"\nprefix = \"{prefix}\"\n\n"));
    }
    t.push_str(&format!(
        "[stations.main]\nas2_id = \"edinode\"\nsigning = {{ key = \"{}\", cert = \"{}\" }}\n\n",
        keys.station.key_pem.display(),
        keys.station.cert_pem.display()
    ));
    t.push_str(&format!(
        "[partners.bench]\nas2_id = \"bench\"\nstation = \"main\"\nverify_certs = [\"{}\"]\n",
        keys.client.cert_pem.display()
    ));
    let p = dir.join("edinode.toml");
    std::fs::write(&p, t).expect("write config");
    p
}

// ---------------------------------------------------------------------------------------------
// The AS2 message, built once
// ---------------------------------------------------------------------------------------------

struct As2Message {
    /// HTTP body: DER EnvelopedData.
    body: bytes::Bytes,
    /// Base64 sha-256 MIC over the signed entity, as the MDN must report it.
    mic: String,
    payload_len: usize,
}

fn base64_lines(data: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = Vec::with_capacity(b.len() + b.len() / 38 + 2);
    for chunk in b.as_bytes().chunks(76) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn build_message(payload: Vec<u8>, keys: &Keys) -> As2Message {
    let payload_len = payload.len();
    let mut entity = b"Content-Type: application/edi-x12\r\nContent-Disposition: attachment; filename=x.edi\r\n\r\n".to_vec();
    entity.extend_from_slice(&payload);
    drop(payload);
    let sig = cms::sign_detached(&entity, &keys.client.key, &keys.client.cert, DigestAlg::Sha256, &SignOptions::default()).expect("sign");
    let mic = edinode_proto::unwrap::compute_mic(&entity, DigestAlg::Sha256).digest;
    let boundary = format!("----=_bench_{:08x}{:08x}", rand_u32(), rand_u32());
    let mut signed = Vec::with_capacity(entity.len() + sig.len() * 2 + 512);
    signed.extend_from_slice(
        format!("Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"{boundary}\"\r\n\r\n").as_bytes(),
    );
    signed.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    signed.extend_from_slice(&entity);
    drop(entity);
    signed.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
    signed.extend_from_slice(
        b"Content-Type: application/pkcs7-signature; name=smime.p7s\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=smime.p7s\r\n\r\n",
    );
    signed.extend_from_slice(&base64_lines(&sig));
    signed.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let der = cms::encrypt(&signed, &keys.station.cert, ContentCipher::Aes128Cbc, KeyTransport::RsaPkcs1v15).expect("encrypt");
    As2Message { body: bytes::Bytes::from(der), mic, payload_len }
}

/// A 1 KiB-ish X12 interchange (text, like real traffic).
fn x12_payload(len: usize) -> Vec<u8> {
    let seg = b"ISA*00*          *00*          *ZZ*BENCH          *ZZ*EDINODE        *260101*1200*U*00401*000000001*0*P*>~\r\n";
    let mut p = Vec::with_capacity(len);
    while p.len() < len {
        let n = (len - p.len()).min(seg.len());
        p.extend_from_slice(&seg[..n]);
    }
    p
}

// ---------------------------------------------------------------------------------------------
// Processes and /proc
// ---------------------------------------------------------------------------------------------

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .filter(|v| *v > 0.0)
        .unwrap_or(100.0)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: &str) -> Option<u64> {
    cpu_split(pid).map(|(u, s)| u + s)
}

/// (utime, stime) of a process, in clock ticks.
fn cpu_split(pid: &str) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after "(comm)": state is field 3; utime and stime are fields 14 and 15.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f.get(11)?.parse::<u64>().ok()?, f.get(12)?.parse::<u64>().ok()?))
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

/// Process ids whose command name is one of `names` (the broker and Redis, read only).
fn pids_named(names: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let pid = e.file_name().to_string_lossy().to_string();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
                if names.contains(&comm.trim()) {
                    out.push(pid);
                }
            }
        }
    }
    out
}

fn sum_ticks(pids: &[String]) -> u64 {
    pids.iter().filter_map(|p| cpu_ticks(p)).sum()
}

struct Node {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Node {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    /// How the node ended, when it has ("exit code 1", "killed by signal 9").
    fn exit_description(&mut self) -> Option<String> {
        use std::os::unix::process::ExitStatusExt;
        match self.child.try_wait() {
            Ok(Some(st)) => Some(match (st.code(), st.signal()) {
                (Some(c), _) => format!("exit code {c}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                _ => st.to_string(),
            }),
            _ => None,
        }
    }
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    /// WARN/ERROR lines of the node's log (first `n`), and how many there were.
    fn log_problems(&self, n: usize) -> (usize, Vec<String>) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let bad: Vec<&str> = text.lines().filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("panicked")).collect();
        (bad.len(), bad.iter().take(n).map(|s| s.chars().take(400).collect()).collect())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn start_node(bin: &Path, config: &Path, dir: &Path) -> Result<Node, String> {
    let log = dir.join("node.log");
    let logf = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(config)
        .arg("serve")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(logf)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut sent = false;
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if !sent {
                        if let Some(u) = line.trim().strip_prefix("edinode listening on ") {
                            let _ = tx.send(u.to_string());
                            sent = true;
                        }
                    }
                }
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(url) => Ok(Node { child, url, log }),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            Err(format!("node did not report its address within 60 s; log:\n{text}"))
        }
    }
}

/// The file system under `path` ("ext4 (no journal) on /dev/vda mounted at /", "tmpfs ...").
fn describe_fs(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let best = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| (f[0].to_string(), f[1].to_string(), f[2].to_string()))
        })
        .filter(|(_, mnt, _)| path.starts_with(mnt))
        .max_by_key(|(_, mnt, _)| mnt.len());
    let Some((dev, mnt, fstype)) = best else { return "unknown file system".into() };
    let mut kind = fstype.clone();
    if fstype == "ext4" {
        let name = dev.rsplit('/').next().unwrap_or("");
        if let Ok(j) = std::fs::read_to_string(format!("/sys/fs/ext4/{name}/journal_task")) {
            if j.trim() == "<none>" {
                // Without a journal, ext4 skips inodes freed recently (their inode-table block
                // still cached) on every create: file churn gets slower the more files were
                // deleted in the last hours.
                kind = "ext4 without journal".into();
            }
        }
    }
    format!("{kind} ({dev} at {mnt})")
}

fn locate_binary() -> PathBuf {
    if let Ok(p) = std::env::var("EDINODE_BIN") {
        return PathBuf::from(p);
    }
    // Cargo builds the package's binaries for benches and tells us where (same profile).
    if let Some(p) = option_env!("CARGO_BIN_EXE_edinode") {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
    let p = target.join("release/edinode");
    if !p.exists() {
        eprintln!("building {} ...", p.display());
        let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--bin", "edinode"])
            .current_dir(root)
            .status()
            .expect("run cargo build");
        assert!(st.success(), "cargo build --release --bin edinode failed");
    }
    p
}

fn purge_queues() {
    let children: Vec<_> = QUEUES
        .iter()
        .filter_map(|q| Command::new("rabbitmqctl").args(["-q", "purge_queue", q]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().ok())
        .collect();
    for mut c in children {
        let _ = c.wait();
    }
}

fn redis_cleanup(prefix: &str) {
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!("redis-cli -h 127.0.0.1 -p 6379 --scan --pattern '{prefix}*' | xargs -r -n 1000 redis-cli -h 127.0.0.1 -p 6379 unlink >/dev/null"))
        .status();
}

fn tcp_up(addr: &str) -> bool {
    addr.parse().ok().and_then(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok()).is_some()
}

// ---------------------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Failures {
    count: usize,
    samples: Vec<String>,
}

impl Failures {
    fn add(&mut self, what: String) {
        self.count += 1;
        if self.samples.len() < 5 {
            self.samples.push(what);
        }
    }
}

/// Why a response is not a positive signed MDN (None when it is one).
fn check_response(status: u16, content_type: &str, body: &[u8], mic: &str) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let snippet = || text.chars().take(300).collect::<String>().replace("\r\n", " | ");
    if status != 200 {
        return Some(format!("HTTP {status}: {}", snippet()));
    }
    if !content_type.to_ascii_lowercase().starts_with("multipart/signed") {
        return Some(format!("Content-Type {content_type}: {}", snippet()));
    }
    let disp = text.lines().find(|l| l.to_ascii_lowercase().starts_with("disposition:")).unwrap_or("");
    if !disp.trim_end().ends_with("; processed") {
        return Some(format!("not processed: {disp:?}"));
    }
    if !text.contains(mic) {
        return Some(format!("MIC {mic} not in the MDN: {}", snippet()));
    }
    None
}

struct Phase {
    done: usize,
    failures: Failures,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

/// Send `count` messages with `concurrency` senders (stops issuing after `max` wall time).
async fn load(client: &reqwest::Client, url: &str, msg: &As2Message, count: usize, concurrency: usize, max: Duration, tag: &str) -> Phase {
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Failures::default()));
    let start = Instant::now();
    let deadline = start + max;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, body, mic, next, failures) = (client.clone(), url.to_string(), msg.body.clone(), msg.mic.clone(), next.clone(), failures.clone());
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(count / concurrency + 1);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || Instant::now() > deadline {
                    break;
                }
                let message_id = format!("<bench-{tag}-{i}@bench.client>");
                let t0 = Instant::now();
                let r = client
                    .post(&url)
                    .header("AS2-Version", "1.2")
                    .header("AS2-From", "bench")
                    .header("AS2-To", "edinode")
                    .header("Message-ID", message_id)
                    .header("Disposition-Notification-To", "bench@bench.client")
                    .header("Disposition-Notification-Options", DN_OPTIONS)
                    .header("Content-Type", "application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m")
                    .body(body.clone())
                    .send()
                    .await;
                let problem = match r {
                    Err(e) => Some(format!("request error: {e}")),
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                        match resp.bytes().await {
                            Err(e) => Some(format!("reading the response: {e}")),
                            Ok(b) => check_response(status, &ct, &b, &mic),
                        }
                    }
                };
                lat.push(t0.elapsed());
                if let Some(p) = problem {
                    failures.lock().unwrap().add(p);
                }
            }
            lat
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    for t in tasks {
        latencies.extend(t.await.expect("sender task"));
    }
    let elapsed = start.elapsed();
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    Phase { done: latencies.len(), failures, latencies, elapsed }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[idx.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Embedded,
    Rabbit,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Embedded => "embedded (spool + local state)",
            Mode::Rabbit => "RabbitMQ + Redis",
        }
    }
}

#[derive(Clone)]
struct RunResult {
    done: usize,
    failures: usize,
    samples: Vec<String>,
    msg_per_s: f64,
    p50: f64,
    p99: f64,
    max: f64,
    node_cpu_ms: f64,
    /// The kernel's part of node_cpu_ms (stime).
    node_sys_ms: f64,
    client_cpu_ms: f64,
    /// RabbitMQ (beam.smp) + redis-server CPU per message, RabbitMQ mode only.
    broker_cpu_ms: Option<f64>,
    elapsed: f64,
    log_problems: (usize, Vec<String>),
    /// How the node ended, if it did before the end of the run.
    node_died: Option<String>,
}

struct Settings {
    messages: usize,
    warmup: usize,
    concurrency: usize,
    max: Duration,
    tck: f64,
}

/// One run in a fresh node with a fresh data directory. The directory goes into `keep` and is
/// removed only when the bench ends: deleting thousands of files just before the next run makes
/// that run's file creation slower on some file systems (ext4 without a journal skips recently
/// freed inodes), which would penalise whichever run comes next.
fn run_once(
    rt: &tokio::runtime::Runtime,
    bin: &Path,
    keys: &Keys,
    msg: &As2Message,
    mode: Mode,
    s: &Settings,
    run: usize,
    keep: &mut Vec<tempfile::TempDir>,
) -> Result<RunResult, String> {
    let dir = tempfile::Builder::new().prefix("edinode-bench-").tempdir().map_err(|e| e.to_string())?;
    let dir = {
        keep.push(dir);
        keep.last().expect("just pushed")
    };
    let prefix = format!("edinode-bench-{:08x}:", rand_u32());
    if mode == Mode::Rabbit {
        purge_queues();
    }
    let config = write_config(dir.path(), keys, (mode == Mode::Rabbit).then_some(prefix.as_str()), 120);
    let mut node = start_node(bin, &config, dir.path())?;
    let url = format!("{}/as2", node.url);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(150))
        .pool_max_idle_per_host(s.concurrency * 2)
        .build()
        .map_err(|e| e.to_string())?;
    let tag = format!("{:08x}", rand_u32());
    let warm = rt.block_on(load(&client, &url, msg, s.warmup, s.concurrency, s.max / 3, &format!("{tag}w")));
    if warm.failures.count > 0 {
        eprintln!("  warm-up: {} of {} failed, e.g. {:?}", warm.failures.count, warm.done, warm.failures.samples.first());
    }
    let pid = node.pid().to_string();
    let broker_pids = if mode == Mode::Rabbit { pids_named(&["beam.smp", "redis-server"]) } else { vec![] };
    let me = std::process::id().to_string();
    let (n0, c0, b0) = (cpu_split(&pid).unwrap_or((0, 0)), cpu_ticks(&me).unwrap_or(0), sum_ticks(&broker_pids));
    let mut phase = rt.block_on(load(&client, &url, msg, s.messages, s.concurrency, s.max, &format!("{tag}m")));
    let (n1, c1, b1) = (cpu_split(&pid).unwrap_or((0, 0)), cpu_ticks(&me).unwrap_or(0), sum_ticks(&broker_pids));
    let node_died = node.exit_description();
    let log_problems = node.log_problems(5);
    node.kill();
    if mode == Mode::Rabbit {
        redis_cleanup(&prefix);
    }
    phase.latencies.sort();
    let done = phase.done.max(1) as f64;
    let per_msg = |ticks: u64| ticks as f64 * 1000.0 / s.tck / done;
    let r = RunResult {
        done: phase.done,
        failures: phase.failures.count,
        samples: phase.failures.samples,
        msg_per_s: phase.done as f64 / phase.elapsed.as_secs_f64(),
        p50: percentile(&phase.latencies, 50.0),
        p99: percentile(&phase.latencies, 99.0),
        max: phase.latencies.last().map(|d| d.as_secs_f64() * 1000.0).unwrap_or(f64::NAN),
        node_cpu_ms: per_msg((n1.0 + n1.1).saturating_sub(n0.0 + n0.1)),
        node_sys_ms: per_msg(n1.1.saturating_sub(n0.1)),
        client_cpu_ms: per_msg(c1.saturating_sub(c0)),
        broker_cpu_ms: (mode == Mode::Rabbit).then(|| per_msg(b1.saturating_sub(b0))),
        elapsed: phase.elapsed.as_secs_f64(),
        log_problems,
        node_died,
    };
    eprintln!(
        "  {} run {run}: {} msgs in {:.1} s = {:.0} msg/s, {} failed, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, node {:.2} CPU-ms/msg ({:.2} in the kernel), client {:.2} CPU-ms/msg{}",
        mode.label(),
        r.done,
        r.elapsed,
        r.msg_per_s,
        r.failures,
        r.p50,
        r.p99,
        r.max,
        r.node_cpu_ms,
        r.node_sys_ms,
        r.client_cpu_ms,
        r.broker_cpu_ms.map(|b| format!(", broker+redis {b:.2} CPU-ms/msg")).unwrap_or_default()
    );
    for f in &r.samples {
        eprintln!("    failure: {f}");
    }
    if let Some(how) = &r.node_died {
        eprintln!("    the node ended during the run: {how}");
    }
    if r.log_problems.0 > 0 {
        eprintln!("    node log: {} WARN/ERROR lines, first: ", r.log_problems.0);
        for l in &r.log_problems.1 {
            eprintln!("      {l}");
        }
    }
    Ok(r)
}

struct LargeResult {
    payload_mib: f64,
    body_mib: f64,
    secs: f64,
    hwm_mib: f64,
    base_mib: f64,
    node_cpu_s: f64,
    problem: Option<String>,
}

fn run_large(rt: &tokio::runtime::Runtime, bin: &Path, keys: &Keys, mib: usize, tck: f64) -> Result<LargeResult, String> {
    let t = Instant::now();
    let mut payload = vec![0u8; mib * 1024 * 1024];
    for chunk in payload.chunks_mut(1 << 20) {
        openssl::rand::rand_bytes(chunk).map_err(|e| e.to_string())?;
    }
    let msg = build_message(payload, keys);
    eprintln!("  built the {mib} MiB message ({} bytes on the wire) in {:.1} s", msg.body.len(), t.elapsed().as_secs_f64());
    let dir = tempfile::Builder::new().prefix("edinode-bench-large-").tempdir().map_err(|e| e.to_string())?;
    let config = write_config(dir.path(), keys, None, 600);
    let mut node = start_node(bin, &config, dir.path())?;
    let pid = node.pid();
    let base = status_kib(pid, "VmHWM:").unwrap_or(0);
    let n0 = cpu_ticks(&pid.to_string()).unwrap_or(0);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(900)).build().map_err(|e| e.to_string())?;
    let url = format!("{}/as2", node.url);
    let t0 = Instant::now();
    // VmRSS every 10 ms, to see when the peak happens.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Some(kib) = status_kib(pid, "VmRSS:") {
                    samples.push((t0.elapsed().as_secs_f64(), kib));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            samples
        })
    };
    let problem = rt.block_on(async {
        let r = client
            .post(&url)
            .header("AS2-Version", "1.2")
            .header("AS2-From", "bench")
            .header("AS2-To", "edinode")
            .header("Message-ID", format!("<bench-large-{:08x}@bench.client>", rand_u32()))
            .header("Disposition-Notification-To", "bench@bench.client")
            .header("Disposition-Notification-Options", DN_OPTIONS)
            .header("Content-Type", "application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m")
            .body(msg.body.clone())
            .send()
            .await;
        match r {
            Err(e) => Some(format!("request error: {e}")),
            Ok(resp) => {
                let status = resp.status().as_u16();
                let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                match resp.bytes().await {
                    Err(e) => Some(format!("reading the response: {e}")),
                    Ok(b) => check_response(status, &ct, &b, &msg.mic),
                }
            }
        }
    });
    let secs = t0.elapsed().as_secs_f64();
    let hwm = status_kib(pid, "VmHWM:").unwrap_or(0);
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap_or_default();
    if let Some(peak) = samples.iter().max_by_key(|s| s.1) {
        let step = (secs / 12.0).max(0.05);
        let mut line = String::new();
        let mut next = 0.0;
        for (t, kib) in &samples {
            if *t >= next {
                line.push_str(&format!(" {t:.2}s:{}M", kib / 1024));
                next = t + step;
            }
        }
        eprintln!("  node VmRSS over time (request sent at 0 s, answered at {secs:.2} s):{line}");
        eprintln!("  sampled peak {} MiB at {:.2} s", peak.1 / 1024, peak.0);
    }
    let n1 = cpu_ticks(&pid.to_string()).unwrap_or(0);
    let ended = node.exit_description();
    if std::env::var_os("BENCH_NODE_LOG").is_some() {
        eprintln!("  node log:\n{}", std::fs::read_to_string(&node.log).unwrap_or_default());
    }
    let (nbad, bad) = node.log_problems(5);
    node.kill();
    let mut problem = problem;
    if let Some(how) = ended {
        problem = Some(format!("{} (the node ended: {how}; VmHWM is the last value read)", problem.unwrap_or_default()));
    }
    if problem.is_some() && nbad > 0 {
        eprintln!("    node log: {nbad} WARN/ERROR lines, first: {bad:#?}");
    }
    Ok(LargeResult {
        payload_mib: msg.payload_len as f64 / 1048576.0,
        body_mib: msg.body.len() as f64 / 1048576.0,
        secs,
        hwm_mib: hwm as f64 / 1024.0,
        base_mib: base as f64 / 1024.0,
        node_cpu_s: n1.saturating_sub(n0) as f64 / tck,
        problem,
    })
}


// ---------------------------------------------------------------------------------------------
// What the protocol work alone costs (one thread, in this process): the floor under the node's
// CPU per message.
// ---------------------------------------------------------------------------------------------

struct StepCost {
    name: &'static str,
    ms: f64,
}

fn time_op(iters: usize, mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed().as_secs_f64() * 1000.0 / iters as f64
}

fn proto_costs(keys: &Keys, msg: &As2Message) -> Vec<StepCost> {
    use edinode_proto::mdn::{self, MdnContent, MdnIds, MdnSigner};
    use edinode_proto::mime::{Header, MimeLimits};
    use edinode_proto::unwrap;
    let limits = MimeLimits::default();
    let h = |n: &str, v: &str| Header { name: n.to_string(), value: v.to_string() };
    let headers = vec![h("Content-Type", "application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m")];
    let layer0 = unwrap::entity_from_http(&headers, &msg.body);
    let dkeys = vec![(keys.station.key.clone(), keys.station.cert.clone())];
    let signed = unwrap::decrypt(&layer0, &dkeys, &limits).expect("decrypt");
    let trusted = vec![keys.client.cert.clone()];
    let verified = unwrap::verify(&signed, &trusted, Some(DigestAlg::Sha256), &limits).expect("verify");
    assert_eq!(verified.mic.digest, msg.mic, "MIC computed by the proto crate differs from the client's");
    let n = 300;
    let mut out = vec![
        StepCost { name: "classify (MIME parse)", ms: time_op(n, || drop(unwrap::classify(&layer0, &limits))) },
        StepCost { name: "decrypt (RSA-2048 private + AES)", ms: time_op(n, || drop(unwrap::decrypt(&layer0, &dkeys, &limits).expect("decrypt"))) },
        StepCost { name: "verify (RSA-2048 public, MIC)", ms: time_op(n, || drop(unwrap::verify(&signed, &trusted, Some(DigestAlg::Sha256), &limits).expect("verify"))) },
    ];
    let disposition = edinode_proto::error::Disposition::Processed;
    let content = MdnContent {
        reporting_ua: "edinode",
        station: "edinode",
        partner: "bench",
        original_message_id: "<bench@bench.client>",
        mic: Some(&verified.mic),
        disposition: &disposition,
        text: "The AS2 message has been processed.",
        spelling: Default::default(),
    };
    let ids = MdnIds { message_id: "<mdn@edinode>", report_boundary: "----=_report_x", signed_boundary: "----=_signed_x", date: "Sat, 21 Nov 2026 00:00:00 GMT" };
    let signer = MdnSigner { key: &keys.station.key, cert: &keys.station.cert, digest: DigestAlg::Sha256, opts: SignOptions::default() };
    out.push(StepCost { name: "signed MDN (RSA-2048 private)", ms: time_op(n, || drop(mdn::build(&content, &ids, Some(&signer)).expect("mdn"))) });
    let data = vec![0u8; 32];
    let rsa = keys.station.key.clone();
    out.push(StepCost {
        name: "bare RSA-2048 sign (reference)",
        ms: time_op(n, || {
            let mut s = openssl::sign::Signer::new(MessageDigest::sha256(), &rsa).expect("signer");
            s.update(&data).expect("update");
            drop(s.sign_to_vec().expect("sign"));
        }),
    });
    out
}

// ---------------------------------------------------------------------------------------------
// Sending: node A sends to node B through the admin API (outbound mode) or from an S3 outbox
// (s3 mode). Both nodes are embedded, each in its own directory; the admin API is on the
// partner listener (admin.listen = "").
// ---------------------------------------------------------------------------------------------

const ADMIN_TOKEN: &str = "bench-admin-token";
const FORM_BOUNDARY: &str = "bench-form-boundary-5c1e";

/// The two trading identities of the sending modes: station "alpha" on node A, "beta" on B.
struct PairKeys {
    alpha: Identity,
    beta: Identity,
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A node of the pair: station `me` and one partner `peer`. With `peer_url`, the partner is sent
/// to (sign sha256, encrypt aes128-cbc, signed synchronous MDN required); without, it only sends
/// to us (signed and encrypted required).
fn write_pair_config(dir: &Path, me: &str, my: &Identity, peer: &str, peer_id: &Identity, peer_url: Option<&str>, station_extra: &str) -> PathBuf {
    let mut t = format!(
        "[node]\ndata_dir = \"{d}/var\"\ninbox = \"{d}/inbox\"\n\n[http]\nlisten = \"127.0.0.1:0\"\nworkers = 2\nsync_mdn_timeout_secs = 120\n\n[admin]\nlisten = \"\"\ntoken = \"{ADMIN_TOKEN}\"\n\n",
        d = dir.display()
    );
    t.push_str(&format!(
        "[stations.{me}]\nas2_id = \"{me}\"\nsigning = {{ key = \"{}\", cert = \"{}\" }}\n{station_extra}\n",
        my.key_pem.display(),
        my.cert_pem.display()
    ));
    t.push_str(&format!(
        "[partners.{peer}]\nas2_id = \"{peer}\"\nstation = \"{me}\"\nverify_certs = [\"{c}\"]\nencryption_cert = \"{c}\"\n",
        c = peer_id.cert_pem.display()
    ));
    match peer_url {
        Some(url) => t.push_str(&format!(
            "url = \"{url}\"\n[partners.{peer}.outbound]\nsign = \"sha256\"\nencrypt = \"aes128-cbc\"\ncompress = \"none\"\nmdn = \"sync\"\nmdn_signed = true\nrequire_signed_mdn = true\n"
        )),
        None => t.push_str(&format!("[partners.{peer}.policy]\nrequire_signed = true\nrequire_encrypted = true\n")),
    }
    let p = dir.join("edinode.toml");
    std::fs::write(&p, t).expect("write config");
    p
}

/// Node B (receiver, started first) and node A (sender, partner B at B's /as2).
struct Pair {
    a: Node,
    b: Node,
    dir_b: PathBuf,
}

fn start_pair(bin: &Path, pk: &PairKeys, keep: &mut Vec<tempfile::TempDir>, a_station_extra: &str) -> Result<Pair, String> {
    let da = tempfile::Builder::new().prefix("edinode-bench-a-").tempdir().map_err(|e| e.to_string())?;
    let db = tempfile::Builder::new().prefix("edinode-bench-b-").tempdir().map_err(|e| e.to_string())?;
    let (pa, pb) = (da.path().to_path_buf(), db.path().to_path_buf());
    keep.push(da);
    keep.push(db);
    let cb = write_pair_config(&pb, "beta", &pk.beta, "alpha", &pk.alpha, None, "");
    let b = start_node(bin, &cb, &pb)?;
    let ca = write_pair_config(&pa, "alpha", &pk.alpha, "beta", &pk.beta, Some(&format!("{}/as2", b.url)), a_station_extra);
    let a = start_node(bin, &ca, &pa)?;
    Ok(Pair { a, b, dir_b: pb })
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() { count_files(&p) } else { 1 }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// multipart/form-data for POST /api/send: station, partner and one file part.
fn send_form(station: &str, partner: &str, filename: &str, data: &[u8]) -> Vec<u8> {
    let b = FORM_BOUNDARY;
    let mut body = Vec::with_capacity(data.len() + 512);
    for (k, v) in [("station", station), ("partner", partner)] {
        body.extend_from_slice(format!("--{b}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").as_bytes());
    }
    body.extend_from_slice(format!("--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: application/edi-x12\r\n\r\n").as_bytes());
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    body
}

struct SubmitPhase {
    ids: Vec<String>,
    failures: Failures,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

/// POST /api/send `count` times from `concurrency` tasks (stops issuing after `max`).
async fn submit_docs(client: &reqwest::Client, base: &str, payload: &[u8], count: usize, concurrency: usize, max: Duration, tag: &str) -> SubmitPhase {
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Failures::default()));
    let ids = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let start = Instant::now();
    let deadline = start + max;
    let url = format!("{base}/api/send");
    let payload = bytes::Bytes::copy_from_slice(payload);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, payload, next, failures, ids, tag) = (client.clone(), url.clone(), payload.clone(), next.clone(), failures.clone(), ids.clone(), tag.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || Instant::now() > deadline {
                    break;
                }
                let body = send_form("alpha", "beta", &format!("{tag}-{i}.edi"), &payload);
                let t0 = Instant::now();
                let r = client
                    .post(&url)
                    .bearer_auth(ADMIN_TOKEN)
                    .header("Content-Type", format!("multipart/form-data; boundary={FORM_BOUNDARY}"))
                    .body(body)
                    .send()
                    .await;
                let outcome = match r {
                    Err(e) => Err(format!("request error: {e}")),
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        match resp.bytes().await {
                            Err(e) => Err(format!("reading the response: {e}")),
                            Ok(b) if status == 202 => serde_json::from_slice::<serde_json::Value>(&b)
                                .ok()
                                .and_then(|v| v["id"].as_str().map(str::to_string))
                                .ok_or_else(|| format!("202 without an id: {}", String::from_utf8_lossy(&b))),
                            Ok(b) => Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&b).chars().take(300).collect::<String>())),
                        }
                    }
                };
                lat.push(t0.elapsed());
                match outcome {
                    Ok(id) => ids.lock().unwrap().push(id),
                    Err(p) => failures.lock().unwrap().add(p),
                }
            }
            lat
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    for t in tasks {
        latencies.extend(t.await.expect("submit task"));
    }
    let elapsed = start.elapsed();
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    let ids = std::mem::take(&mut *ids.lock().unwrap());
    SubmitPhase { ids, failures, latencies, elapsed }
}

/// Every message GET /api/messages?{query} lists (pages of 1000, newest first, by `until`).
async fn list_messages(client: &reqwest::Client, base: &str, query: &str) -> Result<Vec<serde_json::Value>, String> {
    let mut until = i64::MAX;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    loop {
        let url = format!("{base}/api/messages?{query}&limit=1000&until={until}");
        let resp = client.get(&url).bearer_auth(ADMIN_TOKEN).send().await.map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| format!("GET {url}: {e}"))?;
        if status != 200 {
            return Err(format!("GET {url}: HTTP {status}: {}", text.chars().take(300).collect::<String>()));
        }
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("GET {url}: {e}"))?;
        let page = v["messages"].as_array().cloned().unwrap_or_default();
        let mut fresh = 0;
        let mut oldest = i64::MAX;
        let n = page.len();
        for m in page {
            oldest = oldest.min(field_i64(&m, "received_at").unwrap_or(i64::MAX));
            if seen.insert(m["id"].as_str().unwrap_or("").to_string()) {
                fresh += 1;
                out.push(m);
            }
        }
        if n < 1000 || fresh == 0 || oldest == i64::MAX {
            return Ok(out);
        }
        until = oldest;
    }
}

/// A summary field holding unix ms (summaries are maps of strings).
fn field_i64(m: &serde_json::Value, f: &str) -> Option<i64> {
    m[f].as_str().and_then(|s| s.parse().ok()).or_else(|| m[f].as_i64())
}

struct Finals {
    /// id -> the time of its `sent` record (summary updated_at, unix ms).
    sent: std::collections::HashMap<String, i64>,
    /// (id, reason).
    failed: Vec<(String, String)>,
    timed_out: bool,
}

/// Poll A's API until every id in `ids` is `sent` or `failed` (or `deadline`).
async fn wait_final(client: &reqwest::Client, base: &str, ids: &std::collections::HashSet<String>, deadline: Instant, every: Duration) -> Result<Finals, String> {
    loop {
        let mut f = Finals { sent: Default::default(), failed: Vec::new(), timed_out: false };
        for m in list_messages(client, base, "direction=outbound&status=sent").await? {
            let id = m["id"].as_str().unwrap_or("");
            if ids.contains(id) {
                f.sent.insert(id.to_string(), field_i64(&m, "updated_at").unwrap_or(0));
            }
        }
        for m in list_messages(client, base, "direction=outbound&status=failed").await? {
            let id = m["id"].as_str().unwrap_or("");
            if ids.contains(id) {
                f.failed.push((id.to_string(), m["reason"].as_str().unwrap_or("").to_string()));
            }
        }
        if f.sent.len() + f.failed.len() >= ids.len() {
            return Ok(f);
        }
        if Instant::now() > deadline {
            f.timed_out = true;
            return Ok(f);
        }
        tokio::time::sleep(every).await;
    }
}

#[derive(Clone)]
struct OutboundRun {
    submitted: usize,
    submit_failures: usize,
    submit_samples: Vec<String>,
    submit_secs: f64,
    submit_p50: f64,
    submit_p99: f64,
    sent: usize,
    failed: usize,
    failed_samples: Vec<String>,
    timed_out: bool,
    /// First submit to the last `sent` record.
    secs: f64,
    msg_per_s: f64,
    a_cpu_ms: f64,
    b_cpu_ms: f64,
    client_cpu_ms: f64,
    delivered: usize,
    log_a: (usize, Vec<String>),
    log_b: (usize, Vec<String>),
    died: Option<String>,
}

fn print_log_problems(name: &str, lp: &(usize, Vec<String>)) {
    if lp.0 > 0 {
        eprintln!("    node {name} log: {} WARN/ERROR lines, first:", lp.0);
        for l in &lp.1 {
            eprintln!("      {l}");
        }
    }
}

fn run_outbound_once(rt: &tokio::runtime::Runtime, bin: &Path, pk: &PairKeys, payload: &[u8], n: usize, warmup: usize, s: &Settings, run: usize, keep: &mut Vec<tempfile::TempDir>) -> Result<OutboundRun, String> {
    let mut pair = start_pair(bin, pk, keep, "")?;
    let base = pair.a.url.clone();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(150)).pool_max_idle_per_host(s.concurrency * 2).build().map_err(|e| e.to_string())?;
    let tag = format!("{:08x}", rand_u32());
    let wait_limit = s.max * 2 + Duration::from_secs(30);
    if warmup > 0 {
        let w = rt.block_on(submit_docs(&client, &base, payload, warmup, s.concurrency, s.max / 3, &format!("{tag}w")));
        let wids: std::collections::HashSet<String> = w.ids.into_iter().collect();
        let f = rt.block_on(wait_final(&client, &base, &wids, Instant::now() + wait_limit, Duration::from_millis(250)))?;
        if w.failures.count > 0 || !f.failed.is_empty() || f.timed_out {
            eprintln!(
                "  warm-up: {} submits refused (e.g. {:?}), {} failed (e.g. {:?}){}",
                w.failures.count,
                w.failures.samples.first(),
                f.failed.len(),
                f.failed.first(),
                if f.timed_out { ", timed out" } else { "" }
            );
        }
    }
    let (pa, pb, me) = (pair.a.pid().to_string(), pair.b.pid().to_string(), std::process::id().to_string());
    let (a0, b0, c0) = (cpu_ticks(&pa).unwrap_or(0), cpu_ticks(&pb).unwrap_or(0), cpu_ticks(&me).unwrap_or(0));
    let t0_ms = unix_ms();
    let mut phase = rt.block_on(submit_docs(&client, &base, payload, n, s.concurrency, s.max, &format!("{tag}m")));
    let ids: std::collections::HashSet<String> = phase.ids.iter().cloned().collect();
    let f = rt.block_on(wait_final(&client, &base, &ids, Instant::now() + wait_limit, Duration::from_millis(250)))?;
    let (a1, b1, c1) = (cpu_ticks(&pa).unwrap_or(0), cpu_ticks(&pb).unwrap_or(0), cpu_ticks(&me).unwrap_or(0));
    let died = match (pair.a.exit_description(), pair.b.exit_description()) {
        (None, None) => None,
        (a, b) => Some(format!("A: {}, B: {}", a.unwrap_or_else(|| "running".into()), b.unwrap_or_else(|| "running".into()))),
    };
    let delivered = count_files(&pair.dir_b.join("inbox"));
    let (log_a, log_b) = (pair.a.log_problems(5), pair.b.log_problems(5));
    pair.a.kill();
    pair.b.kill();
    phase.latencies.sort();
    let end_ms = f.sent.values().copied().max().unwrap_or(t0_ms);
    let secs = ((end_ms - t0_ms) as f64 / 1000.0).max(1e-3);
    let done = f.sent.len().max(1) as f64;
    let per_msg = |ticks: u64| ticks as f64 * 1000.0 / s.tck / done;
    let r = OutboundRun {
        submitted: phase.ids.len(),
        submit_failures: phase.failures.count,
        submit_samples: phase.failures.samples,
        submit_secs: phase.elapsed.as_secs_f64(),
        submit_p50: percentile(&phase.latencies, 50.0),
        submit_p99: percentile(&phase.latencies, 99.0),
        sent: f.sent.len(),
        failed: f.failed.len(),
        failed_samples: f.failed.iter().take(5).map(|(id, r)| format!("{id}: {r}")).collect(),
        timed_out: f.timed_out,
        secs,
        msg_per_s: f.sent.len() as f64 / secs,
        a_cpu_ms: per_msg(a1.saturating_sub(a0)),
        b_cpu_ms: per_msg(b1.saturating_sub(b0)),
        client_cpu_ms: per_msg(c1.saturating_sub(c0)),
        delivered,
        log_a,
        log_b,
        died,
    };
    eprintln!(
        "  outbound run {run}: {} submitted in {:.1} s (202 p50 {:.1} ms, p99 {:.1} ms, {} refused), {} sent + {} failed{} in {:.1} s = {:.0} msg/s, node A {:.2} + node B {:.2} CPU-ms/msg, client {:.2}; B's inbox holds {} files (warm-up included)",
        r.submitted,
        r.submit_secs,
        r.submit_p50,
        r.submit_p99,
        r.submit_failures,
        r.sent,
        r.failed,
        if r.timed_out { " (timed out waiting for the rest)" } else { "" },
        r.secs,
        r.msg_per_s,
        r.a_cpu_ms,
        r.b_cpu_ms,
        r.client_cpu_ms,
        r.delivered
    );
    for x in r.submit_samples.iter().chain(&r.failed_samples) {
        eprintln!("    failure: {x}");
    }
    if let Some(d) = &r.died {
        eprintln!("    a node ended during the run: {d}");
    }
    print_log_problems("A", &r.log_a);
    print_log_problems("B", &r.log_b);
    Ok(r)
}

fn pct_f64(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[idx.clamp(1, sorted.len()) - 1]
}

#[derive(Clone)]
struct S3Run {
    files: usize,
    /// Files the node listed (matched to a written file by size).
    seen: usize,
    /// File written -> summary received_at (the poll's start time), ms.
    pick_p50: f64,
    pick_p99: f64,
    /// File written -> the `queued` record of its message (history), ms.
    queued_p50: f64,
    queued_p99: f64,
    /// File written -> `sent`, ms.
    sent_p50: f64,
    sent_p99: f64,
    sent: usize,
    failed: usize,
    failed_samples: Vec<String>,
    timed_out: bool,
    /// First file written to the last `sent`.
    secs: f64,
    files_per_s: f64,
    write_ms: f64,
    a_cpu_ms: f64,
    b_cpu_ms: f64,
    left_in_bucket: usize,
    delivered: usize,
    log_a: (usize, Vec<String>),
    log_b: (usize, Vec<String>),
    died: Option<String>,
}

const S3_POLL_SECS: f64 = 0.2;
const S3_PICKUP_AGE_SECS: f64 = 0.0;
const S3_BUCKET: &str = "edinode-test";

/// Which S3 server the s3 mode runs against.
#[derive(Clone, Copy, PartialEq, Eq)]
enum S3Server {
    /// tests/common/s3server.rs as the tests start it (full-access key).
    Tests,
    /// The same s3s-fs file system behind a bench-local listener whose connections set
    /// TCP_NODELAY. The tests' server leaves Nagle on: hyper writes a GetObject response's
    /// headers and its body separately, the body waits for the client's delayed ACK (~40 ms),
    /// and S3 servers in production do not add that.
    NoDelay,
}

impl S3Server {
    fn label(self) -> &'static str {
        match self {
            S3Server::Tests => "tests' S3 server (s3s-fs)",
            S3Server::NoDelay => "s3s-fs with TCP_NODELAY",
        }
    }
}

/// A running S3 server over a temp directory (objects at `<root>/<key>`); stops when dropped.
struct BenchS3 {
    endpoint: String,
    root: PathBuf,
    /// Beside the bucket: files are written here, then renamed into it.
    staging: PathBuf,
    _tests: Option<s3server::TestS3>,
    _dir: Option<tempfile::TempDir>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl BenchS3 {
    async fn start(kind: S3Server) -> Result<BenchS3, String> {
        match kind {
            S3Server::Tests => {
                let t = s3server::TestS3::start(vec![("bench", "bench-secret", s3server::Policy::full())]).await;
                assert_eq!(t.bucket, S3_BUCKET);
                Ok(BenchS3 { endpoint: t.endpoint.clone(), root: t.path(""), staging: t.dir.path().join("staging"), _tests: Some(t), _dir: None, server: None })
            }
            S3Server::NoDelay => {
                let dir = tempfile::Builder::new().prefix("edinode-bench-s3-").tempdir().map_err(|e| e.to_string())?;
                std::fs::create_dir_all(dir.path().join(S3_BUCKET)).map_err(|e| e.to_string())?;
                let fs = s3s_fs::FileSystem::new(dir.path()).map_err(|e| format!("s3s-fs: {e:?}"))?;
                let mut auth = s3s::auth::SimpleAuth::new();
                auth.register("bench".to_string(), "bench-secret".to_string().into());
                let mut builder = s3s::service::S3ServiceBuilder::new(fs);
                builder.set_auth(auth);
                let service = builder.build();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
                let addr = listener.local_addr().map_err(|e| e.to_string())?;
                let server = tokio::spawn(async move {
                    let http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                    loop {
                        let Ok((socket, _)) = listener.accept().await else { continue };
                        let _ = socket.set_nodelay(true);
                        let conn = http.serve_connection(hyper_util::rt::TokioIo::new(socket), service.clone()).into_owned();
                        tokio::spawn(async move {
                            let _ = conn.await;
                        });
                    }
                });
                Ok(BenchS3 {
                    endpoint: format!("http://{addr}"),
                    root: dir.path().join(S3_BUCKET),
                    staging: dir.path().join("staging"),
                    _tests: None,
                    _dir: Some(dir),
                    server: Some(server),
                })
            }
        }
    }
}

impl Drop for BenchS3 {
    fn drop(&mut self) {
        if let Some(s) = &self.server {
            s.abort();
        }
    }
}

fn run_s3_once(bin: &Path, pk: &PairKeys, kind: S3Server, files: usize, payload_bytes: usize, s: &Settings, run: usize, keep: &mut Vec<tempfile::TempDir>) -> Result<S3Run, String> {
    // The S3 server needs a runtime that runs while this thread writes files and sleeps.
    let srt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| e.to_string())?;
    let s3 = srt.block_on(BenchS3::start(kind))?;
    let extra = format!(
        "[stations.alpha.s3]\nbucket = \"{S3_BUCKET}\"\nendpoint = \"{}\"\naccess_key = \"bench\"\nsecret_key = \"bench-secret\"\ninbound = true\noutbound = true\npickup_age_secs = {S3_PICKUP_AGE_SECS:.1}\nsteady_secs = 2.0\npoll_secs = {S3_POLL_SECS}\n",
        s3.endpoint
    );
    let mut pair = start_pair(bin, pk, keep, &extra)?;
    let base = pair.a.url.clone();
    let log = std::fs::read_to_string(&pair.a.log).unwrap_or_default();
    if log.contains("S3 integration refused") {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("S3")).take(5).collect();
        return Err(format!("node A has no S3 outbox: {lines:?}"));
    }
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().map_err(|e| e.to_string())?;
    // File i is payload_bytes + i bytes long: the summary's `size` tells which file a message
    // carries. Each file is written beside the bucket and renamed in, so the node never lists
    // a half-written file (pick-up age 0).
    let outdir = s3.root.join("AS2/send/alpha/beta");
    let staging = s3.staging.clone();
    std::fs::create_dir_all(&outdir).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&staging).map_err(|e| e.to_string())?;
    let docs: Vec<Vec<u8>> = (0..files).map(|i| x12_payload(payload_bytes + i)).collect();
    // The first poll runs as the node starts listening and the next every poll_secs (plus the
    // poll's own time): files dropped right away would always land just after a poll. Let the
    // nodes settle, then drop at a random phase of the poll cycle.
    let phase_ms = rand_u32() as u64 % ((S3_POLL_SECS * 1000.0) as u64).max(1);
    std::thread::sleep(Duration::from_millis(1000 + phase_ms));
    let (pa, pb) = (pair.a.pid().to_string(), pair.b.pid().to_string());
    let (a0, b0) = (cpu_ticks(&pa).unwrap_or(0), cpu_ticks(&pb).unwrap_or(0));
    let mut written = vec![0i64; files];
    let tw = Instant::now();
    for (i, d) in docs.iter().enumerate() {
        let tmp = staging.join(format!("f{i:04}.edi"));
        std::fs::write(&tmp, d).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, outdir.join(format!("f{i:04}.edi"))).map_err(|e| e.to_string())?;
        written[i] = unix_ms();
    }
    let write_ms = tw.elapsed().as_secs_f64() * 1000.0;
    let by_size: std::collections::HashMap<u64, usize> = (0..files).map(|i| ((payload_bytes + i) as u64, i)).collect();
    let deadline = Instant::now() + s.max * 2 + Duration::from_secs(30);
    // (file index, id, received_at, status, updated_at)
    let mut rows: Vec<(usize, String, i64, String, i64)>;
    let mut timed_out = false;
    loop {
        let all = srt.block_on(list_messages(&client, &base, "direction=outbound"))?;
        rows = all
            .iter()
            .filter_map(|m| {
                let i = *by_size.get(&(field_i64(m, "size")? as u64))?;
                Some((i, m["id"].as_str()?.to_string(), field_i64(m, "received_at")?, m["status"].as_str().unwrap_or("").to_string(), field_i64(m, "updated_at").unwrap_or(0)))
            })
            .collect();
        let finished = rows.iter().filter(|r| r.3 == "sent" || r.3 == "failed").count();
        if finished >= files {
            break;
        }
        if Instant::now() > deadline {
            timed_out = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (a1, b1) = (cpu_ticks(&pa).unwrap_or(0), cpu_ticks(&pb).unwrap_or(0));
    // The `queued` record of each message (after its object was read: never before the write).
    let mut queued_at = std::collections::HashMap::new();
    for r in &rows {
        let url = format!("{base}/api/messages/{}", r.1);
        let v: Option<serde_json::Value> = srt.block_on(async { serde_json::from_slice(&client.get(&url).bearer_auth(ADMIN_TOKEN).send().await.ok()?.bytes().await.ok()?).ok() });
        if let Some(at) = v.as_ref().and_then(|v| v["history"].as_array()?.iter().find(|h| h["status"] == "queued")?["at"].as_i64()) {
            queued_at.insert(r.1.clone(), at);
        }
    }
    let died = match (pair.a.exit_description(), pair.b.exit_description()) {
        (None, None) => None,
        (a, b) => Some(format!("A: {}, B: {}", a.unwrap_or_else(|| "running".into()), b.unwrap_or_else(|| "running".into()))),
    };
    let left_in_bucket = count_files(&outdir);
    let delivered = count_files(&pair.dir_b.join("inbox"));
    let (log_a, log_b) = (pair.a.log_problems(5), pair.b.log_problems(5));
    pair.a.kill();
    pair.b.kill();
    drop(s3);
    drop(srt);
    let mut pick: Vec<f64> = rows.iter().map(|r| (r.2 - written[r.0]) as f64).collect();
    let mut queued: Vec<f64> = rows.iter().filter_map(|r| Some((queued_at.get(&r.1)? - written[r.0]) as f64)).collect();
    let sent_rows: Vec<&(usize, String, i64, String, i64)> = rows.iter().filter(|r| r.3 == "sent").collect();
    let mut to_sent: Vec<f64> = sent_rows.iter().map(|r| (r.4 - written[r.0]) as f64).collect();
    for v in [&mut pick, &mut queued, &mut to_sent] {
        v.sort_by(f64::total_cmp);
    }
    let first_write = written.iter().copied().min().unwrap_or(0);
    let end = sent_rows.iter().map(|r| r.4).max().unwrap_or(first_write);
    let secs = ((end - first_write) as f64 / 1000.0).max(1e-3);
    let done = sent_rows.len().max(1) as f64;
    let per_file = |ticks: u64| ticks as f64 * 1000.0 / s.tck / done;
    let failed: Vec<String> = rows.iter().filter(|r| r.3 == "failed").map(|r| format!("f{:04}.edi ({})", r.0, r.1)).collect();
    let r = S3Run {
        files,
        seen: rows.len(),
        pick_p50: pct_f64(&pick, 50.0),
        pick_p99: pct_f64(&pick, 99.0),
        queued_p50: pct_f64(&queued, 50.0),
        queued_p99: pct_f64(&queued, 99.0),
        sent_p50: pct_f64(&to_sent, 50.0),
        sent_p99: pct_f64(&to_sent, 99.0),
        sent: sent_rows.len(),
        failed: failed.len(),
        failed_samples: failed.into_iter().take(5).collect(),
        timed_out,
        secs,
        files_per_s: sent_rows.len() as f64 / secs,
        write_ms,
        a_cpu_ms: per_file(a1.saturating_sub(a0)),
        b_cpu_ms: per_file(b1.saturating_sub(b0)),
        left_in_bucket,
        delivered,
        log_a,
        log_b,
        died,
    };
    eprintln!(
        "  s3 ({}) run {run}: {} files written in {:.0} ms, {} listed by the node, {} sent + {} failed{} in {:.2} s = {:.0} files/s; pick-up (received_at) p50 {:.0} ms p99 {:.0} ms, min {:.0} max {:.0}; queued record p50 {:.0} p99 {:.0}; sent p50 {:.0} p99 {:.0}; node A {:.2} + node B {:.2} CPU-ms/file; {} left in AS2/send/, B's inbox holds {}",
        kind.label(),
        r.files,
        r.write_ms,
        r.seen,
        r.sent,
        r.failed,
        if r.timed_out { " (timed out)" } else { "" },
        r.secs,
        r.files_per_s,
        r.pick_p50,
        r.pick_p99,
        pick.first().copied().unwrap_or(f64::NAN),
        pick.last().copied().unwrap_or(f64::NAN),
        r.queued_p50,
        r.queued_p99,
        r.sent_p50,
        r.sent_p99,
        r.a_cpu_ms,
        r.b_cpu_ms,
        r.left_in_bucket,
        r.delivered
    );
    for x in &r.failed_samples {
        eprintln!("    failed: {x}");
    }
    if let Some(d) = &r.died {
        eprintln!("    a node ended during the run: {d}");
    }
    print_log_problems("A", &r.log_a);
    print_log_problems("B", &r.log_b);
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// AS4 pulls (pulls mode): one embedded node whose station signs pull responses, an
// authorization map that allows the bench's certificate on one MPC. The bench queues the user
// messages first (POST /api/as4/submit, 10 KiB payload each), signs every PullRequest before the
// clock starts, then pulls them back from concurrent pullers. No receipts are sent (each pull
// takes a fresh lease), so a pull is: verify the PullRequest's signature, check the map, claim
// the oldest message, load it, build and sign the multipart response.
// ---------------------------------------------------------------------------------------------

const PULL_MPC: &str = "urn:edinode:bench:pulls";

#[derive(Clone)]
struct PullRun {
    pulls_per_s: f64,
    pulled: usize,
    failures: usize,
    samples: Vec<String>,
    p50: f64,
    p99: f64,
    node_cpu_ms: f64,
    client_cpu_ms: f64,
    submit_per_s: f64,
    body_bytes: usize,
    died: Option<String>,
}

fn write_pull_config(dir: &Path, keys: &Keys) -> PathBuf {
    let tp = hex::encode_upper(openssl::hash::hash(MessageDigest::sha1(), &keys.client.cert.to_der().expect("der")).expect("sha1"));
    let map = dir.join("pull_authorizationmap.xml");
    std::fs::write(&map, format!("<PullRequestAuthorizationMap><AuthorizationEntry mpc=\"{PULL_MPC}\" certificatethumprint=\"{tp}\" allowed=\"true\"/></PullRequestAuthorizationMap>\n")).expect("write map");
    let t = format!(
        "[node]\ndata_dir = \"{d}/var\"\ninbox = \"{d}/inbox\"\n\n[http]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n[admin]\nlisten = \"\"\ntoken = \"{ADMIN_TOKEN}\"\n\n[as4]\nauthorization_map = \"{m}\"\nreceipt_timeout_secs = 3600\n\n[stations.main]\nas2_id = \"edinode\"\nsigning = {{ key = \"{k}\", cert = \"{c}\" }}\n",
        d = dir.display(),
        m = map.display(),
        k = keys.station.key_pem.display(),
        c = keys.station.cert_pem.display()
    );
    let p = dir.join("edinode.toml");
    std::fs::write(&p, t).expect("write config");
    p
}

/// POSTs `bodies[i]` for every i from `concurrency` tasks; `check` judges each answer.
async fn post_all(client: &reqwest::Client, url: &str, bodies: Arc<Vec<(String, Vec<u8>)>>, concurrency: usize, max: Duration, check: fn(u16, &str, &[u8]) -> Option<String>) -> Phase {
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Failures::default()));
    let start = Instant::now();
    let deadline = start + max;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, bodies, next, failures) = (client.clone(), url.to_string(), bodies.clone(), next.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= bodies.len() || Instant::now() > deadline {
                    break;
                }
                let (ct, body) = &bodies[i];
                let t0 = Instant::now();
                let r = client.post(&url).bearer_auth(ADMIN_TOKEN).header("Content-Type", ct.as_str()).body(body.clone()).send().await;
                let problem = match r {
                    Err(e) => Some(format!("request error: {e}")),
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                        match resp.bytes().await {
                            Err(e) => Some(format!("reading the response: {e}")),
                            Ok(b) => check(status, &ct, &b),
                        }
                    }
                };
                lat.push(t0.elapsed());
                if let Some(p) = problem {
                    failures.lock().unwrap().add(p);
                }
            }
            lat
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("task"));
    }
    let elapsed = start.elapsed();
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    Phase { done: latencies.len(), failures, latencies, elapsed }
}

fn check_submitted(status: u16, _ct: &str, body: &[u8]) -> Option<String> {
    (status != 202).then(|| format!("HTTP {status}: {}", String::from_utf8_lossy(body).chars().take(300).collect::<String>()))
}

fn check_pulled(status: u16, ct: &str, body: &[u8]) -> Option<String> {
    if status == 200 && ct.starts_with("multipart/related") {
        return None;
    }
    let text = String::from_utf8_lossy(body);
    let code = text.split("errorCode=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("");
    Some(format!("HTTP {status} {ct} {code}: {}", text.chars().take(200).collect::<String>()))
}

fn run_pulls_once(rt: &tokio::runtime::Runtime, bin: &Path, keys: &Keys, n: usize, warmup: usize, payload_bytes: usize, s: &Settings, run: usize, keep: &mut Vec<tempfile::TempDir>) -> Result<PullRun, String> {
    use edinode_proto::as4::signals::{self, Signal, SignalIds};
    use edinode_proto::as4::wssec::{SecurityIds, SigningKey};
    let d = tempfile::Builder::new().prefix("edinode-bench-pulls-").tempdir().map_err(|e| e.to_string())?;
    let dir = d.path().to_path_buf();
    keep.push(d);
    let cfg = write_pull_config(&dir, keys);
    let mut node = start_node(bin, &cfg, &dir)?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(s.concurrency).build().map_err(|e| e.to_string())?;
    let total = n + warmup;
    let data = openssl::base64::encode_block(&x12_payload(payload_bytes));
    let tag = format!("{:08x}", rand_u32());
    // One more than pulled: the probe below takes one.
    let submissions: Vec<(String, Vec<u8>)> = (0..=total)
        .map(|i| {
            let sub = serde_json::json!({
                "message_id": format!("bench-{tag}-{i}@edinode"), "mpc": PULL_MPC,
                "from": {"party_id": "edinode", "role": "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/initiator"},
                "to": {"party_id": "bench", "role": "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/responder"},
                "service": {"value": "urn:bench"}, "action": "Deliver",
                "parts": [{"mime_type": "application/edi-x12", "data_base64": data}],
            });
            ("application/json".to_string(), sub.to_string().into_bytes())
        })
        .collect();
    let sub = rt.block_on(post_all(&client, &format!("{}/api/as4/submit", node.url), Arc::new(submissions), s.concurrency, s.max * 2, check_submitted));
    if sub.failures.count > 0 {
        return Err(format!("{} of {} submissions failed, e.g. {:?}", sub.failures.count, sub.done, sub.failures.samples.first()));
    }
    // Every PullRequest signed up front: the client's RSA work stays out of the measurement.
    let key = SigningKey { key: keys.client.key.clone(), cert: keys.client.cert.clone() };
    let sign = |i: usize| -> Result<(String, Vec<u8>), String> {
        let ids = SignalIds { message_id: format!("pull-{tag}-{i}@bench"), timestamp: "2026-01-01T00:00:00.000Z".into() };
        let sec = SecurityIds { messaging_id: format!("m-{i}"), body_id: format!("b-{i}"), bst_id: format!("t-{i}") };
        let body = signals::build(&[(Signal::PullRequest { mpc: Some(PULL_MPC.into()) }, ids)], Some((&key, &sec))).map_err(|e| e.to_string())?;
        Ok((signals::SOAP_CONTENT_TYPE.to_string(), body))
    };
    let warm: Vec<_> = (0..warmup).map(sign).collect::<Result<_, _>>()?;
    let measured: Vec<_> = (warmup..total).map(sign).collect::<Result<_, _>>()?;
    let url = format!("{}/as4", node.url);
    // One answer checked the way a partner would: signature, digests, payload.
    let probe = rt.block_on(async { client.post(&url).header("Content-Type", signals::SOAP_CONTENT_TYPE).body(sign(total)?.1).send().await.map_err(|e| e.to_string()) })?;
    let ct = probe.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body = rt.block_on(probe.bytes()).map_err(|e| e.to_string())?;
    let limits = edinode_proto::as4::Limits { max_bytes: 64 << 20, ..Default::default() };
    let (um, signer) = edinode_proto::as4::user_message::parse_pulled(&ct, &body, &limits).map_err(|e| format!("the pull response does not verify: {e}"))?;
    if signer.is_none() || um.parts.first().map(|p| p.bytes.len()) != Some(payload_bytes) {
        return Err("the pull response is unsigned or lost its payload".into());
    }
    let warm = rt.block_on(post_all(&client, &url, Arc::new(warm), s.concurrency, s.max / 3, check_pulled));
    if warm.failures.count > 0 {
        eprintln!("  warm-up: {} of {} failed, e.g. {:?}", warm.failures.count, warm.done, warm.failures.samples.first());
    }
    let pid = node.pid().to_string();
    let me = std::process::id().to_string();
    let (n0, c0) = (cpu_ticks(&pid).unwrap_or(0), cpu_ticks(&me).unwrap_or(0));
    let mut phase = rt.block_on(post_all(&client, &url, Arc::new(measured), s.concurrency, s.max, check_pulled));
    let (n1, c1) = (cpu_ticks(&pid).unwrap_or(0), cpu_ticks(&me).unwrap_or(0));
    let died = node.exit_description();
    node.kill();
    phase.latencies.sort();
    let ok = phase.done.saturating_sub(phase.failures.count);
    let per = |ticks: u64| ticks as f64 * 1000.0 / s.tck / phase.done.max(1) as f64;
    let r = PullRun {
        pulls_per_s: ok as f64 / phase.elapsed.as_secs_f64(),
        pulled: ok,
        failures: phase.failures.count,
        samples: phase.failures.samples,
        p50: percentile(&phase.latencies, 50.0),
        p99: percentile(&phase.latencies, 99.0),
        node_cpu_ms: per(n1.saturating_sub(n0)),
        client_cpu_ms: per(c1.saturating_sub(c0)),
        submit_per_s: sub.done as f64 / sub.elapsed.as_secs_f64(),
        body_bytes: body.len(),
        died,
    };
    eprintln!(
        "  pulls run {run}: {} pulled in {:.1} s = {:.0} pulls/s, {} failed, p50 {:.1} ms, p99 {:.1} ms, node {:.2} CPU-ms/pull, client {:.2} CPU-ms/pull; submit {:.0} msg/s",
        r.pulled,
        phase.elapsed.as_secs_f64(),
        r.pulls_per_s,
        r.failures,
        r.p50,
        r.p99,
        r.node_cpu_ms,
        r.client_cpu_ms,
        r.submit_per_s
    );
    for f in &r.samples {
        eprintln!("    failure: {f}");
    }
    if let Some(how) = &r.died {
        eprintln!("    the node ended during the run: {how}");
    }
    Ok(r)
}

fn main() {
    // `cargo bench` passes "--bench"; there is nothing to filter, so arguments are ignored.
    let total = Instant::now();
    let s = Settings {
        messages: env_usize("BENCH_MESSAGES", 3000),
        warmup: env_usize("BENCH_WARMUP", 200),
        concurrency: env_usize("BENCH_CONCURRENCY", 16).max(1),
        max: Duration::from_secs(env_usize("BENCH_MAX_SECS", 60) as u64),
        tck: clk_tck(),
    };
    let repeats = env_usize("BENCH_REPEATS", 3).max(1);
    let payload_bytes = env_usize("BENCH_PAYLOAD_BYTES", 1024);
    let large_mib = env_usize("BENCH_LARGE_MIB", 100);
    let modes = std::env::var("BENCH_MODES").unwrap_or_else(|_| "proto,embedded,rabbitmq,large,outbound,s3,pulls".into());
    let want = |m: &str| modes.split(',').any(|x| x.trim() == m);

    let bin = locate_binary();
    let keydir = tempfile::Builder::new().prefix("edinode-bench-keys-").tempdir().expect("tempdir");
    let keys = Keys { station: identity(keydir.path(), "edinode"), client: identity(keydir.path(), "bench") };
    let msg = build_message(x12_payload(payload_bytes), &keys);
    let costs = if want("proto") { proto_costs(&keys, &msg) } else { vec![] };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let fs = describe_fs(&std::env::temp_dir());
    eprintln!(
        "edinode throughput: {} ({cpus} CPUs), node data under {} on {fs}, {} B payload -> {} B body, {} senders, {} warm-up + {} measured messages per run, {repeats} runs per mode",
        bin.display(),
        std::env::temp_dir().display(),
        payload_bytes,
        msg.body.len(),
        s.concurrency,
        s.warmup,
        s.messages
    );

    let mut table: Vec<(Mode, RunResult, Vec<f64>, usize)> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let mut modes_run = Vec::new();
    if want("embedded") {
        modes_run.push(Mode::Embedded);
    }
    if want("rabbitmq") {
        if tcp_up("127.0.0.1:5672") && tcp_up("127.0.0.1:6379") {
            modes_run.push(Mode::Rabbit);
        } else {
            errors.push("RabbitMQ + Redis: skipped, 127.0.0.1:5672 or 127.0.0.1:6379 does not answer".into());
        }
    }
    // Runs of the modes alternate (E R E R ...), so slow drift on the shared machine hits both.
    let mut run_dirs: Vec<tempfile::TempDir> = Vec::new();
    let mut runs: Vec<Vec<RunResult>> = modes_run.iter().map(|_| Vec::new()).collect();
    for i in 1..=repeats {
        for (k, mode) in modes_run.iter().enumerate() {
            match run_once(&rt, &bin, &keys, &msg, *mode, &s, i, &mut run_dirs) {
                Ok(r) => runs[k].push(r),
                Err(e) => {
                    eprintln!("  {} run {i}: {e}", mode.label());
                    errors.push(format!("{} run {i}: {e}", mode.label()));
                }
            }
        }
    }
    for (mode, mut rs) in modes_run.into_iter().zip(runs) {
        if rs.is_empty() {
            continue;
        }
        let all: Vec<f64> = rs.iter().map(|r| r.msg_per_s).collect();
        let total_failures: usize = rs.iter().map(|r| r.failures).sum();
        // The median of the runs without failures (a run that failed measures something else).
        let clean: Vec<RunResult> = rs.iter().filter(|r| r.failures == 0 && r.node_died.is_none()).map(|r| r.clone()).collect();
        if !clean.is_empty() {
            rs = clean;
        }
        rs.sort_by(|a, b| a.msg_per_s.total_cmp(&b.msg_per_s));
        let median = rs.swap_remove(rs.len() / 2);
        table.push((mode, median, all, total_failures));
    }

    let large = if want("large") && large_mib > 0 {
        eprintln!("large message: {large_mib} MiB, embedded mode");
        match run_large(&rt, &bin, &keys, large_mib, s.tck) {
            Ok(l) => Some(l),
            Err(e) => {
                errors.push(format!("large message: {e}"));
                None
            }
        }
    } else {
        None
    };

    // Sending: outbound (admin API) and s3 (S3 outbox), each node pair fresh per run.
    let outbound_n = env_usize("BENCH_OUTBOUND_MESSAGES", 1000);
    let outbound_warmup = env_usize("BENCH_OUTBOUND_WARMUP", 50);
    let s3_files = env_usize("BENCH_S3_FILES", 200).max(1);
    let mut outbound: Option<(OutboundRun, Vec<OutboundRun>)> = None;
    let mut s3_results: Vec<(S3Server, S3Run, Vec<S3Run>)> = Vec::new();
    let s3_kinds: Vec<S3Server> = std::env::var("BENCH_S3_SERVERS")
        .unwrap_or_else(|_| "tests,nodelay".into())
        .split(',')
        .filter_map(|k| match k.trim() {
            "tests" => Some(S3Server::Tests),
            "nodelay" => Some(S3Server::NoDelay),
            _ => None,
        })
        .collect();
    if want("outbound") || want("s3") {
        let pk = PairKeys { alpha: identity(keydir.path(), "alpha"), beta: identity(keydir.path(), "beta") };
        let payload = x12_payload(payload_bytes);
        if want("outbound") && outbound_n > 0 {
            eprintln!("outbound: {outbound_n} documents of {payload_bytes} B per run via POST /api/send on node A, {} submitters, {outbound_warmup} warm-up", s.concurrency);
            let mut rs = Vec::new();
            for i in 1..=repeats {
                match run_outbound_once(&rt, &bin, &pk, &payload, outbound_n, outbound_warmup, &s, i, &mut run_dirs) {
                    Ok(r) => rs.push(r),
                    Err(e) => {
                        eprintln!("  outbound run {i}: {e}");
                        errors.push(format!("outbound run {i}: {e}"));
                    }
                }
            }
            if !rs.is_empty() {
                let clean = |r: &OutboundRun| r.failed == 0 && r.submit_failures == 0 && !r.timed_out && r.died.is_none();
                let mut pick: Vec<OutboundRun> = if rs.iter().any(clean) { rs.iter().filter(|r| clean(r)).cloned().collect() } else { rs.clone() };
                pick.sort_by(|a, b| a.msg_per_s.total_cmp(&b.msg_per_s));
                let median = pick.swap_remove(pick.len() / 2);
                outbound = Some((median, rs));
            }
        }
        if want("s3") {
            eprintln!("s3: {s3_files} files of {payload_bytes}..{} B per run dropped at once under AS2/send/alpha/beta/, pickup_age_secs = {S3_PICKUP_AGE_SECS}, poll_secs = {S3_POLL_SECS}", payload_bytes + s3_files - 1);
            // Runs alternate between the servers, like the embedded and RabbitMQ runs.
            let mut runs: Vec<Vec<S3Run>> = s3_kinds.iter().map(|_| Vec::new()).collect();
            for i in 1..=repeats {
                for (k, kind) in s3_kinds.iter().enumerate() {
                    match run_s3_once(&bin, &pk, *kind, s3_files, payload_bytes, &s, i, &mut run_dirs) {
                        Ok(r) => runs[k].push(r),
                        Err(e) => {
                            eprintln!("  s3 ({}) run {i}: {e}", kind.label());
                            errors.push(format!("s3 ({}) run {i}: {e}", kind.label()));
                        }
                    }
                }
            }
            for (kind, rs) in s3_kinds.iter().zip(runs) {
                if rs.is_empty() {
                    continue;
                }
                let clean = |r: &S3Run| r.failed == 0 && !r.timed_out && r.died.is_none() && r.seen == r.files;
                let mut pick: Vec<S3Run> = if rs.iter().any(clean) { rs.iter().filter(|r| clean(r)).cloned().collect() } else { rs.clone() };
                pick.sort_by(|a, b| a.files_per_s.total_cmp(&b.files_per_s));
                let median = pick.swap_remove(pick.len() / 2);
                s3_results.push((*kind, median, rs));
            }
        }
    }

    // AS4 pulls: signed PullRequests, 10 KiB payloads, embedded node.
    let pull_n = env_usize("BENCH_PULLS", 2000);
    let pull_payload = env_usize("BENCH_PULL_PAYLOAD_BYTES", 10 * 1024);
    let mut pulls: Option<(PullRun, Vec<PullRun>)> = None;
    if want("pulls") && pull_n > 0 {
        eprintln!("pulls: {pull_n} signed PullRequests per run, {pull_payload} B payloads, {} pullers, {} warm-up", s.concurrency, s.warmup);
        let mut rs = Vec::new();
        for i in 1..=repeats {
            match run_pulls_once(&rt, &bin, &keys, pull_n, s.warmup, pull_payload, &s, i, &mut run_dirs) {
                Ok(r) => rs.push(r),
                Err(e) => {
                    eprintln!("  pulls run {i}: {e}");
                    errors.push(format!("pulls run {i}: {e}"));
                }
            }
        }
        if !rs.is_empty() {
            let clean = |r: &PullRun| r.failures == 0 && r.died.is_none();
            let mut pick: Vec<PullRun> = if rs.iter().any(clean) { rs.iter().filter(|r| clean(r)).cloned().collect() } else { rs.clone() };
            pick.sort_by(|a, b| a.pulls_per_s.total_cmp(&b.pulls_per_s));
            pulls = Some((pick.swap_remove(pick.len() / 2), rs));
        }
    }

    // The report, in Markdown (each table only for the modes that ran).
    if !table.is_empty() {
        println!();
        println!(
            "Throughput: {} B X12 payload, signed (sha-256) + encrypted (aes128-cbc, RSA 2048), signed synchronous MDN; {} concurrent senders; {} messages per run after {} warm-up; median of {} runs by msg/s; {} CPUs shared by client, node and broker; `http.workers = 2`; node data (spool, blobs, inbox) on {}.",
            payload_bytes, s.concurrency, s.messages, s.warmup, repeats, cpus, fs
        );
        println!();
        println!("| Mode | msg/s | p50 ms | p99 ms | max ms | node CPU-ms/msg | of which kernel | client CPU-ms/msg | broker+redis CPU-ms/msg | failures (median run; all runs) | msg/s of all runs |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        for (mode, r, all, total_failures) in &table {
            let all: Vec<String> = all.iter().map(|v| format!("{v:.0}")).collect();
            println!(
                "| {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {} | {} / {}; {} | {} |",
                mode.label(),
                r.msg_per_s,
                r.p50,
                r.p99,
                r.max,
                r.node_cpu_ms,
                r.node_sys_ms,
                r.client_cpu_ms,
                r.broker_cpu_ms.map(|b| format!("{b:.2}")).unwrap_or_else(|| "-".into()),
                r.failures,
                r.done,
                total_failures,
                all.join(", ")
            );
        }
    }
    if !costs.is_empty() {
        let sum: f64 = costs.iter().filter(|c| !c.name.contains("reference")).map(|c| c.ms).sum();
        println!();
        println!("Protocol work alone for the same message (edinode_proto, one thread in the bench process, no IO):");
        println!();
        println!("| Step | CPU ms |");
        println!("|---|---:|");
        for c in &costs {
            println!("| {} | {:.3} |", c.name, c.ms);
        }
        println!("| **sum of the steps (floor of node CPU-ms/msg)** | **{sum:.3}** |");
    }
    if let Some(l) = &large {
        println!();
        println!("Large message: one {:.0} MiB random-bytes payload, signed + encrypted as above, signed synchronous MDN, embedded mode.", l.payload_mib);
        println!();
        println!("| Payload | Body on the wire | Time s | Node peak RSS (VmHWM) MiB | Peak RSS / payload | Node RSS before MiB | Node CPU s | Result |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---|");
        println!(
            "| {:.0} MiB | {:.1} MiB | {:.1} | {:.0} | {:.2}x | {:.0} | {:.1} | {} |",
            l.payload_mib,
            l.body_mib,
            l.secs,
            l.hwm_mib,
            l.hwm_mib / l.payload_mib,
            l.base_mib,
            l.node_cpu_s,
            l.problem.clone().unwrap_or_else(|| "processed, MIC matches".into())
        );
    }
    if let Some((r, all)) = &outbound {
        let all_rates: Vec<String> = all.iter().map(|r| format!("{:.0}", r.msg_per_s)).collect();
        let all_failed: usize = all.iter().map(|r| r.failed + r.submit_failures).sum();
        println!();
        println!(
            "Outbound: node A sends {} documents of {} B X12 per run to node B (both embedded, `http.workers = 2`), submitted by {} concurrent clients to A's POST /api/send; signed (sha-256) + encrypted (aes128-cbc, RSA 2048), signed synchronous MDN required and verified by A. msg/s = documents `sent` / time from the first submit to A's last `sent` record; {} warm-up documents before; median of {} runs by msg/s; A's CPU includes answering the bench's status polls (every 250 ms).",
            outbound_n, payload_bytes, s.concurrency, outbound_warmup, repeats
        );
        println!();
        println!("| Mode | outbound msg/s | submit time s (202 p50 / p99 ms) | node A CPU-ms/msg | node B CPU-ms/msg | A + B CPU-ms/msg | client CPU-ms/msg | failures (median run; all runs) | msg/s of all runs |");
        println!("|---|---:|---|---:|---:|---:|---:|---:|---|");
        println!(
            "| outbound (API -> A -> B, sync signed MDN) | {:.0} | {:.1} ({:.1} / {:.1}) | {:.2} | {:.2} | {:.2} | {:.2} | {} / {}; {} | {} |",
            r.msg_per_s,
            r.submit_secs,
            r.submit_p50,
            r.submit_p99,
            r.a_cpu_ms,
            r.b_cpu_ms,
            r.a_cpu_ms + r.b_cpu_ms,
            r.client_cpu_ms,
            r.failed + r.submit_failures,
            r.submitted + r.submit_failures,
            all_failed,
            all_rates.join(", ")
        );
    }
    if let Some((_, first, _)) = s3_results.first() {
        println!();
        println!(
            "S3 outbox: {} files ({}..{} B X12) dropped at once (each written beside the bucket and renamed in; the drop starts 1 s after the nodes are up plus a random 0..{S3_POLL_SECS} s, so at a random phase of the poll cycle) under AS2/send/alpha/beta/ of an in-process S3 server (s3s-fs in the bench process, full-access key; the tests' server leaves Nagle on, which holds back GetObject bodies by the node's delayed ACK, so the same server with TCP_NODELAY is measured too), node A with `pickup_age_secs = {S3_PICKUP_AGE_SECS}`, `poll_secs = {S3_POLL_SECS}`, partner node B as in outbound mode (signed synchronous MDN); median of {} runs by files/s. Pick-up latency = from the file appearing in the bucket to the node queueing it: \"received_at\" is the summary's `received_at`, which is the start of the poll that took the file (so this column is the wait for the next poll, 0..{S3_POLL_SECS} s; it can be a few ms below 0 when a poll read its clock just before the last renames and listed just after), \"queued record\" the time of the message's `queued` history entry (after the node read the object; a poll takes its files one after the other and hands them to the sender only when it has taken them all). With the seed's default `pickup_age_secs = 15` a file is not taken before it is 15 s old, so its pick-up latency is 15 s plus this (and the default `poll_secs = 5` adds up to 5 s of polling phase instead of 0.2 s).",
            first.files,
            payload_bytes,
            payload_bytes + first.files - 1,
            repeats
        );
        println!();
        println!("| Mode, S3 server | pick-up p50 ms (received_at) | pick-up p99 ms (received_at) | pick-up p50 / p99 ms (queued record) | file -> sent p50 / p99 ms | end-to-end files/s | node A CPU-ms/file | node B CPU-ms/file | failures (median run; all runs) | files/s; pick-up p50 ms of all runs |");
        println!("|---|---:|---:|---|---|---:|---:|---:|---:|---|");
        for (kind, r, all) in &s3_results {
            let all_rates: Vec<String> = all.iter().map(|r| format!("{:.0}", r.files_per_s)).collect();
            let all_p50: Vec<String> = all.iter().map(|r| format!("{:.0}", r.pick_p50)).collect();
            let all_failed: usize = all.iter().map(|r| r.failed + (r.files - r.seen)).sum();
            println!(
                "| s3 outbox -> A -> B (pickup_age {S3_PICKUP_AGE_SECS} s, poll {S3_POLL_SECS} s), {} | {:.0} | {:.0} | {:.0} / {:.0} | {:.0} / {:.0} | {:.0} | {:.2} | {:.2} | {} / {}; {} | {}; {} |",
                kind.label(),
                r.pick_p50,
                r.pick_p99,
                r.queued_p50,
                r.queued_p99,
                r.sent_p50,
                r.sent_p99,
                r.files_per_s,
                r.a_cpu_ms,
                r.b_cpu_ms,
                r.failed + (r.files - r.seen),
                r.files,
                all_failed,
                all_rates.join(", "),
                all_p50.join(", ")
            );
        }
    }
    if let Some((r, all)) = &pulls {
        let all_rates: Vec<String> = all.iter().map(|r| format!("{:.0}", r.pulls_per_s)).collect();
        let all_failed: usize = all.iter().map(|r| r.failures).sum();
        println!();
        println!(
            "AS4 pulls: one embedded node (`http.workers = 2`) answers {} signed PullRequests (RSA 2048, SHA-256, signed by the bench before the clock starts) per run from {} concurrent pullers on one MPC, each answered with a queued user message of {} B ({} B multipart/related on the wire) signed by the node (BinarySecurityToken, RSA-SHA256, SwA attachment digest); no receipts; the messages were queued before through POST /api/as4/submit; one response per run verified as a partner would; median of {} runs by pulls/s.",
            pull_n, s.concurrency, pull_payload, r.body_bytes, repeats
        );
        println!();
        println!("| Mode | pulls/s | p50 ms | p99 ms | node CPU-ms/pull | client CPU-ms/pull | submit msg/s | failures (median run; all runs) | pulls/s of all runs |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
        println!(
            "| pulls (signed PullRequest -> signed user message) | {:.0} | {:.1} | {:.1} | {:.2} | {:.2} | {:.0} | {}; {} | {} |",
            r.pulls_per_s, r.p50, r.p99, r.node_cpu_ms, r.client_cpu_ms, r.submit_per_s, r.failures, all_failed, all_rates.join(", ")
        );
    }
    if !errors.is_empty() {
        println!();
        for e in &errors {
            println!("- {e}");
        }
    }
    println!();
    drop(run_dirs);
    eprintln!("total bench time {:.0} s", total.elapsed().as_secs_f64());
}
