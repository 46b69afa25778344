//! S3 outbox (s3 mode): node A's station has an S3 outbox on an in-process s3s-fs server; files
//! dropped under AS2/send/alpha/beta/ at once are timed from each write to their queueing and
//! to their `sent` record (node B receives as in outbound mode).

use crate::common::*;
use crate::load::*;
use crate::outbound::*;
use crate::testkit::s3server;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct S3Run {
    pub files: usize,
    /// Files the node listed (matched to a written file by size).
    pub seen: usize,
    /// File written -> summary received_at (the poll's start time), ms.
    pub pick_p50: f64,
    pub pick_p99: f64,
    /// File written -> the `queued` record of its message (history), ms.
    pub queued_p50: f64,
    pub queued_p99: f64,
    /// File written -> `sent`, ms.
    pub sent_p50: f64,
    pub sent_p99: f64,
    pub sent: usize,
    pub failed: usize,
    pub failed_samples: Vec<String>,
    pub timed_out: bool,
    /// First file written to the last `sent`.
    pub secs: f64,
    pub files_per_s: f64,
    pub write_ms: f64,
    pub a_cpu_ms: f64,
    pub b_cpu_ms: f64,
    pub left_in_bucket: usize,
    pub end: PairEnd,
}

pub const S3_POLL_SECS: f64 = 0.2;
pub const S3_PICKUP_AGE_SECS: f64 = 0.0;
pub const S3_BUCKET: &str = "edinode-test";

/// tests/common/s3server.rs (s3s-fs, TCP_NODELAY on its connections) with a full-access key,
/// in the bench process; stops when dropped.
pub struct BenchS3 {
    pub endpoint: String,
    pub root: PathBuf,
    /// Beside the bucket: files are written here, then renamed into it.
    pub staging: PathBuf,
    _server: s3server::TestS3,
}

impl BenchS3 {
    pub async fn start() -> BenchS3 {
        let t = s3server::TestS3::start(vec![("bench", "bench-secret", s3server::Policy::full())]).await;
        assert_eq!(t.bucket, S3_BUCKET);
        BenchS3 { endpoint: t.endpoint.clone(), root: t.path(""), staging: t.dir.path().join("staging"), _server: t }
    }
}

pub fn run_s3_once(cx: &mut Ctx, pk: &PairKeys, files: usize, run: usize) -> Result<S3Run, String> {
    let payload_bytes = cx.payload_bytes;
    // The S3 server needs a runtime that runs while this thread writes files and sleeps.
    let srt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| e.to_string())?;
    let s3 = srt.block_on(BenchS3::start());
    let extra = format!(
        "[stations.alpha.s3]\nbucket = \"{S3_BUCKET}\"\nendpoint = \"{}\"\naccess_key = \"bench\"\nsecret_key = \"bench-secret\"\ninbound = true\noutbound = true\npickup_age_secs = {S3_PICKUP_AGE_SECS:.1}\nsteady_secs = 2.0\npoll_secs = {S3_POLL_SECS}\n",
        s3.endpoint
    );
    let pair = start_pair(cx, pk, &extra)?;
    let s = &cx.s;
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
    let (a0, b0) = pair.cpu_ticks();
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
    let (a1, b1) = pair.cpu_ticks();
    // The `queued` record of each message (after its object was read: never before the write).
    let mut queued_at = std::collections::HashMap::new();
    for r in &rows {
        let url = format!("{base}/api/messages/{}", r.1);
        let v: Option<serde_json::Value> = srt.block_on(async { serde_json::from_slice(&client.get(&url).bearer_auth(ADMIN_TOKEN).send().await.ok()?.bytes().await.ok()?).ok() });
        if let Some(at) = v.as_ref().and_then(|v| v["history"].as_array()?.iter().find(|h| h["status"] == "queued")?["at"].as_i64()) {
            queued_at.insert(r.1.clone(), at);
        }
    }
    let left_in_bucket = count_files(&outdir);
    let ended = pair.finish();
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
        end: ended,
    };
    eprintln!(
        "  s3 run {run}: {} files written in {:.0} ms, {} listed by the node, {} sent + {} failed{} in {:.2} s = {:.0} files/s; pick-up (received_at) p50 {:.0} ms p99 {:.0} ms, min {:.0} max {:.0}; queued record p50 {:.0} p99 {:.0}; sent p50 {:.0} p99 {:.0}; node A {:.2} + node B {:.2} CPU-ms/file; {} left in AS2/send/, B's inbox holds {}",
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
        r.end.delivered
    );
    r.end.print_problems("failed", &r.failed_samples);
    Ok(r)
}

/// The s3 mode: a fresh pair and S3 server per run; the median run by files/s and all runs.
pub fn bench(cx: &mut Ctx, pk: &PairKeys) -> Option<(S3Run, Vec<S3Run>)> {
    let files = env_usize("BENCH_S3_FILES", 200).max(1);
    eprintln!(
        "s3: {files} files of {}..{} B per run dropped at once under AS2/send/alpha/beta/, pickup_age_secs = {S3_PICKUP_AGE_SECS}, poll_secs = {S3_POLL_SECS}",
        cx.payload_bytes,
        cx.payload_bytes + files - 1
    );
    let rs = cx.repeat("s3", |cx, i| run_s3_once(cx, pk, files, i));
    let median = median_run(&rs, |r| r.failed == 0 && !r.timed_out && r.end.died.is_none() && r.seen == r.files, |r| r.files_per_s)?;
    Some((median, rs))
}

pub fn print(cx: &Ctx, (first, all): &(S3Run, Vec<S3Run>)) {
    println!();
    println!(
        "S3 outbox: {} files ({}..{} B X12) dropped at once (each written beside the bucket and renamed in; the drop starts 1 s after the nodes are up plus a random 0..{S3_POLL_SECS} s, so at a random phase of the poll cycle) under AS2/send/alpha/beta/ of an in-process S3 server (tests/common/s3server.rs: s3s-fs in the bench process, full-access key, TCP_NODELAY), node A with `pickup_age_secs = {S3_PICKUP_AGE_SECS}`, `poll_secs = {S3_POLL_SECS}`, partner node B as in outbound mode (signed synchronous MDN); median of {} runs by files/s. Pick-up latency = from the file appearing in the bucket to the node queueing it: \"received_at\" is the summary's `received_at`, which is the start of the poll that took the file (so this column is the wait for the next poll, 0..{S3_POLL_SECS} s; it can be a few ms below 0 when a poll read its clock just before the last renames and listed just after), \"queued record\" the time of the message's `queued` history entry (after the node read the object; a poll takes its files one after the other and hands them to the sender only when it has taken them all). With the seed's default `pickup_age_secs = 15` a file is not taken before it is 15 s old, so its pick-up latency is 15 s plus this (and the default `poll_secs = 5` adds up to 5 s of polling phase instead of 0.2 s).",
        first.files,
        cx.payload_bytes,
        cx.payload_bytes + first.files - 1,
        cx.repeats
    );
    println!();
    println!("| Mode | pick-up p50 ms (received_at) | pick-up p99 ms (received_at) | pick-up p50 / p99 ms (queued record) | file -> sent p50 / p99 ms | end-to-end files/s | node A CPU-ms/file | node B CPU-ms/file | failures (median run; all runs) | files/s; pick-up p50 ms of all runs |");
    println!("|---|---:|---:|---|---|---:|---:|---:|---:|---|");
    let r = first;
    {
        let all_rates: Vec<String> = all.iter().map(|r| format!("{:.0}", r.files_per_s)).collect();
        let all_p50: Vec<String> = all.iter().map(|r| format!("{:.0}", r.pick_p50)).collect();
        let all_failed: usize = all.iter().map(|r| r.failed + (r.files - r.seen)).sum();
        println!(
            "| s3 outbox -> A -> B (pickup_age {S3_PICKUP_AGE_SECS} s, poll {S3_POLL_SECS} s) | {:.0} | {:.0} | {:.0} / {:.0} | {:.0} / {:.0} | {:.0} | {:.2} | {:.2} | {} / {}; {} | {}; {} |",
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
