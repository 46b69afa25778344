//! Share-nothing scale-out: three node processes, each with its own data_dir and inbox, that
//! share only RabbitMQ, Redis and an S3 server (s3s-fs, in this process) as the blob store. Each
//! node runs in its own network namespace and reaches the services over a veth pair to a hub
//! namespace (see common/netns.rs); where namespaces cannot be created (not root), the same runs
//! on loopback and the output says so (`EDINODE_TEST_NO_NETNS=1` forces that).
//!
//! 50 messages of 2 MiB (above limits.inline_threshold_bytes: claim-checked through the blob
//! store) and 200 of 1 KiB, signed + encrypted with signed synchronous MDNs, are sent to the two
//! nodes that receive HTTP; the third (a worker) is killed with SIGKILL mid-run. Every message
//! gets a positive MDN and is delivered exactly once, counted across the three inboxes; no
//! working blob is left in the bucket and no node wrote a blob to its own disk.
//!
//! Shares the broker's queues with the other RabbitMQ tests: nextest runs it in the `rabbit`
//! group.

use crate::common::netns;
use crate::common::s3server;

use crate::common::build::*;
use crate::common::*;
use edinode_proto::alg::DigestAlg;
use netns::Lab;
use s3server::{Policy, TestS3};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LARGE: usize = 50;
const SMALL: usize = 200;
const LARGE_BYTES: usize = 2 * 1024 * 1024;
const SENDERS: usize = 8;
/// The worker is killed once this many messages are answered.
const KILL_AFTER: usize = 80;
const S3_PORT: u16 = 9000;

/// Where the nodes run: namespaces joined to a hub, or this machine's loopback.
enum Net {
    Namespaces(Lab),
    Loopback(String),
}

impl Net {
    /// Address of the machine's services as node `n` reaches them.
    fn services(&self, n: usize) -> String {
        match self {
            Net::Namespaces(lab) => lab.hub_addr(n).to_string(),
            Net::Loopback(_) => "127.0.0.1".into(),
        }
    }
    /// Address node `n` listens on.
    fn listen(&self, n: usize) -> String {
        match self {
            Net::Namespaces(lab) => lab.node_addr(n).to_string(),
            Net::Loopback(_) => "127.0.0.1".into(),
        }
    }
    fn command(&self, n: usize) -> std::process::Command {
        let bin = Path::new(env!("CARGO_BIN_EXE_edinode"));
        match self {
            Net::Namespaces(lab) => Lab::command(&lab.nodes[n - 1], bin),
            Net::Loopback(_) => std::process::Command::new(bin),
        }
    }
    /// Run `f` (and the threads it starts) where the nodes' addresses are reachable.
    fn client<T>(&self, f: impl FnOnce() -> T) -> T {
        match self {
            Net::Namespaces(lab) => Lab::within(&lab.hub, f),
            Net::Loopback(_) => f(),
        }
    }
    fn describe(&self) -> String {
        match self {
            Net::Namespaces(lab) => format!("network namespaces {} (hub {}), veth 10.77.<n>.1 <-> 10.77.<n>.2", lab.nodes.join(", "), lab.hub),
            Net::Loopback(why) => format!("LOOPBACK (network namespaces unavailable: {why}); separate data dirs only"),
        }
    }
}

/// The document of message `i`: 2 MiB for every fifth of the first 250, else 1 KiB of X12.
fn document(i: usize) -> (String, Vec<u8>) {
    if i.is_multiple_of(5) {
        let data: Vec<u8> = (0..LARGE_BYTES).map(|b| ((b * 31 + i * 7) % 251) as u8).collect();
        (format!("big-{i}.bin"), data)
    } else {
        let mut data = format!("ISA*00*{i:06}~\r\nGS*PO~\r\n").into_bytes();
        data.resize(1024, b'x');
        (format!("msg-{i}.edi"), data)
    }
}

struct Outcome {
    ok: bool,
    millis: f64,
    large: bool,
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Names of the files in each node's inbox for our station and partner.
fn inbox_names(inboxes: &[PathBuf]) -> Vec<String> {
    inboxes
        .iter()
        .flat_map(|i| std::fs::read_dir(i.join("edinode").join("acme")).into_iter().flatten().flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.contains(".part-"))
        .collect()
}

fn is_copy_of(name: &str, file: &str) -> bool {
    name == file || name.ends_with(&format!("_{file}"))
}

/// The logs of the node processes started in `dir`.
fn node_logs(dir: &Path) -> String {
    let logs = std::fs::read_dir(dir).into_iter().flatten().flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".log"));
    logs.map(|e| std::fs::read_to_string(e.path()).unwrap_or_default()).collect()
}

fn dead_letters() -> usize {
    let out = std::process::Command::new("rabbitmqctl").args(["-q", "list_queues", "name", "messages"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .find(|(q, _)| *q == "edinode.dead")
        .and_then(|(_, n)| n.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn three_nodes_sharing_nothing_on_disk_deliver_everything_once_across_a_kill() {
    purge_queues();
    let net = match std::env::var("EDINODE_TEST_NO_NETNS") {
        Ok(_) => Net::Loopback("EDINODE_TEST_NO_NETNS is set".into()),
        Err(_) => match Lab::create(3) {
            Ok(lab) => Net::Namespaces(lab),
            Err(why) => Net::Loopback(why),
        },
    };
    eprintln!("scale_out: running on {}", net.describe());

    let rt = tokio::runtime::Runtime::new().unwrap();
    let s3 = rt.block_on(TestS3::start(vec![("edinode", "edinode-secret", Policy::full())]));
    let s3_endpoint = match &net {
        Net::Namespaces(lab) => {
            lab.forward(5672, "127.0.0.1:5672".parse().unwrap());
            lab.forward(6379, "127.0.0.1:6379".parse().unwrap());
            lab.forward(S3_PORT, s3.endpoint.trim_start_matches("http://").parse().unwrap());
            None
        }
        Net::Loopback(_) => Some(s3.endpoint.clone()),
    };

    let top = tempfile::tempdir().unwrap();
    let station = identity(top.path(), "station");
    let partner = identity(top.path(), "partner");
    let prefix = unique("edinode-scale-");
    let mut dirs = Vec::new();
    let mut configs = Vec::new();
    for n in 1..=3 {
        let dir = top.path().join(format!("node-{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        let services = net.services(n);
        let endpoint = s3_endpoint.clone().unwrap_or_else(|| format!("http://{services}:{S3_PORT}"));
        let mut b = ConfigBuilder::new(&dir)
            .rabbit(&prefix)
            .station("edinode", "edinode", &station)
            .partner("acme", "acme", "edinode", &[&partner.cert_pem], "require_signed = true\nrequire_encrypted = true")
            .raw(&format!(
                "\n[blobs]\nbackend = \"s3\"\nbucket = \"{}\"\nprefix = \"blobs/\"\nendpoint = \"{endpoint}\"\naccess_key = \"edinode\"\nsecret_key = \"edinode-secret\"\n",
                s3.bucket
            ));
        b.text = b.text.replace("127.0.0.1:5672", &format!("{services}:5672")).replace("127.0.0.1:6379", &format!("{services}:6379"));
        b.text = b.text.replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{}:0\"", net.listen(n)));
        configs.push(b.write(&dir));
        dirs.push(dir);
    }
    let start = |n: usize, actors: Option<&str>| {
        let extra: Vec<String> = actors.map(|a| vec![format!("--actors={a}")]).unwrap_or_default();
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        start_node_with(net.command(n), &configs[n - 1], &dirs[n - 1], &extra, &[("EDINODE__NODE__ID", &format!("scale-{n}"))])
    };
    // Two nodes run every actor (and receive HTTP); the third is a worker.
    let fronts = [start(1, None), start(2, None)];
    let mut worker = start(3, Some("mime_unwrapper,decryptor,verifier,deliverer,mdn_sender"));
    let urls: Vec<String> = fronts.iter().map(|f| f.as2_url()).collect();

    let total = LARGE + SMALL;
    let answered = Arc::new(AtomicUsize::new(0));
    let outcomes: Arc<Mutex<HashMap<usize, Outcome>>> = Arc::new(Mutex::new(HashMap::new()));
    let (started, killed_at) = (Instant::now(), Arc::new(Mutex::new(None)));
    let senders = net.client(|| {
        (0..SENDERS)
            .map(|t| {
                let (answered, outcomes, urls) = (answered.clone(), outcomes.clone(), urls.clone());
                let (key, cert, to) = (partner.key.clone(), partner.cert.clone(), station.cert.clone());
                std::thread::spawn(move || {
                    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
                    for i in (t..total).step_by(SENDERS) {
                        let (name, data) = document(i);
                        let ct = if i % 5 == 0 { "application/octet-stream" } else { "application/edi-x12" };
                        let body = encrypted(&signed(&entity(ct, &name, &data), &key, &cert, DigestAlg::Sha256), &to);
                        let (headers, body) = request("acme", "edinode", &format!("<scale-{i}@test>"), Some("signed"), &body);
                        let mut req = client.post(&urls[i % urls.len()]);
                        for (k, v) in &headers {
                            req = req.header(k.as_str(), v.as_str());
                        }
                        let t0 = Instant::now();
                        let ok = req.body(body).send().ok().is_some_and(|r| {
                            r.status().as_u16() == 200 && String::from_utf8_lossy(&r.bytes().unwrap_or_default()).contains("MDN-sent-automatically; processed\r\n")
                        });
                        outcomes.lock().unwrap().insert(i, Outcome { ok, millis: t0.elapsed().as_secs_f64() * 1000.0, large: i % 5 == 0 });
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect::<Vec<_>>()
    });
    wait_for(300, "the first answers before the kill", || (answered.load(Ordering::SeqCst) >= KILL_AFTER).then_some(()));
    worker.kill9();
    *killed_at.lock().unwrap() = Some((started.elapsed(), answered.load(Ordering::SeqCst)));
    for s in senders {
        s.join().unwrap();
    }
    let elapsed = started.elapsed();

    let outcomes = Arc::try_unwrap(outcomes).ok().unwrap().into_inner().unwrap();
    let failed: Vec<usize> = (0..total).filter(|i| !outcomes.get(i).is_some_and(|o| o.ok)).collect();
    let logs = || dirs.iter().map(|d| node_logs(d)).collect::<Vec<_>>().join("\n");
    assert!(failed.is_empty(), "no positive MDN for {failed:?}\n{}", logs());

    // Delivered exactly once, counted across the three inboxes, with the bytes sent.
    let inboxes: Vec<PathBuf> = dirs.iter().map(|d| d.join("inbox")).collect();
    let files: Vec<String> = (0..total).map(|i| document(i).0).collect();
    wait_for(120, "all deliveries", || {
        let names = inbox_names(&inboxes);
        files.iter().all(|f| names.iter().any(|n| is_copy_of(n, f))).then_some(())
    });
    // Stragglers (redeliveries) land before counting: nothing is left in the broker.
    wait_rabbit_idle();
    let names = inbox_names(&inboxes);
    let mut per_node = Vec::new();
    for inbox in &inboxes {
        per_node.push(inbox_names(std::slice::from_ref(inbox)).len());
    }
    for i in 0..total {
        let (file, data) = document(i);
        let copies: Vec<PathBuf> = inboxes
            .iter()
            .flat_map(|inbox| std::fs::read_dir(inbox.join("edinode").join("acme")).into_iter().flatten().flatten())
            .filter(|e| is_copy_of(&e.file_name().to_string_lossy(), &file))
            .map(|e| e.path())
            .collect();
        assert_eq!(copies.len(), 1, "{file} delivered {} times: {copies:?}", copies.len());
        assert!(std::fs::read(&copies[0]).unwrap() == data, "{file}: delivered bytes differ");
    }
    assert_eq!(names.len(), total, "no other files in the inboxes: {names:?}");
    assert_eq!(dead_letters(), 0, "nothing dead-lettered");

    // Blobs went to S3 only; the delivered messages' raw captures and working copies are gone.
    for d in &dirs {
        assert!(!d.join("var").join("blobs").exists(), "{} has a local blob directory", d.display());
    }
    let left = |sub: &str| -> Vec<String> {
        let root = s3.path(&format!("blobs/{sub}"));
        let mut out = Vec::new();
        let mut stack = vec![root];
        while let Some(p) = stack.pop() {
            for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                if e.file_type().unwrap().is_dir() { stack.push(e.path()) } else { out.push(e.path().display().to_string()) }
            }
        }
        out
    };
    wait_for(30, "working blobs removed", || (left("raw").is_empty() && left("work").is_empty()).then_some(()));

    let logs_text = logs();
    let second_deliveries = logs_text.matches("another node's inbox").count();
    let by = work_by_node(&prefix);
    assert!(by.get("scale-3").copied().unwrap_or(0) > 0, "the worker did work before it was killed: {by:?}");
    let (kill_time, kill_answered) = killed_at.lock().unwrap().unwrap();
    let lat = |large: bool| outcomes.values().filter(|o| o.large == large).map(|o| o.millis).collect::<Vec<f64>>();
    let mib = (LARGE * LARGE_BYTES + SMALL * 1024) as f64 / (1024.0 * 1024.0);
    eprintln!(
        "scale_out: {total} messages ({LARGE} x 2 MiB, {SMALL} x 1 KiB, signed+encrypted, signed sync MDN) from {SENDERS} senders to 2 of 3 nodes in {:.1} s: {:.1} msg/s, {:.1} MiB/s of payload",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        mib / elapsed.as_secs_f64()
    );
    eprintln!(
        "scale_out: MDN latency 1 KiB p50 {:.0} ms p95 {:.0} ms max {:.0} ms; 2 MiB p50 {:.0} ms p95 {:.0} ms max {:.0} ms",
        percentile(lat(false), 0.5),
        percentile(lat(false), 0.95),
        percentile(lat(false), 1.0),
        percentile(lat(true), 0.5),
        percentile(lat(true), 0.95),
        percentile(lat(true), 1.0)
    );
    eprintln!(
        "scale_out: worker scale-3 killed with SIGKILL at {:.1} s after {kill_answered} answers; decryptions by node {by:?}; files per inbox {per_node:?}; second deliveries of a document into another inbox stopped: {second_deliveries}; all {total} delivered once, 0 dead letters, no working blob left",
        kill_time.as_secs_f64()
    );
    drop(fronts);
}
