//! Sending: node A sends to node B through the admin API (outbound mode; from an S3 outbox in
//! s3.rs). Both nodes are embedded, each in its own directory; the admin API is on the partner
//! listener (admin.listen = "").

use crate::common::*;
use crate::load::*;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const ADMIN_TOKEN: &str = "bench-admin-token";
pub const FORM_BOUNDARY: &str = "bench-form-boundary-5c1e";

/// The two trading identities of the sending modes: station "alpha" on node A, "beta" on B.
pub struct PairKeys {
    pub alpha: Identity,
    pub beta: Identity,
}

pub fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A node of the pair: station `me` and one partner `peer`. With `peer_url`, the partner is sent
/// to (sign sha256, encrypt aes256-cbc, signed synchronous MDN required); without, it only sends
/// to us (signed and encrypted required).
pub fn write_pair_config(dir: &Path, me: &str, my: &Identity, peer: &str, peer_id: &Identity, peer_url: Option<&str>, station_extra: &str) -> PathBuf {
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
            "url = \"{url}\"\n[partners.{peer}.outbound]\nsign = \"sha256\"\nencrypt = \"aes256-cbc\"\ncompress = \"none\"\nmdn = \"sync\"\nmdn_signed = true\nrequire_signed_mdn = true\n"
        )),
        None => t.push_str(&format!("[partners.{peer}.policy]\nrequire_signed = true\nrequire_encrypted = true\n")),
    }
    let p = dir.join("edinode.toml");
    std::fs::write(&p, t).expect("write config");
    p
}

/// Node B (receiver, started first) and node A (sender, partner B at B's /as2).
pub struct Pair {
    pub a: Node,
    pub b: Node,
    pub dir_b: PathBuf,
}

/// How a pair's run ended: what B's inbox holds, how a node ended if one did, and the first
/// WARN/ERROR lines of each node's log.
#[derive(Clone)]
pub struct PairEnd {
    pub delivered: usize,
    pub log_a: (usize, Vec<String>),
    pub log_b: (usize, Vec<String>),
    pub died: Option<String>,
}

impl Pair {
    /// CPU used so far by node A and node B, in clock ticks.
    pub fn cpu_ticks(&self) -> (u64, u64) {
        (cpu_ticks(&self.a.pid().to_string()).unwrap_or(0), cpu_ticks(&self.b.pid().to_string()).unwrap_or(0))
    }

    /// Notes how the run ended, then stops both nodes.
    pub fn finish(mut self) -> PairEnd {
        let died = match (self.a.exit_description(), self.b.exit_description()) {
            (None, None) => None,
            (a, b) => Some(format!("A: {}, B: {}", a.unwrap_or_else(|| "running".into()), b.unwrap_or_else(|| "running".into()))),
        };
        let delivered = count_files(&self.dir_b.join("inbox"));
        let (log_a, log_b) = (self.a.log_problems(5), self.b.log_problems(5));
        self.a.kill();
        self.b.kill();
        PairEnd { delivered, log_a, log_b, died }
    }
}

impl PairEnd {
    /// After a run's summary line: its failure samples (each labelled `what`), then how the
    /// pair ended.
    pub fn print_problems<'a>(&self, what: &str, samples: impl IntoIterator<Item = &'a String>) {
        print_problems(what, samples, &self.died, &[("A", &self.log_a), ("B", &self.log_b)]);
    }
}

pub fn start_pair(cx: &mut Ctx, pk: &PairKeys, a_station_extra: &str) -> Result<Pair, String> {
    let (pa, pb) = (cx.tempdir("edinode-bench-a-")?, cx.tempdir("edinode-bench-b-")?);
    let cb = write_pair_config(&pb, "beta", &pk.beta, "alpha", &pk.alpha, None, "");
    let b = start_node(&cx.bin, &cb, &pb)?;
    let ca = write_pair_config(&pa, "alpha", &pk.alpha, "beta", &pk.beta, Some(&format!("{}/as2", b.url)), a_station_extra);
    let a = start_node(&cx.bin, &ca, &pa)?;
    Ok(Pair { a, b, dir_b: pb })
}

pub fn count_files(dir: &Path) -> usize {
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

/// multipart/form-data for POST /api/send (as `edinode send` makes it): station, partner and one
/// file part.
pub fn send_form(station: &str, partner: &str, filename: &str, data: &[u8]) -> Vec<u8> {
    let mut form = edinode::init::SendForm::new(FORM_BOUNDARY, station, partner);
    form.file(filename, "application/edi-x12", data);
    form.finish()
}

pub struct SubmitPhase {
    pub ids: Vec<String>,
    pub failures: Failures,
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
}

/// POST /api/send `count` times from `concurrency` tasks (stops issuing after `max`).
pub async fn submit_docs(client: &reqwest::Client, base: &str, payload: &[u8], count: usize, concurrency: usize, max: Duration, tag: &str) -> SubmitPhase {
    let ids = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let (client, url, payload, tag) = (client.clone(), format!("{base}/api/send"), payload.to_vec(), tag.to_string());
    let make = move |i: usize| {
        client
            .post(&url)
            .bearer_auth(ADMIN_TOKEN)
            .header("Content-Type", format!("multipart/form-data; boundary={FORM_BOUNDARY}"))
            .body(send_form("alpha", "beta", &format!("{tag}-{i}.edi"), &payload))
    };
    let found = ids.clone();
    let check = move |status: u16, _ct: &str, b: &[u8]| match status {
        202 => match serde_json::from_slice::<serde_json::Value>(b).ok().and_then(|v| v["id"].as_str().map(str::to_string)) {
            Some(id) => {
                found.lock().unwrap().push(id);
                None
            }
            None => Some(format!("202 without an id: {}", String::from_utf8_lossy(b))),
        },
        _ => Some(format!("HTTP {status}: {}", String::from_utf8_lossy(b).chars().take(300).collect::<String>())),
    };
    let phase = drive(count, concurrency, max, make, check).await;
    let ids = std::mem::take(&mut *ids.lock().unwrap());
    SubmitPhase { ids, failures: phase.failures, latencies: phase.latencies, elapsed: phase.elapsed }
}

/// Every message GET /api/messages?{query} lists (pages of 1000, newest first, by `until`).
pub async fn list_messages(client: &reqwest::Client, base: &str, query: &str) -> Result<Vec<serde_json::Value>, String> {
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
pub fn field_i64(m: &serde_json::Value, f: &str) -> Option<i64> {
    m[f].as_str().and_then(|s| s.parse().ok()).or_else(|| m[f].as_i64())
}

pub struct Finals {
    /// id -> the time of its `sent` record (summary updated_at, unix ms).
    pub sent: std::collections::HashMap<String, i64>,
    /// (id, reason).
    pub failed: Vec<(String, String)>,
    pub timed_out: bool,
}

/// Poll A's API until every id in `ids` is `sent` or `failed` (or `deadline`).
pub async fn wait_final(client: &reqwest::Client, base: &str, ids: &std::collections::HashSet<String>, deadline: Instant, every: Duration) -> Result<Finals, String> {
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
pub struct OutboundRun {
    pub submitted: usize,
    pub submit_failures: usize,
    pub submit_samples: Vec<String>,
    pub submit_secs: f64,
    pub submit_p50: f64,
    pub submit_p99: f64,
    pub sent: usize,
    pub failed: usize,
    pub failed_samples: Vec<String>,
    pub timed_out: bool,
    /// First submit to the last `sent` record.
    pub secs: f64,
    pub msg_per_s: f64,
    pub a_cpu_ms: f64,
    pub b_cpu_ms: f64,
    pub client_cpu_ms: f64,
    pub end: PairEnd,
}

/// After a run's summary line: its failure samples (each labelled `what`), how a node ended if
/// one did, and the WARN/ERROR lines of the nodes' logs.
pub fn print_problems<'a>(what: &str, samples: impl IntoIterator<Item = &'a String>, died: &Option<String>, logs: &[(&str, &(usize, Vec<String>))]) {
    for x in samples {
        eprintln!("    {what}: {x}");
    }
    if let Some(d) = died {
        eprintln!("    a node ended during the run: {d}");
    }
    for (name, lp) in logs {
        print_log_problems(name, lp);
    }
}

fn print_log_problems(name: &str, lp: &(usize, Vec<String>)) {
    if lp.0 > 0 {
        eprintln!("    node {name} log: {} WARN/ERROR lines, first:", lp.0);
        for l in &lp.1 {
            eprintln!("      {l}");
        }
    }
}

pub fn run_outbound_once(cx: &mut Ctx, pk: &PairKeys, payload: &[u8], n: usize, warmup: usize, run: usize) -> Result<OutboundRun, String> {
    let pair = start_pair(cx, pk, "")?;
    let (rt, s) = (&cx.rt, &cx.s);
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
    let me = std::process::id().to_string();
    let ((a0, b0), c0) = (pair.cpu_ticks(), cpu_ticks(&me).unwrap_or(0));
    let t0_ms = unix_ms();
    let mut phase = rt.block_on(submit_docs(&client, &base, payload, n, s.concurrency, s.max, &format!("{tag}m")));
    let ids: std::collections::HashSet<String> = phase.ids.iter().cloned().collect();
    let f = rt.block_on(wait_final(&client, &base, &ids, Instant::now() + wait_limit, Duration::from_millis(250)))?;
    let ((a1, b1), c1) = (pair.cpu_ticks(), cpu_ticks(&me).unwrap_or(0));
    let ended = pair.finish();
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
        end: ended,
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
        r.end.delivered
    );
    r.end.print_problems("failure", r.submit_samples.iter().chain(&r.failed_samples));
    Ok(r)
}

/// The outbound mode: a fresh pair per run; the median run by msg/s and all runs.
pub fn bench(cx: &mut Ctx, pk: &PairKeys) -> Option<(OutboundRun, Vec<OutboundRun>)> {
    let n = env_usize("BENCH_OUTBOUND_MESSAGES", 1000);
    let warmup = env_usize("BENCH_OUTBOUND_WARMUP", 50);
    if n == 0 {
        return None;
    }
    eprintln!("outbound: {n} documents of {} B per run via POST /api/send on node A, {} submitters, {warmup} warm-up", cx.payload_bytes, cx.s.concurrency);
    let payload = x12_payload(cx.payload_bytes);
    let rs = cx.repeat("outbound", |cx, i| run_outbound_once(cx, pk, &payload, n, warmup, i));
    let median = median_run(&rs, |r| r.failed == 0 && r.submit_failures == 0 && !r.timed_out && r.end.died.is_none(), |r| r.msg_per_s)?;
    Some((median, rs))
}

pub fn print(cx: &Ctx, (r, all): &(OutboundRun, Vec<OutboundRun>)) {
    let all_rates: Vec<String> = all.iter().map(|r| format!("{:.0}", r.msg_per_s)).collect();
    let all_failed: usize = all.iter().map(|r| r.failed + r.submit_failures).sum();
    println!();
    println!(
        "Outbound: node A sends {} documents of {} B X12 per run to node B (both embedded, `http.workers = 2`), submitted by {} concurrent clients to A's POST /api/send; signed (sha-256) + encrypted (aes256-cbc, RSA 2048), signed synchronous MDN required and verified by A. msg/s = documents `sent` / time from the first submit to A's last `sent` record; {} warm-up documents before; median of {} runs by msg/s; A's CPU includes answering the bench's status polls (every 250 ms).",
        env_usize("BENCH_OUTBOUND_MESSAGES", 1000),
        cx.payload_bytes,
        cx.s.concurrency,
        env_usize("BENCH_OUTBOUND_WARMUP", 50),
        cx.repeats
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
