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
//! Environment knobs (defaults in brackets):
//! - BENCH_MESSAGES [3000] measured messages per run, BENCH_WARMUP [200],
//!   BENCH_CONCURRENCY [16], BENCH_REPEATS [3], BENCH_PAYLOAD_BYTES [1024];
//! - BENCH_LARGE_MIB [100] (0 skips the large message);
//! - BENCH_MODES [proto,embedded,rabbitmq,large]; "proto" is the single-thread cost of the
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
    let modes = std::env::var("BENCH_MODES").unwrap_or_else(|_| "proto,embedded,rabbitmq,large".into());
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

    // The report, in Markdown.
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
