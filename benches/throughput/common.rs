//! What every mode shares: settings and the run context, keys and node configuration, the AS2
//! message, starting the node, and reading processes' CPU and the machine's load from /proc.

use edinode_proto::alg::{ContentCipher, DigestAlg, KeyTransport};
use edinode_proto::cms::{self, SignOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub use crate::testkit::{AMQP_URL, Identity, REDIS_URL, identity};
pub const QUEUES: [&str; 5] = ["edinode.mime_unwrapper", "edinode.decryptor", "edinode.verifier", "edinode.mdn_sender", "edinode.deliverer"];
pub const DN_OPTIONS: &str = "signed-receipt-protocol=optional, pkcs7-signature; signed-receipt-micalg=optional, sha-256";

/// How the inbound message is secured, for the reports.
pub const SECURITY: &str = "signed sha-256 (RSA 2048, PKCS#1 v1.5) + encrypted aes256-cbc (RSA 2048 PKCS#1 v1.5 key transport), signed synchronous MDN (sha-256)";

pub struct Settings {
    pub messages: usize,
    pub warmup: usize,
    pub concurrency: usize,
    pub max: Duration,
    pub tck: f64,
}

/// What every mode gets: the runtime, the binary, keys, the prebuilt message, and where run
/// directories (removed only at the end, see inbound::run_once) and errors are collected.
pub struct Ctx {
    pub rt: tokio::runtime::Runtime,
    pub bin: PathBuf,
    pub keydir: PathBuf,
    pub keys: Keys,
    pub msg: As2Message,
    pub s: Settings,
    pub repeats: usize,
    pub payload_bytes: usize,
    pub keep: Vec<tempfile::TempDir>,
    pub errors: Vec<String>,
}

impl Ctx {
    /// `f(self, run)` for runs 1..=repeats; failed runs are reported and left out.
    pub fn repeat<T>(&mut self, what: &str, mut f: impl FnMut(&mut Ctx, usize) -> Result<T, String>) -> Vec<T> {
        let mut out = Vec::new();
        for i in 1..=self.repeats {
            match f(self, i) {
                Ok(r) => out.push(r),
                Err(e) => self.fail(format!("{what} run {i}: {e}")),
            }
        }
        out
    }
    pub fn fail(&mut self, e: String) {
        eprintln!("  {e}");
        self.errors.push(e);
    }
    pub fn tempdir(&mut self, prefix: &str) -> Result<PathBuf, String> {
        let d = tempfile::Builder::new().prefix(prefix).tempdir().map_err(|e| e.to_string())?;
        let p = d.path().to_path_buf();
        self.keep.push(d);
        Ok(p)
    }
}

/// The run to report: the median by `rate` of the clean runs (of all runs when none is clean).
pub fn median_run<T: Clone>(rs: &[T], clean: impl Fn(&T) -> bool, rate: impl Fn(&T) -> f64) -> Option<T> {
    let mut pick: Vec<&T> = rs.iter().filter(|r| clean(r)).collect();
    if pick.is_empty() {
        pick = rs.iter().collect();
    }
    pick.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    pick.get(pick.len() / 2).map(|r| (*r).clone())
}

/// The 1, 5 and 15 minute load averages.
#[derive(Clone, Copy, Default)]
pub struct Load(pub f64, pub f64, pub f64);

impl std::fmt::Display for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2} {:.2} {:.2}", self.0, self.1, self.2)
    }
}

pub fn loadavg() -> Load {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let v: Vec<f64> = s.split_whitespace().take(3).filter_map(|x| x.parse().ok()).collect();
    match v[..] {
        [a, b, c] => Load(a, b, c),
        _ => Load::default(),
    }
}

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

pub fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    openssl::rand::rand_bytes(&mut b).expect("rand");
    u32::from_le_bytes(b) & 0x7fff_ffff
}

// ---------------------------------------------------------------------------------------------
// Keys and configuration
// ---------------------------------------------------------------------------------------------

pub struct Keys {
    pub station: Identity,
    pub client: Identity,
}

/// Node configuration for one run; `rabbit` carries the Redis prefix.
pub fn write_config(dir: &Path, keys: &Keys, rabbit: Option<&str>, sync_timeout: u64) -> PathBuf {
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

pub struct As2Message {
    /// HTTP body: DER EnvelopedData.
    pub body: bytes::Bytes,
    /// Base64 sha-256 MIC over the signed entity, as the MDN must report it.
    pub mic: String,
    pub payload_len: usize,
}

pub fn build_message(payload: Vec<u8>, keys: &Keys) -> As2Message {
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
    signed.extend_from_slice(&edinode_proto::mdn::base64_lines(&sig));
    signed.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let der = cms::encrypt(&signed, &keys.station.cert, ContentCipher::Aes256Cbc, KeyTransport::RsaPkcs1v15).expect("encrypt");
    As2Message { body: bytes::Bytes::from(der), mic, payload_len }
}

/// A 1 KiB-ish X12 interchange (text, like real traffic).
pub fn x12_payload(len: usize) -> Vec<u8> {
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

pub fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .filter(|v| *v > 0.0)
        .unwrap_or(100.0)
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: &str) -> Option<u64> {
    cpu_split(pid).map(|(u, s)| u + s)
}

/// (utime, stime) of a process, in clock ticks.
pub fn cpu_split(pid: &str) -> Option<(u64, u64)> {
    stat_fields(pid).map(|f| (f.utime, f.stime))
}

/// The fields of /proc/PID/stat the bench reads (CPU in clock ticks).
pub struct Stat {
    pub ppid: u32,
    pub utime: u64,
    pub stime: u64,
    /// CPU of the children the process has waited for (a restarted worker's, say).
    pub cutime: u64,
    pub cstime: u64,
}

pub fn stat_fields(pid: &str) -> Option<Stat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after "(comm)": state is field 3, ppid 4, utime..cstime 14..17.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<u64> = rest.split_whitespace().skip(1).take(16).map(|x| x.parse().unwrap_or(0)).collect();
    (f.len() == 16).then(|| Stat { ppid: f[0] as u32, utime: f[10], stime: f[11], cutime: f[12], cstime: f[13] })
}

/// Process ids whose parent is `parent`.
pub fn children_of(parent: u32) -> Vec<String> {
    all_pids().into_iter().filter(|p| stat_fields(p).is_some_and(|st| st.ppid == parent)).collect()
}

fn all_pids() -> Vec<String> {
    std::fs::read_dir("/proc")
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().to_string()).filter(|p| p.bytes().all(|b| b.is_ascii_digit())).collect())
        .unwrap_or_default()
}

pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

/// Process ids whose command name is one of `names` (the broker and Redis, read only).
pub fn pids_named(names: &[&str]) -> Vec<String> {
    all_pids().into_iter().filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| names.contains(&c.trim()))).collect()
}

pub fn sum_ticks(pids: &[String]) -> u64 {
    pids.iter().filter_map(|p| cpu_ticks(p)).sum()
}

pub struct Node {
    pub child: Child,
    pub url: String,
    pub log: PathBuf,
}

impl Node {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// How the node ended, when it has ("exit code 1", "killed by signal 9").
    pub fn exit_description(&mut self) -> Option<String> {
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
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    /// WARN/ERROR lines of the node's log (first `n`), and how many there were.
    pub fn log_problems(&self, n: usize) -> (usize, Vec<String>) {
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

pub fn start_node(bin: &Path, config: &Path, dir: &Path) -> Result<Node, String> {
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
                    if !sent && let Some(u) = line.trim().strip_prefix("edinode listening on ") {
                        let _ = tx.send(u.to_string());
                        sent = true;
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
pub fn describe_fs(path: &Path) -> String {
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
        if let Ok(j) = std::fs::read_to_string(format!("/sys/fs/ext4/{name}/journal_task"))
            && j.trim() == "<none>"
        {
            // Without a journal, ext4 skips inodes freed recently (their inode-table block
            // still cached) on every create: file churn gets slower the more files were
            // deleted in the last hours.
            kind = "ext4 without journal".into();
        }
    }
    format!("{kind} ({dev} at {mnt})")
}

pub fn locate_binary() -> PathBuf {
    if let Ok(p) = std::env::var("EDINODE_BIN") {
        return PathBuf::from(p);
    }
    // Cargo builds the package's binaries for benches and tells us where (same profile).
    if let Some(p) = option_env!("CARGO_BIN_EXE_edinode")
        && Path::new(p).exists()
    {
        return PathBuf::from(p);
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

pub fn purge_queues() {
    let children: Vec<_> = QUEUES
        .iter()
        .filter_map(|q| Command::new("rabbitmqctl").args(["-q", "purge_queue", q]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().ok())
        .collect();
    for mut c in children {
        let _ = c.wait();
    }
}

pub fn redis_cleanup(prefix: &str) {
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!("redis-cli -h 127.0.0.1 -p 6379 --scan --pattern '{prefix}*' | xargs -r -n 1000 redis-cli -h 127.0.0.1 -p 6379 unlink >/dev/null"))
        .status();
}

pub fn tcp_up(addr: &str) -> bool {
    addr.parse().ok().and_then(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok()).is_some()
}
